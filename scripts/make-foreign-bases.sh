#!/usr/bin/env bash
# make-foreign-bases.sh OUTDIR [NAME...]
#
# Base images for platforms other than the host's, made from Debian's packages, for the
# multi-platform tests (issue 29). One OCI image layout per image, ref `latest`, under
# OUTDIR/oci/NAME; the rootfs it was made from under OUTDIR/rootfs/NAME; downloaded packages
# cached under OUTDIR/cache/foreign so a rerun downloads nothing; timings and sizes appended to
# OUTDIR/foreign-build-times.tsv.
#
#   busybox-arm64 busybox-armv7 busybox-ppc64le busybox-s390x busybox-386 busybox-riscv64
#                 Debian's busybox-static of that architecture, its applets as symlinks;
#                 byte-reproducible (every mtime 0, owner root). riscv64 is not a Debian 12
#                 architecture (it became one in Debian 13): its busybox-static comes from trixie.
#   debian-arm64  debootstrap --arch=arm64 --foreign --variant=minbase bookworm, its second
#                 stage run under QEMU
#   python-arm64  debian-arm64 + python3, python3-venv, python3-pip (apt-get under QEMU) and the
#                 host's extra CAs (/usr/local/share/ca-certificates; HOST_CA=0 leaves them out)
#   busybox       every busybox-*; all (default): everything
#
# Nothing is registered with the host's binfmt_misc. Foreign binaries run in one of two ways:
# QEMU started directly (`qemu-aarch64-static ./busybox --list-full`), or, for debootstrap's
# second stage and apt-get, inside a user and mount namespace of this script's own, whose ids
# 0-65535 are the host's (so files keep their real owners), where a binfmt_misc instance of
# that namespace is mounted (Linux 6.7+) and QEMU registered in it with the F flag (the kernel
# opens the interpreter at registration, so the image needs no QEMU). The instance, its handlers
# and every mount made there end with the namespace.
#
# Apt runs with a private state (OUTDIR/cache/foreign/apt-ARCH: sources, lists, status) for
# each architecture, so the host's dpkg needs no foreign architecture and its lists are not
# touched. The mirror is the one this machine's apt uses (MIRROR=... overrides).
#
# Idempotent: an image whose layout and rootfs exist is skipped; FORCE=1 rebuilds. Needs root
# (debootstrap, files of many owners, uid maps), qemu-user-static, debootstrap, jq, util-linux
# 2.38 (unshare), and Linux 6.7+ for debian-arm64 and python-arm64.
set -euo pipefail

usage() { echo "usage: $0 OUTDIR [busybox-arm64|busybox-armv7|busybox-ppc64le|busybox-s390x|busybox-386|busybox-riscv64|debian-arm64|python-arm64|busybox|all ...]" >&2; exit 2; }
[ $# -ge 1 ] || usage
OUT=$1; shift
[ $# -ge 1 ] || set -- all
BUSYBOXES=(busybox-arm64 busybox-armv7 busybox-ppc64le busybox-s390x busybox-386 busybox-riscv64)
want=()
for a in "$@"; do
  case $a in
    all) want+=("${BUSYBOXES[@]}" debian-arm64 python-arm64) ;;
    busybox) want+=("${BUSYBOXES[@]}") ;;
    busybox-arm64|busybox-armv7|busybox-ppc64le|busybox-s390x|busybox-386|busybox-riscv64|debian-arm64|python-arm64) want+=("$a") ;;
    *) usage ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "$0: must run as root" >&2; exit 1; }
for t in tar gzip sha256sum jq debootstrap chroot apt-get dpkg-deb unshare mkfifo; do
  command -v "$t" >/dev/null || { echo "$0: missing tool: $t" >&2; exit 1; }
