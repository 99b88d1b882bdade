#!/usr/bin/env bash
# benches/expansion.sh: the time of `strata build` on Dockerfiles of N ENV lines (FROM scratch,
# nothing to run), N = 5,000 to 40,000, hyperfine medians in one invocation. Linear means each
# doubling of N doubles the time (it took 12-16 s for 10,000 lines and 51 s for 20,000 when
# every step hashed the whole environment into its cache key).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
command -v hyperfine >/dev/null || { echo "needs hyperfine (apt-get install hyperfine)" >&2; exit 1; }
(cd "$here" && cargo build --release --locked -q)
work=$(mktemp -d /tmp/strata-bench-expansion.XXXX)
trap 'rm -rf "$work"' EXIT
args=()
for n in 5000 10000 20000 40000; do
  mkdir -p "$work/$n"
  python3 -c "
print('FROM scratch')
for i in range($n): print(f'ENV V{i}=value{i}')
" >"$work/$n/Dockerfile"
  args+=(-n "$n ENV lines" "$here/target/release/strata --root $work/store-$n build -q -t e$n $work/$n")
done
hyperfine -N --warmup 1 --runs 5 --export-json "$work/r.json" "${args[@]}" >&2
python3 - "$work/r.json" <<'PY'
import json, sys
rs = json.load(open(sys.argv[1]))["results"]
base = rs[0]["median"]
for r in rs:
    print(f"{r['command']}: median {r['median']*1000:.0f} ms ({r['median']/base:.1f}x the 5,000-line build)")
PY
