#!/usr/bin/env bash
# benches/python-multiplatform.sh [COLD_RUNS] [CHANGE_RUNS]
#
# examples/python-multiplatform built for linux/amd64,linux/arm64 by strata, rootless (as the
# user strata-test), the two ways of that example: `Dockerfile` (the builder stage's venv and
# `pip install` run for each platform, arm64's under QEMU in strata's own user namespace) and
# `Dockerfile.cross` (the target's wheels fetched and unpacked by a `$BUILDPLATFORM` builder).
# hyperfine medians of:
#   cold     a fresh store each run (the bases pulled from the local registry, the pip cache
#            empty, every step run), COLD_RUNS runs (default 3)
#   change1  one line appended to the app's code (hello_mp/__main__.py), CHANGE_RUNS runs
#            (default 5)
# The bases: python:3.11-slim, an index made here by `strata manifest create` over the lab's
# python image (amd64) and scripts/make-foreign-bases.sh's python-arm64, in Debian's
# docker-registry on 127.0.0.1 (a docker.io mirror in registries.conf). pip reaches PyPI
# through whatever network the machine has (this lab: a TLS proxy whose CAs the bases hold).
#
# Needs root (to start things and run strata as strata-test), hyperfine, docker-registry,
# skopeo, qemu-user-static, Linux 6.7+, and the images of scripts/test-deps.sh in
# target/test-images. ROUTES="emulated cross" picks the routes (the table needs both). STRATA_BIN (default target/release/strata, else target/debug/strata).
# Works in a temporary directory, removed at the end with the registry stopped.
set -euo pipefail
COLD_RUNS=${1:-3}
CHANGE_RUNS=${2:-5}
here=$(cd "$(dirname "$0")/.." && pwd)
oci=${STRATA_TEST_IMAGES:-$here/target/test-images}/oci
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
id strata-test >/dev/null 2>&1 || { echo "no user strata-test (scripts/test-deps.sh makes it)" >&2; exit 1; }
for t in hyperfine docker-registry skopeo qemu-aarch64-static; do
  command -v $t >/dev/null || { echo "missing: $t" >&2; exit 1; }
done
for l in python python-arm64; do
  [ -f "$oci/$l/index.json" ] || { echo "missing $oci/$l: run scripts/test-deps.sh" >&2; exit 1; }
done
strata_bin=${STRATA_BIN:-$here/target/release/strata}
[ -x "$strata_bin" ] || strata_bin=$here/target/debug/strata

work=$(mktemp -d /tmp/strata-bench-mp.XXXX)
chmod 1777 "$work"
reg_pid=
cleanup() {
  [ -z "$reg_pid" ] || { kill "$reg_pid" 2>/dev/null || true; wait "$reg_pid" 2>/dev/null || true; }
  for s in "$work"/store-*; do
    [ -d "$s" ] && runuser -u strata-test -- "$work/strata" --root "$s" prune --all >/dev/null 2>&1 || true
  done
  "$work/strata" --root "$work/seed" prune --all >/dev/null 2>&1 || true
  chmod -R u+rwX "$work" 2>/dev/null || true
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
install -m 0755 "$strata_bin" "$work/strata"

# The registry, on a free port of 127.0.0.1.
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$work/reg/data"
cat >"$work/reg/config.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $work/reg/data
http:
  addr: 127.0.0.1:$port
EOF
docker-registry serve "$work/reg/config.yml" >"$work/reg/log" 2>&1 &
reg_pid=$!
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done
h=127.0.0.1:$port
for a in amd64:python arm64:python-arm64; do
  HOME=$work skopeo copy -q --dest-tls-verify=false "oci:$oci/${a#*:}:latest" \
    "docker://$h/library/python:3.11-slim-${a%%:*}"
done
"$work/strata" --root "$work/seed" manifest create -t "$h/library/python:3.11-slim" \
  "$h/library/python:3.11-slim-amd64" "$h/library/python:3.11-slim-arm64" >"$work/seed.log" 2>&1
printf '[[registry]]\nprefix = "docker.io"\nlocation = "docker.io"\n[[registry.mirror]]\nlocation = "%s"\ninsecure = true\n' \
  "$h" >"$work/registries.conf"

cp -r "$here/examples/python-multiplatform" "$work/ctx"
chmod -R a+rX "$work"
chown -R strata-test "$work/ctx"
mkdir -p "$work/results"
chown strata-test "$work/results"

# `as_user CMD...`: CMD as strata-test with the bench's registries.conf.
as_user() {
  runuser -u strata-test -- env -u XDG_RUNTIME_DIR PATH="$PATH" \
    CONTAINERS_REGISTRIES_CONF="$work/registries.conf" HOME="$work" "$@"
}
echo "== $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg) at the start; $(uname -r); $("$work/strata" --version); $(qemu-aarch64-static --version | head -n1)"
for route in ${ROUTES:-emulated cross}; do
  f=Dockerfile
  [ $route = cross ] && f=Dockerfile.cross
  s=$work/store-$route
  build="$work/strata --root $s build --platform linux/amd64,linux/arm64 -f $work/ctx/$f -t hello-mp $work/ctx"
  fresh="$work/strata --root $s prune --all >/dev/null 2>&1; rm -rf $s"
  as_user hyperfine --runs "$COLD_RUNS" --prepare "$fresh" --export-json "$work/results/$route-cold.json" \
    -n "$route cold" "$build" >/dev/null
  # The last cold build is the warm state; each run appends one more line to the code.
  as_user hyperfine --runs "$CHANGE_RUNS" --prepare "echo '# one more line' >>$work/ctx/hello_mp/__main__.py" \
    --export-json "$work/results/$route-change1.json" -n "$route change1" "$build" >/dev/null
  # The image runs on the emulated platform.
  out=$(as_user "$work/strata" --root "$s" run --network none --platform linux/arm64 hello-mp)
  case $out in "hello from aarch64:"*) ;; *) echo "$route: arm64 image said: $out" >&2; exit 1 ;; esac
done
echo "== load $(cut -d' ' -f1-3 /proc/loadavg) at the end"
python3 - "$work/results" <<'PY'
import json, os, sys
d = sys.argv[1]
def med(name):
    f = os.path.join(d, name + ".json")
    if not os.path.exists(f):
        return None
    r = json.load(open(f))["results"][0]
    return r["median"], r["min"], r["max"], len(r["times"])
def cell(m):
    return f"{m[0]:8.2f} s ({m[1]:.1f}-{m[2]:.1f}, n={m[3]})" if m else f"{'-':>24}"
print(f"{'scenario':10} {'emulated pip':>24} {'cross route':>24} {'ratio':>6}")
for sc in ("cold", "change1"):
    e, c = med("emulated-" + sc), med("cross-" + sc)
    ratio = f"{e[0] / c[0]:5.1f}x" if e and c else ""
    print(f"{sc:10} {cell(e)} {cell(c)} {ratio:>6}")
PY
