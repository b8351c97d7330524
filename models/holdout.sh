#!/usr/bin/env bash
# The shipped model and its recipe on simulations with seeds never trained or tuned on:
#
#     bash models/holdout.sh            # seeds 1 2 3; SEEDS="..." for others
#
# Per seed: simulate (with labels known 7 days later), replay through the engine with the
# shipped model's features, then models/holdout.py. One JSON line per seed on stdout, also
# written to models/holdout.json. Data goes to the git-ignored out/holdout/.
set -euo pipefail
cd "$(dirname "$0")/.."

SEEDS=${SEEDS:-1 2 3}
DATA=out/holdout
mkdir -p "$DATA"
source models/venv.sh
cargo build --release --quiet -p loadgen -p fraudscore
BIN=$(cargo metadata --format-version 1 --no-deps | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release
FEATURES=$("$PY" -c 'import json,onnx; m=onnx.load("models/fraud.onnx"); print(",".join(json.loads({p.key:p.value for p in m.metadata_props}["fraudscore.features"])))')

: > models/holdout.json
for seed in $SEEDS; do
    echo "== seed $seed" >&2
    "$BIN/loadgen" simulate --seed "$seed" --output "$DATA/tx-$seed.jsonl" \
        --labels "$DATA/labels-$seed.jsonl" --label-delay 7d
    "$BIN/fraudscore" replay --features "$FEATURES" --labels "$DATA/labels-$seed.jsonl" \
        --input "$DATA/tx-$seed.jsonl" --output "$DATA/features-$seed.jsonl" --dlq "$DATA/rejected-$seed.jsonl"
    "$PY" models/holdout.py --seed "$seed" --transactions "$DATA/tx-$seed.jsonl" \
        --features "$DATA/features-$seed.jsonl" --model models/fraud.onnx | tee -a models/holdout.json
done
