#!/usr/bin/env bash
# What running a foreign platform's binaries under QEMU costs, against the same thing natively:
# an exec of `busybox true` (Debian's busybox-static, amd64 against arm64), and in the arm64 and
# amd64 Debian and python base images (chroot) `apt-get --version`, `python3 -c pass`,
# `python3 -c 'import ssl, json'` and `pip --version` (bytecode cached). QEMU (Debian's qemu-user-static) is
# registered with binfmt_misc (flags POCF) inside a user namespace of the benchmark's own, as
# strata does, never on the host. As root and as the unprivileged user strata-test. Then
# `strata run true` of a busybox image, native against arm64 emulated by strata itself.
#   benches/emulation.sh [run]   (`run`: the strata run part only; as root; needs hyperfine, qemu-user-static, Linux 6.7+, and the
#                           images of scripts/make-foreign-bases.sh and
#                           ../shared/lab/make-base-images.sh in target/test-images:
#                           scripts/test-deps.sh makes both)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
imgs=${STRATA_TEST_IMAGES:-$here/target/test-images}/rootfs
for r in busybox-arm64 debian-arm64 python-arm64 debian python; do
  [ -d "$imgs/$r" ] || { echo "missing $imgs/$r: run scripts/test-deps.sh" >&2; exit 1; }
