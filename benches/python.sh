#!/usr/bin/env bash
# benches/python.sh [RUNS]
#
# The Python recipes 1 (examples/python-app, Docker's pip template in two stages) and 2
# (examples/python-uv, Astral's uv recipe), built by strata (rootless), buildah (rootless,
# native overlay) and BuildKit (dockerd as root, ../shared/lab/dockerd.sh), in one run, RUNS
# runs each (default 5), hyperfine medians:
#   cold     the build cache and the cache mounts emptied before each run (the base image kept)
#   noop     everything cached
#   change1  one line appended to the app's code
#   dep      one dependency added (requirements.txt / pyproject.toml + uv.lock) for the first
#            time: the prepare step empties the cache and builds the state before it
# The floor of the cold build is the package tool itself: the same commands (venv, pip or uv,
# useradd) run by chroot in a fresh copy of the same base, with an empty cache, as root. The
# final images' sizes side by side (each tool's own figure: the layers' uncompressed bytes).
# The `# syntax=` line is left out of every copy: BuildKit would pull its frontend image, and no
# registry is reachable here.
#
# Needs root (it starts dockerd, and the rootless builds run as the user builder), hyperfine,
# buildah, skopeo, docker.io. The base is target/test-images/oci/python (scripts/test-deps.sh)
# or $BASE. Works under $OUT (default /var/tmp/strata-bench-python, removed at the end unless
# KEEP=1); results in $OUT/results while it runs, printed at the end. RECIPES="pip uv",
# BUILDERS="strata buildah docker" and SCENARIOS="cold noop change1 dep floor extra" pick a part
# (floor: the pairs against the floor; extra: recipes 3-5).
set -euo pipefail
RUNS=${1:-5}
RECIPES=${RECIPES:-"pip uv"}
BUILDERS=${BUILDERS:-"strata buildah docker"}
SCENARIOS=${SCENARIOS:-"cold noop change1 dep floor extra"}
has() { [[ " $SCENARIOS " == *" $1 "* ]]; }
here=$(cd "$(dirname "$0")/.." && pwd)
LAB=${LAB:-$(cd "$here/../shared/lab" && pwd)}
OUT=${OUT:-/var/tmp/strata-bench-python}
BASE=${BASE:-$here/target/test-images/oci/python}
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
[ -f "$BASE/index.json" ] || { echo "no python base at $BASE (scripts/test-deps.sh makes it)" >&2; exit 1; }
for t in hyperfine buildah skopeo; do
  command -v $t >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $t >/dev/null
