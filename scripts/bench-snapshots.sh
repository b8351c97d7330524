#!/usr/bin/env bash
# What writing snapshots costs the service: `loadgen run` at each rate with snapshots every
# $INTERVAL and with snapshots off, side by side in one session, on the mock broker (steady where
# nisshi drifts); loadgen, broker and service share the machine. Reports go to $OUT.
# Runs stay short: the mock cluster finds a fetch offset by scanning the partition's message sets
# (librdkafka's rdkafka_mock.c, "FIXME: Maintain an index"), so latency climbs after ~40 s at
# 1,000/s, snapshots or not. MODES="on off" swaps the order.
#   bash scripts/bench-snapshots.sh
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-30s}
RATES=${RATES:-1000 5000}
INTERVAL=${INTERVAL:-5s}
CUSTOMERS=${CUSTOMERS:-100000}
OUT=${OUT:-out/bench-snapshots}
bash scripts/setup.sh
cargo build --release --quiet -p loadgen -p fraudscore
LG=$PWD/target/release/loadgen
source scripts/bench-common.sh
mkdir -p "$OUT"

topics=()
for rate in $RATES; do
  for mode in ${MODES:-off on}; do
    for t in transactions transactions-scored transactions-dlq; do topics+=("$t-$mode$rate"); done
  done
done
start_mock_broker "$OUT/broker" "${topics[@]}"

for rate in $RATES; do
  for mode in ${MODES:-off on}; do
    if [ $mode = on ]; then interval=$INTERVAL; else interval=0s; fi
    state=$(mktemp -d)
    service=$(service_sut FRAUDSCORE__KAFKA__CONSUMER__STATISTICS_INTERVAL_MS=0 \
      FRAUDSCORE__STATE__DIR="$state" FRAUDSCORE__STATE__SNAPSHOT_INTERVAL="$interval")
    "$LG" run --brokers "$BROKERS" --rate "$rate" --duration "$DURATION" --customers "$CUSTOMERS" \
      --topic-suffix="-$mode$rate" --bad-ratio 0 --warmup 2s \
      --sut-cmd "$service" --report "$OUT/$mode-$rate" || echo "snapshots $mode at $rate/s: exit $?" >&2
    echo "snapshots $mode at $rate/s: $(find "$state" -name '*.snap' | wc -l) snapshot files left, $(du -sh "$state" | cut -f1)"
    rm -rf "$state"
  done
done

python3 - "$OUT" $RATES <<'PY'
import json, os, sys
out, rates = sys.argv[1], sys.argv[2:]
print(f"{'rate':>6} {'snapshots':>9} {'throughput':>10} {'p50 ms':>7} {'p99 ms':>7} {'p99.9 ms':>8} {'max ms':>7} {'missing':>7}")
for rate in rates:
    for mode in os.environ.get("MODES", "off on").split():
        s = json.load(open(f"{out}/{mode}-{rate}/report.json"))["summary"]
        l = s["latency"]
        print(f"{rate:>6} {mode:>9} {s['throughput']:>10.0f} {l['p50_ms']:>7.1f} {l['p99_ms']:>7.1f} {l['p999_ms']:>8.1f} {l['max_ms']:>7.1f} {s['missing']:>7}")
PY
