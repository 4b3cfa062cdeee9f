#!/usr/bin/env bash
# Runs every ignored (long) test of the workspace, in release mode: the 100-round chaos test
# and whatever else is marked #[ignore]. Extra arguments go to the test harnesses, e.g.
#
#   scripts/long-tests.sh --nocapture
#
# CHAOS_ROUNDS and CHAOS_SEED apply to the chaos test (see scripts/chaos.sh).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

exec cargo test --workspace --release -- --ignored "$@"
