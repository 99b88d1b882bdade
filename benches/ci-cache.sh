#!/usr/bin/env bash
# benches/ci-cache.sh [RUNS]
#
# A fresh CI runner with a build cache in a registry: strata (rootless) against BuildKit
# (dockerd as root, ../shared/lab/dockerd.sh), both against the same local registry (Debian's
# docker-registry on 127.0.0.1, started and stopped by pid here), which also serves the base
# images as a Docker Hub mirror. Two contexts: the Python recipe 1 (examples/python-app) and
# the lab's `big` (../shared/lab/make-bench-contexts.sh: two busybox stages, 2,000 small files
# and 50 MiB). Runner A builds each once and exports its cache:
#   strata    --cache-to type=registry,ref=REG/cache/CTX:main,mode=max,mounts=true
#   BuildKit  --build-arg BUILDKIT_INLINE_CACHE=1 and a push (dockerd's built-in BuildKit imports
#             only an inline cache from a registry: `--cache-to type=registry` needs buildx,
#             which Debian does not package and which cannot be fetched here)
# Then, RUNS times each (hyperfine medians), a fresh runner (an empty store; for dockerd, every
# image and the build cache removed) builds with --cache-from:
#   cached    nothing changed: every step from the cache
#   change1   one file of the context changed (the app's code; one of the 2,000 small files)
# Both pull the base image from the registry in both scenarios, as a fresh runner does.
#
# Needs root (dockerd; the strata builds run as the user builder), hyperfine, skopeo,
# docker-registry, docker.io. Works under $OUT (default /var/tmp/strata-bench-ci), removed at
# the end unless KEEP=1.
set -euo pipefail
RUNS=${1:-5}
CONTEXTS=${CONTEXTS:-"pip big"}
BUILDERS=${BUILDERS:-"strata docker"}
here=$(cd "$(dirname "$0")/.." && pwd)
LAB=${LAB:-$(cd "$here/../shared/lab" && pwd)}
OUT=${OUT:-/var/tmp/strata-bench-ci}
PYBASE=${PYBASE:-$here/target/test-images/oci/python}
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
[ -f "$PYBASE/index.json" ] || { echo "no python base at $PYBASE (scripts/test-deps.sh makes it)" >&2; exit 1; }
for t in hyperfine skopeo docker-registry; do
  command -v $t >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $t >/dev/null
done
[ -x /usr/bin/docker ] && command -v dockerd >/dev/null ||
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
DOCKER=/usr/bin/docker
bash "$LAB/setup-builder-user.sh" builder >/dev/null
[ "$(stat -c %a /dev/net/tun)" = 666 ] || chmod 0666 /dev/net/tun
uid=$(id -u builder)
rm -rf "$OUT"
mkdir -p "$OUT/bin" "$OUT/results" "$OUT/ctx" "$OUT/home"
as_builder() {
  runuser -u builder -- env -C "$OUT" HOME="$OUT/home" XDG_RUNTIME_DIR=/run/user/$uid \
    CONTAINERS_REGISTRIES_CONF="$OUT/registries.conf" PATH=/usr/local/bin:/usr/bin:/bin "$@"
}
cleanup() {
  bash "$LAB/dockerd.sh" stop "$OUT/docker" >/dev/null 2>&1 || true
  [ -f "$OUT/registry.pid" ] && kill "$(cat "$OUT/registry.pid")" 2>/dev/null || true
  if [ "${KEEP:-0}" != 1 ]; then
    for s in a fresh; do
      runuser -u builder -- "$OUT/bin/strata" --root "$OUT/strata-$s" prune --all >/dev/null 2>&1 || true
    done
    rm -rf --one-file-system "$OUT"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
(cd "$here" && cargo build --release --locked -q)
install -m 755 "$here/target/release/strata" "$OUT/bin/strata"

# The registry.
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
REG=127.0.0.1:$port
cat >"$OUT/registry.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $OUT/registry
  delete:
    enabled: true
http:
  addr: $REG
  secret: strata-bench
EOF
docker-registry serve "$OUT/registry.yml" >"$OUT/registry.log" 2>&1 &
echo $! >"$OUT/registry.pid"
for _ in $(seq 100); do curl -fs "http://$REG/v2/" >/dev/null && break; sleep 0.1; done
bash "$LAB/make-base-images.sh" "$OUT/base" busybox >/dev/null 2>&1
skopeo copy -q --dest-tls-verify=false "oci:$PYBASE:latest" "docker://$REG/library/python:3.11-slim"
skopeo copy -q --dest-tls-verify=false "oci:$OUT/base/oci/busybox:latest" "docker://$REG/library/busybox:latest"
cat >"$OUT/registries.conf" <<EOF
[[registry]]
prefix = "docker.io"
location = "docker.io"
[[registry.mirror]]
location = "$REG"
insecure = true
[[registry]]
location = "$REG"
insecure = true
EOF

# The contexts (no `# syntax=` line: BuildKit would pull its frontend), and the file each
# change rewrites.
cp -r "$here/examples/python-app" "$OUT/ctx/pip"
sed -i '/^# syntax=/d' "$OUT/ctx/pip/Dockerfile"
bash "$LAB/make-bench-contexts.sh" "$OUT/lab-ctx" >/dev/null
cp -r "$OUT/lab-ctx/big" "$OUT/ctx/big"
chmod -R a+rwX "$OUT"
code() { case $1 in pip) echo "$OUT/ctx/pip/hello_app/__main__.py" ;; big) echo "$OUT/ctx/big/files/small/0000" ;; esac; }
change() { case $1 in pip) echo "echo \"# \$(date +%s%N)\" >> $(code pip)" ;; big) echo "echo \"\$(date +%s%N)\" > $(code big)" ;; esac; }

