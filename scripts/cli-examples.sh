#!/usr/bin/env bash
# Replays the three seed examples of SPEC §4 through the `tally` CLI against a daemon started with
# the README's quick-start command, in a scratch folder holding a copy of config.toml (port 0, so
# nothing else on the machine is disturbed; `tally` finds the port in tally-data/tallyd.addr).
# Exits non-zero on the first figure that is not exact.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
daemon_pid=""
cleanup() {
  if [[ -n "$daemon_pid" ]]; then kill "$daemon_pid" 2>/dev/null || true; wait "$daemon_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

cargo build --release --manifest-path "$root/Cargo.toml" --bin tallyd --bin tally
sed -e 's/^listen = .*/listen = "127.0.0.1:0"/' -e 's/^http_listen = .*/http_listen = "127.0.0.1:0"/' \
    "$root/config.toml" > "$work/config.toml"
cd "$work"
# The README's command (plus --manifest-path, since we run it from the scratch folder).
cargo run --quiet --release --manifest-path "$root/Cargo.toml" --bin tallyd -- serve > tallyd.log 2>&1 &
daemon_pid=$!
for _ in $(seq 1 100); do [[ -s tally-data/tallyd.addr ]] && break; sleep 0.1; done
[[ -s tally-data/tallyd.addr ]] || { cat tallyd.log; echo "tallyd did not start" >&2; exit 1; }

tally() { "${CARGO_TARGET_DIR:-$root/target}/release/tally" "$@"; }
# expect JSON FIELD VALUE: the field of the JSON object on stdin equals VALUE (as JSON).
expect() {
  python3 -c '
import json, sys
doc = json.load(sys.stdin)
path, want = sys.argv[1], json.loads(sys.argv[2])
value = doc
for part in path.split("."):
    value = value[int(part)] if part.isdigit() else value[part]
if value != want:
    sys.exit(f"{path}: expected {want!r}, got {value!r} in {doc}")
' "$1" "$2"
}

# Metered: 100,000 tokens are included; the 100,001st costs $0.002 = 20 rate units.
tally customer create acme --plan pro > /dev/null
tally --json report acme tokens 100000 | expect charged 0
tally --json check acme tokens | expect cost 20
tally --json report acme tokens 1 | expect overage_cost_units 20
tally --json customer show acme | expect usage.tokens 100001
tally --json check acme priority-support | expect allowed true

# Credits: one 500-credit pack runs 500 images; the 501st check is denied.
tally customer create pics --plan images > /dev/null
tally --json top-up pics --packs 1 | expect customer.credits 500
tally --json report pics image-gen 499 | expect credits 1
tally --json check pics image-gen | expect allowed true
tally --json report pics image-gen 1 --only-if-allowed | expect credits 0
tally --json check pics image-gen | expect allowed false
if tally report pics image-gen 1 --only-if-allowed 2> err.txt; then echo "overspent" >&2; exit 1; fi
grep -q "insufficient balance" err.txt

# Balance: $50 loaded; gpt-4 300, gpt-3.5 30 and an embedding 1 rate unit.
tally customer create wally --plan wallet > /dev/null
tally --json top-up wally --amount 50.00 | expect customer.balance_units 500000
tally --json report wally gpt-4 1 | expect charged 300
tally --json report wally gpt-3.5 1 | expect charged 30
tally --json report wally embeddings 1 | expect charged 1
tally --json customer show wally | expect balance_units 499669
tally --json customer show wally | expect balance '"49.9669"'

# Bad values are typed refusals that change nothing; an empty completion (0) records nothing.
tally --json report wally gpt-4 0 | expect charged 0
if tally report wally gpt-4 -5 2> err.txt; then echo "a negative report was accepted" >&2; exit 1; fi
grep -q "is negative" err.txt
if tally top-up wally --amount 0.004 2> err.txt; then echo "a sub-cent top-up was accepted" >&2; exit 1; fi
grep -q "whole number of cents" err.txt
if tally top-up wally --amount 0.50 2> err.txt; then echo "a top-up below the minimum was accepted" >&2; exit 1; fi
grep -q 'below the minimum of \$1.00' err.txt
tally --json customer show wally | expect balance_units 499669

# Holds: reserve, settle the actual.
hold="$(tally --json reserve wally gpt-4 2 --ttl 30s | python3 -c 'import json,sys; print(json.load(sys.stdin)["hold"])')"
tally --json settle "$hold" 1 | expect charged 300
tally --json customer show wally | expect balance_units 499369

# Billing: the Pro invoice of 130,000 tokens is $49.00 + $60.00 = $109.00, fee $5.31, net $103.69.
tally customer create bill --plan pro > /dev/null
tally report bill tokens 130000 > /dev/null
tally --json close-period bill | expect total '"109.00"'
tally --json invoices bill | expect invoices.0.fee '"5.31"'
tally --json invoices bill | expect invoices.0.net '"103.69"'
tally invoices bill --csv | grep -q '^bill,1,pro,.*,metered,tokens,130000,100000,30000,0.002,1,60.00,109.00,5.31,103.69$'
tally --json transactions pics | expect transactions.0.fee '"0.85"'
tally --json transactions wally | expect transactions.0.net '"47.35"'
tally --json events bill | expect events.0.amount 130000
tally --json reconcile bill | expect reconciled true

echo "cli-examples: 4 passed, 0 failed"
