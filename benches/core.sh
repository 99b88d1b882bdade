#!/usr/bin/env bash
# Two strata binaries side by side on the engine's hot paths, rootless as strata-test, in one
# hyperfine invocation per scenario (so a loaded machine weighs on both alike): for a change to
# the engine's core that must not make anything slower (issue 28).
#
#   BEFORE=/path/to/old/strata AFTER=/path/to/new/strata bash benches/core.sh [RUNS]
#
# Scenarios, each binary with a store of its own:
#   run       `strata run bb:1 true` on a busybox image (the sandbox's floor)
#   step      one more RUN step in a build: `build --no-cache` of 21 trivial RUN steps against 1,
#             the difference of the medians divided by 20
#   noop      a two-stage busybox build, nothing changed
#   change1   the same build after one context file changed (a COPY and the steps after it)
#   pull      the python base image (one 73 MB gzip layer) from Debian's docker-registry on
#             127.0.0.1 into an empty store
# Needs root (to switch user), hyperfine, busybox-static, docker-registry, skopeo and the python
# base of scripts/test-deps.sh (target/test-images/oci/python). Works under $OUT (default
# /var/tmp/strata-bench-core), removed at the end. Prints a markdown table of medians and the
# after/before ratio.
set -euo pipefail
RUNS=${1:-15}
here=$(cd "$(dirname "$0")/.." && pwd)
LAB=${LAB:-$(cd "$here/../shared/lab" && pwd)}
BASE=${BASE:-$here/target/test-images/oci/python}
OUT=${OUT:-/var/tmp/strata-bench-core}
PORT=${PORT:-5111}
: "${BEFORE:?the binary to compare against}" "${AFTER:?the binary under test}"
[ "$(id -u)" = 0 ] || { echo "run as root (the builds run as strata-test)" >&2; exit 1; }
for t in hyperfine skopeo docker-registry python3; do
  command -v $t >/dev/null || { echo "missing $t" >&2; exit 1; }
done
[ -f "$BASE/index.json" ] || { echo "no python base image at $BASE (scripts/test-deps.sh makes it)" >&2; exit 1; }
rm -rf "$OUT"
mkdir -p "$OUT/bin" "$OUT/results"
chmod 0777 "$OUT/results"
cleanup() {
  bash "$LAB/registry.sh" stop "$OUT/reg" "$PORT" >/dev/null 2>&1 || true
  for b in before after; do
    runuser -u strata-test -- "$OUT/bin/$b" --root "$OUT/store-$b" prune --all >/dev/null 2>&1 || true
  done
  chmod -R u+rwX "$OUT" 2>/dev/null || true
  rm -rf "$OUT"
}
trap cleanup EXIT
install -m 755 "$BEFORE" "$OUT/bin/before"
install -m 755 "$AFTER" "$OUT/bin/after"
chmod 0777 "$OUT"
as_user() { runuser -u strata-test -- env -C "$OUT" HOME="$OUT" TMPDIR="$OUT" PATH=/usr/local/bin:/usr/bin:/bin "$@"; }

# A busybox image and the build contexts, made by the user.
as_user sh -c "set -e; r=$OUT/rootfs; mkdir -p \$r/bin \$r/etc \$r/proc \$r/tmp; cp /bin/busybox \$r/bin/; for l in sh true mkdir echo cat; do ln -s busybox \$r/bin/\$l; done; echo 'root:x:0:0::/:/bin/sh' > \$r/etc/passwd
mkdir -p $OUT/one $OUT/many $OUT/app/src
printf 'FROM bb:1\nRUN true\n' > $OUT/one/Dockerfile
{ echo 'FROM bb:1'; for i in \$(seq 0 20); do echo \"RUN true \$i\"; done; } > $OUT/many/Dockerfile
printf 'FROM bb:1 AS build\nRUN mkdir -p /out && echo built > /out/x\nCOPY src /src\nRUN cat /src/* > /out/all\nFROM bb:1\nCOPY --from=build /out /out\nRUN cat /out/all\n' > $OUT/app/Dockerfile
for i in 1 2 3 4 5; do echo \$i > $OUT/app/src/f\$i; done"
for b in before after; do
  as_user "$OUT/bin/$b" --root "$OUT/store-$b" import "$OUT/rootfs" bb:1 >/dev/null
  as_user "$OUT/bin/$b" --root "$OUT/store-$b" build -q -t app "$OUT/app" >/dev/null
done
cmd() { echo "$OUT/bin/$1 --root $OUT/store-$1 $2"; }
hf() { local name=$1; shift; as_user hyperfine -N --runs "$RUNS" --export-json "$OUT/results/$name.json" "$@" >/dev/null; }

hf run -w 3 -n before "$(cmd before "run bb:1 true")" -n after "$(cmd after "run bb:1 true")"
q="build --no-cache --progress quiet"
hf step -w 1 -n "before 1" "$(cmd before "$q $OUT/one")" -n "after 1" "$(cmd after "$q $OUT/one")" \
  -n "before 21" "$(cmd before "$q $OUT/many")" -n "after 21" "$(cmd after "$q $OUT/many")"
build="build -q -t app $OUT/app"
hf noop -w 1 -n before "$(cmd before "$build")" -n after "$(cmd after "$build")"
hf change1 --prepare "sh -c 'date +%s%N > $OUT/app/src/f1'" \
  -n before "$(cmd before "$build")" -n after "$(cmd after "$build")"

bash "$LAB/registry.sh" start "$OUT/reg" "$PORT" >/dev/null
REF=127.0.0.1:$PORT/library/python:3.11-slim
skopeo copy -q --dest-tls-verify=false "oci:$BASE:latest" "docker://$REF"
hf pull --prepare "rm -rf $OUT/p-before $OUT/p-after" \
  -n before "$OUT/bin/before --root $OUT/p-before pull -q $REF" \
  -n after "$OUT/bin/after --root $OUT/p-after pull -q $REF"

python3 - "$OUT/results" <<'PY'
import json, os, sys
d = sys.argv[1]
def med(name):
    return {r["command"]: r["median"] * 1000 for r in json.load(open(os.path.join(d, name + ".json")))["results"]}
rows = []
for name, what in [("run", "`strata run bb:1 true`"), ("noop", "two-stage build, nothing changed"),
                   ("change1", "two-stage build, one context file changed"), ("pull", "pull of the python base (73 MB) into an empty store")]:
    m = med(name)
    rows.append((what, m["before"], m["after"]))
m = med("step")
rows.append(("one more RUN step in a build (21 vs 1, /20)", (m["before 21"] - m["before 1"]) / 20, (m["after 21"] - m["after 1"]) / 20))
print("| scenario | before (median) | after (median) | after/before |")
print("|---|---|---|---|")
for what, b, a in rows:
    print(f"| {what} | {b:.1f} ms | {a:.1f} ms | {a / b:.2f} |")
PY
