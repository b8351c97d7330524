//! Kafka client settings shared by every subcommand, and the few admin calls they need.

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

/// Where the brokers are and any librdkafka properties the user passed with `-X`.
#[derive(Clone, Debug, Default)]
pub struct ClientSettings {
    pub brokers: String,
    /// Applied last, so they override our defaults (e.g. `linger.ms`) and carry SASL/SSL.
    pub properties: Vec<(String, String)>,
}

/// Parses one `-X key=value`.
pub fn parse_property(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.trim().to_owned()))
        }
        _ => Err(format!("expected key=value, got {text:?}")),
    }
}

impl ClientSettings {
    fn base(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        config
    }

    fn with_overrides(&self, mut config: ClientConfig) -> ClientConfig {
        for (key, value) in &self.properties {
            config.set(key, value);
        }
        config
    }

    /// Producer tuned for latency on small brokers: a few ms of linger, because one produce
    /// request per message overwhelms them, and acks from all replicas like the service.
    /// `idempotent` is the service's setting; librdkafka's idempotent producer busy-polls
    /// against nisshi (about twice the CPU per message), which a load generator sharing two
    /// cores with the system under test cannot afford.
    pub fn producer(&self, linger_ms: u32, idempotent: bool) -> ClientConfig {
        let mut config = self.base();
        config
            .set("linger.ms", linger_ms.to_string())
            .set("acks", "all")
            .set("enable.idempotence", idempotent.to_string())
            // Generous local queue: the open-loop sender must not block on it in normal runs.
            .set("queue.buffering.max.messages", "1000000")
            .set("queue.buffering.max.kbytes", "1048576")
            .set("message.max.bytes", "1048576");
        self.with_overrides(config)
    }

    /// Consumer that returns data as soon as it is there: brokers that poll inside a fetch
    /// add up to `fetch.wait.max.ms` to every hop.
    pub fn consumer(&self, group: &str) -> ClientConfig {
        let mut config = self.base();
        config
            .set("group.id", group)
            .set("fetch.wait.max.ms", "5")
            .set("fetch.min.bytes", "1")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false");
        self.with_overrides(config)
    }

    pub fn admin(&self) -> ClientConfig {
        self.with_overrides(self.base())
    }
}

/// Client context that prints client errors (broker down, authentication failures) on stderr;
/// rdkafka would otherwise hand them to a `log` backend nobody installed.
#[derive(Clone, Copy, Debug, Default)]
pub struct LoggingContext;

impl ClientContext for LoggingContext {
    fn error(&self, error: KafkaError, reason: &str) {
        eprintln!("kafka: {error}: {reason}");
    }
}

impl ConsumerContext for LoggingContext {}

/// Creates the topics that do not exist yet; existing ones are left as they are.
pub fn create_topics(
    settings: &ClientSettings,
    topics: &[&str],
    partitions: i32,
    timeout: Duration,
) -> KafkaResult<()> {
    let admin: AdminClient<DefaultClientContext> = settings.admin().create()?;
    let topics = distinct(topics);
    if is_mock_cluster(&admin, timeout) {
        return create_by_asking(settings, &topics, partitions, timeout);
    }
    let new_topics: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|name| NewTopic::new(name, partitions, TopicReplication::Fixed(1)))
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(timeout));
    let results = block_on(admin.create_topics(new_topics.iter(), &options))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => return Err(KafkaError::AdminOp(code)),
        }
    }
    Ok(())
}

/// Whether the brokers are librdkafka's mock cluster (`loadgen broker --mock`), which has no
/// admin API: it never answers a request to create or delete topics.
fn is_mock_cluster(admin: &AdminClient<DefaultClientContext>, timeout: Duration) -> bool {
    admin
        .inner()
        .fetch_cluster_id(timeout)
        .is_some_and(|id| id.starts_with("mockCluster"))
}

