#!/usr/bin/env bash
# Run every test binary again as the unprivileged user strata-test (made by test-deps.sh), so
# the whole suite, not only the tests that switch users themselves, is exercised rootless.
# Called by `make test` after the root run; prints the same "test result" lines.
# The tests that switch users themselves (a `runners()` loop: tests/sandbox.rs, store_tools.rs,
# binfmt.rs, and containers.rs's Podman test) already ran every scenario as $user in the root
# run, so here they are told so (STRATA_ROOT_PASS_RAN_AS) and do nothing: run this script with
# STRATA_USER_PASS_ALL=1 to run them again anyway (e.g. without a root run before it).
set -euo pipefail
user=strata-test
here=$(cd "$(dirname "$0")/.." && pwd)
if [ "$(id -u)" != 0 ]; then
  echo "SKIPPED: running the suite as $user needs root (to switch user); this run was already unprivileged"
  exit 0
fi
if ! id "$user" >/dev/null 2>&1; then
  echo "SKIPPED: no user $user (scripts/test-deps.sh creates it)"
  exit 0
fi
if ! runuser -u "$user" -- test -x "$here/target/debug/strata"; then
  echo "SKIPPED: $user cannot reach the checkout at $here (a parent directory is not searchable), so the suite is not re-run as $user"
  exit 0
fi
exes=$(cd "$here" && cargo test --no-run --locked --message-format=json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("profile", {}).get("test") and m.get("executable"):
        print(m["executable"])
')
ran_as=$user
if [ "${STRATA_USER_PASS_ALL:-}" = 1 ]; then ran_as=; fi
status=0
for exe in $exes; do
  echo "== as $user: $(basename "$exe")"
  # The same TMPDIR as the root run (make test's /tmp/st.XXX), which is also HOME.
  t=${TMPDIR:-/tmp}
  runuser -u "$user" -- env -C "$t" HOME="$t" TMPDIR="$t" STRATA_REQUIRE_CONFORMANCE="${STRATA_REQUIRE_CONFORMANCE:-}" STRATA_ROOT_PASS_RAN_AS="$ran_as" "$exe" -q || status=1
done
exit $status