done
qemu=$(command -v qemu-aarch64-static) || { echo "qemu-aarch64-static is missing" >&2; exit 1; }
work=$(mktemp -d /tmp/strata-emulation-bench.XXXX)
chmod 1777 "$work"
trap 'rm -rf "$work"' EXIT
# QEMU's aarch64 magic and mask (as strata::sandbox::binfmt derives them).
line=":qemu-aarch64:M:0:\\x7f\\x45\\x4c\\x46\\x02\\x01\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x02\\x00\\xb7\\x00:\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\x00\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xfe\\xff\\xff\\xff:$qemu:POCF"
chroot=$(command -v chroot)
bench() { # USER
  local who=$1 d=$work/$1
  runuser -u "$who" -- mkdir -p "$d/binfmt"
  echo "== as $who ($("$qemu" --version | head -n1))"
  runuser -u "$who" -- env PATH="$PATH" B="$d/binfmt" LINE="$line" I="$imgs" C="$chroot" D="$d" \
    unshare --user --map-root-user --mount -- bash -c '
      set -euo pipefail
      mount -t binfmt_misc binfmt_misc "$B"
      printf "%s" "$LINE" >"$B/register"
      hyperfine -N --warmup 10 --runs 100 --export-json "$D/exec.json" \
        -n "busybox true: amd64 (native)" "/bin/busybox true" \
        -n "busybox true: arm64 (QEMU)" "$I/busybox-arm64/bin/busybox true" >/dev/null
      # Python with its bytecode cached (PYTHONPYCACHEPREFIX on a tmpfs over each root'"'"'s /tmp,
      # filled by the warm-up runs), as in a RUN step after its first import; the images
      # themselves are not written to.
      mount -t tmpfs tmpfs "$I/python/tmp"
      mount -t tmpfs tmpfs "$I/python-arm64/tmp"
      export -n PYTHONDONTWRITEBYTECODE
      export PYTHONPYCACHEPREFIX=/tmp/pycache
      hyperfine -N --warmup 3 --runs 20 --export-json "$D/cmds.json" \
        -n "apt-get --version: amd64" "$C $I/debian /usr/bin/apt-get --version" \
        -n "apt-get --version: arm64" "$C $I/debian-arm64 /usr/bin/apt-get --version" \
        -n "python3 -c pass: amd64" "$C $I/python /usr/bin/python3 -c pass" \
        -n "python3 -c pass: arm64" "$C $I/python-arm64 /usr/bin/python3 -c pass" \
        -n "python3 -c import ssl, json: amd64" "$C $I/python /usr/bin/python3 -c \"import ssl, json\"" \
        -n "python3 -c import ssl, json: arm64" "$C $I/python-arm64 /usr/bin/python3 -c \"import ssl, json\"" \
        -n "pip --version: amd64" "$C $I/python /usr/bin/python3 -m pip --version" \
        -n "pip --version: arm64" "$C $I/python-arm64 /usr/bin/python3 -m pip --version" >/dev/null
      '
  python3 - "$d/exec.json" "$d/cmds.json" <<'PY'
import json, sys
for f in sys.argv[1:]:
    rs = {r["command"]: r for r in json.load(open(f))["results"]}
    for name, r in rs.items():
        if name.endswith("(QEMU)") or name.endswith(": arm64"):
            continue
        other = name.replace("amd64 (native)", "arm64 (QEMU)").replace(": amd64", ": arm64")
        e = rs[other]
        print(f"  {name.rsplit(':', 1)[0]:30} native {r['median'] * 1000:7.1f} ms   "
              f"emulated {e['median'] * 1000:7.1f} ms   "
              f"+{(e['median'] - r['median']) * 1000:6.1f} ms  x{e['median'] / r['median']:.1f}")
PY
}
# `strata run` of a tiny image, native against emulated (STRATA_BIN, default the release
# build, else the debug one): what a RUN step of a foreign platform pays on top of a native
# one. Each `strata run` is a session of its own, so the emulated one includes the session's
# registration (a binfmt_misc instance mounted, QEMU's --version asked, its handler
# registered: once per session and platform, see src/sandbox/emulation.rs) besides QEMU's
# start-up in the one exec.
strata_bin=${STRATA_BIN:-$here/target/release/strata}
[ -x "$strata_bin" ] || strata_bin=$here/target/debug/strata
install -m 0755 "$strata_bin" "$work/strata"
oci=${STRATA_TEST_IMAGES:-$here/target/test-images}/oci
cp -r "$oci/busybox-arm64" "$work/busybox-arm64"
mkdir -p "$work/bb/bin"
cp /bin/busybox "$work/bb/bin/busybox"
chmod -R a+rX "$work/busybox-arm64" "$work/bb"
run_bench() { # USER
  local who=$1 s=$work/$1/store
  runuser -u "$who" -- mkdir -p "$work/$1"
  runuser -u "$who" -- "$work/strata" --root "$s" load -i "$work/busybox-arm64" >/dev/null
  runuser -u "$who" -- "$work/strata" --root "$s" import "$work/bb" busybox-amd64 >/dev/null
  echo "== strata run, as $who ($(basename "$(dirname "$strata_bin")") build)"
  runuser -u "$who" -- env PATH="$PATH" hyperfine -N --warmup 3 --runs 30 --export-json "$work/$1/run.json" \
    -n "native" "$work/strata --root $s run --network none busybox-amd64 /bin/busybox true" \
    -n "emulated" "$work/strata --root $s run --network none --platform linux/arm64 busybox-arm64 /bin/busybox true" \
    >/dev/null
  python3 - "$work/$1/run.json" <<'PY'
import json, sys
rs = {r["command"]: r for r in json.load(open(sys.argv[1]))["results"]}
n, e = rs["native"], rs["emulated"]
print(f"  strata run true            native {n['median'] * 1000:7.1f} ms   "
      f"emulated {e['median'] * 1000:7.1f} ms   +{(e['median'] - n['median']) * 1000:6.1f} ms")
PY
}
if [ "${1:-all}" != run ]; then
  bench root
  id strata-test >/dev/null 2>&1 && bench strata-test
fi
run_bench root
id strata-test >/dev/null 2>&1 && run_bench strata-test
# Nothing of this stays: the namespaces ended with their processes.
if ls /proc/sys/fs/binfmt_misc 2>/dev/null | grep -q qemu-aarch64; then
  echo "note: the host has its own qemu-aarch64 handler (not from this benchmark)"
fi
