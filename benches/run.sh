#!/usr/bin/env bash
# The cost of a trivial RUN step: `strata run IMAGE true` on busybox (with its own network through
# slirp4netns, the default; an empty network namespace; the host's network), against running `true`
# directly and against the hand-made floor of ../shared/lab/userns-run-floor.sh (unshare +
# overlay + chroot), in the same hyperfine invocation, as root and as the unprivileged user
# strata-test (scripts/test-deps.sh makes it). Then the cost of one RUN step inside a build, which
# is what a Dockerfile pays: `strata build --no-cache` of 21 trivial RUN steps against 1, the
# difference divided by 20.
#   benches/run.sh          (as root; needs hyperfine and busybox-static)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release --manifest-path "$here/Cargo.toml" >&2
work=$(mktemp -d /tmp/strata-run-bench.XXXX)
chmod 1777 "$work"
trap 'rm -rf "$work"' EXIT
# A copy the unprivileged user can run wherever the checkout is.
install -m 0755 "$here/target/release/strata" "$work/strata"
strata=$work/strata
floor=$here/../shared/lab/userns-run-floor.sh
bench() { # USER
  local who=$1 d=$work/$1
  runuser -u "$who" -- mkdir -p "$d"
  runuser -u "$who" -- sh -c "set -e; r=$d/rootfs; mkdir -p \$r/bin \$r/etc \$r/proc \$r/tmp; cp /bin/busybox \$r/bin/; ln -s busybox \$r/bin/sh; ln -s busybox \$r/bin/true; ln -s busybox \$r/bin/mkdir; ln -s busybox \$r/bin/echo; echo 'root:x:0:0::/:/bin/sh' > \$r/etc/passwd; $strata --root $d/store import \$r bb:1 >/dev/null"
  local extra=()
  [ -f "$floor" ] && extra=(-n "floor: userns-run-floor.sh" "bash $floor $d/rootfs")
  echo "== as $who"
  runuser -u "$who" -- hyperfine -N --warmup 5 --runs 40 --export-json "$work/$who.json" \
    -n "strata run bb:1 true (its own network: slirp4netns)" "$strata --root $d/store run bb:1 true" \
    -n "strata run --network none bb:1 true" "$strata --root $d/store run --network none bb:1 true" \
    -n "strata run --network host bb:1 true" "$strata --root $d/store run --network host bb:1 true" \
    -n "true (the process alone)" "$d/rootfs/bin/true" "${extra[@]}"
  python3 - "$work/$who.json" <<'PY'
import json, sys
for r in json.load(open(sys.argv[1]))["results"]:
    print(f"  median {r['median'] * 1000:.1f} ms  {r['command']}")
PY
  runuser -u "$who" -- sh -c "mkdir -p $d/one $d/many; printf 'FROM bb:1\nRUN true\n' > $d/one/Dockerfile; { echo 'FROM bb:1'; for i in \$(seq 0 20); do echo \"RUN true \$i\"; done; } > $d/many/Dockerfile"
  local b="$strata --root $d/store build --no-cache --progress quiet"
  runuser -u "$who" -- hyperfine -N --warmup 2 --runs 15 --export-json "$work/$who-build.json" \
    -n "build: 1 RUN step" "$b $d/one" \
    -n "build: 21 RUN steps" "$b $d/many" \
    -n "build --network none: 21 RUN steps" "$b --network none $d/many" >/dev/null
  python3 - "$work/$who-build.json" <<'PY'
import json, sys
r = {x["command"]: x["median"] for x in json.load(open(sys.argv[1]))["results"]}
one = r["build: 1 RUN step"]
for name in ("build: 21 RUN steps", "build --network none: 21 RUN steps"):
    print(f"  median {(r[name] - one) / 20 * 1000:.1f} ms  one more RUN step in a build ({name.split(':')[0]})")
PY
}
bench root
id strata-test >/dev/null 2>&1 && bench strata-test
