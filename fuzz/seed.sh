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

# Layer tars with package evidence for the `sbom` target: dpkg, apk, a dist-info, a package.json,
# os-release, whiteouts (a Go binary's build info comes from the unit tests' ELF builder, not here).
mkdir -p "$here/corpus/sbom"
python3 - "$here/corpus/sbom" <<'PY'
import io, os, sys, tarfile
out = sys.argv[1]
def mk(name, members):
    bio = io.BytesIO()
    with tarfile.open(fileobj=bio, mode="w", format=tarfile.PAX_FORMAT) as t:
        for n, data in members:
            ti = tarfile.TarInfo(n); ti.size = len(data); ti.mode = 0o644
            t.addfile(ti, io.BytesIO(data))
    open(os.path.join(out, name), "wb").write(bio.getvalue())
mk("dpkg", [("var/lib/dpkg/status", b"Package: a\nStatus: install ok installed\nVersion: 1:2.3-4\nArchitecture: amd64\nSource: b (2.3-3)\n\n"),
            ("usr/share/doc/a/copyright", b"Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\nFiles: *\nLicense: GPL-2+ or Artistic\n"),
            ("etc/os-release", b"ID=debian\nVERSION_ID=\"12\"\n")])
mk("apk", [("lib/apk/db/installed", b"P:musl\nV:1.2.4-r2\nA:x86_64\nL:MIT\no:musl\nF:lib\nR:libc.so\n\n")])
mk("python", [("opt/venv/lib/python3.11/site-packages/six-1.16.0.dist-info/METADATA", b"Metadata-Version: 2.1\nName: six\nVersion: 1.16.0\nLicense-Expression: MIT OR (Apache-2.0 WITH LLVM-exception)\nClassifier: License :: OSI Approved :: MIT License\n\nbody\n"),
              ("opt/venv/lib/python3.11/site-packages/six-1.16.0.dist-info/RECORD", b"six.py,sha256=abc,10\n\"a,b\",,\n"),
              ("opt/venv/lib/python3.11/site-packages/six-1.16.0.dist-info/INSTALLER", b"uv\n"),
              ("usr/lib/python3/dist-packages/old-1.0.egg-info", b"Name: old\nVersion: 1.0\n")])
mk("npm", [("app/node_modules/@s/is/package.json", b'{"name":"@s/is","version":"4.6.0","licenses":[{"type":"MIT"}]}'),
           ("app/node_modules/debug/node_modules/ms/package.json", b'{"name":"ms","version":"2.1.3","license":"(MIT OR ISC)"}')])
mk("whiteouts", [("opt/.wh.venv", b""), ("srv/.wh..wh..opq", b"")])
PY
echo "seeded $(ls "$here/corpus/sbom" | wc -l) layer tars with packages"
