# The developer entry point. `make test` is the README's test command and what CI runs.
.PHONY: test test-deps lint fmt check bench fuzz

CARGO ?= cargo

## Install what the tests need, then run formatting, lints and every test, as root and again
## as the unprivileged user strata-test. Every temporary file of the tests (and of the processes
## they start) goes to one directory, TMPDIR=/tmp/st.XXX (short: podman refuses run roots over 50
## characters and sockets have a 108-byte limit), which is removed at the end, so a run leaves
## nothing in /tmp.
test: test-deps lint
	@status=0; tmp=$$(mktemp -d /tmp/st.XXX); chmod 1777 "$$tmp"; \
	export TMPDIR="$$tmp"; \
	STRATA_REQUIRE_CONFORMANCE=$${STRATA_REQUIRE_CONFORMANCE:-$${CI:+1}} \
	STRATA_REQUIRE_TOOLS=$${STRATA_REQUIRE_TOOLS:-$${CI:+1}} \
	$(CARGO) test --all-targets --locked --no-fail-fast || status=1; \
	$(CARGO) test --doc --locked || status=1; \
	STRATA_REQUIRE_CONFORMANCE=$${STRATA_REQUIRE_CONFORMANCE:-$${CI:+1}} bash scripts/test-as-user.sh || status=1; \
	chmod -R u+rwX "$$tmp" 2>/dev/null; rm -rf "$$tmp"; \
	exit $$status

test-deps:
	bash scripts/test-deps.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets --locked -- -D warnings

fmt:
	$(CARGO) fmt --all

## Check a Dockerfile: make check FILE=path/to/Dockerfile
check:
	$(CARGO) run --release --locked -- check -f $(or $(FILE),Dockerfile)

## Benchmarks: front end (criterion), layer rates (criterion), layer writing vs gzip/pigz and
## memory (hyperfine; needs root, hyperfine and pigz); the SBOM's cost (criterion, peak memory).
bench:
	$(CARGO) bench --bench frontend
	bash benches/layer.sh
	STRATA_BENCH_TREE=$${STRATA_BENCH_TREE:-/tmp/strata-bench/base/rootfs/python} $(CARGO) bench --bench layer
	bash benches/sbom.sh

## Fuzz (cargo install cargo-fuzz; uses the stable toolchain with RUSTC_BOOTSTRAP):
## make fuzz [TARGET=frontend|expand|apply|sbom] [SECONDS=600]   (an input over 2 GiB of memory is a crash)
fuzz:
	bash fuzz/seed.sh
	cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run $(or $(TARGET),frontend) corpus/$(or $(TARGET),frontend) -- -max_total_time=$(or $(SECONDS),600) -max_len=65536 -rss_limit_mb=2048 -malloc_limit_mb=2048
