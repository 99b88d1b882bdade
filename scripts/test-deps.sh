#!/usr/bin/env bash
# Install what the test suite needs on a Debian 12 machine, idempotently. Run as root (CI) or
# with sudo. The README's test command (`make test`) calls this first.
set -euo pipefail

# The pinned toolchain (rust-toolchain.toml) is the machine's stable Rust. Where rustup knows it
# only as "stable", link the pinned name to it instead of downloading anything.
pinned=$(sed -n 's/^channel = "\(.*\)"/\1/p' "$(dirname "$0")/../rust-toolchain.toml")
if command -v rustup >/dev/null && ! rustup toolchain list | grep -q "^$pinned"; then
  have=$(rustc +stable --version 2>/dev/null | awk '{print $2}')
  if [ "$have" = "$pinned" ]; then
    rustup toolchain link "$pinned" "$(rustc +stable --print sysroot)"
  else
    echo "test-deps: rust $pinned is pinned but stable is ${have:-missing}; install it with rustup" >&2
    exit 1
  fi
fi

# Debian packages the tests use: skopeo, umoci, podman and docker.io (dockerd started by the test
# itself) check what the store writes, buildah
# makes the reference RUN layer; busybox-static
# makes the test base image; gzip reads parallel-gzip output back; uidmap (newuidmap/newgidmap)
# maps subordinate ids for the rootless sandbox; procps (pkill) for the process-lifetime tests.
# docker-registry (distribution) serves images to the registry tests, which start it themselves
# on 127.0.0.1; openssl makes the token server's key; jq and debootstrap make the python base
# image (../shared/lab/make-base-images.sh). slirp4netns is the user-mode network of RUN steps.
# qemu-user-static runs foreign binaries (tests/binfmt.rs, scripts/make-foreign-bases.sh); it
# is installed without its recommends, so binfmt-support is not pulled in and its postinst
# registers nothing on the host (strata registers QEMU in its own user namespace).
packages=(skopeo umoci podman buildah busybox-static gzip uidmap procps docker-registry openssl jq debootstrap slirp4netns qemu-user-static)
# A machine that already has a Docker engine (GitHub's runners ship Docker CE, whose containerd
# conflicts with Debian's) keeps it.
command -v dockerd >/dev/null 2>&1 || packages+=(docker.io)
# git: ADD of a git repository (tests/build.rs serves a repository over HTTP).
command -v git >/dev/null 2>&1 || packages+=(git)
# curl: the wheels the pip cache test serves from a local index are fetched from PyPI.
command -v curl >/dev/null 2>&1 || packages+=(curl)
# The SBOM tests (tests/sbom.rs) compare with the package managers' own answers: Go binaries
# with `go version -m` (golang-go builds their fixture), node_modules with `npm ls` (a machine
# with Node.js from elsewhere keeps its npm).
packages+=(golang-go)
command -v npm >/dev/null 2>&1 || packages+=(npm)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  # docker-registry's postinst starts a system service: keep every package from starting one
  # (the tests start their own registries), unless the machine already says so.
  made_policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 0755 /usr/sbin/policy-rc.d
    made_policy=1
  fi
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
  [ -z "$made_policy" ] || rm -f /usr/sbin/policy-rc.d
fi
# Should a registry service have started anyway (a machine with systemd), stop it.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet docker-registry 2>/dev/null; then
  systemctl stop docker-registry || true
fi
# slirp4netns opens /dev/net/tun as the user who builds. Debian's udev rules make it 0666; a machine
# without udev (this kind of VM, many containers) leaves it 0600, so restore Debian's default.
if [ -c /dev/net/tun ] && [ "$(stat -c %a /dev/net/tun)" != 666 ]; then
  chmod 0666 /dev/net/tun
fi
# The unprivileged users the rootless tests run as (runuser -u …): strata-test with a range of
# subordinate ids, strata-nosub with none (only root can be mapped in its user namespace).
if ! id strata-test >/dev/null 2>&1; then
  useradd --create-home --shell /bin/sh strata-test
fi
grep -q '^strata-test:' /etc/subuid 2>/dev/null || usermod --add-subuids 100000-165535 strata-test
grep -q '^strata-test:' /etc/subgid 2>/dev/null || usermod --add-subgids 100000-165535 strata-test
if ! id strata-nosub >/dev/null 2>&1; then
  useradd --create-home --shell /bin/sh -K SUB_UID_COUNT=0 -K SUB_GID_COUNT=0 strata-nosub
fi
sed -i '/^strata-nosub:/d' /etc/subuid /etc/subgid 2>/dev/null || true
# The python base image for the registry tests' Python example (FROM python:3.11-slim through
# a Docker Hub mirror): Debian's python3 as an OCI layout, made once into target/test-images
# by the lab script of ../shared (a minute, over the Debian mirror). Without ../shared the test
# says SKIPPED.
here=$(cd "$(dirname "$0")/.." && pwd)
lab=${STRATA_SHARED_DIR:-$here/../shared}/lab
if [ -x "$lab/make-base-images.sh" ] || [ -f "$lab/make-base-images.sh" ]; then
  if [ ! -f "$here/target/test-images/oci/python/index.json" ]; then
    echo "test-deps: making the python base image (target/test-images)"
    bash "$lab/make-base-images.sh" "$here/target/test-images" python >/dev/null
  fi
  # Readable by the unprivileged test user.
  chmod -R a+rX "$here/target/test-images/oci" 2>/dev/null || true
else
  echo "test-deps: $lab is missing, so the Python example test will say SKIPPED"
fi
# The SBOM tests' inputs and checkers (spdx-tools, cyclonedx-bom, a venv, a uv --target
# directory, node_modules, a Go binary), from PyPI and npm into target/sbom-fixtures, once.
bash "$here/scripts/sbom-fixtures.sh" "$here/target/sbom-fixtures"
# Base images of other platforms (busybox for arm64, arm/v7, ppc64le, s390x, 386 and riscv64;
# Debian and python for arm64), made once into target/test-images by the project's own script
# (about 3 minutes the first time: the arm64 Debian's second stage and apt run under QEMU).
# It skips what exists. It keeps apt's state for each architecture to itself, so dpkg needs no
# foreign architecture. Without Linux 6.7 the arm64 Debian images cannot be made this way and
# their tests say SKIPPED.
if [ ! -f "$here/target/test-images/oci/python-arm64/index.json" ] \
   || [ ! -f "$here/target/test-images/oci/busybox-riscv64/index.json" ]; then
  echo "test-deps: making the foreign base images (target/test-images)"
  bash "$here/scripts/make-foreign-bases.sh" "$here/target/test-images" all >/dev/null \
    || echo "test-deps: scripts/make-foreign-bases.sh failed; the tests that need its images will say SKIPPED"
fi
# Nothing the tests install registers a binfmt_misc handler on the host here. A machine booted
# with systemd registers Debian's qemu-user-static handlers through systemd-binfmt when the
# package is installed; the tests then still register their own in their own namespaces.
if ls /proc/sys/fs/binfmt_misc 2>/dev/null | grep -q '^qemu-'; then
  echo "test-deps: note: the host has QEMU handlers registered in binfmt_misc (not by the tests)"
fi
echo "test-deps: ready"
