//! Command-line entry point: parses the subcommand and hands it to its module.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::time::Instant;

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use loadgen::{capacity, mock_broker, passthrough, run, sim};
use time::macros::format_description;
use time::Date;

#[derive(Parser, Debug)]
#[command(
    name = "loadgen",
    version,
    about = "Transaction simulator and load generator for fraudscore"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Write a labelled synthetic transaction history as JSON lines, sorted by time.
    Simulate(SimulateArgs),
    /// Send simulated transactions at a fixed rate (open loop) and measure end-to-end latency
    /// to the scored and dead-letter topics; exits non-zero when outputs are missing.
    Run(run::RunArgs),
    /// Step the rate up, then bisect, to find the highest rate that meets the p99 SLO.
    Capacity(capacity::CapacityArgs),
    /// Copy input to output with no work: the latency floor, and a stand-in service.
    Passthrough(passthrough::PassthroughArgs),
    /// Serve librdkafka's mock cluster as a standalone benchmark broker (`--mock`).
    Broker(mock_broker::BrokerArgs),
}

#[derive(Args, Debug)]
struct SimulateArgs {
    #[arg(long, default_value_t = 5_000)]
    customers: u32,
    #[arg(long, default_value_t = 10_000)]
    terminals: u32,
    #[arg(long, default_value_t = 183)]
    days: u32,
    /// First simulated day (UTC), YYYY-MM-DD.
    #[arg(long, default_value = "2018-04-01", value_parser = parse_date)]
    start_date: Date,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Customers use only terminals closer than this, on a 100 x 100 map.
    #[arg(long, default_value = "5")]
    radius: sim::Radius,
    /// Output file; `-` or absent for stdout.
    #[arg(long)]
    output: Option<PathBuf>,
    /// Also write one fraud label per transaction (the labels topic's format) to this file.
    #[arg(long)]
    labels: Option<PathBuf>,
    /// How long after its transaction a label is known (`labelled_at`); the handbook's is 7 days.
    #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
    label_delay: std::time::Duration,
}

fn parse_date(text: &str) -> Result<Date, time::error::Parse> {
    Date::parse(text, format_description!("[year]-[month]-[day]"))
}

/// Set on Ctrl-C or SIGTERM and handed to the long-running commands; the only global, because a
/// signal handler has nowhere else to put it.
static STOP: AtomicBool = AtomicBool::new(false);

fn main() -> anyhow::Result<()> {
    let command = Cli::parse().command;
    ctrlc::set_handler(|| {
        // A second Ctrl-C means "now".
        if STOP.swap(true, Ordering::Relaxed) {
            std::process::exit(130);
        }
        eprintln!("loadgen: stopping (again to quit at once)");
    })
    .context("installing the Ctrl-C handler")?;
    match command {
        Command::Simulate(args) => simulate(args),
        Command::Run(args) => {
            let report = run::execute(&args, &STOP).context("loadgen run")?;
            run::print_summary(&report, &args.report);
            if report.summary.missing > 0 {
                bail!(
                    "{} of {} messages missing",
                    report.summary.missing,
                    report.summary.sent
                );
            }
            Ok(())
        }
        Command::Capacity(args) => {
            let report = capacity::execute(&args, &STOP).context("loadgen capacity")?;
            capacity::print_summary(&report);
            Ok(())
        }
        Command::Passthrough(args) => {
            passthrough::execute(&args, &STOP).context("loadgen passthrough")?;
            Ok(())
        }
        Command::Broker(args) => mock_broker::execute(&args, &STOP),
    }
}

fn simulate(args: SimulateArgs) -> anyhow::Result<()> {
    let config = sim::SimulationConfig {
        seed: args.seed,
        population: sim::PopulationParams {
            customers: args.customers,
            terminals: args.terminals,
            radius: args.radius,
        },
        fraud: sim::FraudParams::default(),
        days: args.days,
        start_date: args.start_date,
    };
    let (sink, destination): (Box<dyn Write>, String) = match args.output.as_deref() {
        Some(path) if path.as_os_str() != "-" => {
            let file =
                File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
            (Box::new(file), path.display().to_string())
        }
        _ => (Box::new(io::stdout().lock()), "stdout".to_owned()),
    };
    let mut labels = match &args.labels {
        Some(path) => Some(BufWriter::with_capacity(
            1 << 20,
            File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
        )),
        None => None,
    };
    let delay = time::Duration::try_from(args.label_delay).context("--label-delay")?;
    let started = Instant::now();
    let summary = sim::simulate_with_labels(
        &config,
        &mut BufWriter::with_capacity(1 << 20, sink),
        labels.as_mut().map(|w| (w as &mut dyn Write, delay)),
    )
    .with_context(|| format!("simulating into {destination}"))?;
    eprintln!(
        "simulate: {summary} -> {destination} in {:.2}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
