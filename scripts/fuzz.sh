#!/usr/bin/env bash
# Fuzzes the frame decoder and request validation (fuzz/fuzz_targets/frame.rs) with libFuzzer
# for a bounded time. Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
#   scripts/fuzz.sh [seconds]   (default 60)
# New inputs that reach new code are kept in fuzz/corpus/frame/ (commit the small ones; the
# end-to-end test `fuzz_corpus` replays every file there against a real daemon). A crash leaves
# its input in fuzz/artifacts/frame/ and fails the script.
set -euo pipefail
seconds="${1:-60}"
cd "$(dirname "$0")/../fuzz"
cargo +nightly fuzz run frame corpus/frame -- \
    -max_total_time="$seconds" -max_len=4096 -timeout=5 -rss_limit_mb=2048 -print_final_stats=1
