#!/usr/bin/env bash
# benches/build.sh [RUNS]
#
# strata build against buildah, both rootless, on the lab's contexts
# (../shared/lab/make-bench-contexts.sh): `big` is two busybox stages plus a COPY of 2,000
# small files and 50 MiB. Scenarios (../shared/lab/bench-peers.sh, the same script for both
# builders, so both are measured the same way in the same run):
#   big-cold     cache emptied before each run (strata: rmi + prune --cache; buildah: rmi --prune)
#   big-noop     everything cached
#   big-change1  one small file of the COPY'd context rewritten before each run
# Each builder first builds the two-stage `ms` context, exports it as an OCI layout and runs
# it (checks the output), so a builder that is fast and wrong shows up.
# Also measures strata's peak RSS (GNU time) over cold builds of `big`.
#
# Needs root (to create and switch to the unprivileged user `builder`), hyperfine, buildah,
# skopeo, jq, bc. Base images come from ../shared/lab/make-base-images.sh (busybox and
# python; about a minute the first time). Results: $OUT/results/*.summary.tsv.
set -euo pipefail
RUNS=${1:-10}
here=$(cd "$(dirname "$0")/.." && pwd)
LAB=${LAB:-$(cd "$here/../shared/lab" && pwd)}
OUT=${OUT:-/tmp/strata-bench-build}
BASE=${BASE:-/tmp/lab/base}
[ "$(id -u)" = 0 ] || { echo "run as root (the builds run as the unprivileged user builder)" >&2; exit 1; }
for t in hyperfine buildah skopeo jq bc; do
  command -v $t >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $t >/dev/null
done
bash "$LAB/setup-builder-user.sh" builder >/dev/null
# crun (run-oci.sh, buildah) refuses hybrid cgroup hosts like this one until this is done.
bash "$LAB/fix-cgroup-hybrid.sh" >/dev/null
[ -d "$BASE/oci/all" ] || bash "$LAB/make-base-images.sh" "$BASE" all
mkdir -p "$OUT/bin"
bash "$LAB/make-bench-contexts.sh" "$OUT/ctx" >/dev/null
(cd "$here" && cargo build --release --locked -q)
install -m 755 "$here/target/release/strata" "$OUT/bin/strata"
chmod -R a+rwX "$OUT" "$BASE/oci"
chmod a+rx "$BASE"
uid=$(id -u builder)
as_builder() {
  runuser -u builder -- env -C /tmp HOME=/home/builder XDG_RUNTIME_DIR=/run/user/$uid \
    PATH=/usr/local/bin:/usr/bin:/bin "$@"
}
S=$OUT/bin/strata R=$OUT/store
rm -rf "$OUT/results"
as_builder env CUSTOM_ROOTLESS=1 \
  CUSTOM_BUILD="$S --root $R build -q -t {tag} {ctx}" \
  CUSTOM_CLEAN="$S --root $R rmi bench-ms bench-big bench-py >/dev/null 2>&1; $S --root $R prune --cache >/dev/null" \
  CUSTOM_EXPORT="$S --root $R save --format oci-dir -o {dir} {tag} && $here/benches/retag-latest.sh {dir}" \
  CUSTOM_LOAD="$S --root $R load -i {layout}" \
  CUSTOM_LIST="$S --root $R images" \
  SKIP_PY=${SKIP_PY:-1} SCENARIOS="big-cold big-noop big-change1" \
  bash "$LAB/bench-peers.sh" custom-strata "$BASE/oci/all" "$OUT/ctx" "$OUT/results" "$RUNS"
as_builder env SKIP_PY=${SKIP_PY:-1} SCENARIOS="big-cold big-noop big-change1" \
  bash "$LAB/bench-peers.sh" buildah-rootless-overlay "$BASE/oci/all" "$OUT/ctx" "$OUT/results" "$RUNS"
# Peak memory of strata's cold build of `big` (median of 5).
rss=$(for i in 1 2 3 4 5; do
  as_builder sh -c "$S --root $R rmi bench-big >/dev/null 2>&1; $S --root $R prune --cache >/dev/null"
  as_builder /usr/bin/time -f '%M' "$S" --root "$R" build -q -t bench-big "$OUT/ctx/big" 2>&1 >/dev/null | tail -1
done | sort -n | sed -n 3p)
echo
echo "strata peak RSS, cold build of big (median of 5): $((rss / 1024)) MiB ($rss KiB)"
cat "$OUT/results/"*.summary.tsv
