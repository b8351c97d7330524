# Sourced by the scripts/bench-*.sh: the systems under test as `loadgen run --sut-cmd` commands,
# and librdkafka's mock cluster as a standalone broker. Expects $LG (the loadgen binary).

# The pass-through on the run's topics and group; extra arguments are added to it.
passthrough_sut() {
  echo "exec $LG passthrough --brokers {brokers} --input-topic {input} --output-topic {scored} \
--group {group} --offset-reset earliest $*"
}

# The service with the shipped config on the run's topics and group; extra arguments are
# FRAUDSCORE__... settings (NAME=VALUE) put before it.
service_sut() {
  echo "FRAUDSCORE__KAFKA__BROKERS={brokers} FRAUDSCORE__KAFKA__INPUT_TOPIC={input} \
FRAUDSCORE__KAFKA__OUTPUT_TOPIC={scored} FRAUDSCORE__KAFKA__DLQ_TOPIC={dlq} FRAUDSCORE__KAFKA__GROUP_ID={group} \
$* exec $PWD/target/release/fraudscore run --config $PWD/config/fraudscore.toml"
}

# Starts the mock cluster with the given topics (4 partitions each), stopped when the script
# exits, and sets $BROKERS to its address. $1: the file its address is written to.
start_mock_broker() {
  local address_file=$1; shift
  rm -f "$address_file"
  "$LG" broker --mock --topics "$(IFS=,; echo "$*")" --address-file "$address_file" &
  MOCK_BROKER_PID=$!
  trap 'kill $MOCK_BROKER_PID 2>/dev/null || true' EXIT
  for _ in $(seq 50); do [ -s "$address_file" ] && break; sleep 0.1; done
  BROKERS=$(cat "$address_file")
}

# The runs' broker, by $BROKER: the mock cluster with the topics of every run made up front (its
# arguments after the address file are the runs' topic suffixes), or nisshi at $BROKERS, where
# each run makes and deletes its own topics. Sets $BROKERS and $CREATE (loadgen's topic flags).
start_broker() {
  local address_file=$1; shift
  if [ "$BROKER" = mock ]; then
    local topics=() suffix t
    for suffix in "$@"; do
      for t in transactions transactions-scored transactions-dlq; do topics+=("$t$suffix"); done
    done
    start_mock_broker "$address_file" "${topics[@]}"
    CREATE=()
  else
    BROKERS=${BROKERS:-127.0.0.1:9092}
    CREATE=(--create-topics --delete-topics)
  fi
}
