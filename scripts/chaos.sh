#!/usr/bin/env bash
# Runs the long chaos test (chaos_long in tableroll-testkit/tests/chaos.rs) in release mode: rounds of
# random starts and SIGKILLs against a serving group under load, checking that there are never
# two owners and that the listening socket refuses nothing while a live member holds it.
#
#   scripts/chaos.sh [ROUNDS] [SEED]
#
# ROUNDS defaults to $CHAOS_ROUNDS, else 100. SEED defaults to $CHAOS_SEED, else a fresh one;
# the test prints the seed it used, and the same ROUNDS and SEED replay the same sequence of
# actions (the processes' timing differs from run to run). CHAOS_VERBOSE=1 prints the log of
# actions and events at the end.
set -euo pipefail

rounds="${1:-${CHAOS_ROUNDS:-100}}"
seed="${2:-${CHAOS_SEED:-}}"
if ! [[ "$rounds" =~ ^[0-9]+$ ]]; then
    echo "usage: $0 [ROUNDS] [SEED]  (ROUNDS a whole number, got '$rounds')" >&2
    exit 2
fi
if [[ -n "$seed" ]] && ! [[ "$seed" =~ ^[0-9]+$ ]]; then
    echo "usage: $0 [ROUNDS] [SEED]  (SEED a whole number, got '$seed')" >&2
    exit 2
fi

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

export CHAOS_ROUNDS="$rounds"
if [[ -n "$seed" ]]; then
    export CHAOS_SEED="$seed"
else
    unset CHAOS_SEED
fi
exec cargo test --release -p tableroll-testkit --test chaos -- --ignored --exact chaos_long --nocapture
