//! Exactly-once mode on librdkafka's in-process mock cluster, the one place here with Kafka transactions
//! (the test broker nisshi refuses them). The mock acknowledges TxnOffsetCommit without storing the
//! offsets, so what is checked is the output side: each input once, read_committed, no duplicates.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use fraudscore::config::Config;
use fraudscore::run::Service;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

const CONFIG: &str = include_str!("../config/fraudscore.toml");

#[test]
fn exactly_once_outputs_each_transaction_once() {
    let cluster = MockCluster::new(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    for t in ["transactions", "transactions-scored", "transactions-dlq"] {
        cluster.create_topic(t, 4, 1).unwrap();
    }
    let env = [
        ("FRAUDSCORE__KAFKA__BROKERS", brokers.as_str()),
        ("FRAUDSCORE__KAFKA__PROCESSING_GUARANTEE", "exactly_once"),
        ("FRAUDSCORE__KAFKA__TRANSACTIONAL_ID", "fraudscore-test-0"),
        ("FRAUDSCORE__HTTP__LISTEN", "127.0.0.1:0"),
        (
            "FRAUDSCORE__MODEL__PATH",
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/tiny.onnx"),
        ),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()));
    let config = Config::parse(CONFIG, "fraudscore.toml", env).unwrap();
    let service = Service::start(config).unwrap();

    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    let n = 120;
    for i in 0..n {
        let customer = format!("c-{}", i % 17);
        let value = if i % 40 == 39 {
            format!("broken {i}")
        } else {
            format!(
                r#"{{"transaction_id":"e-{i}","customer_id":"{customer}","amount":{i},"timestamp":{}}}"#,
                1_795_000_000_000i64 + i * 1000
            )
        };
        producer
            .send(
                BaseRecord::to("transactions")
                    .key(&customer)
                    .payload(&value),
            )
            .map_err(|(e, _)| e)
            .unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();

    let reader: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "reader")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for t in ["transactions-scored", "transactions-dlq"] {
        for p in 0..4 {
            tpl.add_partition_offset(t, p, Offset::Beginning).unwrap();
        }
    }
    reader.assign(&tpl).unwrap();
    let (mut scored, mut dlq) = (Vec::new(), 0);
    let start = Instant::now();
    while scored.len() + dlq < n as usize && start.elapsed() < Duration::from_secs(60) {
        if let Some(Ok(m)) = reader.poll(Duration::from_millis(100)) {
            if m.topic() == "transactions-dlq" {
                dlq += 1;
            } else {
                let v: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
                scored.push(v["transaction_id"].as_str().unwrap().to_string());
            }
        }
    }
    service.stop().unwrap();
    assert_eq!(dlq, 3);
    assert_eq!(scored.len(), n as usize - 3);
    assert_eq!(
        scored.iter().collect::<HashSet<_>>().len(),
        scored.len(),
        "no duplicates"
    );
}
