#!/usr/bin/env bash
# The service beside the pass-through floor, in one session, on the broker at $BROKERS:
# `loadgen run` at each rate for each system, then `loadgen capacity` for each, every run on
# fresh topics (nisshi's memory engine slows as a topic grows). Reports go to $OUT.
#   bash scripts/broker.sh start && bash scripts/bench-service.sh
set -euo pipefail
cd "$(dirname "$0")/.."

BROKERS=${BROKERS:-127.0.0.1:9092}
DURATION=${DURATION:-30s}
STEP=${STEP:-20s}
OUT=${OUT:-out/bench-service}
RATES=${RATES:-1000 5000 20000}
CUSTOMERS=${CUSTOMERS:-10000}
bash scripts/setup.sh
cargo build --release --quiet -p loadgen -p fraudscore
LG=$PWD/target/release/loadgen
source scripts/bench-common.sh
PASSTHROUGH=$(passthrough_sut)
SERVICE=$(service_sut)
TAG=$(date +%s)

for rate in $RATES; do
  for sut in passthrough service; do
    if [ $sut = passthrough ]; then cmd=$PASSTHROUGH; else cmd=$SERVICE; fi
    "$LG" run --brokers "$BROKERS" --rate "$rate" --duration "$DURATION" --customers "$CUSTOMERS" \
      --topic-suffix="-$sut$rate-$TAG" --create-topics --delete-topics \
      --sut-cmd "$cmd" --report "$OUT/$sut-$rate" || echo "$sut at $rate/s: exit $?" >&2
  done
done
for sut in passthrough service; do
  if [ $sut = passthrough ]; then cmd=$PASSTHROUGH; else cmd=$SERVICE; fi
  "$LG" capacity --brokers "$BROKERS" --fresh-topics --step-duration "$STEP" --customers "$CUSTOMERS" \
    --start-rate "${START_RATE:-250}" --sut-cmd "$cmd" --report "$OUT/$sut-capacity" || echo "$sut capacity: exit $?" >&2
done
