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
packages=(skopeo umoci podman buildah busybox-static gzip uidmap procps)
# A machine that already has a Docker engine (GitHub's runners ship Docker CE, whose containerd
# conflicts with Debian's) keeps it.
command -v dockerd >/dev/null 2>&1 || packages+=(docker.io)
# git: ADD of a git repository (tests/build.rs serves a repository over HTTP).
command -v git >/dev/null 2>&1 || packages+=(git)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
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
echo "test-deps: ready"
