#!/usr/bin/env bash
# benches/multiplatform.sh [RUNS]
#
# The two-platform Python example (examples/python-multiplatform: linux/amd64 + linux/arm64,
# the arm64 RUN steps under QEMU) built by
#   strata    rootless, as the user strata-test, with NOTHING registered on the host: strata
#             registers QEMU in a binfmt_misc instance of its own user namespace (Linux 6.7+);
#   BuildKit  dockerd 20.10's built-in BuildKit as root (../shared/lab/dockerd.sh), with QEMU
#             (Debian's qemu-aarch64-static, flags POCF) registered in the HOST's binfmt_misc
#             for it: this script registers it right before the BuildKit part and removes it
#             right after (and on any exit, by a trap); a handler of the same name the host had
#             already is recorded, replaced for that time, and put back as it was (its
#             enabled/disabled state too); binfmt_misc is mounted on /proc/sys/fs/binfmt_misc
#             only if it was not, and unmounted again.
# Both pull the same base, a two-platform python index (target/test-images/oci/python and
# python-arm64, combined with `strata manifest create`) from the same local registry (Debian's
# docker-registry on 127.0.0.1, ../shared/lab/registry.sh, stopped by pid); the Dockerfile's
# FROM/ARG python:… references are rewritten to 127.0.0.1:PORT/python:… (the `# syntax=` line
# is left out: BuildKit would pull its frontend). Scenarios, RUNS runs each (default 3: cold
# builds are slow under emulation), hyperfine medians:
#   cold     an empty store: strata `prune --all` and the store removed; BuildKit every image
#            removed and `docker builder prune -af` (the base is pulled again by both)
#   change1  one line appended to the app's code, everything else cached
# dockerd 20.10's BuildKit builds one platform per `docker build` (buildx, which builds a list,
# is not packaged by Debian and cannot be fetched here): BuildKit's side is two concurrent
# `docker build --platform linux/amd64` and `--platform linux/arm64` (one daemon, one BuildKit:
# the two builds share the context transfer, the base and the cache mounts where they can),
# timed together as one command. strata's side is one `strata build --platform
# linux/amd64,linux/arm64` (one image index).
# Then, strata alone: the cross route (Dockerfile.cross: a $BUILDPLATFORM builder fetching the
# arm64 wheels, no pip under QEMU), cold and change1; and the cost of one emulated RUN step over
# a native one: a busybox image (two-platform index in the same registry), Dockerfiles of 1 and
# 1+STEPS trivial `RUN true` steps built with --no-cache for linux/amd64 and for linux/arm64,
# rootless; per step = (t(1+STEPS) - t(1)) / STEPS (the session's one-off QEMU registration
# cancels out), hyperfine medians of STEP_RUNS (default 10).
#
# Needs root, Linux 6.7+, hyperfine, skopeo, docker-registry, docker.io, qemu-user-static, the
# user strata-test, and the bases of scripts/test-deps.sh in target/test-images/oci (python,
# python-arm64, busybox-arm64; the amd64 busybox is made here by ../shared/lab/make-base-images.sh). Works under $OUT (default
# /var/tmp/strata-bench-multiplatform), removed at the end unless KEEP=1; RESULTS=DIR keeps the
# results elsewhere.
# PARTS="strata docker cross steps profile" picks parts (profile: after the emulated route's
# scenarios, one more cold build of each with its steps' times: strata's JSON events, BuildKit's
# plain progress); EXAMPLE=DIR another context (its Dockerfile,
# Dockerfile.cross and the file the change appends to, APP_FILE=relative/path).
set -euo pipefail
RUNS=${1:-3}
STEPS=${STEPS:-20}
STEP_RUNS=${STEP_RUNS:-10}
PARTS=${PARTS:-"strata docker cross steps profile"}
has() { [[ " $PARTS " == *" $1 "* ]]; }
here=$(cd "$(dirname "$0")/.." && pwd)
LAB=${LAB:-$here/../shared/lab}
OUT=${OUT:-/var/tmp/strata-bench-multiplatform}
RESULTS=${RESULTS:-$OUT/results} # the JSON and logs; outside $OUT they outlive the run
IMGS=${STRATA_TEST_IMAGES:-$here/target/test-images}/oci
EXAMPLE=${EXAMPLE:-$here/examples/python-multiplatform}
WHO=strata-test
# --- The host's binfmt_misc, for the BuildKit part only -------------------------------------
BINFMT=${BINFMT:-/proc/sys/fs/binfmt_misc}
NAME=qemu-aarch64
QEMU=$(command -v qemu-aarch64-static || true)
# QEMU's aarch64 magic and mask (as strata::sandbox::binfmt and benches/emulation.sh).
MAGIC='\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00'
MASK='\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff'
host_mounted=0 host_registered=0 host_saved="" host_status=""
hexesc() { sed 's/../\\x&/g'; } # 7f45 -> \x7f\x45
# The registration line that puts back a handler as /proc shows it (NAME, its entry's text).
line_of_entry() {
  local name=$1 text=$2 interp flags offset magic mask ext
  interp=$(sed -n 's/^interpreter //p' <<<"$text")
  flags=$(sed -n 's/^flags: //p' <<<"$text")
  offset=$(sed -n 's/^offset //p' <<<"$text")
  magic=$(sed -n 's/^magic //p' <<<"$text")
  mask=$(sed -n 's/^mask //p' <<<"$text")
  ext=$(sed -n 's/^extension \.//p' <<<"$text")
  if [ -n "$magic" ]; then
    printf ':%s:M:%s:%s:%s:%s:%s' "$name" "${offset:-0}" "$(hexesc <<<"$magic")" "$(hexesc <<<"$mask")" "$interp" "$flags"
  else
    printf ':%s:E::%s::%s:%s' "$name" "$ext" "$interp" "$flags"
  fi
}
host_register() {
  if ! mountpoint -q "$BINFMT"; then
    mount -t binfmt_misc binfmt_misc "$BINFMT"
    host_mounted=1
  fi
  host_status=$(cat "$BINFMT/status")
  [ "$host_status" = enabled ] || echo 1 >"$BINFMT/status"
  if [ -e "$BINFMT/$NAME" ]; then
    host_saved=$(cat "$BINFMT/$NAME")
    echo -1 >"$BINFMT/$NAME"
  fi
  printf ':%s:M:0:%s:%s:%s:POCF' "$NAME" "$MAGIC" "$MASK" "$QEMU" >"$BINFMT/register"
  host_registered=1
}
host_restore() {
  if [ "$host_registered" = 1 ]; then
    [ -e "$BINFMT/$NAME" ] && echo -1 >"$BINFMT/$NAME"
    host_registered=0
    if [ -n "$host_saved" ]; then
      line_of_entry "$NAME" "$host_saved" >"$BINFMT/register"
      head -n1 <<<"$host_saved" | grep -qx disabled && echo 0 >"$BINFMT/$NAME"
      host_saved=""
    fi
  fi
  if [ -n "$host_status" ]; then
    [ "$host_status" = enabled ] || echo 0 >"$BINFMT/status"
    host_status=""
  fi
  if [ "$host_mounted" = 1 ]; then
    umount "$BINFMT"
    host_mounted=0
  fi
}
host_state() { # what the host has, for the log: the mount and any qemu-aarch64 entry
  if mountpoint -q "$BINFMT"; then
    echo "binfmt_misc mounted; entries: $(ls "$BINFMT" | grep -vx 'register\|status' | tr '\n' ' ')"
  else
    echo "binfmt_misc not mounted"
  fi
}
# `BINFMT=DIR benches/multiplatform.sh --selftest` (in a user and mount namespace of its own,
# with binfmt_misc mounted on DIR): the register/restore round trip against a handler that was
# there, enabled or disabled, and against none. It never touches the host's instance.
if [ "${1:-}" = --selftest ]; then
  [ "$BINFMT" != /proc/sys/fs/binfmt_misc ] || { echo "--selftest needs BINFMT=DIR" >&2; exit 1; }
  host_mounted=2 # mounted by the caller: never unmounted here
  snap() { for f in "$BINFMT"/*; do [ "${f##*/}" = register ] || { echo "== ${f##*/}"; cat "$f"; }; done; }
  ok=0
  for pre in none enabled disabled instance-disabled; do
    [ -e "$BINFMT/$NAME" ] && echo -1 >"$BINFMT/$NAME"
    echo 1 >"$BINFMT/status"
    [ $pre != instance-disabled ] || echo 0 >"$BINFMT/status"
    if [ $pre = enabled ] || [ $pre = disabled ]; then
      printf ':%s:M:0:%s:%s:/bin/true:OC' "$NAME" "$MAGIC" "$MASK" >"$BINFMT/register"
      [ $pre = enabled ] || echo 0 >"$BINFMT/$NAME"
    fi
    before=$(snap)
    host_register
    grep -q "flags: POCF" "$BINFMT/$NAME" || { echo "selftest $pre: not registered"; ok=1; }
    host_restore
    [ "$before" = "$(snap)" ] && echo "selftest $pre: restored" || { echo "selftest $pre: NOT restored"; diff <(echo "$before") <(snap) || true; ok=1; }
  done
  [ -e "$BINFMT/$NAME" ] && echo -1 >"$BINFMT/$NAME"
  echo 1 >"$BINFMT/status"
  exit $ok
fi
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
[ -f "$LAB/dockerd.sh" ] || { echo "no lab scripts at $LAB (set LAB=DIR: the test lab's registry.sh and dockerd.sh)" >&2; exit 1; }
for i in python python-arm64 busybox-arm64; do
  [ -f "$IMGS/$i/index.json" ] || { echo "no base at $IMGS/$i (scripts/test-deps.sh makes it)" >&2; exit 1; }
done
[ -f "$EXAMPLE/Dockerfile" ] || { echo "no Dockerfile in $EXAMPLE" >&2; exit 1; }
id "$WHO" >/dev/null 2>&1 || { echo "no user $WHO (scripts/test-deps.sh makes it)" >&2; exit 1; }
for t in hyperfine skopeo docker-registry qemu-aarch64-static; do
  command -v $t >/dev/null || { echo "$t is missing (apt-get install hyperfine skopeo docker-registry qemu-user-static)" >&2; exit 1; }
done
[ -x /usr/bin/docker ] && command -v dockerd >/dev/null || { echo "docker.io is missing" >&2; exit 1; }
DOCKER=/usr/bin/docker
[ "$(stat -c %a /dev/net/tun)" = 666 ] || { echo "/dev/net/tun is not 0666 (rootless RUN networking needs it: chmod 0666 /dev/net/tun)" >&2; exit 1; }
bash "$LAB/fix-cgroup-hybrid.sh" >/dev/null

if mountpoint -q "$BINFMT" && [ -e "$BINFMT/$NAME" ]; then
  echo "note: the host has a $NAME handler already; it is replaced during the BuildKit part only and put back" >&2
fi

# --- Work dir, clean-up ---------------------------------------------------------------------
uid=$(id -u "$WHO")
rm -rf --one-file-system "$OUT"
mkdir -p "$OUT/bin" "$OUT/ctx" "$OUT/home"
rm -rf "${RESULTS:?}"/*.json "${RESULTS:?}"/*.log "$RESULTS/machine.txt" 2>/dev/null || true
mkdir -p "$RESULTS"
chmod a+rwx "$RESULTS"
cleanup() {
  host_restore || echo "WARNING: could not restore the host's binfmt_misc: $(host_state)" >&2
  bash "$LAB/dockerd.sh" stop "$OUT/docker" >/dev/null 2>&1 || true
  bash "$LAB/registry.sh" stop "$OUT/registry" 0 >/dev/null 2>&1 || true
  if [ "${KEEP:-0}" != 1 ]; then
    for s in strata strata-steps-amd64 strata-steps-arm64; do
      [ -d "$OUT/$s" ] && runuser -u "$WHO" -- "$OUT/bin/strata" --root "$OUT/$s" prune --all >/dev/null 2>&1 || true
    done
    rm -rf --one-file-system "$OUT"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
as_user() {
  runuser -u "$WHO" -- env -C "$OUT" HOME="$OUT/home" PATH=/usr/local/bin:/usr/bin:/bin "$@"
}
if [ -n "${STRATA_BIN:-}" ]; then
  install -m 755 "$STRATA_BIN" "$OUT/bin/strata"
else
  (cd "$here" && cargo build --release --locked -q)
  install -m 755 "$here/target/release/strata" "$OUT/bin/strata"
fi
S="$OUT/bin/strata --root $OUT/strata"
load() { cut -d' ' -f1-3 /proc/loadavg; }

# --- The registry and the two-platform bases -------------------------------------------------
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
REG=127.0.0.1:$port
# The python tags the registry has (the same index under each): a Dockerfile's python:TAG
# becomes $REG/python:TAG.
ALIASES="3.11-slim 3.11 3.11-slim-bookworm 3-slim 3 latest"
bash "$LAB/registry.sh" start "$OUT/registry" "$port" >/dev/null
# The amd64 busybox as the lab makes it (Debian's busybox-static, as the arm64 one; about 1 s).
bash "$LAB/make-base-images.sh" "$OUT/base" busybox >/dev/null 2>&1
for img in python busybox; do
  src=$IMGS/$img; [ $img = busybox ] && src=$OUT/base/oci/busybox
  skopeo copy -q --dest-tls-verify=false "oci:$src:latest" "docker://$REG/$img:amd64"
  skopeo copy -q --dest-tls-verify=false "oci:$IMGS/$img-arm64:latest" "docker://$REG/$img:arm64"
  tags=latest; [ $img = python ] && tags=$ALIASES
  for t in $tags; do
    "$OUT/bin/strata" --root "$OUT/manifest-store" manifest create -q -t "$REG/$img:$t" "$REG/$img:amd64" "$REG/$img:arm64" >/dev/null
  done
done
rm -rf "$OUT/manifest-store"
skopeo inspect --raw --tls-verify=false "docker://$REG/python:3.11-slim" |
  python3 -c 'import json,sys; m = json.load(sys.stdin); print("base index:", ", ".join(e["platform"]["os"] + "/" + e["platform"]["architecture"] for e in m["manifests"]))' >&2

# --- The contexts: the example with its python references pointed at the registry -----------
prep_ctx() { # SRC DEST DOCKERFILE
  cp -r "$1" "$2"
  [ "$3" = Dockerfile ] || cp "$1/$3" "$2/Dockerfile"
  sed -i -e '/^# syntax=/d' \
    -e "/^\(FROM\|ARG\)/I s#\([ =]\)\(docker\.io/\)\?\(library/\)\?python:#\1$REG/python:#g" "$2/Dockerfile"
  grep -qi "$REG/python:" "$2/Dockerfile" || { echo "no python: reference rewritten in $2/Dockerfile" >&2; exit 1; }
}
prep_ctx "$EXAMPLE" "$OUT/ctx/emu" Dockerfile
[ -f "$EXAMPLE/Dockerfile.cross" ] && prep_ctx "$EXAMPLE" "$OUT/ctx/cross" Dockerfile.cross
# The app's file a one-line change appends to: APP_FILE, else the example's __main__.py (else
# its first .py file).
[ -n "${APP_FILE:-}" ] || APP_FILE=$(cd "$EXAMPLE" && find . -name __main__.py -print -quit)
[ -n "$APP_FILE" ] || APP_FILE=$(cd "$EXAMPLE" && find . -name '*.py' -print -quit)
[ -f "$OUT/ctx/emu/$APP_FILE" ] || { echo "no app file $APP_FILE in $EXAMPLE (set APP_FILE)" >&2; exit 1; }
change() { echo "echo \"# \$(date +%s%N)\" >> $OUT/ctx/$1/$APP_FILE"; }
# The steps contexts: FROM busybox and 1 or 1+STEPS `RUN true`.
for n in 1 $((STEPS + 1)); do
  mkdir -p "$OUT/ctx/steps-$n"
  { echo "FROM $REG/busybox:latest"; for _ in $(seq "$n"); do echo "RUN true"; done; } >"$OUT/ctx/steps-$n/Dockerfile"
done
chmod -R a+rwX "$OUT"
chmod a+rx "$OUT"

# The images' machine, as each builder's own runner sees it (a wrong platform is a failed bench).
check_strata() { # TAG
  for p in amd64:x86_64 arm64:aarch64; do
    local m
    m=$(as_user $S run --rm --network none --platform "linux/${p%%:*}" "$1" python3 -c 'import platform; print(platform.machine())')
    [ "$m" = "${p#*:}" ] || { echo "strata image $1 linux/${p%%:*}: machine $m" >&2; exit 1; }
  done
}
check_docker() {
  for p in amd64:x86_64 arm64:aarch64; do
    local m
    m=$($DH run --rm --network none --platform "linux/${p%%:*}" "bench-mp:${p%%:*}" python3 -c 'import platform; print(platform.machine())')
    [ "$m" = "${p#*:}" ] || { echo "BuildKit image bench-mp:${p%%:*}: machine $m" >&2; exit 1; }
  done
}

echo "# $(date -u +%FT%TZ) kernel $(uname -r), $(nproc) cores, $("$QEMU" --version | head -n1), strata $(git -C "$here" rev-parse --short HEAD), docker $($DOCKER --version | cut -d' ' -f3 | tr -d ,)" >"$RESULTS/machine.txt"
echo "load at start: $(load)" >>"$RESULTS/machine.txt"

# --- strata: rootless, nothing on the host --------------------------------------------------
strata_clean="$S prune --all >/dev/null 2>&1; rm -rf $OUT/strata"
strata_build() { echo "$S build -q --platform linux/amd64,linux/arm64 -t bench-mp-$1 $OUT/ctx/$1"; }
# The python base as the index the registry has, loaded into strata's store and tagged with the
# names the Dockerfile pulls (a script strata-test runs: hyperfine prepares run it too).
skopeo copy -q --all --src-tls-verify=false "docker://$REG/python:3.11-slim" "oci:$OUT/pyindex:base"
chmod -R a+rX "$OUT/pyindex"
cat >"$OUT/bin/seed" <<EOF
#!/usr/bin/env bash
set -euo pipefail
loaded=\$($S load -i $OUT/pyindex | sed -n 's/^Loaded image: //p')
[ -n "\$loaded" ] || { echo "strata load printed no image name" >&2; exit 1; }
for t in $ALIASES; do
  $S rmi "$REG/python:\$t" >/dev/null 2>&1 || true
  $S tag "\$loaded" "$REG/python:\$t" >/dev/null
done
EOF
chmod 755 "$OUT/bin/seed"
seed_base() { as_user "$OUT/bin/seed"; }
strata_part() { # CTX
  local c=$1
  [ -d "$OUT/ctx/$c" ] || return 0
  [ "$(host_state)" = "binfmt_misc not mounted" ] || ! ls "$BINFMT" | grep -qx "$NAME" ||
    echo "note: the host has a $NAME handler (not from this benchmark) while strata runs" >&2
  # The cross route's two FROMs of one name for two platforms (the builder for
  # $BUILDPLATFORM, the runtime for the target) fail in one build from an empty store: the
  # store keeps the tag's first pulled platform and the other stage takes it ("base image …
  # has no linux/arm64 image (the one found is linux/amd64)"). Its cold builds start from the
  # base loaded as an index (no pull; the build cache and cache mounts empty).
  local clean=$strata_clean
  [ "$c" = emu ] || clean="$strata_clean; $OUT/bin/seed"
  echo "== strata $c cold ($RUNS runs; load $(load))" >&2
  as_user hyperfine -N -r "$RUNS" --prepare "sh -c '$clean'" \
    --export-json "$RESULTS/strata-$c-cold.json" "$(strata_build "$c")" >/dev/null ||
    { echo "strata $c failed; once more, with its output:" >&2; as_user $(strata_build "$c" | sed 's/ -q / --progress plain /') >&2; exit 1; }
  check_strata "bench-mp-$c"
  # A rebuild needs the base as an index in the store: strata (as of this script) keeps one
  # platform's image under a pulled tag (the last pulled), and a later build takes it for every
  # platform, so the rebuild of a two-platform image fails ("two manifests for platform
  # linux/arm64/v8 in one index": the amd64 side built on the arm64 base). The bases are
  # loaded as the index the registry has (same manifests, so every step stays cached) and
  # tagged with the names the Dockerfile pulls.
  seed_base
  as_user $(strata_build "$c") >/dev/null
  echo "== strata $c change1 (load $(load))" >&2
  as_user hyperfine -N -r "$RUNS" --prepare "sh -c '$(change "$c")'" \
    --export-json "$RESULTS/strata-$c-change1.json" "$(strata_build "$c")" >/dev/null
  if has profile && [ "$c" = emu ]; then
    echo "== strata $c cold, one build with its step times (load $(load))" >&2
    as_user sh -c "$strata_clean"
    as_user sh -c "$(strata_build "$c" | sed 's/ -q / --progress json /') 2>$RESULTS/strata-emu-profile.json >/dev/null"
  fi
  echo "strata $c: load after $(load)" >>"$RESULTS/machine.txt"
}
has strata && strata_part emu
has cross && strata_part cross

# --- BuildKit: root, QEMU registered on the host for it -------------------------------------
DH="$DOCKER -H unix://$OUT/docker/docker.sock"
if has docker; then
  echo "== host binfmt_misc before: $(host_state)" >&2
  host_register
  echo "== host binfmt_misc for BuildKit: $(host_state)" >&2
  bash "$LAB/dockerd.sh" start "$OUT/docker" >/dev/null
  # Both platforms at once, each in its own `docker build`; fails if either fails.
  cat >"$OUT/bin/docker-both" <<EOF
#!/usr/bin/env bash
DOCKER_BUILDKIT=1 $DH build -q --platform linux/amd64 -t bench-mp:amd64 $OUT/ctx/emu >/dev/null & a=\$!
DOCKER_BUILDKIT=1 $DH build -q --platform linux/arm64 -t bench-mp:arm64 $OUT/ctx/emu >/dev/null & b=\$!
wait \$a; ra=\$?
wait \$b; rb=\$?
exit \$((ra | rb))
EOF
  chmod 755 "$OUT/bin/docker-both"
  docker_clean="$DH image prune -af >/dev/null; $DH builder prune -af >/dev/null"
  echo "== BuildKit cold ($RUNS runs; load $(load))" >&2
  hyperfine -N -r "$RUNS" --prepare "sh -c '$docker_clean'" \
    --export-json "$RESULTS/docker-emu-cold.json" "$OUT/bin/docker-both" >/dev/null
  check_docker
  echo "== BuildKit change1 (load $(load))" >&2
  hyperfine -N -r "$RUNS" --prepare "sh -c '$(change emu)'" \
    --export-json "$RESULTS/docker-emu-change1.json" "$OUT/bin/docker-both" >/dev/null
  if has profile; then
    echo "== BuildKit cold, one build with its step times (load $(load))" >&2
    sh -c "$docker_clean"
    for p in amd64 arm64; do
      DOCKER_BUILDKIT=1 $DH build --progress plain --platform linux/$p -t bench-mp:$p "$OUT/ctx/emu" >/dev/null 2>"$RESULTS/docker-emu-profile-$p.log" &
    done
    wait
  fi
  echo "BuildKit: load after $(load)" >>"$RESULTS/machine.txt"
  $DH builder prune -af >/dev/null
  bash "$LAB/dockerd.sh" stop "$OUT/docker" >/dev/null
  host_restore
  echo "== host binfmt_misc after: $(host_state)" >&2
fi

# --- One RUN step: emulated against native (strata, rootless, --no-cache) -------------------
if has steps; then
  # A store per platform: a store whose tag holds one platform's image of a multi-platform
  # base (pulled for a single-platform build) does not pull another platform's for it, even
  # with --pull ("base image … has no linux/arm64 image"; src/registry/source.rs, `local`).
  b() { echo "$OUT/bin/strata --root $OUT/strata-steps-$1 build -q --no-cache --platform linux/$1 -t steps-$2 $OUT/ctx/steps-$2"; }
  n=$((STEPS + 1))
  echo "== RUN steps: 1 and $n, amd64 and arm64 ($STEP_RUNS runs; load $(load))" >&2
  as_user hyperfine -N -w 1 -r "$STEP_RUNS" --export-json "$RESULTS/steps.json" \
    -n amd64-1 "$(b amd64 1)" -n "amd64-$n" "$(b amd64 $n)" \
    -n arm64-1 "$(b arm64 1)" -n "arm64-$n" "$(b arm64 $n)" >/dev/null
  echo "steps: load after $(load)" >>"$RESULTS/machine.txt"
fi

# --- The table ------------------------------------------------------------------------------
echo
cat "$RESULTS/machine.txt"
python3 - "$RESULTS" "$RUNS" "$STEPS" <<'PY'
import json, os, sys
res, runs, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
def get(name):
    p = os.path.join(res, name + ".json")
    if not os.path.exists(p):
        return None
    return json.load(open(p))["results"]
def fmt(r):
    return "-" if r is None else f"{r[0]['median']:.2f} ({min(r[0]['times']):.2f}-{max(r[0]['times']):.2f})"
print(f"\ntwo-platform Python (linux/amd64 + linux/arm64), seconds, median of {runs} (min-max)")
print(f"{'scenario':10} {'strata (rootless)':>24} {'BuildKit (root)':>24} {'ratio':>7} {'strata cross route':>24}")
for sc in ("cold", "change1"):
    s, d, c = get(f"strata-emu-{sc}"), get(f"docker-emu-{sc}"), get(f"strata-cross-{sc}")
    ratio = f"{s[0]['median'] / d[0]['median']:.2f}x" if s and d else "-"
    print(f"{sc:10} {fmt(s):>24} {fmt(d):>24} {ratio:>7} {fmt(c):>24}")
prof = os.path.join(res, "strata-emu-profile.json")
if os.path.exists(prof):
    names, done, ran, fin = {}, {}, {}, None
    for l in open(prof):
        try:
            e = json.loads(l)
        except ValueError:
            continue
        ev = e.get("event")
        if ev == "start": names[e["step"]] = e["name"]
        elif ev == "done": done[e["step"]] = e["seconds"]
        elif ev == "ran": ran[e["step"]] = e["seconds"]
        elif ev == "finished": fin = e["seconds"]
    print(f"\nstrata, one cold build: {fin:.1f} s; steps over 0.5 s (step total / its command):")
    for k in sorted(done, key=lambda k: -done[k]):
        if done[k] >= 0.5:
            r = f"{ran[k]:6.1f}" if k in ran else "     -"
            print(f"  {done[k]:6.1f} {r}  {names.get(k, '?')[:90]}")
import re
for p in ("amd64", "arm64"):
    f = os.path.join(res, f"docker-emu-profile-{p}.log")
    if not os.path.exists(f):
        continue
    names, done = {}, {}
    for l in open(f):
        m = re.match(r"#(\d+) (\[.*)$", l.rstrip())
        if m and m.group(1) not in names:
            names[m.group(1)] = m.group(2)
        m = re.match(r"#(\d+) DONE ([\d.]+)s", l)
        if m:
            done[m.group(1)] = float(m.group(2))
    print(f"BuildKit --platform linux/{p}, one cold build (concurrent with the other), steps over 0.5 s:")
    for k in sorted(done, key=lambda k: -done[k]):
        if done[k] >= 0.5 and k in names:
            print(f"  {done[k]:6.1f}  {names[k][:90]}")
st = get("steps")
if st:
    m = {r["command"]: r["median"] for r in st}
    n = steps + 1
    per = {p: (m[f"{p}-{n}"] - m[f"{p}-1"]) / steps for p in ("amd64", "arm64")}
    print(f"\none RUN step (strata, rootless, --no-cache; ({n} steps - 1 step) / {steps}, medians of {len(st[0]['times'])})")
    for p in ("amd64", "arm64"):
        print(f"  {p}: build of 1 step {m[f'{p}-1'] * 1000:.0f} ms, of {n} steps {m[f'{p}-{n}'] * 1000:.0f} ms, per step {per[p] * 1000:.1f} ms")
    print(f"  emulated over native: +{(per['arm64'] - per['amd64']) * 1000:.1f} ms per step "
          f"(x{per['arm64'] / per['amd64']:.2f}); the one-step build: +{(m['arm64-1'] - m['amd64-1']) * 1000:.0f} ms")
PY
