#!/usr/bin/env bash
# The pass-through floor: `loadgen run` at 1,000, 5,000 and 20,000 msg/s, then a capacity
# search, each on fresh topics, with `loadgen passthrough` started and stopped by loadgen.
#   BROKERS=127.0.0.1:9092 DURATION=30s OUT=out/bench-passthrough bash loadgen/bench/passthrough.sh
# Run from the repository root after `cargo build --release -p loadgen`.
set -euo pipefail
cd "$(dirname "$0")/../.."

BROKERS=${BROKERS:-127.0.0.1:9092}
DURATION=${DURATION:-30s}
STEP=${STEP:-20s}
OUT=${OUT:-out/bench-passthrough}
RATES=${RATES:-1000 5000 20000}
LG=$PWD/target/release/loadgen
SUT="exec $LG passthrough --brokers {brokers} --input-topic {input} --output-topic {scored} --group {group} --offset-reset earliest"
TAG=$(date +%s)

for rate in $RATES; do
  # A run with missing outputs exits non-zero; the report says what went missing.
  "$LG" run --brokers "$BROKERS" --rate "$rate" --duration "$DURATION" \
    --topic-suffix="-pt$rate-$TAG" --create-topics --delete-topics \
    --sut-cmd "$SUT" --report "$OUT/run-$rate" || echo "run at $rate/s: exit $?" >&2
done
"$LG" capacity --brokers "$BROKERS" --fresh-topics --step-duration "$STEP" \
  --sut-cmd "$SUT" --report "$OUT/capacity"
