//! `loadgen capacity`: the highest rate the system sustains within its latency SLO.
//!
//! Doubles the rate from a start until a step fails, then bisects between the last pass and
//! the first fail; each step is a full `run` with its own report folder.

use std::fs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use serde::Serialize;

use crate::report::{self, LatencySummary, ReportError, Series};
use crate::run::{self, LoadArgs, RunArgs, RunError, RunReport};
use crate::traffic;

#[derive(clap::Args, Clone, Debug)]
pub struct CapacityArgs {
    /// Rate of the first step, messages per second.
    #[arg(long, default_value_t = 1000.0)]
    pub start_rate: f64,
    /// Never try above this rate.
    #[arg(long, default_value_t = 1_000_000.0)]
    pub max_rate: f64,
    /// Give up when even this rate fails.
    #[arg(long, default_value_t = 100.0)]
    pub min_rate: f64,
    /// Length of each step.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    pub step_duration: Duration,
    /// A step fails when its p99 end-to-end latency is above this.
    #[arg(long, default_value = "50ms", value_parser = humantime::parse_duration)]
    pub slo_p99: Duration,
    /// A step fails when fewer than this share of the sent messages came out in time.
    #[arg(long, default_value_t = 0.999)]
    pub min_delivered: f64,
    /// A step fails when output throughput is below this share of the target rate.
    #[arg(long, default_value_t = 0.95)]
    pub min_throughput: f64,
    /// Stop bisecting when the gap between pass and fail is at most this share of the pass.
    #[arg(long, default_value_t = 0.10)]
    pub resolution: f64,
    /// Give each step its own topics (created with the admin API, deleted after the step
    /// unless --keep-topics): a broker that slows down as a topic grows would otherwise
    /// penalize later steps. The service must read the new topics: use --sut-cmd with
    /// {input} {scored} {dlq}, or subscribe it by pattern.
    #[arg(long)]
    pub fresh_topics: bool,
    /// With --fresh-topics: keep each step's topics, e.g. to inspect them afterwards.
    #[arg(long)]
    pub keep_topics: bool,
    /// Pause between steps, to let the broker and service settle.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub pause: Duration,
    /// Folder for capacity.json, capacity.svg and one subfolder per step.
    #[arg(long, default_value = "out/capacity")]
    pub report: PathBuf,
    #[command(flatten)]
    pub load: LoadArgs,
}

#[derive(Debug, thiserror::Error)]
pub enum CapacityError {
    #[error("step at {rate}/s: {source}")]
    Step { rate: f64, source: RunError },
    #[error(transparent)]
    Report(#[from] ReportError),
    #[error("creating {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// Pass/fail thresholds of a step.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Criteria {
    pub slo_p99_ms: f64,
    pub min_delivered: f64,
    pub min_throughput: f64,
}

/// Why a step failed; empty when it passed.
pub fn judge(summary: &run::RunSummary, target_rate: f64, criteria: &Criteria) -> Vec<String> {
    let mut failures = Vec::new();
    if summary.sent == 0 {
        failures.push("nothing was sent".to_owned());
        return failures;
    }
    if summary.latency.p99_ms > criteria.slo_p99_ms {
        failures.push(format!(
            "p99 {:.1} ms above the SLO {:.1} ms",
            summary.latency.p99_ms, criteria.slo_p99_ms
        ));
    }
    let delivered = summary.received as f64 / summary.sent as f64;
    if delivered < criteria.min_delivered {
        failures.push(format!(
            "only {:.3}% of the messages came out within the drain timeout",
            100.0 * delivered
        ));
    }
    if summary.throughput < criteria.min_throughput * target_rate {
        failures.push(format!(
            "throughput {:.0}/s below {:.0}% of the target",
            summary.throughput,
            100.0 * criteria.min_throughput
        ));
    }
    failures
}

/// The rate search: double while passing, then bisect.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Search {
    start: f64,
    min: f64,
    max: f64,
    resolution: f64,
    pass: Option<f64>,
    fail: Option<f64>,
}

impl Search {
    pub fn new(start: f64, min: f64, max: f64, resolution: f64) -> Self {
        Search {
            start: start.clamp(min, max),
            min,
            max,
            resolution,
            pass: None,
            fail: None,
        }
    }

    /// The highest rate that passed so far.
    pub fn best(&self) -> Option<f64> {
        self.pass
    }

    pub fn record(&mut self, rate: f64, passed: bool) {
        if passed {
            self.pass = Some(self.pass.map_or(rate, |p| p.max(rate)));
        } else {
            self.fail = Some(self.fail.map_or(rate, |f| f.min(rate)));
        }
    }

