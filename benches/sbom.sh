#!/usr/bin/env bash
# What an SBOM costs: the time of `cargo bench --bench sbom` (scan of the python base layer,
# from its tar and from its gzip blob; scan of a venv layer; a code-change rebuild's load of
# cached packages + scan of the app layer + merge + both documents), and the peak memory of a
# scan of the python base blob on its own (STRATA_SBOM_SCAN_ONCE: no criterion in the way).
#
#   benches/sbom.sh        (needs target/test-images and target/sbom-fixtures: scripts/test-deps.sh)
#
# And what attestations add to a real build (`benches/sbom.sh build [RUNS]`, release binary,
# default 5 runs): the Python example (examples/python-app, pip install from PyPI) built with
# and without `--sbom --provenance=mode=max` in turn, medians of
#   cold     build cache and cache mounts emptied before each run (the base image kept, as in
#            benches/python.sh; its package list stays cached once an SBOM has read it)
#   change1  one line appended to the app's code before each run
# and the time the build itself reports for making and storing the attestations (the
# "attestations: … (S s)" line), median of RUNS, for cold, change1, `first-pull` (a cold build
# in a fresh store that pulled the base from a local docker-registry just before: the pull
# scanned its layer) and `first-load` (a cold build whose loaded base was never scanned: the
# one-time scan of the gzip base). Needs docker-registry and skopeo for first-pull.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
if [ "${1:-}" = build ]; then
  RUNS=${2:-5}
  OUT=$(mktemp -d /var/tmp/strata-bench-sbom.XXXXXX)
  trap 'chmod -R u+rwX "$OUT" 2>/dev/null; "$here/target/release/strata" --root "$OUT/store" prune --all >/dev/null 2>&1; rm -rf "$OUT"' EXIT
  (cd "$here" && cargo build --release --locked -q)
  S="$here/target/release/strata --root $OUT/store"
  $S load -i "$here/target/test-images/oci/python" >/dev/null
  $S tag python:latest python:3.11-slim
  cp -r "$here/examples/python-app" "$OUT/ctx"
  sed -i '/^# syntax=/d' "$OUT/ctx/Dockerfile"
  ATT="--sbom --provenance=mode=max"
  clean="$S rmi bench >/dev/null 2>&1; $S prune --cache >/dev/null; rm -rf $OUT/store/v1/cache-mounts"
  change="echo '# change' >> $OUT/ctx/hello_app/__main__.py"
  $S build -q -t bench "$OUT/ctx" >/dev/null
  # Wall times, the builds with and without attestations taken in turn (a loaded machine's
  # ups and downs weigh on both alike; hyperfine would run one series after the other).
  wall() { local t0 t1; sh -c "$1"; t0=$(date +%s%N); $S build -q $2 -t bench "$OUT/ctx" >/dev/null; t1=$(date +%s%N); echo $(( (t1 - t0) / 1000 )); }
  : >"$OUT/cold-plain"; : >"$OUT/cold-attest"; : >"$OUT/change1-plain"; : >"$OUT/change1-attest"
  for i in $(seq "$RUNS"); do
    wall "$clean" "" >>"$OUT/cold-plain"
    wall "$clean" "$ATT" >>"$OUT/cold-attest"
  done
  for i in $(seq "$RUNS"); do
    wall "$change" "" >>"$OUT/change1-plain"
    wall "$change" "$ATT" >>"$OUT/change1-attest"
  done
  # The build's own figure for the attestations.
  attach() { sh -c "$1"; ${2:-$S} build --progress plain $ATT -t bench "$OUT/ctx" 2>&1 | sed -n 's/^attestations: .*(\([0-9.]*\) s)$/\1/p'; }
  : >"$OUT/attach-cold"; : >"$OUT/attach-change1"; : >"$OUT/attach-first-load"; : >"$OUT/attach-first-pull"
  PORT=${PORT:-5119}
  if command -v docker-registry >/dev/null && command -v skopeo >/dev/null; then
    # A local registry as docker.io's mirror, for stores that pull the base.
    mkdir -p "$OUT/reg/data"
    printf 'version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%s\n' "$OUT/reg/data" "$PORT" >"$OUT/reg/config.yml"
    docker-registry serve "$OUT/reg/config.yml" >/dev/null 2>&1 &
    REG=$!
    trap 'kill $REG 2>/dev/null; chmod -R u+rwX "$OUT" 2>/dev/null; "$here/target/release/strata" --root "$OUT/store" prune --all >/dev/null 2>&1; rm -rf "$OUT"' EXIT
    for _ in $(seq 100); do curl -fsS -o /dev/null "http://127.0.0.1:$PORT/v2/" 2>/dev/null && break; sleep 0.1; done
    skopeo copy -q --dest-tls-verify=false "oci:$here/target/test-images/oci/python:latest" "docker://127.0.0.1:$PORT/library/python:3.11-slim"
    printf '[[registry]]\nprefix = "docker.io"\nlocation = "docker.io"\n[[registry.mirror]]\nlocation = "127.0.0.1:%s"\ninsecure = true\n' "$PORT" >"$OUT/registries.conf"
  fi
  for i in $(seq "$RUNS"); do
    attach "$clean" >>"$OUT/attach-cold"
    attach "$change" >>"$OUT/attach-change1"
    attach "$clean; rm -f $OUT/store/v1/facts/*.pkgs" >>"$OUT/attach-first-load"
    if [ -f "$OUT/registries.conf" ]; then
      F="env CONTAINERS_REGISTRIES_CONF=$OUT/registries.conf $here/target/release/strata --root $OUT/fresh$i"
      $F pull -q python:3.11-slim >/dev/null
      attach true "$F" >>"$OUT/attach-first-pull"
      $F prune --all >/dev/null 2>&1; rm -rf "$OUT/fresh$i"
    fi
  done
  python3 - "$OUT" <<'PY'
import json, statistics, sys
out = sys.argv[1]
def med(f):
    return statistics.median(int(x) for x in open(f"{out}/{f}").read().split()) / 1e6
def att(f):
    xs = [float(x) for x in open(f"{out}/attach-{f}").read().split()]
    return statistics.median(xs) if xs else float("nan")
print("| build | without | --sbom --provenance=mode=max | difference | attestations (the build's own figure) |")
print("|---|---|---|---|---|")
for s in ["cold", "change1"]:
    a, b = med(f"{s}-plain"), med(f"{s}-attest")
    print(f"| {s} | {a:.3f} s | {b:.3f} s | {1000*(b-a):+.0f} ms | {1000*att(s):.0f} ms |")
print(f"| first in a fresh store, base pulled (scanned by the pull) | | | | {1000*att('first-pull'):.0f} ms |")
print(f"| first, base loaded and never scanned | | | | {1000*att('first-load'):.0f} ms |")
PY
  exit 0
fi
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
