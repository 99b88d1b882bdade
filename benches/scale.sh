#!/usr/bin/env bash
# benches/scale.sh [SIZES] [RUNS]
#
# Speed at scale, as the unprivileged user strata-test (root when it does not exist):
#  1. A no-op rebuild of `FROM busybox` + `COPY . /ctx` over contexts of 2,000, 20,000 and
#     200,000 small files (100 per directory, committed to git), against `git status` on the
#     same tree in the same hyperfine invocation; prints the medians, the cost per file and the
#     ratio (target: strata no slower than git status).
#  2. The commit of 100,000 empty files: the layer of such a tree written by `strata import
#     --compression none`, the same tar writer and layer sink as a RUN step's commit (target
#     ≤ 1 s). Timing the RUN step itself does not isolate the commit here: creating or deleting
#     100,000 files in the step takes 10–25 s on this machine's disk, varying from run to run.
# Needs hyperfine and busybox-static. SIZES defaults to "2000 20000 200000", RUNS to 10.
# Works under $BENCH_TMP (default /var/tmp): on this lab machine creating files under /tmp (and
# /root) costs about 0.8 ms each against 0.03 ms under /var/tmp on the same ext4 filesystem,
# which would measure the disk layout, not strata.
set -euo pipefail
sizes=${1:-"2000 20000 200000"}
runs=${2:-10}
here=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release --locked --manifest-path "$here/Cargo.toml" >&2
work=$(mktemp -d "${BENCH_TMP:-/var/tmp}/strata-scale.XXXX")
chmod 1777 "$work"
trap 'rm -rf "$work"' EXIT
install -m 0755 "$here/target/release/strata" "$work/strata"
who=strata-test
id "$who" >/dev/null 2>&1 || who=root
as() { runuser -u "$who" -- env -C "$work" HOME="$work" "$@"; }
S="$work/strata --root $work/store"
as sh -c "set -e; r=$work/rootfs; mkdir -p \$r/bin \$r/etc \$r/tmp; cp /bin/busybox \$r/bin/; for a in sh mkdir touch seq xargs rm; do ln -s busybox \$r/bin/\$a; done; echo 'root:x:0:0::/root:/bin/sh' > \$r/etc/passwd; $S import \$r bb:1 >/dev/null"
echo "== no-op rebuild against git status, as $who (medians of at least $runs runs and 3 s)"
printf '%9s %12s %12s %14s %14s %8s\n' files strata "git status" "strata/file" "git/file" ratio
for n in $sizes; do
  ctx=$work/ctx-$n
  as python3 - "$ctx" "$n" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = os.path.join(root, f"d{i // 100:05d}")
    if i % 100 == 0:
        os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i % 100:02d}.txt"), "w") as f:
        f.write(f"file {i}\n")
with open(os.path.join(root, "Dockerfile"), "w") as f:
    f.write("FROM bb:1\nCOPY . /ctx\n")
with open(os.path.join(root, ".dockerignore"), "w") as f:
    f.write(".git\n")
PY
  as sh -c "cd $ctx && git init -q && git add -A && git -c gc.auto=0 -c user.name=b -c user.email=b@b commit -qm c"
  as $S build -q -t "scale$n" "$ctx" >/dev/null
  # At least RUNS runs and at least 3 s of each: a small tree's no-op takes milliseconds, and
  # ten of them are noise on this machine (1.25x one run, 0.95x the next).
  as hyperfine -N --warmup 5 --min-runs "$runs" --export-json "$work/noop-$n.json" \
    "$S build -q -t scale$n $ctx" "git -C $ctx status --porcelain" >/dev/null
  python3 - "$work/noop-$n.json" "$n" <<'PY'
import json, sys
r = [x["median"] for x in json.load(open(sys.argv[1]))["results"]]
n = int(sys.argv[2])
print(f"{n:9d} {r[0]*1000:10.1f}ms {r[1]*1000:10.1f}ms {r[0]/n*1e6:12.2f}us {r[1]/n*1e6:12.2f}us {r[0]/r[1]:7.2f}x")
PY
  as rm -rf "$ctx"
done
echo "== committing 100,000 files, as $who (medians of $runs)"
# The layer of a tree of 100,000 empty files made once: `strata import --compression none` (a
# build stores its layers uncompressed) writes it with the same
# tar writer and layer sink as a RUN step's commit, without the step around it.
as python3 - "$work/tree" <<'PY'
import os, sys
for i in range(100000):
    d = os.path.join(sys.argv[1], f"d{i // 1000:03d}")
    if i % 1000 == 0:
        os.makedirs(d, exist_ok=True)
    open(os.path.join(d, f"f{i % 1000:03d}"), "w").close()
PY
as hyperfine -N --warmup 1 --runs "$runs" --export-json "$work/import.json" \
  "$S import --compression none $work/tree tree:1" >/dev/null
python3 - "$work/import.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["results"][0]["median"]
print(f"  the layer of 100,000 files (strata import): {r:.3f} s (target <= 1 s)")
PY
as rm -rf "$work/tree"