done

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
FORCE=${FORCE:-0}
CACHE=$OUT/cache/foreign
mkdir -p "$CACHE" "$OUT/oci" "$OUT/rootfs"
TIMES=$OUT/foreign-build-times.tsv
[ -f "$TIMES" ] || printf 'name\trootfs_s\tlayout_s\tlayer_tar_bytes\tlayer_gz_bytes\n' >"$TIMES"
PATH_ENV='PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
# Every scratch directory lives under WORK, removed on exit (subshells included).
WORK=$(mktemp -d "$OUT/.tmp.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
# Logs keep no mirror address: every URL becomes <url>.
scrub() { sed -u -E 's#(https?|ftp)://[^ ]+#<url>#g'; }
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
tmpdir() { mktemp -d "$WORK/$1.XXXXXX"; }

# The Debian mirror and the security mirror this machine's apt uses for bookworm.
site_of() {
  apt-get indextargets --no-release-info --format '$(SITE) $(RELEASE)' 2>/dev/null \
    | awk -v r="$1" '$2 == r { print $1; exit }'
}
MIRROR=${MIRROR:-$(site_of bookworm)}
SECURITY=${SECURITY_MIRROR:-$(site_of bookworm-security)}
[ -n "$MIRROR" ] || { echo "$0: no bookworm source in this machine's apt; set MIRROR=" >&2; exit 1; }
[ -n "$SECURITY" ] || SECURITY=${MIRROR%/debian}/debian-security

# ---- what each image is -----------------------------------------------------------------
# deb_arch NAME / suite NAME / oci_arch NAME / oci_variant NAME / qemu NAME
deb_arch() {
  case $1 in
    *-arm64) echo arm64 ;; *-armv7) echo armhf ;; *-ppc64le) echo ppc64el ;;
    *-s390x) echo s390x ;; *-386) echo i386 ;; *-riscv64) echo riscv64 ;;
  esac
}
suite() { case $1 in *-riscv64) echo trixie ;; *) echo bookworm ;; esac; }
oci_arch() {
  case $1 in
    *-arm64) echo arm64 ;; *-armv7) echo arm ;; *-ppc64le) echo ppc64le ;;
    *-s390x) echo s390x ;; *-386) echo 386 ;; *-riscv64) echo riscv64 ;;
  esac
}
oci_variant() { case $1 in *-arm64) echo v8 ;; *-armv7) echo v7 ;; *) echo "" ;; esac; }
qemu() {
  case $1 in
    *-arm64) echo qemu-aarch64-static ;; *-armv7) echo qemu-arm-static ;;
    *-ppc64le) echo qemu-ppc64le-static ;; *-s390x) echo qemu-s390x-static ;;
    *-386) echo qemu-i386-static ;; *-riscv64) echo qemu-riscv64-static ;;
  esac
}
need_qemu() {
  command -v "$1" >/dev/null || {
    echo "$0: $1 is missing: apt-get install --no-install-recommends qemu-user-static" >&2; exit 1; }
}

# ---- apt with a private state, one per architecture ---------------------------------------
# apt_for ARCH SUITE ARGS...: apt-get as root (no drop to _apt: the cache is root's), with
# sources, lists, status and archives under $CACHE/apt-ARCH.
apt_for() {
  local arch=$1 s=$2 d=$CACHE/apt-$1; shift 2
  mkdir -p "$d/lists/partial" "$d/archives/partial" "$d/parts"
  [ -f "$d/status" ] || : >"$d/status"
  {
    echo "deb [signed-by=$KEYRING] $MIRROR $s main"
    echo "deb [signed-by=$KEYRING] $MIRROR $s-updates main"
    echo "deb [signed-by=$KEYRING] $SECURITY $s-security main"
  } >"$d/sources.list"
  apt-get -q -o Dir::Etc::SourceList="$d/sources.list" -o Dir::Etc::SourceParts="$d/parts" \
    -o Dir::State::Lists="$d/lists" -o Dir::State::status="$d/status" \
    -o Dir::Cache="$d" -o Dir::Cache::archives="$d/archives" \
    -o APT::Architecture="$arch" -o APT::Architectures::="$arch" \
    -o APT::Sandbox::User=root -o Debug::NoLocking=1 "$@"
}

