#!/usr/bin/env bash
# Rebuilds models/fraud.onnx from nothing, deterministically:
#
#     bash models/build.sh
#
# 1. the Python venv .tools/venv with models/requirements.txt (created if missing);
# 2. the simulator: 183 days, 5,000 customers, 10,000 terminals, fixed seed -> out/models/transactions.jsonl,
#    and one fraud label per transaction, known 7 days after it -> out/models/labels.jsonl;
# 3. the engine's offline replay of both, computing every candidate feature -> out/models/features.jsonl;
# 4. models/train.py: feature-set comparison, book protocol metrics, the shipped model
#    -> models/fraud.onnx and models/report.json;
# 5. models/make_fixture.py: the parity fixtures -> models/fixtures/model_expected.json (scores)
#    and models/fixtures/contributions_expected.json (LightGBM's TreeSHAP reason codes).
#
# Same inputs, same bytes: run it twice and `git diff` shows nothing. Data stays in the
# git-ignored out/models/. Runs from any directory; takes a few minutes on 2 cores
# (plus the first cargo build).
set -euo pipefail
cd "$(dirname "$0")/.."

SEED=42
DATA=out/models
mkdir -p "$DATA" models/fixtures
source models/venv.sh

step() { echo "== $*" >&2; }

step "building the simulator and the engine (release)"
cargo build --release --quiet -p loadgen -p fraudscore
BIN=$(cargo metadata --format-version 1 --no-deps | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release

step "simulating (seed $SEED)"
"$BIN/loadgen" simulate --seed "$SEED" --output "$DATA/transactions.jsonl" \
    --labels "$DATA/labels.jsonl" --label-delay 7d

FEATURES=$("$PY" models/train.py --list-features)
step "replaying through the engine: $FEATURES"
"$BIN/fraudscore" replay --features "$FEATURES" --labels "$DATA/labels.jsonl" \
    --input "$DATA/transactions.jsonl" --output "$DATA/features.jsonl" --dlq "$DATA/rejected.jsonl"
if [ -s "$DATA/rejected.jsonl" ]; then
    echo "the engine rejected simulator lines, see $DATA/rejected.jsonl" >&2
    exit 1
fi

step "training"
"$PY" models/train.py --transactions "$DATA/transactions.jsonl" --features "$DATA/features.jsonl" \
    --output models/fraud.onnx --report models/report.json --booster "$DATA/booster.txt"

step "writing the parity fixture"
"$PY" models/make_fixture.py --model models/fraud.onnx --features "$DATA/features.jsonl" \
    --output models/fixtures/model_expected.json \
    --booster "$DATA/booster.txt" --contributions models/fixtures/contributions_expected.json

ls -l models/fraud.onnx models/report.json models/fixtures/*.json >&2
sha256sum models/fraud.onnx models/fixtures/*.json >&2
