#!/usr/bin/env bash
# Layer writing and reading speed and memory, against the reference tools in the same run.
#
#   benches/layer.sh [TREE]      (root; TREE defaults to the python rootfs of
#                                 ../shared/lab/make-base-images.sh, made under $LAB if missing)
#
# Measures with hyperfine (medians):
#   - a layer from TREE: strata (parallel gzip, zstd, none) vs `tar | gzip -6` and `tar | pigz -p2`
#   - sha256 of the uncompressed tar: strata's hashing path vs `openssl dgst -sha256` (SHA-NI)
# and peak RSS (GNU time) of writing and of applying a 1 GiB layer. `strata import` includes
# walking and reading the tree, both hashes, and writing and fsyncing the blob; the pure
# compression and hashing rates are in `cargo bench --bench layer`.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
LAB=${LAB:-/tmp/strata-bench}
mkdir -p "$LAB"
tree=${1:-}
if [ -z "$tree" ]; then
  tree=$LAB/base/rootfs/python
  if [ ! -d "$tree" ]; then
    bash "$here/../shared/lab/make-base-images.sh" "$LAB/base" python >&2
  fi
fi
for t in hyperfine pigz gzip openssl tar; do command -v $t >/dev/null || { echo "missing $t (apt-get install hyperfine pigz)" >&2; exit 1; }; done
cargo build --release --manifest-path "$here/Cargo.toml" >&2
strata=$here/target/release/strata
store=$LAB/store
out=$LAB/results
mkdir -p "$out"
size=$(du -sb "$tree" | cut -f1)
tar -C "$tree" --sort=name --numeric-owner -cf "$LAB/tree.tar" .
echo "tree: $tree, $(numfmt --to=iec $size) on disk, tar $(numfmt --to=iec $(stat -c %s $LAB/tree.tar))"

clean="rm -rf $store"
hyperfine --warmup 1 --runs 5 --export-json "$out/layer-write.json" \
  --prepare true --prepare true --prepare "$clean" --prepare "$clean" --prepare "$clean" \
  -n 'tar | gzip -6' "tar -C $tree --sort=name --numeric-owner -cf - . | gzip -6 > /dev/null" \
  -n 'tar | pigz -p2 -6' "tar -C $tree --sort=name --numeric-owner -cf - . | pigz -p2 -6 > /dev/null" \
  -n 'strata import (gzip, all cores)' "$strata --root $store import $tree bench:gz --compression gzip" \
  -n 'strata import (zstd)' "$strata --root $store import $tree bench:zst --compression zstd" \
  -n 'strata import (uncompressed)' "$strata --root $store import $tree bench:raw --compression none"

hyperfine --warmup 1 --runs 5 --export-json "$out/sha256.json" \
  --prepare true --prepare "$clean" \
  -n 'openssl dgst -sha256 (tar)' "openssl dgst -sha256 $LAB/tree.tar" \
  -n 'strata import of the tar (sha256 x2, no compression)' "$strata --root $store import $LAB/tree.tar bench:tar --compression none"

# Memory: a 1 GiB layer written and applied.
big=$LAB/big
if [ ! -f "$big/data" ]; then
  mkdir -p "$big"
  head -c 1073741824 /dev/urandom > "$big/data"
fi
rm -rf "$store" "$LAB/unpacked"
/usr/bin/time -f '%M' -o "$out/rss-write" "$strata" --root "$store" import "$big" big:1 --compression gzip >/dev/null
/usr/bin/time -f '%M' -o "$out/rss-apply" "$strata" --root "$store" unpack big:1 "$LAB/unpacked" >/dev/null
echo "peak RSS writing a 1 GiB layer: $(cat $out/rss-write) KiB; applying it: $(cat $out/rss-apply) KiB"
rm -rf "$LAB/unpacked"
