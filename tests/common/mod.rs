//! Helpers shared by the test binaries that run the service against a broker.

use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

/// Per partition of `topic`: the offset `group` has committed (-1 for none) and the partition's
/// end. The consumer only asks for the group's offsets; it never joins the group.
pub fn committed_and_ends(
    brokers: &str,
    group: &str,
    topic: &str,
    partitions: i32,
) -> (Vec<i64>, Vec<i64>) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("offsets consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let timeout = Duration::from_secs(10);
    let committed = consumer
        .committed_offsets(tpl, timeout)
        .expect("committed offsets");
    let positions = (0..partitions)
        .map(
            |p| match committed.find_partition(topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o,
                _ => -1,
            },
        )
        .collect();
    let ends = (0..partitions)
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p, timeout)
                .expect("watermarks")
                .1
        })
        .collect();
    // Closing a consumer can block for ever (fede1024/rust-rdkafka#509): not on the test's thread.
    std::thread::spawn(move || drop(consumer));
    (positions, ends)
}
