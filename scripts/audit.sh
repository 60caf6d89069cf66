#!/usr/bin/env bash
# Supply-chain checks with cargo-deny (deny.toml): known vulnerabilities and yanked releases
# (RustSec advisories), licenses, banned and unknown sources. Installs cargo-deny if missing.
#   scripts/audit.sh
# The advisory database is a git repository on github.com. Where it cannot be fetched (a
# sandbox with only the package registries), the advisory check is reported as SKIPPED and the
# script still fails on everything else; set TALLY_AUDIT_REQUIRE_ADVISORIES=1 to fail instead.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo deny --version > /dev/null 2>&1; then
  cargo install --locked cargo-deny --version 0.20.2
fi

cargo deny check bans licenses sources

if timeout 60 cargo deny fetch db > /dev/null 2>&1; then
  cargo deny check --disable-fetch advisories
elif [[ "${TALLY_AUDIT_REQUIRE_ADVISORIES:-0}" == 1 ]]; then
  echo "audit: the RustSec advisory database cannot be fetched" >&2
  exit 1
else
  echo "audit: advisories SKIPPED: the RustSec advisory database (github.com) cannot be fetched from here" >&2
fi
