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
mkdir -p "$OUT"
TAG=$(date +%s)

suffix() { echo "-$1-${2/\//x}-$TAG"; }
if [ "$BROKER" = mock ]; then
  topics=()
  for s in $SETTINGS; do
    for sut in passthrough service; do
      for t in transactions transactions-scored transactions-dlq; do topics+=("$t$(suffix $sut $s)"); done
    done
  done
  rm -f "$OUT/broker"
  "$LG" broker --mock --topics "$(IFS=,; echo "${topics[*]}")" --address-file "$OUT/broker" &
  BROKER_PID=$!
  trap 'kill $BROKER_PID 2>/dev/null || true' EXIT
  for _ in $(seq 50); do [ -s "$OUT/broker" ] && break; sleep 0.1; done
  BROKERS=$(cat "$OUT/broker")
  CREATE=()
else
  BROKERS=${BROKERS:-127.0.0.1:9092}
  CREATE=(--create-topics --delete-topics)
fi

for s in $SETTINGS; do
  linger=${s%/*}; fetch=${s#*/}
  for sut in passthrough service; do
    if [ $sut = passthrough ]; then
      cmd="exec $LG passthrough --brokers {brokers} --input-topic {input} --output-topic {scored} \
--group {group} --offset-reset earliest --linger-ms $linger -X fetch.wait.max.ms=$fetch"
    else
      cmd="FRAUDSCORE__KAFKA__BROKERS={brokers} FRAUDSCORE__KAFKA__INPUT_TOPIC={input} \
FRAUDSCORE__KAFKA__OUTPUT_TOPIC={scored} FRAUDSCORE__KAFKA__DLQ_TOPIC={dlq} FRAUDSCORE__KAFKA__GROUP_ID={group} \
FRAUDSCORE__KAFKA__PRODUCER__LINGER_MS=$linger FRAUDSCORE__KAFKA__CONSUMER__FETCH_WAIT_MAX_MS=$fetch \
FRAUDSCORE__STATE__SNAPSHOT_INTERVAL=0s \
exec $PWD/target/release/fraudscore run --config $PWD/config/fraudscore.toml"
    fi
    "$LG" run --brokers "$BROKERS" --rate "$RATE" --duration "$DURATION" --customers "$CUSTOMERS" \
      --topic-suffix="$(suffix $sut $s)" "${CREATE[@]}" --bad-ratio 0 --warmup 2s \
      --linger-ms "$linger" -X "fetch.wait.max.ms=$fetch" \
      --sut-cmd "$cmd" --report "$OUT/$sut-${s/\//x}" > "$OUT/$sut-${s/\//x}.txt" 2>&1 \
      || echo "$sut at $s: exit $?" >&2
    echo "$BROKER $sut linger/fetch $s: $(grep -o 'latency ms: .*' "$OUT/$sut-${s/\//x}.txt" | head -1)"
  done
done
