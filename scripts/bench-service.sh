#!/usr/bin/env bash
# The service beside the pass-through floor, in one session: `loadgen run` at each of $RATES for
# each system (15 s, 2 s warm-up, 0 % bad; the order of the two alternates from rate to rate so
# that a drifting broker favours neither), then `loadgen capacity` for each. Every run and every
# capacity step gets fresh topics. On the mock broker (BROKER=mock, default: steady, it shows
# the service's own cost) or on nisshi at $BROKERS (BROKER=nisshi, started with
# scripts/broker.sh: the real-broker check). Reports go to $OUT.
#   bash scripts/bench-service.sh;  BROKER=nisshi RATES="1000 5000" bash scripts/bench-service.sh
set -euo pipefail
cd "$(dirname "$0")/.."

BROKER=${BROKER:-mock}
DURATION=${DURATION:-15s}
STEP=${STEP:-15s}
RATES=${RATES:-5000 20000 40000 70000}
CUSTOMERS=${CUSTOMERS:-10000}
CAPACITY=${CAPACITY:-yes}
OUT=${OUT:-out/bench-service/$BROKER}
bash scripts/setup.sh
cargo build --release --quiet -p loadgen -p fraudscore
LG=$PWD/target/release/loadgen
source scripts/bench-common.sh
mkdir -p "$OUT"
TAG=$(date +%s)
sut_cmd() {
  if [ "$1" = passthrough ]; then passthrough_sut; else service_sut FRAUDSCORE__STATE__SNAPSHOT_INTERVAL=0s; fi
}

# The service's own time per message, from its histogram fraudscore_processing_seconds (consumed
# to acknowledged, so it holds the producer's linger and the broker's ack): scraped every second
# while it runs, the last scrape read. Prints the mean and the buckets holding p50 and p99.
scrape() {
  while sleep 1; do curl -sf --max-time 1 http://127.0.0.1:9464/metrics > "$1.tmp" && mv "$1.tmp" "$1"; done
}
internal() {
  [ -s "$1" ] || { echo "service internal: no scrape"; return; }
  awk '/^fraudscore_processing_seconds_bucket/ { match($0, /le="[^"]*"/); le = substr($0, RSTART + 4, RLENGTH - 5); n++; les[n] = le; cum[n] = $2 }
       /^fraudscore_processing_seconds_sum/ { sum = $2 } /^fraudscore_processing_seconds_count/ { count = $2 }
       END { if (count == 0) { print "service internal: no messages"; exit }
             for (i = 1; i <= n; i++) { if (!p50 && cum[i] >= 0.5 * count) p50 = les[i]; if (!p99 && cum[i] >= 0.99 * count) p99 = les[i] }
             printf "service internal (consumed to acknowledged): mean %.2f ms, p50 <= %s s, p99 <= %s s (n = %d)\n", 1000 * sum / count, p50, p99, count }' "$1"
}

order="passthrough service"
for rate in $RATES; do
  for sut in $order; do
    if [ "$sut" = service ]; then rm -f "$OUT/$sut-$rate.metrics"; scrape "$OUT/$sut-$rate.metrics" & SCRAPER=$!; fi
    start_broker "$OUT/broker"
    "$LG" run --brokers "$BROKERS" --rate "$rate" --duration "$DURATION" --customers "$CUSTOMERS" \
      --topic-suffix="-$sut$rate-$TAG" "${CREATE[@]}" --bad-ratio 0 --warmup 2s \
      --sut-cmd "$(sut_cmd $sut)" --report "$OUT/$sut-$rate" > "$OUT/$sut-$rate.txt" 2>&1 \
      || echo "$sut at $rate/s: exit $?" >&2
    echo "$BROKER $sut $rate/s: $(grep -o 'latency ms: .*' "$OUT/$sut-$rate.txt" | head -1) $(grep -o 'missing [0-9]*' "$OUT/$sut-$rate.txt" | head -1)"
    if [ "$sut" = service ]; then kill "$SCRAPER"; wait "$SCRAPER" 2>/dev/null || true; internal "$OUT/$sut-$rate.metrics"; fi
  done
  order=$(echo "$order" | awk '{print $2, $1}')
done
[ "$CAPACITY" = yes ] || exit 0
for sut in passthrough service; do
  start_broker "$OUT/broker"
  "$LG" capacity --brokers "$BROKERS" --fresh-topics --step-duration "$STEP" --customers "$CUSTOMERS" \
    --bad-ratio 0 --start-rate "${START_RATE:-5000}" --sut-cmd "$(sut_cmd $sut)" \
    --report "$OUT/$sut-capacity" > "$OUT/$sut-capacity.txt" 2>&1 || echo "$sut capacity: exit $?" >&2
  echo "$BROKER $sut: $(grep 'highest sustained rate' "$OUT/$sut-capacity.txt" || tail -1 "$OUT/$sut-capacity.txt")"
done