/// Creates topics on the mock cluster, which makes a topic (with its default partition count)
/// when a client that may create topics asks for its metadata.
fn create_by_asking(
    settings: &ClientSettings,
    topics: &[&str],
    partitions: i32,
    timeout: Duration,
) -> KafkaResult<()> {
    let mut config = settings.admin();
    config.set("allow.auto.create.topics", "true");
    let producer: BaseProducer = config.create()?;
    for topic in topics {
        let metadata = producer.client().fetch_metadata(Some(topic), timeout)?;
        let made = metadata
            .topics()
            .iter()
            .find(|t| t.name() == *topic)
            .map_or(0, |t| t.partitions().len());
        if made != partitions as usize {
            eprintln!(
                "loadgen: the mock cluster made {topic} with {made} partitions, not {partitions}: it has no admin API to ask for more"
            );
        }
    }
    Ok(())
}

/// A topic named twice in one admin request fails the whole request.
fn distinct<'a>(topics: &[&'a str]) -> Vec<&'a str> {
    let mut seen = Vec::with_capacity(topics.len());
    for topic in topics {
        if !seen.contains(topic) {
            seen.push(*topic);
        }
    }
    seen
}

/// Deletes topics, e.g. a capacity step's, so the broker's memory does not fill up.
pub fn delete_topics(
    settings: &ClientSettings,
    topics: &[&str],
    timeout: Duration,
) -> KafkaResult<()> {
    let admin: AdminClient<DefaultClientContext> = settings.admin().create()?;
    if is_mock_cluster(&admin, timeout) {
        // It cannot delete them: they go when it stops.
        return Ok(());
    }
    let options = AdminOptions::new().operation_timeout(Some(timeout));
    for result in block_on(admin.delete_topics(&distinct(topics), &options))? {
        if let Err((_, code)) = result {
            if code != RDKafkaErrorCode::UnknownTopicOrPartition {
                return Err(KafkaError::AdminOp(code));
            }
        }
    }
    Ok(())
}

/// Assigns every partition of `topics` at its current end, so the consumer sees exactly what
/// is produced after this returns. Resolving the offsets here, instead of assigning
/// `Offset::End`, avoids the race where the end is looked up after the first messages landed.
pub fn assign_at_end<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topics: &[&str],
    timeout: Duration,
) -> KafkaResult<()> {
    let deadline = Instant::now() + timeout;
    loop {
        match end_offsets(consumer, topics, deadline) {
            Ok(assignment) => return consumer.assign(&assignment),
            // A topic created a moment ago may have no leader yet.
            Err(_) if Instant::now() + Duration::from_millis(200) < deadline => {
                thread::sleep(Duration::from_millis(200));
            }
            Err(error) => return Err(error),
        }
    }
}

fn end_offsets<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topics: &[&str],
    deadline: Instant,
) -> KafkaResult<TopicPartitionList> {
    let mut assignment = TopicPartitionList::new();
    for topic in topics {
        for partition in partitions_of(consumer, topic, deadline)? {
            let (_, high) = consumer.fetch_watermarks(topic, partition, remaining(deadline))?;
            assignment.add_partition_offset(topic, partition, Offset::Offset(high))?;
        }
    }
    Ok(assignment)
}

/// Partition ids of a topic, retrying while a just-created topic is not in the metadata yet.
pub fn partitions_of<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    deadline: Instant,
) -> KafkaResult<Vec<i32>> {
    loop {
        let metadata = consumer.fetch_metadata(Some(topic), remaining(deadline))?;
        let found = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .filter(|t| t.error().is_none())
            .map(|t| t.partitions().iter().map(|p| p.id()).collect::<Vec<_>>())
            .filter(|ids| !ids.is_empty());
        match found {
            Some(ids) => return Ok(ids),
            None if Instant::now() >= deadline => {
                return Err(KafkaError::MetadataFetch(
                    RDKafkaErrorCode::UnknownTopicOrPartition,
                ))
            }
            None => thread::sleep(Duration::from_millis(100)),
        }
    }
}

fn remaining(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1))
}

