//! End to end against a real broker: `loadgen passthrough` copies, `loadgen run` checks that
//! every message (good and malformed) came out exactly once.
//!
//! The broker is 127.0.0.1:9092 or `FRAUDSCORE_BROKER`. When nothing listens there the tests
//! print a notice and pass, unless `FRAUDSCORE_REQUIRE_BROKER` is set (CI starts a broker and
//! sets it, so a broken broker cannot hide as a skipped test).

use std::fs::File;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use loadgen::kafka::{self, ClientSettings};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_loadgen");

fn broker() -> Option<String> {
    let address = std::env::var("FRAUDSCORE_BROKER").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let reachable = address
        .to_socket_addrs()
        .ok()
        .into_iter()
        .flatten()
        .any(|a: SocketAddr| TcpStream::connect_timeout(&a, Duration::from_secs(1)).is_ok());
    if reachable {
        return Some(address);
    }
    if std::env::var_os("FRAUDSCORE_REQUIRE_BROKER").is_some() {
        panic!("FRAUDSCORE_REQUIRE_BROKER is set but no broker answers on {address}");
    }
    eprintln!("notice: no broker on {address}; skipping (set FRAUDSCORE_REQUIRE_BROKER to fail)");
    None
}

fn unique_suffix(name: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("-{name}-{}-{nanos:x}", std::process::id())
}