done
[ -x /usr/bin/docker ] && command -v dockerd >/dev/null ||
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
DOCKER=/usr/bin/docker
bash "$LAB/setup-builder-user.sh" builder >/dev/null
bash "$LAB/fix-cgroup-hybrid.sh" >/dev/null
[ "$(stat -c %a /dev/net/tun)" = 666 ] || chmod 0666 /dev/net/tun
uid=$(id -u builder)
rm -rf "$OUT"
mkdir -p "$OUT/bin" "$OUT/results" "$OUT/ctx"
cleanup() {
  bash "$LAB/dockerd.sh" stop "$OUT/docker" >/dev/null 2>&1 || true
  umount "$OUT/floor/root/proc" 2>/dev/null || true
  if [ "${KEEP:-0}" != 1 ]; then
    as_builder sh -c "buildah rm -a >/dev/null 2>&1; buildah rmi -a -f >/dev/null 2>&1" || true
    rm -rf "/run/user/$uid/strata-bench-containers" "/run/user/$uid/strata-bench-libpod" /var/tmp/buildah-cache "/var/tmp/buildah-cache-$uid"
    runuser -u builder -- "$OUT/bin/strata" --root "$OUT/strata" prune --all >/dev/null 2>&1 || true
    "$OUT/bin/strata" --root "$OUT/floor/store" prune --all >/dev/null 2>&1 || true
    rm -rf --one-file-system "$OUT"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
(cd "$here" && cargo build --release --locked -q)
install -m 755 "$here/target/release/strata" "$OUT/bin/strata"

# The contexts, without the syntax line; the files a dependency change swaps in.
for r in pip:python-app uv:python-uv; do
  n=${r%%:*} ex=${r#*:}
  cp -r "$here/examples/$ex" "$OUT/ctx/$n"
  sed -i '/^# syntax=/d' "$OUT/ctx/$n/Dockerfile"
done
# buildah 1.28 refuses Astral's relative bind-mount targets (`target=uv.lock`: "invalid container
# path, must be an absolute path"); BuildKit and strata resolve them against WORKDIR. buildah
# builds a copy with the targets made absolute (/app/uv.lock), its only difference.
cp -r "$OUT/ctx/uv" "$OUT/ctx/uv-abs"
sed -i 's|target=uv.lock|target=/app/uv.lock|; s|target=pyproject.toml|target=/app/pyproject.toml|' "$OUT/ctx/uv-abs/Dockerfile"
mkdir -p "$OUT/dep/pip" "$OUT/dep/uv"
cp "$OUT/ctx/pip/requirements.txt" "$OUT/dep/pip/requirements.txt.orig"
printf 'six==1.16.0\nidna==3.10\n' >"$OUT/dep/pip/requirements.txt"
cp "$OUT/ctx/uv/pyproject.toml" "$OUT/dep/uv/pyproject.toml.orig"
cp "$OUT/ctx/uv/uv.lock" "$OUT/dep/uv/uv.lock.orig"
cp "$here/tests/python/uv-added/pyproject.toml" "$here/tests/python/uv-added/uv.lock" "$OUT/dep/uv/"
chmod -R a+rwX "$OUT"
code() { case $1 in pip) echo "$OUT/ctx/pip/hello_app/__main__.py" ;; uv) echo "$OUT/ctx/uv/src/hello_uv/__init__.py" ;; esac; }
dep_on() { case $1 in pip) echo "cp $OUT/dep/pip/requirements.txt $OUT/ctx/pip/" ;; uv) echo "cp $OUT/dep/uv/pyproject.toml $OUT/dep/uv/uv.lock $OUT/ctx/uv/; cp $OUT/dep/uv/pyproject.toml $OUT/dep/uv/uv.lock $OUT/ctx/uv-abs/" ;; esac; }
dep_off() { case $1 in pip) echo "cp $OUT/dep/pip/requirements.txt.orig $OUT/ctx/pip/requirements.txt" ;; uv) echo "for d in uv uv-abs; do cp $OUT/dep/uv/pyproject.toml.orig $OUT/ctx/\$d/pyproject.toml; cp $OUT/dep/uv/uv.lock.orig $OUT/ctx/\$d/uv.lock; done" ;; esac; }

uid=$(id -u builder)
# buildah with native overlay in the user namespace (its rootless default here is vfs, which
# copies the base for every step), its store under $OUT.
mkdir -p "$OUT/containers"
cat >"$OUT/containers/storage.conf" <<EOF
[storage]
driver = "overlay"
runroot = "/run/user/$uid/strata-bench-containers"
graphroot = "$OUT/containers/storage"
rootless_storage_path = "$OUT/containers/storage"
EOF
printf '[engine]\ntmp_dir = "/run/user/%s/strata-bench-libpod"\n' "$uid" >"$OUT/containers/containers.conf"
chmod -R a+rwX "$OUT/containers"
as_builder() {
  runuser -u builder -- env -C "$OUT" HOME=/home/builder XDG_RUNTIME_DIR=/run/user/$uid \
    CONTAINERS_STORAGE_CONF="$OUT/containers/storage.conf" CONTAINERS_CONF="$OUT/containers/containers.conf" \
    PATH=/usr/local/bin:/usr/bin:/bin "$@"
}

