//! The `fraudscore` command line: run the service, the embedded demo, or an offline replay.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Args, Parser, Subcommand};
use tokio::signal;
use tracing_subscriber::EnvFilter;

use fraudscore::audit::AuditOptions;
use fraudscore::config::{Config, LogFormat};
use fraudscore::demo::DemoOptions;
use fraudscore::engine::ThresholdOverrides;
use fraudscore::explain::{ReasonPolicy, ReasonsFor};
use fraudscore::replay::ReplayOptions;
use fraudscore::service::Service;

#[derive(Parser)]
#[command(
    version,
    about = "Real-time card fraud scoring: Kafka in, exact event-time windows, ONNX model, Kafka out"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service: consume transactions from Kafka, score them, produce the results.
    Run(RunArgs),
    /// The whole pipeline in one process on an embedded mock Kafka cluster, under a modest load.
    Demo(DemoArgs),
    /// Run a file of input values (JSON lines) through the engine, in file order.
    Replay(ReplayArgs),
    /// Recompute every scored transaction's features from the input topic and compare; exit 1
    /// on any mismatch or missing output.
    Audit(AuditArgs),
}

#[derive(Args)]
struct AuditArgs {
    /// The service's configuration (brokers, topics, model, engine settings).
    #[arg(long, default_value = "config/fraudscore.toml")]
    config: PathBuf,
    /// Overrides kafka.brokers.
    #[arg(long)]
    brokers: Option<String>,
    /// Check only transactions stamped within this long before now (all are replayed).
    #[arg(long, value_parser = humantime::parse_duration)]
    since: Option<std::time::Duration>,
    /// How many mismatches and missing ids to print.
    #[arg(long, default_value_t = 5)]
    examples: usize,
}

#[derive(Args)]
struct RunArgs {
    /// TOML configuration; every key can be overridden by FRAUDSCORE__<SECTION>__<KEY>.
    #[arg(long, default_value = "config/fraudscore.toml")]
    config: PathBuf,
    /// Log as JSON lines instead of human-readable text.
    #[arg(long)]
    log_json: bool,
}

#[derive(Args)]
struct DemoArgs {
    /// Simulated days sent at full speed before the live ones, so that the 30-day windows and
    /// the terminals' delayed label windows are full.
    #[arg(long, default_value_t = 38)]
    history_days: u32,
    /// Simulated days played live, accelerated to fit `--duration`.
    #[arg(long, default_value_t = 7)]
    live_days: u32,
    /// Real time over which the live days are played.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    duration: std::time::Duration,
    /// Simulated customers (and twice as many terminals).
    #[arg(long, default_value_t = 2000)]
    customers: u32,
    /// Share of malformed live messages, for the dead-letter path.
    #[arg(long, default_value_t = 0.01)]
    bad_ratio: f64,
    /// Simulated time from a transaction to its fraud label (the handbook's 7 days).
    #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
    label_delay: std::time::Duration,
    #[arg(long, default_value = "models/fraud.onnx")]
    model: PathBuf,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Show the service's logs.
    #[arg(long)]
    verbose: bool,
}

#[derive(Args)]
struct ReplayArgs {
    /// The ONNX model; its metadata names the features it takes.
    #[arg(
        long,
        required_unless_present = "features",
        conflicts_with = "features"
    )]
    model: Option<PathBuf>,
    /// Compute these features without a model (comma-separated names), e.g. to build a training set.
    #[arg(long, value_delimiter = ',')]
    features: Vec<String>,
    #[arg(long)]
    input: PathBuf,
    /// Fraud labels (JSON lines as on the labels topic): each counts from its `labelled_at` on,
    /// merged with the input by time, as the service would have seen them.
    #[arg(long)]
    labels: Option<PathBuf>,
    #[arg(long)]
    output: PathBuf,
    #[arg(long)]
    dlq: PathBuf,
    /// Rows per inference call.
    #[arg(long, default_value_t = 64)]
    max_batch: usize,
    /// Events older than a customer's newest minus the longest window minus this are rejected as too late.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    allowed_lateness: std::time::Duration,
    /// Overrides the model's review threshold (chosen on data when it was built).
    #[arg(long)]
    review_threshold: Option<f32>,
    /// Overrides the model's decline threshold.
    #[arg(long)]
    decline_threshold: Option<f32>,
    /// Which outputs carry `reasons` (TreeSHAP reason codes), as `model.reasons` in the service.
    #[arg(long, value_enum, default_value = "flagged")]
    reasons: ReasonsArg,
    /// Also score with this model, as `model.shadow` in the service: its score and decision go
    /// into `shadow_score`, `shadow_decision` and `shadow_model_version`, never into `decision`.
    #[arg(long, requires = "model")]
    shadow: Option<PathBuf>,
    /// Rules beside the model, as `rules.file` in the service.
    #[arg(long, requires = "model")]
    rules: Option<PathBuf>,
    /// Features per `reasons`, largest contribution first.
    #[arg(long, default_value_t = ReasonPolicy::default().top)]
    reasons_top: usize,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ReasonsArg {
    Flagged,
    All,
    None,
}

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => run(args),
        Command::Demo(args) => demo(args),
        Command::Replay(args) => replay(args).map(|()| ExitCode::SUCCESS),
        Command::Audit(args) => audit(args),
    }
}

