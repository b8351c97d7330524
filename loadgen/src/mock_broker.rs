//! `loadgen broker --mock`: librdkafka's in-process mock cluster as a standalone broker, a steady
//! benchmark broker beside a real one (nisshi's memory engine drifts within a session).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use rdkafka::mocking::MockCluster;

#[derive(Args, Debug)]
pub struct BrokerArgs {
    /// Run librdkafka's mock cluster (the one broker offered).
    #[arg(long)]
    pub mock: bool,
    /// Topics to create up front, comma-separated: the mock cluster has no admin API.
    #[arg(long, value_delimiter = ',')]
    pub topics: Vec<String>,
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,
    /// Also write the bootstrap address to this file, for scripts.
    #[arg(long)]
    pub address_file: Option<std::path::PathBuf>,
}

/// Serves until `stop` is set; prints the bootstrap address first.
pub fn execute(args: &BrokerArgs, stop: &AtomicBool) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.mock,
        "only --mock is offered: run a real broker on its own"
    );
    let cluster = MockCluster::new(1).context("starting the mock cluster")?;
    for topic in &args.topics {
        cluster
            .create_topic(topic, args.partitions, 1)
            .with_context(|| format!("creating topic {topic}"))?;
    }
    let address = cluster.bootstrap_servers();
    println!("{address}");
    if let Some(path) = &args.address_file {
        std::fs::write(path, &address).with_context(|| format!("writing {}", path.display()))?;
    }
    eprintln!(
        "mock broker at {address}, {} topics of {} partitions; Ctrl-C stops it",
        args.topics.len(),
        args.partitions
    );
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}
