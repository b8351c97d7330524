#!/usr/bin/env bash
# Every test, with everything they need: ONNX Runtime, the nisshi broker (built once, ~10 min), Prometheus,
# the Rust tests (unit, property, ONNX, integration against the real broker), then the
# engine's windows against pandas (models/parity.sh, Python venv in .tools/venv).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Prometheus and promtool (Debian package), for the monitoring test of config/prometheus and
# config/grafana.
command -v promtool >/dev/null || { apt-get update -qq && apt-get install -y -qq prometheus >/dev/null; }
bash scripts/broker.sh start
trap 'bash scripts/broker.sh stop' EXIT
# Integration tests fail, rather than skip, when the broker is missing.
export FRAUDSCORE_REQUIRE_BROKER=1 FRAUDSCORE_REQUIRE_PROMETHEUS=1
export FRAUDSCORE_BROKER=127.0.0.1:${BROKER_PORT:-9092}
cargo test --workspace --no-fail-fast 2>&1
# The engine's windows against an independent pandas computation (creates .tools/venv once).
bash models/parity.sh