# Each builder: BUILD (tag, ctx), CLEAN (cold), SIZE (tag), how it runs (as builder or root).
S="$OUT/bin/strata --root $OUT/strata"
strata_build() { echo "$S build -q -t bench-$1 $OUT/ctx/$1"; }
strata_clean="$S rmi bench-pip bench-uv >/dev/null 2>&1; $S prune --cache >/dev/null; rm -rf $OUT/strata/v1/cache-mounts"
buildah_build() { local c=$1; [ "$c" = uv ] && c=uv-abs; echo "buildah bud -q --layers --pull=never -t bench-$1 $OUT/ctx/$c"; }
buildah_clean="buildah rmi -f bench-pip bench-uv >/dev/null 2>&1; buildah rmi --prune >/dev/null 2>&1; rm -rf /var/tmp/buildah-cache /var/tmp/buildah-cache-$uid"
DH="$DOCKER -H unix://$OUT/docker/docker.sock"
docker_build() { echo "env DOCKER_BUILDKIT=1 $DH build -q -t bench-$1 $OUT/ctx/$1"; }
docker_clean="$DH rmi -f bench-pip bench-uv >/dev/null 2>&1; $DH builder prune -af >/dev/null"

echo "== loading the python base into each builder" >&2
as_builder $S load -i "$BASE" >/dev/null
as_builder $S tag python:latest python:3.11-slim
as_builder skopeo copy -q "oci:$BASE:latest" containers-storage:docker.io/library/python:3.11-slim
bash "$LAB/dockerd.sh" start "$OUT/docker" >/dev/null
skopeo copy -q --dest-daemon-host "unix://$OUT/docker/docker.sock" "oci:$BASE:latest" docker-daemon:python:3.11-slim

run() { # builder recipe scenario
  local b=$1 r=$2 sc=$3 build clean runner
  build=$(${b}_build "$r"); clean=${b}_clean; clean=${!clean}
  runner=as_builder; [ "$b" = docker ] && runner=""
  local json=$OUT/results/$b-$r-$sc.json
  case $sc in
    cold) $runner hyperfine -N -r "$RUNS" --prepare "sh -c '$clean'" --export-json "$json" "$build" >/dev/null ;;
    noop) $runner sh -c "$build" >/dev/null
          $runner hyperfine -N -w 1 -r "$RUNS" --export-json "$json" "$build" >/dev/null ;;
    change1) local f; f=$(code "$r"); [ "$b" = buildah ] && f=${f/ctx\/uv\//ctx\/uv-abs\/}
             $runner hyperfine -N -r "$RUNS" --prepare "sh -c 'echo \"# \$(date +%s%N)\" >> $f'" --export-json "$json" "$build" >/dev/null ;;
    # Each run adds the dependency for the first time: the prepare step empties the cache,
    # builds the recipe as it was (filling the cache mounts with its dependencies) and adds one.
    dep) $runner hyperfine -N -r "$RUNS" --prepare "sh -c '$clean; $(dep_off "$r"); $build >/dev/null; $(dep_on "$r")'" --export-json "$json" "$build" >/dev/null
         $runner sh -c "$(dep_off "$r")" ;;
  esac
}
# Sizes of the final images (each tool's own figure).
# strata: the size report's bytes of content (a no-op rebuild with JSON progress); buildah: its
# uncompressed size; docker: the image's Size (uncompressed).
size_strata() {
  local c=$OUT/ctx/$1
  as_builder $S build --progress json -t "bench-$1" "$c" 2>&1 >/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    try: v = json.loads(l)
    except ValueError: continue
    if v.get("event") == "size-report": print("%.1fMB" % (v["report"]["content"] / 1e6))'
}
size_buildah() { as_builder buildah images --format '{{.Name}} {{.Size}}' | awk -v t="localhost/bench-$1" '$1 == t {print $2 $3}'; }
size_docker() { $DH image inspect -f '{{.Size}}' "bench-$1" | awk '{printf "%.1fMB", $1/1e6}'; }

for r in $RECIPES; do
  for b in $BUILDERS; do
    for sc in cold noop change1 dep; do
      has $sc || continue
      echo "== $b $r $sc" >&2
      run $b $r $sc
    done
    # The final image as the last build left it (the dependency added), before another
    # scenario's cleaning removes it.
    if has dep; then size_$b "$r" >"$OUT/results/$b-$r.size"; fi
  done
done