fn init_logging(level: &str, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    // Colours only for a person at a terminal, not in log files.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let config = match Config::load(&args.config, std::env::vars()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("fraudscore: configuration error: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let format = if args.log_json {
        LogFormat::Json
    } else {
        config.log.format
    };
    init_logging(&config.log.level, format);
    let service = Service::start(config)?;
    service.run_until(signal())?;
    Ok(ExitCode::SUCCESS)
}

/// SIGINT or SIGTERM.
async fn signal() {
    let term = async {
        match signal::unix::signal(signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            // Without a SIGTERM handler only Ctrl-C stops us; say so rather than fail to start.
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await
            }
        }
    };
    tokio::select! {
        _ = signal::ctrl_c() => tracing::info!("SIGINT"),
        () = term => tracing::info!("SIGTERM"),
    }
}

fn demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    init_logging(
        if args.verbose {
            "info"
        } else {
            "warn,rdkafka=error"
        },
        LogFormat::Text,
    );
    let opts = DemoOptions {
        history_days: args.history_days,
        live_days: args.live_days,
        duration: args.duration,
        customers: args.customers,
        bad_ratio: args.bad_ratio,
        label_delay: args.label_delay,
        model: args.model,
        seed: args.seed,
    };
    fraudscore::demo::run(&opts)?;
    Ok(ExitCode::SUCCESS)
}

fn replay(args: ReplayArgs) -> anyhow::Result<()> {
    let opts = ReplayOptions {
        model: args.model,
        features: args.features,
        input: args.input,
        labels: args.labels,
        output: args.output,
        dlq: args.dlq,
        max_batch: args.max_batch,
        allowed_lateness: args.allowed_lateness,
        thresholds: ThresholdOverrides {
            review: args.review_threshold,
            decline: args.decline_threshold,
        },
        shadow: args.shadow,
        rules: args.rules,
        reasons: ReasonPolicy {
            reasons_for: match args.reasons {
                ReasonsArg::Flagged => ReasonsFor::Flagged,
                ReasonsArg::All => ReasonsFor::All,
                ReasonsArg::None => ReasonsFor::None,
            },
            top: args.reasons_top,
        },
    };
    let started = Instant::now();
    let summary = fraudscore::replay::run(&opts)?;
    eprintln!(
        "replayed {} lines in {:.2?}: {} scored ({} duplicates), {} rejected; {} labels ({} rejected)",
        summary.lines,
        started.elapsed(),
        summary.scored,
        summary.duplicates,
        summary.rejected,
        summary.labels,
        summary.labels_rejected
    );
    Ok(())
}

fn audit(args: AuditArgs) -> anyhow::Result<ExitCode> {
    let mut config = match Config::load(&args.config, std::env::vars()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("fraudscore: configuration error: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    init_logging("warn,rdkafka=error", LogFormat::Text);
    if let Some(brokers) = args.brokers {
        config.kafka.brokers = brokers;
    }
    let opts = AuditOptions {
        config,
        since: args.since,
        examples: args.examples,
    };
    let report = fraudscore::audit::run(&opts)?;
    println!(
        "audit: {} inputs, {} outputs checked, {} mismatches, {} missing",
        report.inputs, report.checked, report.mismatches, report.missing
    );
    for example in &report.examples {
        println!("  {example}");
    }
    Ok(if report.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
