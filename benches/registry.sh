#!/usr/bin/env bash
# benches/registry.sh [RUNS]
#
# Pull and push of the python base image (../shared/lab/make-base-images.sh: Debian's python3,
# one gzip layer of ~73 MB) through Debian's docker-registry on 127.0.0.1, every tool rootless
# as the unprivileged user `builder`, in one run, hyperfine medians:
#   pull          into an empty store: strata pull (verified blobs in the store); strata pull
#                 + unpack (`strata run IMAGE true`: the layer unpacked in the user namespace,
#                 ready for RUN); skopeo copy to an OCI layout + umoci unpack; buildah pull
#   push          of the same image to a new repository of a second registry (no mount can
#                 help): strata push, skopeo copy from the OCI layout, buildah push
#   pull again    of an unchanged reference already in the store (strata: one manifest HEAD)
# and strata's peak RSS (GNU time) for a pull into an empty store.
#
# Needs root (to create and switch to `builder`), hyperfine, skopeo, umoci, buildah,
# docker-registry, jq. Results: $OUT/*.json and a markdown table on stdout.
set -euo pipefail
RUNS=${1:-10}
here=$(cd "$(dirname "$0")/.." && pwd)
LAB=${LAB:-$(cd "$here/../shared/lab" && pwd)}
OUT=${OUT:-/tmp/strata-bench-registry}
BASE=${BASE:-$here/target/test-images}
[ "$(id -u)" = 0 ] || { echo "run as root (the tools run as the unprivileged user builder)" >&2; exit 1; }
for t in hyperfine skopeo umoci buildah docker-registry jq; do
  command -v $t >/dev/null || { echo "missing $t (scripts/test-deps.sh installs most; apt-get install hyperfine)" >&2; exit 1; }
done
bash "$LAB/setup-builder-user.sh" builder >/dev/null
bash "$LAB/fix-cgroup-hybrid.sh" >/dev/null
[ -f "$BASE/oci/python/index.json" ] || bash "$LAB/make-base-images.sh" "$BASE" python
rm -rf "$OUT"
mkdir -p "$OUT/bin"
chmod 0777 "$OUT"
(cd "$here" && cargo build --release --locked -q)
install -m 755 "$here/target/release/strata" "$OUT/bin/strata"
chmod -R a+rX "$BASE/oci"
uid=$(id -u builder)
# buildah with native overlay storage of its own (not the vfs default of a new user).
mkdir -p "$OUT/buildah"
cat >"$OUT/buildah/storage.conf" <<EOF
[storage]
driver = "overlay"
runroot = "/run/user/$uid/strata-bench-buildah"
graphroot = "$OUT/buildah/storage"
EOF
chmod -R a+rwX "$OUT/buildah"
as_builder() {
  runuser -u builder -- env -C /tmp HOME=/home/builder XDG_RUNTIME_DIR=/run/user/$uid \
    CONTAINERS_REGISTRIES_CONF=/dev/null CONTAINERS_STORAGE_CONF=$OUT/buildah/storage.conf \
    PATH=/usr/local/bin:/usr/bin:/bin "$@"
}
SRC_PORT=${SRC_PORT:-5101} DST_PORT=${DST_PORT:-5102}
cleanup() {
  bash "$LAB/registry.sh" stop "$OUT/reg-src" "$SRC_PORT" >/dev/null 2>&1 || true
  bash "$LAB/registry.sh" stop "$OUT/reg-dst" "$DST_PORT" >/dev/null 2>&1 || true
  as_builder buildah rmi -a -f >/dev/null 2>&1 || true
  chmod -R u+rwX "$OUT" 2>/dev/null || true
}
trap cleanup EXIT
bash "$LAB/registry.sh" start "$OUT/reg-src" "$SRC_PORT" >/dev/null
bash "$LAB/registry.sh" start "$OUT/reg-dst" "$DST_PORT" >/dev/null
REF=127.0.0.1:$SRC_PORT/library/python:3.11-slim
skopeo copy -q --dest-tls-verify=false "oci:$BASE/oci/python:latest" "docker://$REF"
S=$OUT/bin/strata W=$OUT/work
as_builder mkdir -p "$W"
hf() {
  local name=$1; shift
  as_builder hyperfine -N --runs "$RUNS" --warmup 1 --export-json "$W/$name.json" "$@" >/dev/null
}
# Pull into an empty store / layout / storage. hyperfine runs as root here so that each run
# starts with the page cache dropped (the previous run's 180 MB of deleted files otherwise make
# each next run of every tool slower on this VM: 3.4 s, 6.2 s, 11.8 s for the same command);
# the commands themselves run as builder.
AB="runuser -u builder -- env -C /tmp HOME=/home/builder XDG_RUNTIME_DIR=/run/user/$uid CONTAINERS_REGISTRIES_CONF=/dev/null CONTAINERS_STORAGE_CONF=$OUT/buildah/storage.conf PATH=/usr/local/bin:/usr/bin:/bin"
fresh() { echo "sh -c '$AB $1; sync; echo 3 > /proc/sys/vm/drop_caches'"; }
hyperfine -N --runs "$RUNS" --export-json "$W/pull.json" \
  --prepare "$(fresh "rm -rf $W/s1")" -n "strata pull" "$AB $S --root $W/s1 pull -q $REF" \
  --prepare "$(fresh "rm -rf $W/s2")" -n "strata pull + unpack" "$AB $S --root $W/s2 run $REF true" \
  --prepare "$(fresh "sh -c \"rm -rf $W/o; mkdir -p $W/o\"")" -n "skopeo copy + umoci unpack" \
  "$AB sh -c 'skopeo copy -q --src-tls-verify=false docker://$REF oci:$W/o/l:t && umoci unpack --rootless --image $W/o/l:t $W/o/b'" \
  --prepare "$(fresh "buildah rmi -a -f")" -n "buildah pull" "$AB buildah pull -q --tls-verify=false docker://$REF" >/dev/null