# The floor: the same commands in a chroot of the same base, an empty cache each run.
if has floor; then
mkdir -p "$OUT/floor/root"
"$OUT/bin/strata" --root "$OUT/floor/store" load -i "$BASE" >/dev/null
"$OUT/bin/strata" --root "$OUT/floor/store" unpack python:latest "$OUT/floor/rootfs" >/dev/null
# A fresh root each run: /proc mounted, the device nodes a tool opens made (no /dev mount, and
# rm never leaves the root's filesystem), the host's resolver, the recipes' inputs.
R=$OUT/floor/root
prep="umount $R/proc 2>/dev/null; rm -rf --one-file-system $R && cp -a $OUT/floor/rootfs $R && cp /etc/resolv.conf $R/etc/ && mkdir -p $R/app && cp -r $OUT/ctx/uv/. $R/app/ && cp $OUT/ctx/pip/requirements.txt $R/tmp/ && rm -f $R/dev/null $R/dev/zero $R/dev/urandom && mknod -m 666 $R/dev/null c 1 3 && mknod -m 666 $R/dev/zero c 1 5 && mknod -m 666 $R/dev/urandom c 1 9 && mount -t proc proc $R/proc"
in_root="chroot $R env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8"
floor_pip="$in_root sh -c 'python3 -m venv /opt/venv && PIP_DISABLE_PIP_VERSION_CHECK=1 /opt/venv/bin/pip install -q -r /tmp/requirements.txt && useradd --create-home --uid 10001 app'"
floor_uv="$in_root sh -c 'python3 -m venv /opt/uv && /opt/uv/bin/pip install -q --disable-pip-version-check uv==0.13.9 && cd /app && export UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=0 UV_SYSTEM_CERTS=1 && /opt/uv/bin/uv sync -q --locked --no-install-project --no-dev && /opt/uv/bin/uv sync -q --locked --no-dev --no-editable && useradd --create-home --uid 10001 app'"
# Interleaved, pair by pair, so that both see the same network: the downloads from PyPI vary
# by seconds from one minute to the next, strata's overhead is the median of the pairs'
# differences. Each side starts after its own preparation is written back (sync), so neither
# pays for the other's or its own set-up's writeback, and the order alternates (floor first in
# odd pairs, strata first in even ones).
now() { date +%s%N; }
floor_once() { sh -c "$prep"; sync; local t0; t0=$(now); sh -c "$1" >/dev/null; echo $((($(now) - t0) / 1000000)); }
# strata's build writes JSON events (its default output's work, the size report included, not
# -q's): the commands' own times in them split its time into the commands' and strata's own.
strata_once() {
  as_builder sh -c "$strata_clean"; sync
  local t0; t0=$(now)
  as_builder sh -c "$S build --progress json -t bench-$1 $OUT/ctx/$1 2>$OUT/results/events-$1-$2.json >/dev/null"
  echo $((($(now) - t0) / 1000000))
}
for r in $RECIPES; do
  f=floor_$r
  echo "== floor $r, against strata cold" >&2
  : >"$OUT/results/floor-$r.tsv"
  # A first build, not timed, as the timed ones (JSON, so with the size report): it unpacks the
  # base, which the floor's untimed copy of the rootfs stands for, and reads its facts, which a
  # cold build (the cache emptied, the base kept) keeps.
  as_builder sh -c "$strata_clean; $S build --progress json -t bench-$r $OUT/ctx/$r >/dev/null 2>&1"
  for i in $(seq "$RUNS"); do
    if [ $((i % 2)) = 1 ]; then
      a=$(floor_once "${!f}"); b=$(strata_once "$r" "$i")
    else
      b=$(strata_once "$r" "$i"); a=$(floor_once "${!f}")
    fi
    printf '%s\t%s\n' "$a" "$b" >>"$OUT/results/floor-$r.tsv"
  done
done
fi

