#!/usr/bin/env bash
# CPU time per message of each system under test, from /proc, side by side: $PAIRS rounds of
# `loadgen run` at $RATE (15 s, 2 s warm-up, 0 % bad, 10,000 customers, a new mock broker per
# run), the systems in $SUTS taking turns in each round. A system is `passthrough` or the path of
# a fraudscore binary (another build, to compare two); $EXTRA adds FRAUDSCORE__... settings.
# CPU is read between 5 s and 13 s of each run, while the rate is steady.
#   bash scripts/bench-cpu.sh
#   SUTS="/tmp/fraudscore-before target/release/fraudscore" PAIRS=5 bash scripts/bench-cpu.sh
#   SUTS="target/release/fraudscore" EXTRA="FRAUDSCORE__PIPELINE__THREADS=1" bash scripts/bench-cpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."

RATE=${RATE:-30000}
PAIRS=${PAIRS:-3}
SUTS=${SUTS:-passthrough target/release/fraudscore}
EXTRA=${EXTRA:-}
OUT=${OUT:-out/bench-cpu}
bash scripts/setup.sh
cargo build --release --quiet -p loadgen -p fraudscore
LG=$PWD/target/release/loadgen
BROKER=mock
source scripts/bench-common.sh
mkdir -p "$OUT"

# utime + stime of the process, in clock ticks.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# A regex matching the text $1 as it is.
literal() { printf '%s' "$1" | sed 's/[][\\.*^$+?(){}|]/\\&/g'; }

for round in $(seq "$PAIRS"); do
  n=0
  for sut in $SUTS; do
    n=$((n + 1))
    if [ "$sut" = passthrough ]; then
      cmd=$(passthrough_sut); pattern="^$(literal "$LG") passthrough"
    else
      bin=$(realpath "$sut")
      # shellcheck disable=SC2086
      cmd=$(FRAUDSCORE_BIN=$bin service_sut FRAUDSCORE__STATE__SNAPSHOT_INTERVAL=0s $EXTRA); pattern="^$(literal "$bin") run"
    fi
    start_broker "$OUT/broker" > /dev/null
    report="$OUT/round$round-sut$n"
    rm -f "$report.cpu"
    (
      sleep 5
      pid=$(pgrep -f "$pattern" | head -1)
      a=$(ticks "$pid"); sleep 8; b=$(ticks "$pid")
      echo "$a $b $(getconf CLK_TCK)" > "$report.cpu"
    ) &
    sampler=$!
    "$LG" run --brokers "$BROKERS" --rate "$RATE" --duration 15s --customers 10000 \
      --topic-suffix="-cpu$round-$(date +%s%N)" "${CREATE[@]}" --bad-ratio 0 --warmup 2s \
      --sut-cmd "$cmd" --report "$report" > "$report.txt" 2>&1 || echo "$sut: exit $?" >&2
    wait "$sampler" || true
    if [ ! -s "$report.cpu" ]; then
      echo "round $round $sut: no CPU sample (the process was not found at 5 s or ended early; see $report.txt)"
      continue
    fi
    read -r a b hz < "$report.cpu"
    per_msg=$(awk -v a="$a" -v b="$b" -v hz="$hz" -v r="$RATE" 'BEGIN { printf "%.1f", (b - a) / hz * 1e6 / (r * 8) }')
    echo "round $round $sut: $per_msg µs CPU per message; $(grep -o 'latency ms: p50 [0-9.]*  p90 [0-9.]*  p99 [0-9.]*' "$report.txt" | head -1); $(grep -o 'missing [0-9]*' "$report.txt" | head -1)"
  done
done