struct ThreadWaker(Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Drives one future on this thread. The admin client completes its futures from its own
/// thread, so an async runtime would be dead weight here.
fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let waker = Waker::from(Arc::new(ThreadWaker(thread::current())));
    let mut context = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
        thread::park();
    }
}

/// Counts producer acknowledgements; runs on the thread that polls the producer.
#[derive(Debug, Default)]
pub struct DeliveryCounter {
    pub acked: AtomicU64,
    pub failed: AtomicU64,
    pub first_error: Mutex<Option<String>>,
}

impl ClientContext for DeliveryCounter {
    fn error(&self, error: KafkaError, reason: &str) {
        eprintln!("kafka producer: {error}: {reason}");
    }
}

impl ProducerContext for DeliveryCounter {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.acked.fetch_add(1, Ordering::Relaxed);
            }
            Err((error, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                let mut first = self
                    .first_error
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if first.is_none() {
                    eprintln!("loadgen: delivery failed: {error}");
                    *first = Some(error.to_string());
                }
            }
        }
    }
}

/// Enqueues one message. A full local queue is waited out (serving deliveries frees it)
/// rather than dropped: the schedule is not shifted, the lateness shows in the latency.
pub fn send_retrying<C: ProducerContext<DeliveryOpaque = ()>>(
    producer: &BaseProducer<C>,
    mut record: BaseRecord<'_, [u8], [u8]>,
) -> Result<(), KafkaError> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                record = returned;
                producer.poll(Duration::from_millis(1));
            }
            Err((error, _)) => return Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_parse_and_override_defaults() {
        assert_eq!(
            parse_property("security.protocol=SASL_SSL"),
            Ok(("security.protocol".into(), "SASL_SSL".into()))
        );
        assert_eq!(
            parse_property("sasl.password=a=b"),
            Ok(("sasl.password".into(), "a=b".into()))
        );
        assert!(parse_property("novalue").is_err());
        assert!(parse_property("=x").is_err());

        let settings = ClientSettings {
            brokers: "127.0.0.1:9092".into(),
            properties: vec![("linger.ms".into(), "20".into())],
        };
        assert_eq!(settings.producer(5, true).get("linger.ms"), Some("20"));
        assert_eq!(
            settings.producer(5, false).get("enable.idempotence"),
            Some("false")
        );
        assert_eq!(settings.consumer("g").get("fetch.wait.max.ms"), Some("5"));
        assert_eq!(settings.consumer("g").get("group.id"), Some("g"));
    }

    /// The mock cluster never answers CreateTopics: a run or a capacity step with fresh topics
    /// timed out on it before topics were made by asking for their metadata.
    #[test]
    fn topics_are_made_and_dropped_on_the_mock_cluster() {
        let cluster = rdkafka::mocking::MockCluster::new(1).expect("mock cluster");
        let settings = ClientSettings {
            brokers: cluster.bootstrap_servers(),
            properties: vec![],
        };
        let timeout = Duration::from_secs(5);
        create_topics(&settings, &["fresh-a", "fresh-b", "fresh-a"], 4, timeout)
            .expect("topics made");
        let admin: AdminClient<DefaultClientContext> = settings.admin().create().expect("admin");
        let metadata = admin
            .inner()
            .fetch_metadata(None, timeout)
            .expect("metadata");
        for name in ["fresh-a", "fresh-b"] {
            let topic = metadata.topics().iter().find(|t| t.name() == name);
            assert_eq!(topic.map(|t| t.partitions().len()), Some(4), "{name}");
        }
        delete_topics(&settings, &["fresh-a"], timeout).expect("nothing to do, not an error");
    }

    #[test]
    fn admin_requests_name_each_topic_once() {
        assert_eq!(distinct(&["a", "b", "a", "c", "b"]), ["a", "b", "c"]);
    }

    #[test]
    fn block_on_runs_ready_futures() {
        assert_eq!(block_on(async { 7 }), 7);
    }
}
