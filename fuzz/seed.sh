#!/usr/bin/env bash
# Seed the fuzz corpus from the conformance files (read from ../shared; not copied into git).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
conf=${STRATA_CONFORMANCE_DIR:-$here/../../shared/conformance}
mkdir -p "$here/corpus/frontend"
n=0
for f in "$conf"/buildkit/parser/testfiles/*/Dockerfile "$conf"/buildkit/parser/testfiles-negative/*/Dockerfile \
         "$conf"/buildkit/parser/testfile-line/Dockerfile "$conf"/realworld/*ockerfile*; do
  [ -f "$f" ] || continue
  cp "$f" "$here/corpus/frontend/seed-$n"; n=$((n+1))
done
# Heredoc, directive and misc vectors: each Dockerfile string in the JSON files.
python3 - "$conf" "$here/corpus/frontend" <<'PY'
import json, sys, pathlib
conf, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
i = 0
def walk(v):
    global i
    if isinstance(v, dict):
        for k, x in v.items():
            if k in ("dockerfile", "input", "line") and isinstance(x, str):
                (out / f"json-{i}").write_text(x); i += 1
            else:
                walk(x)
    elif isinstance(v, list):
        for x in v: walk(x)
for f in ["buildkit/parser-extra/heredocs.json", "buildkit/parser-extra/directives.json",
          "buildkit/parser-extra/misc.json", "buildkit/shell/expansion.json"]:
    walk(json.load(open(conf / f)))
PY
echo "seeded $(ls "$here/corpus/frontend" | wc -l) inputs"

# Layer tars for the `apply` target: a normal one and the escapes the applier must refuse.
mkdir -p "$here/corpus/apply"
python3 - "$here/corpus/apply" <<'PY'
import io, os, sys, tarfile
out = sys.argv[1]
def mk(name, members):
    bio = io.BytesIO()
    with tarfile.open(fileobj=bio, mode="w", format=tarfile.GNU_FORMAT) as t:
        for n, typ, data, link in members:
            ti = tarfile.TarInfo(n); ti.type = typ; ti.linkname = link; ti.size = len(data)
            ti.mode = 0o755 if typ == tarfile.DIRTYPE else 0o644
            t.addfile(ti, io.BytesIO(data) if data else None)
    open(os.path.join(out, name), "wb").write(bio.getvalue())
mk("normal", [("a/", tarfile.DIRTYPE, b"", ""), ("a/f", tarfile.REGTYPE, b"x", ""), ("a/l", tarfile.SYMTYPE, b"", "f"), ("a/h", tarfile.LNKTYPE, b"", "a/f")])
mk("dotdot", [("../outside/x", tarfile.REGTYPE, b"x", "")])
mk("symlink-escape", [("l", tarfile.SYMTYPE, b"", "../outside"), ("l/x", tarfile.REGTYPE, b"x", "")])
mk("whiteouts", [("d/", tarfile.DIRTYPE, b"", ""), ("d/.wh..wh..opq", tarfile.REGTYPE, b"", ""), ("d/.wh.x", tarfile.REGTYPE, b"", "")])
mk("hardlink-escape", [("h", tarfile.LNKTYPE, b"", "../outside/y")])
PY
echo "seeded $(ls "$here/corpus/apply" | wc -l) layer tars"

# Words and environments for the `expand` target ("NAME=VALUE" lines, a blank line, the word):
# a self-doubling chain (the memory bomb the expansion cap stops) and every operator.
mkdir -p "$here/corpus/expand"
python3 - "$here/corpus/expand" <<'PY'
import os, sys
out = sys.argv[1]
open(os.path.join(out, "doubling"), "w").write("A=xy\n" + "A=$A$A\n" * 30 + "\n${A}")
open(os.path.join(out, "operators"), "w").write(
    "A=hello\nB=${A:+x}\n\n${A#h} ${A%o} ${A/l/L} ${A//l} ${B:-d} \"${A}\" '$A' ${A:?err} $$ \\$A")
PY
echo "seeded $(ls "$here/corpus/expand" | wc -l) words"
