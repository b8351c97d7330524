#!/usr/bin/env bash
# Checks the engine's customer window features against an independent pandas computation:
#
#     bash models/parity.sh
#
# Simulates a small sample (200 customers, 40 days), merges in made-up customers with
# transactions exactly on window boundaries and at the same instant, replays it through
# the engine with every window feature (30s .. 30d), then runs models/parity_windows.py,
# which prints `N passed, M failed` and exits non-zero on any failure. Data goes to the
# git-ignored out/parity/.
#
# A window holds the customer's transactions seen so far: of two at the same instant, the
# first scored cannot see the second, which has not arrived (PARITY_TIES=arrived, the
# default and the engine's contract). PARITY_TIES=all shows how many rows such ties touch.
set -euo pipefail
cd "$(dirname "$0")/.."

SEED=7
DATA=out/parity
mkdir -p "$DATA"
source models/venv.sh

WINDOWS="30s 10m 1h 1d 7d 30d"
FEATURES="amount,hour_of_day,is_weekend"
for w in $WINDOWS; do
    FEATURES="$FEATURES,customer_tx_count_$w,customer_sum_amount_$w,customer_avg_amount_$w,amount_to_avg_$w"
done

echo "== building the simulator and the engine (release)" >&2
cargo build --release --quiet -p loadgen -p fraudscore
BIN=$(cargo metadata --format-version 1 --no-deps | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release

"$BIN/loadgen" simulate --seed "$SEED" --customers 200 --days 40 --output "$DATA/simulated.jsonl"
"$PY" models/parity_windows.py add-edges --input "$DATA/simulated.jsonl" --output "$DATA/transactions.jsonl"
"$BIN/fraudscore" replay --features "$FEATURES" \
    --input "$DATA/transactions.jsonl" --output "$DATA/features.jsonl" --dlq "$DATA/rejected.jsonl"
"$PY" models/parity_windows.py check --ties "${PARITY_TIES:-arrived}" \
    --transactions "$DATA/transactions.jsonl" --features "$DATA/features.jsonl"