/// Kills the child when the test ends, pass or fail.
struct Reaper(Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Deletes the test's topics when the test ends.
struct Topics {
    settings: ClientSettings,
    names: Vec<String>,
}

impl Drop for Topics {
    fn drop(&mut self) {
        let names: Vec<&str> = self.names.iter().map(String::as_str).collect();
        let _ = kafka::delete_topics(&self.settings, &names, Duration::from_secs(10));
    }
}

fn topics(brokers: &str, suffix: &str) -> Topics {
    Topics {
        settings: ClientSettings {
            brokers: brokers.to_owned(),
            properties: Vec::new(),
        },
        names: ["transactions", "transactions-scored", "transactions-dlq"]
            .iter()
            .map(|t| format!("{t}{suffix}"))
            .collect(),
    }
}

/// `--sut-cmd` that runs the pass-through on the run's topics and group.
fn passthrough_sut() -> String {
    format!(
        "exec {BIN} passthrough --brokers {{brokers}} --input-topic {{input}} \
         --output-topic {{scored}} --group {{group}} --offset-reset earliest"
    )
}

fn read_report(dir: &Path) -> Value {
    let text = std::fs::read_to_string(dir.join("report.json")).expect("report.json written");
    serde_json::from_str(&text).expect("report.json is JSON")
}

fn assert_all_came_back(report: &Value, expected_sent: u64, expected_bad: u64) {
    let s = &report["summary"];
    let n = |key: &str| s[key].as_u64().unwrap_or_else(|| panic!("{key} in {s:#}"));
    assert_eq!(n("sent"), expected_sent, "{s:#}");
    assert_eq!(n("missing"), 0, "{s:#}");
    assert_eq!(n("duplicates"), 0, "{s:#}");
    assert_eq!(n("unexpected"), 0, "{s:#}");
    assert_eq!(n("produce_failed"), 0, "{s:#}");
    // The pass-through copies everything to the scored topic, bad messages included.
    assert_eq!(n("scored"), expected_sent, "{s:#}");
    assert_eq!(n("dead_lettered"), 0, "{s:#}");
    assert_eq!(n("bad_sent"), expected_bad, "{s:#}");
    assert_eq!(n("bad_scored"), expected_bad, "{s:#}");
    assert_eq!(n("bad_missing"), 0, "{s:#}");
    assert_eq!(n("matched_by_header"), 0, "{s:#}");
    assert_eq!(s["latency"]["count"].as_u64(), Some(expected_sent), "{s:#}");
    let reasons = s["bad_sent_by_reason"].as_object().expect("reasons");
    assert_eq!(
        reasons.len(),
        fraudscore_contract::RejectReason::ALL.len(),
        "every rejection reason is exercised: {s:#}"
    );
    assert_eq!(report["series"].as_array().map(Vec::is_empty), Some(false));
}

#[test]
fn run_against_the_passthrough_gets_everything_back_once() {
    let Some(brokers) = broker() else { return };
    let suffix = unique_suffix("it");
    let topics = topics(&brokers, &suffix);
    let report = tempfile::tempdir().expect("temp dir");
    let log = File::create(report.path().join("passthrough.log")).expect("log file");

    let passthrough = Command::new(BIN)
        .args(["passthrough", "--brokers", &brokers, "--create-topics"])
        .args(["--input-topic", &topics.names[0]])
        .args(["--output-topic", &topics.names[1]])
        .args(["--group", &format!("pt{suffix}")])
        .args(["--offset-reset", "earliest"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("passthrough starts");
    let _reaper = Reaper(passthrough);

    let status = Command::new(BIN)
        .args(["run", "--brokers", &brokers, "--create-topics"])
        .args(["--topic-suffix", &suffix])
        .args(["--rate", "500", "--duration", "3s", "--bad-ratio", "0.05"])
        .args(["--customers", "2000", "--drain-timeout", "15s"])
        .args(["--ready-timeout", "60s"])
        .arg("--report")
        .arg(report.path())
        .status()
        .expect("run starts");
    assert!(
        status.success(),
        "loadgen run failed: {status}; passthrough log: {}",
        std::fs::read_to_string(report.path().join("passthrough.log")).unwrap_or_default()
    );

    let json = read_report(report.path());
    assert_all_came_back(&json, 1500, 75);
    for file in [
        "latency.hgrm",
        "latency-percentiles.svg",
        "throughput.svg",
        "latency-over-time.svg",
    ] {
        assert!(report.path().join(file).is_file(), "{file} missing");
    }
}

#[test]
fn run_starts_and_stops_the_system_under_test_itself() {
    let Some(brokers) = broker() else { return };
    let suffix = unique_suffix("sut");
    let _topics = topics(&brokers, &suffix);
    let report = tempfile::tempdir().expect("temp dir");
    let sut = passthrough_sut();
    let status = Command::new(BIN)
        .args(["run", "--brokers", &brokers, "--create-topics"])
        .args(["--topic-suffix", &suffix])
        .args(["--rate", "300", "--duration", "2s", "--bad-ratio", "0.02"])
        .args(["--customers", "1000", "--drain-timeout", "15s"])
        .args(["--sut-cmd", &sut])
        .arg("--report")
        .arg(report.path())
        .status()
        .expect("run starts");
    assert!(
        status.success(),
        "loadgen run failed: {status}; sut log: {}",
        std::fs::read_to_string(report.path().join("sut.log")).unwrap_or_default()
    );
    let json = read_report(report.path());
    assert_all_came_back(&json, 600, 12);
    let log = std::fs::read_to_string(report.path().join("sut.log")).expect("sut.log");
    assert!(log.contains("passthrough: stopped"), "{log}");
}

/// Every message of `topic`, from the beginning: (value as JSON, the loadgen.label header).
fn read_topic(brokers: &str, topic: &str) -> Vec<(Value, Option<String>)> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Headers, Message};
    let consumer: BaseConsumer = ClientSettings {
        brokers: brokers.to_owned(),
        properties: Vec::new(),
    }
    .consumer(&format!("read{}", unique_suffix("labels")))
    .set("auto.offset.reset", "earliest")
    .create()
    .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut out = Vec::new();
    let mut idle_since = std::time::Instant::now();
    while idle_since.elapsed() < Duration::from_secs(if out.is_empty() { 30 } else { 5 }) {
        let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        idle_since = std::time::Instant::now();
        let label = m.headers().and_then(|h| {
            h.iter()
                .find(|x| x.key == "loadgen.label")
                .and_then(|x| x.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        });
        if let Ok(v) = serde_json::from_slice::<Value>(m.payload().unwrap_or_default()) {
            out.push((v, label));
        }
    }
    out
}

fn epoch_ms(rfc3339: &Value) -> i64 {
    let text = rfc3339.as_str().expect("a timestamp string");
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .expect("RFC 3339");
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

/// With --labels-topic and time acceleration, the run's event time spans hours in seconds, and
/// each good transaction's label is published once its delay has passed in that event time.
#[test]
fn run_publishes_the_labels_of_what_it_sent_after_their_delay_in_event_time() {
    let Some(brokers) = broker() else { return };
    let suffix = unique_suffix("lb");
    let mut topics = topics(&brokers, &suffix);
    topics.names.push(format!("fraud-labels{suffix}"));
    let report = tempfile::tempdir().expect("temp dir");
    let sut = passthrough_sut();
    let status = Command::new(BIN)
        .args(["run", "--brokers", &brokers, "--create-topics"])
        .args(["--topic-suffix", &suffix])
        .args(["--rate", "300", "--duration", "3s", "--bad-ratio", "0.05"])
        .args(["--customers", "1000", "--drain-timeout", "15s"])
        .args(["--labels-topic", "fraud-labels", "--label-delay", "1h"])
        .args(["--time-acceleration", "3600"])
        .args(["--sut-cmd", &sut])
        .arg("--report")
        .arg(report.path())
        .status()
        .expect("run starts");
    assert!(status.success(), "loadgen run failed: {status}");
    let json = read_report(report.path());
    assert_all_came_back(&json, 900, 45);
    let published = json["summary"]["labels_published"].as_u64().unwrap();

    // The good inputs: their event times span the run's 3 s at 3600x, about 3 hours, in the past.
    let inputs: std::collections::HashMap<String, (i64, u8)> =
        read_topic(&brokers, &topics.names[0])
            .into_iter()
            .filter_map(|(v, label)| {
                let scenario = label?.parse().ok()?;
                Some((
                    v["transaction_id"].as_str()?.to_owned(),
                    (epoch_ms(&v["timestamp"]), scenario),
                ))
            })
            .collect();
    assert_eq!(inputs.len(), 855);
    let first = inputs.values().map(|v| v.0).min().unwrap();
    let last = inputs.values().map(|v| v.0).max().unwrap();
    let hour = 3_600_000;
    assert!(last - first > 2 * hour + hour / 2, "{first}..{last}");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert!(last <= now, "event time ran into the future");

    // One label for each good transaction due by the last event time, none other.
    let labels = read_topic(&brokers, &topics.names[3]);
    assert_eq!(labels.len() as u64, published);
    let due = inputs.values().filter(|(at, _)| at + hour <= last).count();
    assert_eq!(labels.len(), due);
    for (label, _) in &labels {
        let id = label["transaction_id"].as_str().unwrap();
        let &(at, scenario) = inputs.get(id).unwrap_or_else(|| panic!("no input {id}"));
        assert_eq!(epoch_ms(&label["timestamp"]), at, "{label}");
        assert_eq!(epoch_ms(&label["labelled_at"]), at + hour, "{label}");
        let fraud = if scenario > 0 { "fraud" } else { "genuine" };
        assert_eq!(label["label"], fraud, "{label}");
    }
}
