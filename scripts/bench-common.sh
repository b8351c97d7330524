# Sourced by the scripts/bench-*.sh: the systems under test as `loadgen run --sut-cmd` commands,
# and librdkafka's mock cluster as a standalone broker. Expects $LG (the loadgen binary).

# The pass-through on the run's topics and group; extra arguments are added to it.
passthrough_sut() {
  echo "exec $LG passthrough --brokers {brokers} --input-topic {input} --output-topic {scored} \
--group {group} --offset-reset earliest $*"
}

# The service with the shipped config on the run's topics and group; extra arguments are
# FRAUDSCORE__... settings (NAME=VALUE) put before it. $FRAUDSCORE_BIN: another build of it.
service_sut() {
  echo "FRAUDSCORE__KAFKA__BROKERS={brokers} FRAUDSCORE__KAFKA__INPUT_TOPIC={input} \
FRAUDSCORE__KAFKA__OUTPUT_TOPIC={scored} FRAUDSCORE__KAFKA__DLQ_TOPIC={dlq} FRAUDSCORE__KAFKA__GROUP_ID={group} \
$* exec ${FRAUDSCORE_BIN:-$PWD/target/release/fraudscore} run --config $PWD/config/fraudscore.toml"
}

# Starts the mock cluster with the given topics, if any (4 partitions each), stopped when the
# script exits, and sets $BROKERS to its address. $1: the file its address is written to.
start_mock_broker() {
  local address_file=$1; shift
  rm -f "$address_file"
  local topics=()
  [ $# = 0 ] || topics=(--topics "$(IFS=,; echo "$*")")
  "$LG" broker --mock "${topics[@]}" --address-file "$address_file" &
  MOCK_BROKER_PID=$!
  trap 'kill $MOCK_BROKER_PID 2>/dev/null || true' EXIT
  for _ in $(seq 50); do [ -s "$address_file" ] && break; sleep 0.1; done
  BROKERS=$(cat "$address_file")
}

# A broker for the next run, by $BROKER: a new mock cluster each time (it cannot delete topics,
# and it slowed down run after run as they piled up: a 70,000/s run lost a third of its messages
# after seven others), or nisshi at $BROKERS (started with scripts/broker.sh), where each run
# makes and deletes its own topics. Sets $BROKERS and $CREATE (loadgen's topic flags).
start_broker() {
  local address_file=$1
  if [ "$BROKER" = mock ]; then
    if [ -n "${MOCK_BROKER_PID:-}" ]; then
      kill "$MOCK_BROKER_PID" 2>/dev/null || true
      wait "$MOCK_BROKER_PID" 2>/dev/null || true
    fi
    start_mock_broker "$address_file"
  else
    BROKERS=${BROKERS:-127.0.0.1:9092}
  fi
  CREATE=(--create-topics --delete-topics)
}
