#!/usr/bin/env bash
# What the configured batching costs in latency: `loadgen run` against the pass-through and the
# service with producer linger.ms / consumer fetch.wait.max.ms at 5/5 (shipped), 1/1 and 0/1, on
# every hop (loadgen's producer and consumer, the system under test's), side by side in one
# session, on the mock broker (BROKER=mock, default) or on nisshi at $BROKERS (BROKER=nisshi,
# started with scripts/broker.sh). Short runs on fresh topics. Reports go to $OUT.
#   bash scripts/bench-latency-floor.sh;  BROKER=nisshi bash scripts/bench-latency-floor.sh
set -euo pipefail
cd "$(dirname "$0")/.."

BROKER=${BROKER:-mock}
DURATION=${DURATION:-15s}
RATE=${RATE:-5000}
SETTINGS=${SETTINGS:-5/5 1/1 0/1}
CUSTOMERS=${CUSTOMERS:-10000}
OUT=${OUT:-out/bench-latency-floor/$BROKER}
bash scripts/setup.sh
cargo build --release --quiet -p loadgen -p fraudscore
LG=$PWD/target/release/loadgen
source scripts/bench-common.sh
mkdir -p "$OUT"
TAG=$(date +%s)

suffix() { echo "-$1-${2/\//x}-$TAG"; }
for s in $SETTINGS; do
  linger=${s%/*}; fetch=${s#*/}
  for sut in passthrough service; do
    if [ $sut = passthrough ]; then
      cmd=$(passthrough_sut --linger-ms "$linger" -X "fetch.wait.max.ms=$fetch")
    else
      cmd=$(service_sut FRAUDSCORE__KAFKA__PRODUCER__LINGER_MS="$linger" \
        FRAUDSCORE__KAFKA__CONSUMER__FETCH_WAIT_MAX_MS="$fetch" FRAUDSCORE__STATE__SNAPSHOT_INTERVAL=0s)
    fi
    start_broker "$OUT/broker"
    "$LG" run --brokers "$BROKERS" --rate "$RATE" --duration "$DURATION" --customers "$CUSTOMERS" \
      --topic-suffix="$(suffix $sut $s)" "${CREATE[@]}" --bad-ratio 0 --warmup 2s \
      --linger-ms "$linger" -X "fetch.wait.max.ms=$fetch" \
      --sut-cmd "$cmd" --report "$OUT/$sut-${s/\//x}" > "$OUT/$sut-${s/\//x}.txt" 2>&1 \
      || echo "$sut at $s: exit $?" >&2
    echo "$BROKER $sut linger/fetch $s: $(grep -o 'latency ms: .*' "$OUT/$sut-${s/\//x}.txt" | head -1)"
  done
done
