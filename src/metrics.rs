//! Prometheus metrics of the service; the names are part of the contract.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::decode::RejectReason;

/// Latency buckets from 0.5 ms to 10 s: scoring is meant to take milliseconds, and stalls must show.
const LATENCY_BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5,
    10.0,
];

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub transactions: IntCounterVec,
    pub dlq: IntCounterVec,
    pub processing_seconds: Histogram,
    pub event_lag_seconds: Histogram,
    pub inference_seconds: Histogram,
    pub batch_size: Histogram,
    pub customers: IntGauge,
    pub window_events: IntGauge,
    pub consumer_lag: IntGaugeVec,
    pub rebalances: IntCounter,
    pub model_info: IntGaugeVec,
    pub ready: IntGauge,
    pub model_reloads: IntCounterVec,
    pub decision_threshold: prometheus::GaugeVec,
    pub produce_retries: IntCounter,
    pub duplicates: IntCounter,
    pub commit_failures: IntCounter,
    pub outputs_truncated: IntCounter,
    pub customers_evicted: IntCounter,
    pub customers_full: IntCounter,
    pub restore_seconds: Histogram,
    pub restore_events: IntCounter,
    pub state_horizon_seconds: prometheus::GaugeVec,
    pub pipeline_partitions: IntGaugeVec,
    pub snapshot_seconds: Histogram,
    pub snapshot_bytes: IntGauge,
    pub snapshot_failures: IntCounter,
    pub snapshots_ignored: IntCounterVec,
    pub partitions_restored: IntCounterVec,
    pub labels: IntCounterVec,
    pub label_lag_seconds: Histogram,
    pub terminals: IntGauge,
    pub terminal_labels: IntGauge,
    pub labelled_decisions: IntCounterVec,
    pub decisions: IntCounterVec,
    /// Only with `model.shadow`: its decisions beside the model's.
    pub shadow_decisions: IntCounterVec,
    pub rule_hits: IntCounterVec,
    pub score: Histogram,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let transactions = IntCounterVec::new(
            Opts::new(
                "fraudscore_transactions_total",
                "Input transactions by outcome: scored or dlq",
            ),
            &["outcome"],
        )
        .expect("valid metric");
        let dlq = IntCounterVec::new(
            Opts::new(
                "fraudscore_dlq_total",
                "Dead-lettered messages by reason code",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let processing_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "fraudscore_processing_seconds",
                "From a message consumed to its output acknowledged by the broker",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )
        .expect("valid metric");
        let event_lag_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "fraudscore_event_lag_seconds",
                "scored_at minus the transaction's event timestamp",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 10.0, 60.0, 600.0, 3600.0, 86400.0,
            ]),
        )
        .expect("valid metric");
        let inference_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "fraudscore_inference_seconds",
                "One model inference call (a batch)",
            )
            .buckets(vec![
                1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 0.1,
            ]),
        )
        .expect("valid metric");
        let batch_size = Histogram::with_opts(
            HistogramOpts::new("fraudscore_batch_size", "Transactions per inference call").buckets(
                vec![
                    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
                ],
            ),
        )
        .expect("valid metric");
        let customers = IntGauge::new(
            "fraudscore_customers",
            "Customers with window state in this instance",
        )
        .expect("valid metric");
        let window_events = IntGauge::new(
            "fraudscore_window_events",
            "Events held in all customers' windows",
        )
        .expect("valid metric");
        let consumer_lag = IntGaugeVec::new(
            Opts::new(
                "fraudscore_consumer_lag_messages",
                "Messages behind the end of each assigned input partition",
            ),
            &["partition"],
        )
        .expect("valid metric");
        let rebalances = IntCounter::new(
            "fraudscore_rebalances_total",
            "Consumer group rebalances seen",
        )
        .expect("valid metric");
        let model_info = IntGaugeVec::new(
            Opts::new("fraudscore_model_info", "The loaded model (always 1)"),
            &["version"],
        )
        .expect("valid metric");
        let produce_retries = IntCounter::new(
            "fraudscore_produce_retries_total",
            "Outputs produced again after the producer gave up on a delivery",
        )
        .expect("valid metric");
        let duplicates = IntCounter::new(
            "fraudscore_duplicates_total",
            "Re-delivered transactions, scored from the state without being counted again",
        )
        .expect("valid metric");
        let commit_failures = IntCounter::new(
            "fraudscore_commit_failures_total",
            "Offset commits the broker refused or that timed out; each is retried by the next commit",
        )
        .expect("valid metric");
        let outputs_truncated = IntCounter::new(
            "fraudscore_outputs_truncated_total",
            "Outputs the producer refused as they were (e.g. too large), dead-lettered truncated as oversized",
        )
        .expect("valid metric");
        let customers_evicted = IntCounter::new(
            "fraudscore_customers_evicted_total",
            "Customers removed from memory because their newest event is beyond every window's reach",
        )
        .expect("valid metric");
        let customers_full = IntCounter::new(
            "fraudscore_customer_cap_refusals_total",
            "Events dead-lettered as oversized because their customer held engine.max_events_per_customer",
        )
        .expect("valid metric");
        let restore_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "fraudscore_restore_seconds",
                "Restoring the window state of newly assigned partitions (snapshots loaded, then the input replayed), per restore",
            )
            .buckets(vec![0.01, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 1800.0]),
        )
        .expect("valid metric");
        let restore_events = IntCounter::new(
            "fraudscore_restore_events_total",
            "Events restored into the window state: held by loaded snapshots, and input messages replayed",
        )
        .expect("valid metric");
        let pipeline_partitions = IntGaugeVec::new(
            Opts::new(
                "fraudscore_pipeline_partitions",
                "Input partitions each pipeline thread holds (pipeline.threads of them share the instance's)",
            ),
            &["pipeline"],
        )
        .expect("valid metric");
        let state_horizon_seconds = prometheus::GaugeVec::new(
            Opts::new(
                "fraudscore_state_horizon_seconds",
                "How far back in event time the partition's state reaches (newest minus oldest event seen); below the longest window, its features are partial",
            ),
            &["partition"],
        )
        .expect("valid metric");
        let snapshot_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "fraudscore_snapshot_seconds",
                "Writing one round of window-state snapshots (every held partition), while scoring goes on",
            )
            .buckets(vec![0.001, 0.01, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0]),
        )
        .expect("valid metric");
        let snapshot_bytes = IntGauge::new(
            "fraudscore_snapshot_bytes",
            "Bytes written by the last round of snapshots",
        )
        .expect("valid metric");
        let snapshot_failures = IntCounter::new(
            "fraudscore_snapshot_failures_total",
            "Rounds of snapshots that failed (disk full, permissions): the state is still scored, but a restart rebuilds more from the topic",
        )
        .expect("valid metric");
        let snapshots_ignored = IntCounterVec::new(
            Opts::new(
                "fraudscore_snapshots_ignored_total",
                "Snapshots found on restore but not used, by reason: damaged, version, other_config, unreadable",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let partitions_restored = IntCounterVec::new(
            Opts::new(
                "fraudscore_partitions_restored_total",
                "Assigned partitions whose state was restored, by source: kept (it came back to this instance at the offset it left), snapshot (a snapshot, then the input after it), topic (the input from its earliest offset)",
            ),
            &["source"],
        )
        .expect("valid metric");
        let labels = IntCounterVec::new(
            Opts::new(
                "fraudscore_labels_total",
                "Fraud labels read, by outcome: fraud, genuine, duplicate (counted once), too_old (beyond every window), dlq (bad label)",
            ),
            &["outcome"],
        )
        .expect("valid metric");
        let label_lag_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "fraudscore_label_lag_seconds",
                "Now minus labelled_at of each label read live (not those read back at start)",
            )
            .buckets(vec![
                0.1, 1.0, 10.0, 60.0, 600.0, 3600.0, 86_400.0, 604_800.0,
            ]),
        )
        .expect("valid metric");
        let terminals = IntGauge::new(
            "fraudscore_terminals",
            "Terminals with labels held for the terminal features",
        )
        .expect("valid metric");
        let terminal_labels = IntGauge::new(
            "fraudscore_terminal_labels",
            "Labels held for the terminal features",
        )
        .expect("valid metric");
        let ready = IntGauge::new(
            "fraudscore_ready",
            "1 when /readyz answers 200: model loaded, partitions held, state and labels read",
        )
        .expect("valid metric");
        let model_reloads = IntCounterVec::new(
            Opts::new(
                "fraudscore_model_reloads_total",
                "Model reloads (SIGHUP or a changed file with model.watch): ok, or refused by the checks (the running model stays)",
            ),
            &["result"],
        )
        .expect("valid metric");
        let decision_threshold = prometheus::GaugeVec::new(
            Opts::new(
                "fraudscore_decision_threshold",
                "The score from which a transaction is reviewed or declined, by decision",
            ),
            &["decision"],
        )
        .expect("valid metric");
        let labelled_decisions = IntCounterVec::new(
            Opts::new(
                "fraudscore_labelled_decisions_total",
                "Labels read live for transactions this instance scored, by the decision it gave and the label: the precision of declines and reviews, and the share of frauds approved",
            ),
            &["decision", "label"],
        )
        .expect("valid metric");
        let decisions = IntCounterVec::new(
            Opts::new(
                "fraudscore_decisions_total",
                "Scored transactions by decision, counted when scored (a transaction re-scored after a restart counts again)",
            ),
            &["decision"],
        )
        .expect("valid metric");
        let shadow_decisions = IntCounterVec::new(
            Opts::new(
                "fraudscore_shadow_decisions_total",
                "With a shadow model (model.shadow): scored transactions by the model's decision (by its thresholds, before any rule) and the one the shadow would have given; where the two differ, the models disagree",
            ),
            &["decision", "shadow_decision"],
        )
        .expect("valid metric");
        let rule_hits = IntCounterVec::new(
            Opts::new(
                "fraudscore_rule_hits_total",
                "Scored transactions on which each rule of rules.file fired (an output names them in `rules`)",
            ),
            &["rule"],
        )
        .expect("valid metric");
        let score = Histogram::with_opts(
            HistogramOpts::new(
                "fraudscore_score",
                "The model's fraud score of each scored transaction",
            )
            .buckets((1..=20).map(|i| i as f64 / 20.0).collect()),
        )
        .expect("valid metric");
        for c in [
            Box::new(transactions.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(dlq.clone()),
            Box::new(processing_seconds.clone()),
            Box::new(event_lag_seconds.clone()),
            Box::new(inference_seconds.clone()),
            Box::new(batch_size.clone()),
            Box::new(customers.clone()),
            Box::new(window_events.clone()),
            Box::new(consumer_lag.clone()),
            Box::new(rebalances.clone()),
            Box::new(model_info.clone()),
            Box::new(ready.clone()),
            Box::new(model_reloads.clone()),
            Box::new(decision_threshold.clone()),
            Box::new(produce_retries.clone()),
            Box::new(duplicates.clone()),
            Box::new(commit_failures.clone()),
            Box::new(outputs_truncated.clone()),
            Box::new(customers_evicted.clone()),
            Box::new(customers_full.clone()),
            Box::new(restore_seconds.clone()),
            Box::new(restore_events.clone()),
            Box::new(state_horizon_seconds.clone()),
            Box::new(pipeline_partitions.clone()),
            Box::new(snapshot_seconds.clone()),
            Box::new(snapshot_bytes.clone()),
            Box::new(snapshot_failures.clone()),
            Box::new(snapshots_ignored.clone()),
            Box::new(partitions_restored.clone()),
            Box::new(labels.clone()),
            Box::new(label_lag_seconds.clone()),
            Box::new(terminals.clone()),
            Box::new(terminal_labels.clone()),
            Box::new(labelled_decisions.clone()),
            Box::new(decisions.clone()),
            Box::new(shadow_decisions.clone()),
            Box::new(rule_hits.clone()),
            Box::new(score.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        // Every reason shows from the start, at zero, so that dashboards and alerts see it.
        for r in RejectReason::ALL {
            dlq.with_label_values(&[r.code()]);
        }
        for outcome in ["scored", "dlq"] {
            transactions.with_label_values(&[outcome]);
        }
        for source in ["kept", "snapshot", "topic"] {
            partitions_restored.with_label_values(&[source]);
        }
        for outcome in ["fraud", "genuine", "duplicate", "too_old", "dlq"] {
            labels.with_label_values(&[outcome]);
        }
        for decision in ["approve", "review", "decline"] {
            decisions.with_label_values(&[decision]);
            for label in ["fraud", "genuine"] {
                labelled_decisions.with_label_values(&[decision, label]);
            }
        }
        for result in ["ok", "refused"] {
            model_reloads.with_label_values(&[result]);
        }
        for reason in ["damaged", "version", "other_config", "unreadable"] {
            snapshots_ignored.with_label_values(&[reason]);
        }
        Metrics {
            registry,
            transactions,
            dlq,
            processing_seconds,
            event_lag_seconds,
            inference_seconds,
            batch_size,
            customers,
            window_events,
            consumer_lag,
            rebalances,
            model_info,
            ready,
            model_reloads,
            decision_threshold,
            produce_retries,
            duplicates,
            commit_failures,
            outputs_truncated,
            customers_evicted,
            customers_full,
            restore_seconds,
            restore_events,
            state_horizon_seconds,
            pipeline_partitions,
            snapshot_seconds,
            snapshot_bytes,
            snapshot_failures,
            snapshots_ignored,
            partitions_restored,
            labels,
            label_lag_seconds,
            terminals,
            terminal_labels,
            labelled_decisions,
            decisions,
            shadow_decisions,
            rule_hits,
            score,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec only fails on invalid metric families, which `new` rules out.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
