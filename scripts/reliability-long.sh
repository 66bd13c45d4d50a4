#!/usr/bin/env bash
# Long reliability runs (release build): the #[ignore]d "long" variants of every
# tests/reliability_*.rs file. Parameters via environment (defaults in brackets):
#   RELIABILITY_KILLS [25]            SIGKILLs in the crash test
#   RELIABILITY_UP_MIN_MS/UP_MAX_MS   [300/5000] random run time before each kill
#   RELIABILITY_DOWN_MAX_MS [1000]    random down time before each restart
#   RELIABILITY_PACE_MS [2]           pause of each of the two writers between writes
#   RELIABILITY_FAULT_ROUNDS [10]     rounds of every fault in the fault test
#   RELIABILITY_EVENTS [1000000]      events arriving while paused (resources)
#   RELIABILITY_QUEUE_CAPACITY [100000], RELIABILITY_RSS_BOUND_MIB [128 + capacity × 1.5 KiB]
#   RELIABILITY_ADMIN_PAYLOADS [2000], RELIABILITY_ADMIN_CONNECTIONS [1000]
#   RELIABILITY_SEED                  replay a run's random schedule
# Usage: scripts/reliability-long.sh [test-file-suffix ...]   e.g. `crash resources`
set -euo pipefail
cd "$(dirname "$0")/.."
suites=("$@")
if [ ${#suites[@]} -eq 0 ]; then
    suites=(crash faults hostile_admin resources)
fi
for s in "${suites[@]}"; do
    echo "=== reliability_${s} (long) ==="
    cargo test --release --test "reliability_${s}" -- --ignored --nocapture --test-threads=1
done
