#!/usr/bin/env bash
# The service with pipeline.threads 1 and 2, side by side in one session: `loadgen run` at each
# of $RATES (open loop, 0% bad, 2 s warm-up, fresh topics, 4 partitions), in the order 1 2 2 1
# so that a drifting broker favours neither, on the mock broker (BROKER=mock, default) or on
# nisshi at $BROKERS (BROKER=nisshi, started with scripts/broker.sh). Reports go to $OUT.
#   bash scripts/bench-pipelines.sh;  BROKER=nisshi RATES="1000 5000" bash scripts/bench-pipelines.sh
set -euo pipefail
cd "$(dirname "$0")/.."

BROKER=${BROKER:-mock}
DURATION=${DURATION:-15s}
RATES=${RATES:-5000 20000 40000}
ORDER=${ORDER:-1 2 2 1}
CUSTOMERS=${CUSTOMERS:-10000}
OUT=${OUT:-out/bench-pipelines/$BROKER}
bash scripts/setup.sh
cargo build --release --quiet -p loadgen -p fraudscore
LG=$PWD/target/release/loadgen
source scripts/bench-common.sh
mkdir -p "$OUT"
TAG=$(date +%s)

runs=()
for rate in $RATES; do
  i=0
  for t in $ORDER; do runs+=("$rate/$t/$i"); i=$((i + 1)); done
done
suffix() { echo "-p${1//\//-}-$TAG"; }
for r in "${runs[@]}"; do
  rate=${r%%/*}; rest=${r#*/}; threads=${rest%%/*}
  name="rate$rate-threads$threads-${r##*/}"
  cmd=$(service_sut FRAUDSCORE__PIPELINE__THREADS="$threads" FRAUDSCORE__STATE__SNAPSHOT_INTERVAL=0s)
  start_broker "$OUT/broker"
  "$LG" run --brokers "$BROKERS" --rate "$rate" --duration "$DURATION" --customers "$CUSTOMERS" \
    --topic-suffix="$(suffix "$r")" "${CREATE[@]}" --bad-ratio 0 --warmup 2s \
    --sut-cmd "$cmd" --report "$OUT/$name" > "$OUT/$name.txt" 2>&1 || echo "$name: exit $?" >&2
  echo "$BROKER rate $rate threads $threads: $(grep -o 'latency ms: .*' "$OUT/$name.txt" | head -1) $(grep -o 'missing [0-9]*' "$OUT/$name.txt" | head -1)"
done