    /// The next rate to try, or `None` when the answer is known well enough.
    pub fn next(&self) -> Option<f64> {
        match (self.pass, self.fail) {
            (None, None) => Some(self.start),
            (Some(pass), None) => (pass < self.max).then(|| (pass * 2.0).min(self.max)),
            (None, Some(fail)) => {
                let lower = (fail / 2.0).round();
                (lower >= self.min).then_some(lower)
            }
            (Some(pass), Some(fail)) => {
                if fail - pass <= self.resolution * pass {
                    return None;
                }
                let middle = ((pass + fail) / 2.0).round();
                (middle > pass && middle < fail).then_some(middle)
            }
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Step {
    pub rate: f64,
    pub passed: bool,
    pub failures: Vec<String>,
    pub report: String,
    pub sent: u64,
    pub received: u64,
    pub missing: u64,
    pub duplicates: u64,
    pub throughput: f64,
    pub send_rate: f64,
    pub latency: LatencySummary,
}

#[derive(Clone, Debug, Serialize)]
pub struct CapacityReport {
    pub run_id: String,
    pub criteria: Criteria,
    pub step_duration_s: f64,
    pub resolution: f64,
    pub fresh_topics: bool,
    pub sut_cmd: Option<String>,
    pub steps: Vec<Step>,
    /// The highest rate that passed, with its step's figures.
    pub max_sustained_rate: Option<f64>,
    pub at_max: Option<Step>,
}

/// Steps through rates until the search converges or `stop` is set.
pub fn execute(args: &CapacityArgs, stop: &AtomicBool) -> Result<CapacityReport, CapacityError> {
    fs::create_dir_all(&args.report).map_err(|source| CapacityError::Io {
        path: args.report.display().to_string(),
        source,
    })?;
    let run_id = traffic::new_run_id();
    let criteria = Criteria {
        slo_p99_ms: args.slo_p99.as_secs_f64() * 1000.0,
        min_delivered: args.min_delivered,
        min_throughput: args.min_throughput,
    };
    if args.fresh_topics && args.load.sut_cmd.is_none() {
        eprintln!(
            "capacity: --fresh-topics without --sut-cmd: the service must find the new topics \
             by itself (e.g. a pattern subscription), or the readiness probe will time out"
        );
    }
    let mut search = Search::new(
        args.start_rate,
        args.min_rate,
        args.max_rate,
        args.resolution,
    );
    let mut steps: Vec<Step> = Vec::new();
    while let Some(rate) = search.next() {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let number = steps.len() + 1;
        let dir = args.report.join(format!("step-{number:02}-{rate:.0}"));
        let mut load = args.load.clone();
        if args.fresh_topics {
            load.topic_suffix = format!("{}-{run_id}-s{number:02}", args.load.topic_suffix);
            load.create_topics = true;
            load.delete_topics = !args.keep_topics;
        }
        eprintln!(
            "capacity: step {number} at {rate:.0}/s for {}",
            humantime::format_duration(args.step_duration)
        );
        let step_args = RunArgs {
            rate,
            duration: args.step_duration,
            report: dir.clone(),
            load: load.clone(),
        };
        let outcome = run::execute(&step_args, stop);
        let report = outcome.map_err(|source| CapacityError::Step { rate, source })?;
        run::print_summary(&report, &dir);
        let step = step_of(&report, rate, &criteria, &dir.display().to_string());
        eprintln!(
            "capacity: {rate:.0}/s {}{}",
            if step.passed { "passed" } else { "failed: " },
            step.failures.join("; ")
        );
        search.record(rate, step.passed);
        steps.push(step);
        if !args.pause.is_zero() && search.next().is_some() {
            thread::sleep(args.pause);
        }
    }

    let best = search.best();
    let at_max = best.and_then(|rate| steps.iter().find(|s| s.rate == rate && s.passed).cloned());
    let report = CapacityReport {
        run_id,
        criteria,
        step_duration_s: args.step_duration.as_secs_f64(),
        resolution: args.resolution,
        fresh_topics: args.fresh_topics,
        sut_cmd: args.load.sut_cmd.clone(),
        steps,
        max_sustained_rate: best,
        at_max,
    };
    report::write_json(&args.report.join("capacity.json"), &report)?;
    plot(&report, &args.report.join("capacity.svg"))?;
    Ok(report)
}

fn step_of(report: &RunReport, rate: f64, criteria: &Criteria, dir: &str) -> Step {
    let summary = &report.summary;
    let failures = judge(summary, rate, criteria);
    Step {
        rate,
        passed: failures.is_empty(),
        failures,
        report: dir.to_owned(),
        sent: summary.sent,
        received: summary.received,
        missing: summary.missing,
        duplicates: summary.counts.duplicates,
        throughput: summary.throughput,
        send_rate: summary.send_rate,
        latency: summary.latency,
    }
}

/// Latency percentiles against the target rate, the SLO drawn as a flat line.
fn plot(report: &CapacityReport, path: &std::path::Path) -> Result<(), ReportError> {
    let mut steps: Vec<&Step> = report.steps.iter().collect();
    steps.sort_by(|a, b| a.rate.total_cmp(&b.rate));
    let column =
        |f: fn(&Step) -> f64| -> Vec<(f64, f64)> { steps.iter().map(|s| (s.rate, f(s))).collect() };
    let slo = report.criteria.slo_p99_ms;
    // A collapsed step can have a p99 of seconds; clipping keeps the passing steps readable.
    let clip = 10.0 * slo;
    let (first, last) = (
        steps.first().map_or(0.0, |s| s.rate),
        steps.last().map_or(1.0, |s| s.rate),
    );
    report::plot_lines(
        path,
        "Latency by offered rate (capacity search)",
        "target rate (messages / s)",
        "latency (ms)",
        &[
            Series {
                name: "p99",
                points: steps
                    .iter()
                    .map(|s| (s.rate, s.latency.p99_ms.min(clip)))
                    .collect(),
            },
            Series {
                name: "p50",
                points: column(|s| s.latency.p50_ms),
            },
            Series {
                name: "p99 SLO",
                points: vec![(first, slo), (last, slo)],
            },
        ],
    )
}

pub fn print_summary(report: &CapacityReport) {
    println!("capacity search {}:", report.run_id);
    println!(
        "{:>10} {:>6} {:>10} {:>9} {:>9} {:>9} {:>9}  failures",
        "rate/s", "pass", "thru/s", "p50 ms", "p99 ms", "p99.9 ms", "max ms"
    );
    for step in &report.steps {
        println!(
            "{:>10.0} {:>6} {:>10.0} {:>9.2} {:>9.2} {:>9.2} {:>9.2}  {}",
            step.rate,
            if step.passed { "yes" } else { "no" },
            step.throughput,
            step.latency.p50_ms,
            step.latency.p99_ms,
            step.latency.p999_ms,
            step.latency.max_ms,
            step.failures.join("; ")
        );
    }
    match &report.at_max {
        Some(step) => println!(
            "highest sustained rate: {:.0}/s (p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} \
             ms, max {:.2} ms; SLO p99 <= {:.0} ms)",
            step.rate,
            step.latency.p50_ms,
            step.latency.p90_ms,
            step.latency.p99_ms,
            step.latency.p999_ms,
            step.latency.max_ms,
            report.criteria.slo_p99_ms
        ),
        None => println!("no rate passed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the search against a system that passes up to `capacity`.
    fn search_with(capacity: f64) -> (Vec<f64>, Option<f64>) {
        let mut search = Search::new(1000.0, 100.0, 1_000_000.0, 0.10);
        let mut tried = Vec::new();
        while let Some(rate) = search.next() {
            assert!(tried.len() < 40, "search does not end: {tried:?}");
            tried.push(rate);
            search.record(rate, rate <= capacity);
        }
        (tried, search.best())
    }

    #[test]
    fn doubles_then_bisects_to_ten_percent() {
        let (tried, best) = search_with(23_000.0);
        assert_eq!(
            &tried[..6],
            &[1000.0, 2000.0, 4000.0, 8000.0, 16_000.0, 32_000.0]
        );
        let best = best.expect("a rate passed");
        assert!(
            (23_000.0 / 1.1..=23_000.0).contains(&best),
            "{best} via {tried:?}"
        );
        // Bisecting 16k..32k to 10% takes a handful of steps, not dozens.
        assert!(tried.len() <= 10, "{tried:?}");
    }

    #[test]
    fn a_failing_first_step_searches_downwards() {
        let (tried, best) = search_with(300.0);
        assert_eq!(&tried[..3], &[1000.0, 500.0, 250.0]);
        let best = best.expect("250 passes");
        assert!((272.0..=300.0).contains(&best), "{best} via {tried:?}");
        let (_, best) = search_with(50.0);
        assert_eq!(best, None);
    }

    #[test]
    fn stops_at_the_maximum() {
        let mut search = Search::new(1000.0, 100.0, 3000.0, 0.1);
        let mut tried = Vec::new();
        while let Some(rate) = search.next() {
            tried.push(rate);
            search.record(rate, true);
        }
        assert_eq!(tried, [1000.0, 2000.0, 3000.0]);
    }

    #[test]
    fn judging_names_each_failure() {
        let criteria = Criteria {
            slo_p99_ms: 50.0,
            min_delivered: 0.999,
            min_throughput: 0.95,
        };
        let summary = |received: u64, p99_ms: f64, throughput: f64| run::RunSummary {
            sent: 10_000,
            produce_acked: 10_000,
            produce_failed: 0,
            send_rate: 1000.0,
            send_lag_p99_ms: 0.1,
            send_lag_max_ms: 1.0,
            received,
            missing: 10_000 - received,
            throughput,
            counts: Default::default(),
            bad_sent: 0,
            bad_sent_by_reason: Default::default(),
            bad_missing: 0,
            drained: true,
            interrupted: false,
            latency: LatencySummary {
                p99_ms,
                ..LatencySummary::default()
            },
            labels_published: 0,
            missing_sample: Vec::new(),
            elapsed_s: 10.0,
        };
        assert!(judge(&summary(10_000, 12.0, 999.0), 1000.0, &criteria).is_empty());
        let failures = judge(&summary(9_000, 80.0, 900.0), 1000.0, &criteria);
        assert_eq!(failures.len(), 3, "{failures:?}");
        assert!(failures[0].contains("p99"));
        assert!(failures[1].contains("90.000%"));
        assert!(failures[2].contains("throughput"));
    }
}