# fetch_deb NAME PACKAGE -> prints the cached .deb's path (downloaded once)
fetch_deb() {
  local arch s dir deb
  arch=$(deb_arch "$1"); s=$(suite "$1"); dir=$CACHE/debs-$arch
  mkdir -p "$dir"
  deb=$(ls "$dir/$2"_*.deb 2>/dev/null | head -n1 || true)
  if [ -z "$deb" ]; then
    apt_for "$arch" "$s" update 2>&1 | scrub | tail -n1 >&2
    (cd "$dir" && apt_for "$arch" "$s" download "$2:$arch" 2>&1 | scrub | tail -n1 >&2)
    deb=$(ls "$dir/$2"_*.deb | head -n1)
    # The index (25 MB an architecture) served only to find the package, which is kept.
    rm -rf "$CACHE/apt-$arch"
  fi
  echo "$deb"
}

# ---- a user namespace of our own, with a binfmt_misc instance of its own ------------------
# in_userns CMD...: run CMD in new user, mount and pid namespaces whose uids and gids 0-65535
# are the host's. util-linux's --map-users goes through newuidmap, which wants /etc/subuid
# ranges even for root, so root writes the maps itself while the child waits on a FIFO (a
# process exec'd before its maps exist has no capabilities; the `exec` after the wait regains
# them).
in_userns() {
  local d pid; d=$(tmpdir userns)
  mkfifo "$d/go"
  unshare --user --mount --pid --fork --propagation private -- \
    sh -c 'read -r _ <"$0"; exec "$@"' "$d/go" "$@" &
  pid=$!
  # Until unshare(2) has run; a child that died (user namespaces refused) ends the wait too.
  while [ "$(readlink "/proc/$pid/ns/user" 2>/dev/null)" = "$(readlink /proc/self/ns/user)" ]; do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.02
  done
  if ! { echo '0 0 65536' >"/proc/$pid/uid_map" && echo '0 0 65536' >"/proc/$pid/gid_map"; } 2>/dev/null; then
    echo "$0: cannot make a user namespace with ids 0-65535 (unshare --user)" >&2
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    return 1
  fi
  # Opened read-write, the FIFO takes the word without waiting for a reader; it is held open
  # until the child is done, because a FIFO drops what it holds when its last descriptor
  # closes: a word written and closed before the child opened the FIFO was lost, and the child
  # waited forever (seen here: test-deps hung at python-arm64).
  local hold rc=0
  exec {hold}<>"$d/go"
  echo go >&"$hold"
  wait "$pid" || rc=$?
  exec {hold}>&-
  return "$rc"
}

# The binfmt_misc registration line for NAME's QEMU (magic and mask as in QEMU's
# scripts/qemu-binfmt-conf.sh, written as the \xNN text the kernel decodes). Flags: F opens the
# interpreter now; P keeps argv[0] (QEMU 6.0+ reads it from AT_FLAGS); C (with O) takes a
# setuid binary's credentials, as tonistiigi/binfmt registers for BuildKit.
binfmt_line() {
  local q; q=$(command -v "$(qemu "$1")")
  case $1 in
    *-arm64) echo ":qemu-aarch64:M::\\x7fELF\\x02\\x01\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x02\\x00\\xb7\\x00:\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\x00\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xfe\\xff\\xff\\xff:$q:POCF" ;;
    *) echo "$0: no binfmt line for $1" >&2; return 1 ;;
  esac
}

# chroot_emulated NAME ROOTFS SCRIPT: run the bash SCRIPT (with $R set to ROOTFS) in our own
# namespaces, where NAME's QEMU is registered. /proc is the new pid namespace's, /dev the
# host's (bound), resolv.conf the host's; BIND_CACHE=DIR binds DIR at /var/cache/apt/archives.
chroot_emulated() {
  local name=$1 r=$2 script=$3 b; b=$(tmpdir binfmt)
  local line; line=$(binfmt_line "$name")
  in_userns env R="$r" B="$b" LINE="$line" BIND_CACHE="${BIND_CACHE:-}" bash -c '
    set -euo pipefail
    mount -t binfmt_misc binfmt_misc "$B"
    printf "%s" "$LINE" >"$B/register"
    mount -t proc proc "$R/proc"
    mount --rbind /dev "$R/dev"
    if [ -n "$BIND_CACHE" ]; then mount --bind "$BIND_CACHE" "$R/var/cache/apt/archives"; fi
    '"$script"
}

