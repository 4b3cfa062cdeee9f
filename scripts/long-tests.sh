#!/usr/bin/env bash
# Runs every ignored (long) test of the workspace, in release mode: the 100-round chaos test
# and whatever else is marked #[ignore]. Extra arguments go to the test harnesses, e.g.
#
#   scripts/long-tests.sh --nocapture
#
# CHAOS_ROUNDS and CHAOS_SEED apply to the chaos test (see scripts/chaos.sh). The Go interop
# tests (tableroll-testkit/tests/interop.rs) need the Go peers: TABLEROLL_GO_PEERS, or else ../shared/interop
# beside the repository when it is there.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

if [ -z "${TABLEROLL_GO_PEERS:-}" ] && [ -d "$root/../shared/interop" ]; then
  TABLEROLL_GO_PEERS="$(cd "$root/../shared/interop" && pwd)"
  export TABLEROLL_GO_PEERS
fi
exec cargo test --workspace --release --all-features -- --ignored "$@"
