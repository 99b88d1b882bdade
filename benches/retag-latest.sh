#!/usr/bin/env bash
# retag-latest.sh DIR: give the first image of an OCI layout the ref name `latest` (what
# ../shared/lab/bench-peers.sh and run-oci.sh read), as `buildah push oci:DIR:latest` does.
set -euo pipefail
jq '.manifests[0].annotations["org.opencontainers.image.ref.name"] = "latest"' "$1/index.json" >"$1/index.json.new"
mv "$1/index.json.new" "$1/index.json"
