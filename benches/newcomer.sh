#!/usr/bin/env bash
# A newcomer's two-stage Flask app served by gunicorn (a venv built in one stage, copied into a
# non-root runtime stage), built and run by two strata binaries side by side, rootless as
# strata-test, with hyperfine: the paths a user takes every day, to see whether a change made
# any slower. Each binary has a store of its own; both use the python base image of
# scripts/test-deps.sh (target/test-images) as python:3.11-slim.
#
#   BEFORE=/path/to/old/strata AFTER=/path/to/new/strata bash benches/newcomer.sh [RUNS]
#
# Scenarios: cold (the build cache emptied, the base kept; pip downloads from PyPI, so its
# spread is the network's), noop, change1 (one line of the app changed), run (the app's
# venv's python starting in the runtime image), images (`strata images`). Needs root (to switch
# user), hyperfine and the python base image. Works under $OUT (default /var/tmp/strata-bench-
# newcomer), removed at the end.
set -euo pipefail
RUNS=${1:-10}
here=$(cd "$(dirname "$0")/.." && pwd)
BASE=${BASE:-$here/target/test-images/oci/python}
OUT=${OUT:-/var/tmp/strata-bench-newcomer}
: "${BEFORE:?the binary to compare against}" "${AFTER:?the binary under test}"
[ "$(id -u)" = 0 ] || { echo "run as root (the builds run as strata-test)" >&2; exit 1; }
[ -f "$BASE/index.json" ] || { echo "no python base image at $BASE (scripts/test-deps.sh makes it)" >&2; exit 1; }
rm -rf "$OUT"
mkdir -p "$OUT/bin" "$OUT/ctx/app" "$OUT/results"
cleanup() {
  for b in before after; do
    runuser -u strata-test -- "$OUT/bin/$b" --root "$OUT/store-$b" prune --all >/dev/null 2>&1 || true
  done
  rm -rf "$OUT"
}
trap cleanup EXIT
install -m 755 "$BEFORE" "$OUT/bin/before"
install -m 755 "$AFTER" "$OUT/bin/after"
cat >"$OUT/ctx/Dockerfile" <<'EOF'
FROM python:3.11-slim AS build
RUN python3 -m venv /opt/venv
COPY requirements.txt /tmp/requirements.txt
RUN --mount=type=cache,target=/root/.cache/pip /opt/venv/bin/pip install -r /tmp/requirements.txt
FROM python:3.11-slim
RUN useradd --create-home app
COPY --from=build /opt/venv /opt/venv
COPY app /srv/app
WORKDIR /srv
USER app
ENV PATH=/opt/venv/bin:$PATH
EXPOSE 8000
ENTRYPOINT ["gunicorn", "--bind", "0.0.0.0:8000", "app.main:app"]
EOF
printf 'flask==3.0.3\ngunicorn==22.0.0\n' >"$OUT/ctx/requirements.txt"
cat >"$OUT/ctx/app/main.py" <<'EOF'
from flask import Flask

app = Flask(__name__)


@app.get("/")
def hello():
    return "hello from a newcomer's app\n"
EOF
touch "$OUT/ctx/app/__init__.py"
chmod -R a+rwX "$OUT"
as_user() { runuser -u strata-test -- env -C "$OUT" HOME="$OUT" TMPDIR="$OUT" PATH=/usr/local/bin:/usr/bin:/bin "$@"; }
for b in before after; do
  S="$OUT/bin/$b --root $OUT/store-$b"
  as_user $S load -i "$BASE" >/dev/null
  as_user $S tag python:latest python:3.11-slim
  as_user $S build -q -t app "$OUT/ctx" >/dev/null
done
cmd() { echo "$OUT/bin/$1 --root $OUT/store-$1 $2"; }
build="build -q -t app $OUT/ctx"
as_user hyperfine -N -w 1 -r "$RUNS" --export-json "$OUT/results/noop.json" \
  -n before "$(cmd before "$build")" -n after "$(cmd after "$build")" >/dev/null
as_user hyperfine -N -r "$RUNS" --export-json "$OUT/results/change1.json" \
  --prepare "sh -c 'echo \"# \$(date +%s%N)\" >> $OUT/ctx/app/main.py'" \
  -n before "$(cmd before "$build")" -n after "$(cmd after "$build")" >/dev/null
as_user hyperfine -N -w 1 -r "$RUNS" --export-json "$OUT/results/run.json" \
  -n before "$(cmd before "run --entrypoint /opt/venv/bin/python app -c pass")" \
  -n after "$(cmd after "run --entrypoint /opt/venv/bin/python app -c pass")" >/dev/null
as_user hyperfine -N -w 1 -r "$RUNS" --export-json "$OUT/results/images.json" \
  -n before "$(cmd before images)" -n after "$(cmd after images)" >/dev/null
cold_runs=$(( RUNS < 5 ? RUNS : 5 ))
as_user hyperfine -N -r "$cold_runs" --export-json "$OUT/results/cold.json" \
  --prepare "sh -c '$(cmd before "prune --cache") >/dev/null; $(cmd after "prune --cache") >/dev/null; rm -rf $OUT/store-before/v1/cache-mounts $OUT/store-after/v1/cache-mounts'" \
  -n before "$(cmd before "$build")" -n after "$(cmd after "$build")" >/dev/null
python3 - "$OUT/results" <<'EOF'
import json, sys, os
d = sys.argv[1]
print("| scenario | before (median) | after (median) | after/before |")
print("|---|---|---|---|")
for sc in ["noop", "change1", "run", "images", "cold"]:
    r = {x["command"]: x for x in json.load(open(os.path.join(d, sc + ".json")))["results"]}
    b, a = r["before"]["median"], r["after"]["median"]
    fmt = lambda s: "%.1f ms" % (s * 1000) if s < 1 else "%.2f s" % s
    print(f"| {sc} | {fmt(b)} ±{fmt(r['before']['stddev'] or 0)} | {fmt(a)} ±{fmt(r['after']['stddev'] or 0)} | {a / b:.2f} |")
EOF
