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