# The host's binfmt_misc must stay as it was: nothing here registers on it.
host_binfmt() { ls /proc/sys/fs/binfmt_misc 2>/dev/null | sort | tr '\n' ' '; grep -c binfmt_misc /proc/self/mountinfo || true; }
HOST_BINFMT_BEFORE=$(host_binfmt)

# ---- OCI layout ----------------------------------------------------------------------------
# blob DIR FILE -> "sha256:HEX SIZE"; FILE is moved into DIR/blobs/sha256
blob() {
  local hex size; hex=$(sha256sum "$2" | cut -d' ' -f1); size=$(stat -c %s "$2")
  mkdir -p "$1/blobs/sha256"
  mv -f "$2" "$1/blobs/sha256/$hex"; chmod 0644 "$1/blobs/sha256/$hex"
  echo "sha256:$hex $size"
}

# layout NAME ROOTFS CONFIG(JSON of .config) FIXED(1: every mtime 0 and owner root)
layout() {
  local name=$1 r=$2 cfg=$3 fixed=$4 t dest=$OUT/oci/$1
  t=$(tmpdir "layout-$name")
  local opts=(--sort=name --numeric-owner --format=pax
    --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime)
  [ "$fixed" = 1 ] && opts+=(--mtime=@0 --owner=0 --group=0)
  # What a layer should not carry: device nodes, the pseudo filesystems' mount points'
  # contents, apt's lists and downloaded packages.
  (cd "$r" && tar -c "${opts[@]}" --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' \
      --exclude='./var/cache/apt/archives/*.deb' --exclude='./var/cache/apt/*.bin' \
      --exclude='./var/lib/apt/lists/*_*' --exclude='./.complete' -f "$t/layer.tar" .)
  LAYER_TAR_BYTES=$(stat -c %s "$t/layer.tar")
  local diffid; diffid=sha256:$(sha256sum "$t/layer.tar" | cut -d' ' -f1)
  gzip -n -6 "$t/layer.tar"
  rm -rf "$dest"; mkdir -p "$dest"
  local ld ls cd cs md ms
  read -r ld ls < <(blob "$dest" "$t/layer.tar.gz")
  LAYER_GZ_BYTES=$ls
  local arch variant
  arch=$(oci_arch "$name"); variant=$(oci_variant "$name")
  # The platform as image configs and indexes spell it; variant only where there is one.
  local platform
  platform=$(jq -cn --arg a "$arch" --arg v "$variant" \
    '{architecture: $a, os: "linux"} + (if $v == "" then {} else {variant: $v} end)')
  jq -cn --argjson p "$platform" --argjson cfg "$cfg" --arg d "$diffid" \
    --arg by "scripts/make-foreign-bases.sh $name" '$p + {
      created: "1970-01-01T00:00:00Z", config: $cfg,
      rootfs: {type: "layers", diff_ids: [$d]},
      history: [{created: "1970-01-01T00:00:00Z", created_by: $by}]}' >"$t/config.json"
  read -r cd cs < <(blob "$dest" "$t/config.json")
  jq -cn --arg cd "$cd" --argjson cs "$cs" --arg ld "$ld" --argjson ls "$ls" '{
      schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json",
      config: {mediaType: "application/vnd.oci.image.config.v1+json", digest: $cd, size: $cs},
      layers: [{mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: $ld, size: $ls}]}' \
      >"$t/manifest.json"
  read -r md ms < <(blob "$dest" "$t/manifest.json")
  jq -cn --arg md "$md" --argjson ms "$ms" --argjson p "$platform" '{
      schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json",
      manifests: [{mediaType: "application/vnd.oci.image.manifest.v1+json", digest: $md,
                   size: $ms, platform: $p,
                   annotations: {"org.opencontainers.image.ref.name": "latest"}}]}' \
      >"$dest/index.json"
  echo '{"imageLayoutVersion":"1.0.0"}' >"$dest/oci-layout"
  log "$name: manifest $md, layer $ld ($ls bytes gz), diff_id $diffid"
}

# ---- busybox ------------------------------------------------------------------------------
busybox_rootfs() {
  local name=$1 r=$2 q deb x
  q=$(qemu "$name"); need_qemu "$q"
  deb=$(fetch_deb "$name" busybox-static)
  x=$(tmpdir "deb-$name")
  dpkg-deb -x "$deb" "$x"
  rm -rf "$r"; mkdir -p "$r"
  mkdir -p "$r"/{bin,sbin,usr/bin,usr/sbin,etc,root,home,var/tmp,proc,sys,dev,tmp}
  # /bin/busybox in Debian 12; /usr/bin/busybox in 13 (merged /usr).
  local bb=$x/bin/busybox; [ -f "$bb" ] || bb=$x/usr/bin/busybox
  install -m 0755 "$bb" "$r/bin/busybox"
  # The applets as symlinks, listed by the foreign busybox itself, run by QEMU directly.
  local a
  for a in $("$q" "$r/bin/busybox" --list-full); do
    [ "$a" = bin/busybox ] || ln -sf /bin/busybox "$r/$a"
  done
  chmod 1777 "$r/tmp" "$r/var/tmp"; chmod 0700 "$r/root"
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$r/etc/passwd"
  printf 'root:x:0:\nnobody:x:65534:\n' >"$r/etc/group"
  chmod 0644 "$r/etc/passwd" "$r/etc/group"
}

# ---- debian (arm64) -------------------------------------------------------------------------
debian_rootfs() {
  local name=$1 r=$2 arch; arch=$(deb_arch "$name")
  need_qemu "$(qemu "$name")"
  kernel_has_userns_binfmt
  rm -rf "$r"; mkdir -p "$r" "$CACHE/debootstrap-$arch"
  log "$name: debootstrap --foreign (first stage, on the host)"
  if ! debootstrap --arch="$arch" --foreign --variant=minbase --cache-dir="$CACHE/debootstrap-$arch" \
       bookworm "$r" "$MIRROR" 2>&1 | scrub >"$OUT/debootstrap-$name.log"; then
    tail -n 30 "$OUT/debootstrap-$name.log" >&2; exit 1
  fi
  log "$name: debootstrap --second-stage under QEMU in our own user namespace"
  # container=lxc: debootstrap then skips its mknod test (device nodes cannot be made in a
  # user namespace; the first stage made them, and /dev is the host's, bound).
  if ! chroot_emulated "$name" "$r" 'chroot "$R" env container=lxc /debootstrap/debootstrap --second-stage' \
       2>&1 | scrub >>"$OUT/debootstrap-$name.log"; then
    tail -n 30 "$OUT/debootstrap-$name.log" >&2; exit 1
  fi
  # The second stage's sources.list names the mirror it came from; a base image should not.
  echo "deb http://deb.debian.org/debian bookworm main" >"$r/etc/apt/sources.list"
  rm -rf "$r"/var/lib/apt/lists/*_* "$r"/var/log/*.log "$r"/var/cache/ldconfig/aux-cache \
         "$r"/var/cache/apt/archives/*.deb
}

# ---- python (arm64) -------------------------------------------------------------------------
python_rootfs() {
  local name=$1 r=$2 base=$OUT/rootfs/debian-$(oci_arch "$1")
  [ -f "$base/.complete" ] || build debian-arm64
  need_qemu "$(qemu "$name")"
  rm -rf "$r"; cp -a "$base" "$r"; rm -f "$r/.complete"
  mkdir -p "$CACHE/apt-archives-$(deb_arch "$name")/partial"
  cp /etc/resolv.conf "$r/etc/resolv.conf" 2>/dev/null || true
  # The mirror this machine uses, for the duration of the install only.
  echo "deb $MIRROR bookworm main" >"$r/etc/apt/sources.list"
  # Egress here may go through a TLS-intercepting proxy whose CA the host trusts: pip in a
  # RUN step needs it too.
  if [ "${HOST_CA:-1}" = 1 ] && ls /usr/local/share/ca-certificates/*.crt >/dev/null 2>&1; then
    mkdir -p "$r/usr/local/share/ca-certificates"
    cp /usr/local/share/ca-certificates/*.crt "$r/usr/local/share/ca-certificates/"
  fi
  log "$name: apt-get install python3 python3-venv python3-pip under QEMU"
  if ! BIND_CACHE="$CACHE/apt-archives-$(deb_arch "$name")" chroot_emulated "$name" "$r" '
      export DEBIAN_FRONTEND=noninteractive LC_ALL=C
      chroot "$R" apt-get -q update
      chroot "$R" apt-get -q -y -o APT::Keep-Downloaded-Packages=true \
        install --no-install-recommends python3 python3-venv python3-pip
      chroot "$R" update-ca-certificates' 2>&1 | scrub >"$OUT/apt-$name.log"; then
    tail -n 30 "$OUT/apt-$name.log" >&2; exit 1
  fi
  echo "deb http://deb.debian.org/debian bookworm main" >"$r/etc/apt/sources.list"
  : >"$r/etc/resolv.conf"; chmod 0644 "$r/etc/resolv.conf"
  rm -f "$r"/var/cache/apt/*.bin
  rm -rf "$r"/var/lib/apt/lists/*_* "$r"/var/log/*.log "$r"/var/log/apt/* \
         "$r"/var/cache/ldconfig/aux-cache "$r"/var/cache/debconf/*-old
  find "$r/usr/lib/python3" -name __pycache__ -prune -exec rm -rf {} + 2>/dev/null || true
}

kernel_has_userns_binfmt() {
  local v; v=$(uname -r)
  local maj=${v%%.*} rest=${v#*.}; local min=${rest%%[.-]*}
  if [ "$maj" -lt 6 ] || { [ "$maj" -eq 6 ] && [ "$min" -lt 7 ]; }; then
    echo "$0: Linux $v cannot mount binfmt_misc in a user namespace (6.7+ can), which the foreign Debian images need" >&2
    exit 1
  fi
}

build() {
  local name=$1 r=$OUT/rootfs/$1 t0 t1 t2 cfg fixed=0
  if [ "$FORCE" != 1 ] && [ -f "$OUT/oci/$name/index.json" ] && [ -f "$r/.complete" ]; then
    log "$name: already made ($OUT/oci/$name), skipping (FORCE=1 remakes it)"; return
  fi
  t0=$(now)
  case $name in
    busybox-*) busybox_rootfs "$name" "$r"; fixed=1
               cfg=$(jq -cn --arg p "$PATH_ENV" '{Env: [$p], Cmd: ["sh"]}') ;;
    debian-*)  debian_rootfs "$name" "$r"
               cfg=$(jq -cn --arg p "$PATH_ENV" '{Env: [$p], Cmd: ["bash"]}') ;;
    python-*)  python_rootfs "$name" "$r"
               cfg=$(jq -cn --arg p "$PATH_ENV" '{Env: [$p, "LANG=C.UTF-8"], Cmd: ["python3"]}') ;;
  esac
  t1=$(now)
  layout "$name" "$r" "$cfg" "$fixed"
  t2=$(now)
  touch "$r/.complete"
  printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$(secs "$t0" "$t1")" "$(secs "$t1" "$t2")" \
    "$LAYER_TAR_BYTES" "$LAYER_GZ_BYTES" >>"$TIMES"
  log "$name: rootfs $(secs "$t0" "$t1") s, layout $(secs "$t1" "$t2") s, layer $LAYER_TAR_BYTES bytes (tar), $LAYER_GZ_BYTES bytes (gz)"
}

for n in "${want[@]}"; do build "$n"; done
if [ "$(host_binfmt)" != "$HOST_BINFMT_BEFORE" ]; then
  echo "$0: the host's binfmt_misc changed while making the images ($HOST_BINFMT_BEFORE -> $(host_binfmt))" >&2
  exit 1
fi
chmod -R a+rX "$OUT/oci"
log "done: layouts under $OUT/oci (ref latest)"