# Recipes 3 to 5, strata alone: a one-line code change (median of RUNS), after a first build.
extra=""
if [[ " $BUILDERS " == *" strata "* ]] && has extra; then
  for r in piptools:python-piptools:hello_piptools/__main__.py onbuild:python-onbuild/app:hello_onbuild/__main__.py extension:python-extension:hello_ext.py; do
    IFS=: read -r n ex file <<<"$r"
    cp -r "$here/examples/$ex" "$OUT/ctx/$n"
    chmod -R a+rwX "$OUT/ctx/$n"
    if [ "$n" = onbuild ]; then
      cp -r "$here/examples/python-onbuild/parent" "$OUT/ctx/onbuild-parent"
      as_builder $S build -q -t strata-examples/python-onbuild "$OUT/ctx/onbuild-parent" >/dev/null
    fi
    echo "== strata $n change1" >&2
    as_builder $S build -q -t "bench-$n" "$OUT/ctx/$n" >/dev/null
    as_builder hyperfine -N -r "$RUNS" --prepare "sh -c 'echo \"# \$(date +%s%N)\" >> $OUT/ctx/$n/$file'" \
      --export-json "$OUT/results/strata-$n-change1.json" "$S build -q -t bench-$n $OUT/ctx/$n" >/dev/null
    extra="$extra $n"
  done
fi

med() { [ -f "$1" ] || { echo -; return; }; python3 -c "import json,sys; print('%.3f' % json.load(open(sys.argv[1]))['results'][0]['median'])" "$1"; }
echo
for r in $RECIPES; do
  echo "recipe $r (median of $RUNS, seconds; size of the final image)"
  printf '%-10s %8s %8s %8s %8s %10s\n' builder cold noop change1 dep size
  for b in $BUILDERS; do
    printf '%-10s %8s %8s %8s %8s %10s\n' "$b" \
      "$(med "$OUT/results/$b-$r-cold.json")" "$(med "$OUT/results/$b-$r-noop.json")" \
      "$(med "$OUT/results/$b-$r-change1.json")" "$(med "$OUT/results/$b-$r-dep.json")" "$(cat "$OUT/results/$b-$r.size" 2>/dev/null)"
  done
  has floor && python3 - "$OUT/results/floor-$r.tsv" "$OUT/results/events-$r" <<'PY'
import statistics, sys
pairs = [tuple(int(x) / 1000 for x in l.split()) for l in open(sys.argv[1]) if l.strip()]
fl = statistics.median(p[0] for p in pairs)
st = statistics.median(p[1] for p in pairs)
d = statistics.median(p[1] - p[0] for p in pairs)
print(f"floor: the same commands in a chroot {fl:.3f} s; strata cold in the same pairs {st:.3f} s; "
      f"strata over the floor (median of {len(pairs)} pairs' differences): {d:.3f} s")
diffs = sorted(p[1] - p[0] for p in pairs)
print("  the pairs' differences, sorted: " + " ".join(f"{x:.2f}" for x in diffs))
# Each strata build split by its events: the commands' time is the union of the RUN steps'
# command intervals ([at - seconds, at] of each 'ran' event; steps of parallel stages overlap),
# strata's own time the rest of the build's wall time.
import json
own, cmds = [], []
for i, p in enumerate(pairs, 1):
    spans = []
    for l in open(f"{sys.argv[2]}-{i}.json"):
        try:
            e = json.loads(l)
        except ValueError:
            continue
        if e.get("event") == "ran":
            spans.append((e["at"] - e["seconds"], e["at"]))
    union, end = 0.0, float("-inf")
    for a, b in sorted(spans):
        a = max(a, end)
        if b > a:
            union += b - a
            end = b
    cmds.append(union)
    own.append(p[1] - union)
slower = [c - p[0] for c, p in zip(cmds, pairs)]
print(f"  strata's builds split (medians): the commands {statistics.median(cmds):.3f} s (the floor ran them in "
      f"{fl:.3f} s; in the sandbox they took {statistics.median(slower):.3f} s more, median of the pairs), "
      f"strata's own work {statistics.median(own):.3f} s")
print("  strata's own work in each build: " + " ".join(f"{x:.2f}" for x in own))
print()
PY
done
if [ -n "$extra" ]; then
  echo "recipes 3-5, strata: rebuild after a one-line code change (median of $RUNS)"
  for n in $extra; do printf '%-10s %8s s\n' "$n" "$(med "$OUT/results/strata-$n-change1.json")"; done
fi
