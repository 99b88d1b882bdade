#!/usr/bin/env bash
# benches/scale.sh [SIZES] [RUNS]
#
# Speed at scale, as the unprivileged user strata-test (root when it does not exist):
#  1. A no-op rebuild of `FROM busybox` + `COPY . /ctx` over contexts of 2,000, 20,000 and
#     200,000 small files (100 per directory, committed to git), against `git status` on the
#     same tree in the same hyperfine invocation; prints the medians, the cost per file and the
#     ratio (target: strata no slower than git status).
#  2. The commit of a RUN step that creates 100,000 empty files: `build --no-cache` of that step
#     against the same step that deletes them again before it ends (so it commits nothing), the
#     difference being the commit (target ≤ 1 s).
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
echo "== no-op rebuild against git status, as $who (medians of $runs)"
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
  as hyperfine -N --warmup 3 --runs "$runs" --export-json "$work/noop-$n.json" \
    "$S build -q -t scale$n $ctx" "git -C $ctx status --porcelain" >/dev/null
  python3 - "$work/noop-$n.json" "$n" <<'PY'
import json, sys
r = [x["median"] for x in json.load(open(sys.argv[1]))["results"]]
n = int(sys.argv[2])
print(f"{n:9d} {r[0]*1000:10.1f}ms {r[1]*1000:10.1f}ms {r[0]/n*1e6:12.2f}us {r[1]/n*1e6:12.2f}us {r[0]/r[1]:7.2f}x")
PY
  as rm -rf "$ctx"
done
echo "== a RUN step that creates 100,000 files, as $who (medians of $runs)"
mkdir -p "$work/make" "$work/undo"
printf 'FROM bb:1\nRUN mkdir /d && cd /d && seq 1 100000 | xargs touch\n' > "$work/make/Dockerfile"
printf 'FROM bb:1\nRUN mkdir /d && cd /d && seq 1 100000 | xargs touch && cd / && rm -rf /d\n' > "$work/undo/Dockerfile"
chmod -R a+rwX "$work/make" "$work/undo"
as hyperfine -N --warmup 1 --runs "$runs" --export-json "$work/files.json" \
  "$S build -q --no-cache $work/make" "$S build -q --no-cache $work/undo" >/dev/null
python3 - "$work/files.json" <<'PY'
import json, sys
r = [x["median"] for x in json.load(open(sys.argv[1]))["results"]]
print(f"  build with the 100,000 files committed: {r[0]:.3f} s")
print(f"  the same step deleting them (nothing to commit): {r[1]:.3f} s")
print(f"  commit of the layer: {r[0]-r[1]:.3f} s (target <= 1 s)")
PY
