#!/usr/bin/env bash
# The real test broker: nisshi 0.8.1 (Kafka-compatible), installed once into .tools/nisshi,
# run on 127.0.0.1:9092 with its data in memory, with the service's topics created.
#   scripts/broker.sh install | start | stop | topics NAME...
set -euo pipefail
cd "$(dirname "$0")/.."

NISSHI_VERSION=0.8.1
ROOT=$PWD/.tools/nisshi
BIN=$ROOT/bin/nisshi
RUN=$PWD/.tools/run
PORT=${BROKER_PORT:-9092}
PARTITIONS=${BROKER_PARTITIONS:-4}
TOPICS=(transactions transactions-scored transactions-dlq)

install() {
  [ -x "$BIN" ] && return
  if ! command -v clang >/dev/null && ! dpkg -s libclang-dev >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq libclang-dev cmake >/dev/null
  fi
  command -v cmake >/dev/null || { apt-get update -qq && apt-get install -y -qq cmake >/dev/null; }
  echo "broker: building nisshi $NISSHI_VERSION into $ROOT (about 10 minutes, once)" >&2
  # --locked alone fails: one dependency asks for Rust 1.96 but builds fine on 1.95.
  cargo install nisshi --version "$NISSHI_VERSION" --locked --ignore-rust-version --root "$ROOT" >&2
}

wait_port() {
  for _ in $(seq 1 100); do
    (exec 3<>/dev/tcp/127.0.0.1/"$PORT") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "broker: nothing listening on 127.0.0.1:$PORT" >&2
  return 1
}

topics() {
  for t in "$@"; do
    if ! out=$("$BIN" topic create "$t" --partitions "$PARTITIONS" --broker "tcp://127.0.0.1:$PORT" 2>&1); then
      case "$out" in
        *xist*) ;;  # already there from an earlier start: fine
        *) echo "broker: creating topic $t: $out" >&2; return 1 ;;
      esac
    fi
  done
}

start() {
  install
  stop
  if (exec 3<>/dev/tcp/127.0.0.1/"$PORT") 2>/dev/null; then
    echo "broker: 127.0.0.1:$PORT is already taken by another process: stop it, or choose another port with BROKER_PORT" >&2
    return 1
  fi
  mkdir -p "$RUN"
  data=$(mktemp -d)
  # exec: the background job becomes nisshi itself, so the pid file names the broker.
  (cd "$data" && exec "$BIN" broker --storage-engine memory://nisshi/ \
      --listener-url "tcp://127.0.0.1:$PORT" --advertised-listener-url "tcp://127.0.0.1:$PORT" \
      --group-initial-rebalance-delay "${BROKER_REBALANCE_DELAY:-1s}" \
      >"$RUN/nisshi.log" 2>&1) &
  echo $! >"$RUN/nisshi.pid"
  wait_port
  if ! kill -0 "$(cat "$RUN/nisshi.pid")" 2>/dev/null; then
    echo "broker: nisshi exited at start:" >&2
    tail -5 "$RUN/nisshi.log" >&2
    return 1
  fi
  topics "${TOPICS[@]}"
  echo "broker: nisshi on 127.0.0.1:$PORT, topics ${TOPICS[*]} ($PARTITIONS partitions), log $RUN/nisshi.log" >&2
}

stop() {
  [ -f "$RUN/nisshi.pid" ] || return 0
  pid=$(cat "$RUN/nisshi.pid")
  kill "$pid" 2>/dev/null || true
  # Wait for it to let go of the port, so that a start right after finds it free.
  for _ in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$RUN/nisshi.pid"
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  topics) shift; topics "$@" ;;
  *) echo "usage: $0 install|start|stop|topics NAME..." >&2; exit 2 ;;
esac
