#!/usr/bin/env bash
# Real inputs for the SBOM tests (tests/sbom.rs), made once into target/sbom-fixtures from the
# package registries with their own clients (nothing typed by hand), and the tools that check
# strata's documents. Called by scripts/test-deps.sh; idempotent (a stamp holds this script's
# hash); everything stays under target/, so `cargo clean` removes it and nothing else is left:
#   tools/                 a venv: spdx-tools (pyspdxtools), cyclonedx-bom (cyclonedx-py),
#                          cyclonedx-python-lib with its JSON schemas and validator, uv
#   pip-root/opt/venv      python3 -m venv + pip install six, idna, markupsafe (a binary wheel)
#   uv-root/srv/deps       uv pip install --target: attrs, packaging
#   npm-root/app           npm install debug (and its dependency ms) and a scoped package
#   go-root/usr/local/bin/hello   a Go program with a replaced local module, built offline
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$here/target/sbom-fixtures}
stamp=$(sha256sum "$0" | cut -c1-64)
if [ -f "$out/.stamp" ] && [ "$(cat "$out/.stamp")" = "$stamp" ]; then
  exit 0
fi
rm -rf "$out"
mkdir -p "$out"
py=/usr/bin/python3
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_NO_INPUT=1

# The checking tools.
"$py" -m venv "$out/tools"
"$out/tools/bin/pip" install -q spdx-tools cyclonedx-bom 'cyclonedx-python-lib[json-validation]' uv

# A venv as a Dockerfile makes one (`python3 -m venv /opt/venv && pip install …`).
"$py" -m venv "$out/pip-root/opt/venv"
"$out/pip-root/opt/venv/bin/pip" install -q six==1.17.0 idna==3.10 markupsafe==3.0.2

# A --target directory installed by uv (INSTALLER says uv). No cache left behind.
UV_CACHE_DIR="$out/uv-cache" "$out/tools/bin/uv" pip install -q --python "$py" \
  --target "$out/uv-root/srv/deps" attrs==25.3.0 packaging==24.2
rm -rf "$out/uv-cache"

# node_modules from the npm registry, with a nested and a scoped package.
mkdir -p "$out/npm-root/app"
(cd "$out/npm-root/app" && echo '{"name":"app","version":"1.0.0","private":true}' >package.json &&
  npm install --silent --no-audit --no-fund --cache "$out/npm-cache" debug@4.3.7 ms@2.0.0 @sindresorhus/is@4.6.0 >/dev/null)
rm -rf "$out/npm-cache"

# A Go binary with module information: a main module and a dependency replaced by a local
# directory (no network), linked statically (Go's own linker; Debian's Go programs such as
# docker-registry are linked by gcc, the other layout the tests read).
if command -v go >/dev/null; then
  src="$out/go-src"
  mkdir -p "$src/hello" "$src/greet"
  printf 'module example.com/greet\n\ngo 1.19\n' >"$src/greet/go.mod"
  printf 'package greet\n\nfunc Hello() string { return "hello" }\n' >"$src/greet/greet.go"
  printf 'module example.com/hello\n\ngo 1.19\n\nrequire example.com/greet v1.2.3\n\nreplace example.com/greet v1.2.3 => ../greet\n' >"$src/hello/go.mod"
  printf 'package main\n\nimport (\n\t"fmt"\n\n\t"example.com/greet"\n)\n\nfunc main() { fmt.Println(greet.Hello()) }\n' >"$src/hello/main.go"
  mkdir -p "$out/go-root/usr/local/bin"
  (cd "$src/hello" && GOPATH="$out/go-tmp/path" GOCACHE="$out/go-tmp/cache" GOFLAGS=-mod=mod \
    GOPROXY=off CGO_ENABLED=0 go build -buildvcs=false -trimpath -o "$out/go-root/usr/local/bin/hello" .)
  chmod -R u+w "$out/go-tmp" && rm -rf "$out/go-tmp" "$src"
else
  echo "sbom-fixtures: no go (Debian's golang-go), so the Go fixture is not made"
fi

chmod -R a+rX "$out"
echo "$stamp" >"$out/.stamp"
echo "sbom-fixtures: made $out"
