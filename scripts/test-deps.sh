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

# Debian packages the tests use: skopeo, umoci and podman check what the store writes; busybox-static
# makes the test base image; gzip reads parallel-gzip output back.
packages=(skopeo umoci podman busybox-static gzip)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# The unprivileged user the rootless tests run as (runuser -u strata-test).
if ! id strata-test >/dev/null 2>&1; then
  useradd --create-home --shell /bin/sh strata-test
fi
echo "test-deps: ready"