DOCKERD_EXTRA="--registry-mirror http://$REG" bash "$LAB/dockerd.sh" start "$OUT/docker" >/dev/null
DH="$DOCKER -H unix://$OUT/docker/docker.sock"
SA="$OUT/bin/strata --root $OUT/strata-a"
SF="$OUT/bin/strata --root $OUT/strata-fresh"

for c in $CONTEXTS; do
  echo "== runner A: $c" >&2
  as_builder $SA build -q -t app-$c --cache-to "type=registry,ref=$REG/cache/$c:main,mode=max,mounts=true" "$OUT/ctx/$c" >/dev/null
  env DOCKER_BUILDKIT=1 $DH build -q --build-arg BUILDKIT_INLINE_CACHE=1 -t "$REG/bk/$c:main" "$OUT/ctx/$c" >/dev/null
  $DH push -q "$REG/bk/$c:main" >/dev/null
done

strata_fresh="$SF prune --all >/dev/null 2>&1; rm -rf $OUT/strata-fresh"
docker_fresh="$DH image prune -af >/dev/null; $DH builder prune -af >/dev/null"
strata_build() { echo "$SF build -q -t app --cache-from type=registry,ref=$REG/cache/$1:main $OUT/ctx/$1"; }
docker_build() { echo "env DOCKER_BUILDKIT=1 $DH build -q --cache-from $REG/bk/$1:main -t app $OUT/ctx/$1"; }

for c in $CONTEXTS; do
  for b in $BUILDERS; do
    fresh=${b}_fresh; fresh=${!fresh}
    runner=as_builder; [ "$b" = docker ] && runner=""
    build=$(${b}_build "$c")
    # One logged run first: how many steps came from the cache.
    $runner sh -c "$fresh"
    if [ "$b" = strata ]; then
      $runner sh -c "${build/ -q / --progress plain }" 2>&1 | grep -o '([0-9]* steps, [0-9]* cached)' >"$OUT/results/$b-$c.hits" || true
    else
      $runner sh -c "${build/ -q / --progress plain }" 2>&1 | grep -c ' CACHED$' >"$OUT/results/$b-$c.hits" || true
    fi
    echo "== $b $c cached ($(cat "$OUT/results/$b-$c.hits"))" >&2
    $runner hyperfine -N -r "$RUNS" --prepare "sh -c '$fresh'" --export-json "$OUT/results/$b-$c-cached.json" "$build" >/dev/null
    echo "== $b $c change1" >&2
    $runner hyperfine -N -r "$RUNS" --prepare "sh -c '$fresh; $(change "$c")'" --export-json "$OUT/results/$b-$c-change1.json" "$build" >/dev/null
  done
done

median() { python3 -c 'import json,sys; print("%.3f" % json.load(open(sys.argv[1]))["results"][0]["median"])' "$1"; }
echo
echo "fresh runner, --cache-from a registry (medians of $RUNS, seconds; strata rootless, BuildKit = dockerd $($DH version -f '{{.Server.Version}}') as root)"
printf '%-7s %-9s %9s %9s %7s   %s\n' context scenario strata BuildKit ratio "steps cached (strata; BuildKit CACHED lines)"
for c in $CONTEXTS; do
  for sc in cached change1; do
    s=$(median "$OUT/results/strata-$c-$sc.json")
    d=$(median "$OUT/results/docker-$c-$sc.json")
    printf '%-7s %-9s %9s %9s %7s   %s; %s\n' "$c" "$sc" "$s" "$d" "$(python3 -c "print('%.2f' % ($s / $d))")" \
      "$(cat "$OUT/results/strata-$c.hits")" "$(cat "$OUT/results/docker-$c.hits")"
  done
done