# Push to a new repository of the second registry each run.
as_builder "$S" --root "$W/p" pull -q "$REF" >/dev/null
as_builder buildah pull -q --tls-verify=false "docker://$REF" >/dev/null
hf push \
  --prepare "sh -c 'date +%s%N > $W/n'" -n "strata push" \
  "sh -c '$S --root $W/p push -q $REF 127.0.0.1:$DST_PORT/s\$(cat $W/n)/python:1'" \
  --prepare "sh -c 'date +%s%N > $W/n'" -n "skopeo copy (OCI layout → registry)" \
  "sh -c 'skopeo copy -q --dest-tls-verify=false oci:$BASE/oci/python:latest docker://127.0.0.1:$DST_PORT/k\$(cat $W/n)/python:1'" \
  --prepare "sh -c 'date +%s%N > $W/n'" -n "buildah push" \
  "sh -c 'buildah push -q --tls-verify=false $REF docker://127.0.0.1:$DST_PORT/b\$(cat $W/n)/python:1'"
# Pull again: unchanged.
hf repull -n "strata pull (unchanged)" "$S --root $W/p pull -q $REF" \
  -n "skopeo inspect (one manifest, for scale)" "skopeo inspect --tls-verify=false --raw docker://$REF"
rss=$(for i in 1 2 3 4 5; do
  as_builder rm -rf "$W/m"
  as_builder /usr/bin/time -f '%M' "$S" --root "$W/m" pull -q "$REF" 2>&1 >/dev/null | tail -1
done | sort -n | sed -n 3p)
echo "| scenario | command | median | min | max |"
echo "|---|---|---|---|---|"
for f in pull push repull; do
  jq -r --arg f "$f" '.results[] | "| \($f) | \(.command) | \(.median*1000|floor) ms | \(.min*1000|floor) ms | \(.max*1000|floor) ms |"' "$W/$f.json"
done
echo
echo "strata peak RSS, pull into an empty store (median of 5): $((rss / 1024)) MiB ($rss KiB)"
