#!/usr/bin/env bash
# Run every test binary again as the unprivileged user strata-test (made by test-deps.sh), so
# the whole suite, not only the tests that switch users themselves, is exercised rootless.
# Called by `make test` after the root run; prints the same "test result" lines.
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
status=0
for exe in $exes; do
  echo "== as $user: $(basename "$exe")"
  # The same TMPDIR as the root run (make test's /tmp/st.XXX), which is also HOME.
  t=${TMPDIR:-/tmp}
  runuser -u "$user" -- env -C "$t" HOME="$t" TMPDIR="$t" STRATA_REQUIRE_CONFORMANCE="${STRATA_REQUIRE_CONFORMANCE:-}" "$exe" -q || status=1
done
exit $status
