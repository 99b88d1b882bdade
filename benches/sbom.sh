#!/usr/bin/env bash
# What an SBOM costs: the time of `cargo bench --bench sbom` (scan of the python base layer,
# from its tar and from its gzip blob; scan of a venv layer; a code-change rebuild's load of
# cached packages + scan of the app layer + merge + both documents), and the peak memory of a
# scan of the python base blob on its own (STRATA_SBOM_SCAN_ONCE: no criterion in the way).
#
#   benches/sbom.sh        (needs target/test-images and target/sbom-fixtures: scripts/test-deps.sh)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
layout=$here/target/test-images/oci/python
[ -f "$layout/index.json" ] || { echo "missing $layout: run scripts/test-deps.sh" >&2; exit 1; }
manifest=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["manifests"][0]["digest"].split(":")[1])' "$layout/index.json")
blob=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["layers"][0]["digest"].split(":")[1])' "$layout/blobs/sha256/$manifest")
exe=$(cd "$here" && cargo bench --bench sbom --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "sbom":
        print(m["executable"])')
for i in 1 2 3; do
  STRATA_SBOM_SCAN_ONCE=$layout/blobs/sha256/$blob "$exe" --bench
done
cd "$here" && cargo bench --bench sbom
