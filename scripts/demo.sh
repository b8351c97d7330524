#!/usr/bin/env bash
# The demo: fetches ONNX Runtime if needed, builds, and runs the whole pipeline on an embedded
# mock Kafka cluster, fed by the fraud simulator (history, then accelerated live days with labels). Extra arguments go to `fraudscore demo` (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo run --release --quiet -- demo "$@"
