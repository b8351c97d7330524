//! The feature vocabulary: parsing feature names into a [`FeatureSpec`] and building [`Features`] for one event.

use serde::ser::{Serialize, SerializeMap, Serializer};
use smallvec::SmallVec;

use crate::terminals::{DelayedWindow, TerminalStats};
use crate::time::{EventTime, WindowLen};
use crate::window::WindowStats;

/// Always in the output, whatever the model takes: the two features of the original workshop.
pub const ALWAYS: [&str; 2] = ["customer_tx_count_10m", "customer_avg_amount_7d"];

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FeatureError {
    #[error("unknown feature `{0}`: expected customer_tx_count_<w>, customer_sum_amount_<w>, customer_avg_amount_<w>, amount_to_avg_<w>, terminal_tx_count_<w>_delay_<d>, terminal_fraud_count_<w>_delay_<d>, terminal_risk_<w>_delay_<d>, terminal_fraud_age_<w>_delay_<d>, terminal_last_label_fraud_<w>_delay_<d>, amount, hour_of_day or is_weekend")]
    Unknown(String),
    #[error("feature `{name}`: window `{window}` is not <n><s|m|h|d> from 1s to 30d")]
    BadWindow { name: String, window: String },
    #[error("feature `{0}` is listed twice")]
    Duplicate(String),
}

type WindowedFeature = fn(WindowLen) -> Feature;

/// One feature the engine knows how to compute.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Feature {
    Count(WindowLen),
    Sum(WindowLen),
    Avg(WindowLen),
    AmountToAvg(WindowLen),
    /// Labelled transactions at the terminal in the delayed window.
    TerminalCount(DelayedWindow),
    /// Frauds among them.
    TerminalFraud(DelayedWindow),
    /// Frauds / labelled; 0 when none.
    TerminalRisk(DelayedWindow),
    /// Days since the earliest fraud among them: the age of the compromise the labels show;
    /// 0 when none.
    TerminalFraudAge(DelayedWindow),
    /// 1 when the latest of them is a fraud.
    TerminalLastLabelFraud(DelayedWindow),
    Amount,
    HourOfDay,
    IsWeekend,
}

type DelayedFeature = fn(DelayedWindow) -> Feature;

impl Feature {
    pub fn parse(name: &str) -> Result<Feature, FeatureError> {
        let windowed: [(&str, WindowedFeature); 4] = [
            ("customer_tx_count_", Feature::Count),
            ("customer_sum_amount_", Feature::Sum),
            ("customer_avg_amount_", Feature::Avg),
            ("amount_to_avg_", Feature::AmountToAvg),
        ];
        for (prefix, make) in windowed {
            if let Some(w) = name.strip_prefix(prefix) {
                return WindowLen::parse(w)
                    .map(make)
                    .ok_or_else(|| FeatureError::BadWindow {
                        name: name.to_string(),
                        window: w.to_string(),
                    });
            }
        }
        let delayed: [(&str, DelayedFeature); 5] = [
            ("terminal_tx_count_", Feature::TerminalCount),
            ("terminal_fraud_count_", Feature::TerminalFraud),
            ("terminal_risk_", Feature::TerminalRisk),
            ("terminal_fraud_age_", Feature::TerminalFraudAge),
            (
                "terminal_last_label_fraud_",
                Feature::TerminalLastLabelFraud,
            ),
        ];
        for (prefix, make) in delayed {
            if let Some(rest) = name.strip_prefix(prefix) {
                let bad = || FeatureError::BadWindow {
                    name: name.to_string(),
                    window: rest.to_string(),
                };
                let (len, delay) = rest.split_once("_delay_").ok_or_else(bad)?;
                let len = WindowLen::parse(len).ok_or_else(bad)?;
                let delay = WindowLen::parse(delay).ok_or_else(bad)?;
                return Ok(make(DelayedWindow { len, delay }));
            }
        }
        match name {
            "amount" => Ok(Feature::Amount),
            "hour_of_day" => Ok(Feature::HourOfDay),
            "is_weekend" => Ok(Feature::IsWeekend),
            _ => Err(FeatureError::Unknown(name.to_string())),
        }
    }

    fn window(self) -> Option<WindowLen> {
        match self {
            Feature::Count(w) | Feature::Sum(w) | Feature::Avg(w) | Feature::AmountToAvg(w) => {
                Some(w)
            }
            _ => None,
        }
    }

    fn delayed_window(self) -> Option<DelayedWindow> {
        match self {
            Feature::TerminalCount(w)
            | Feature::TerminalFraud(w)
            | Feature::TerminalRisk(w)
            | Feature::TerminalFraudAge(w)
            | Feature::TerminalLastLabelFraud(w) => Some(w),
            _ => None,
        }
    }

    /// Counts and flags are integers on the wire.
    fn is_integer(self) -> bool {
        matches!(
            self,
            Feature::Count(_)
                | Feature::TerminalCount(_)
                | Feature::TerminalFraud(_)
                | Feature::TerminalLastLabelFraud(_)
                | Feature::HourOfDay
                | Feature::IsWeekend
        )
    }
}

/// The ordered features to compute for every event: the always-present ones, then the model's.
#[derive(Debug, Clone)]
pub struct FeatureSpec {
    names: Vec<String>,
    features: Vec<Feature>,
    /// Distinct window lengths, ascending: the state computes each once per event.
    windows: Vec<WindowLen>,
    /// Distinct delayed windows over terminals' labels: each computed once per event.
    terminal_windows: Vec<DelayedWindow>,
    /// For each feature, the index of its window in `windows`, or of its delayed window in
    /// `terminal_windows`.
    window_index: Vec<usize>,
    /// For each model input, its position in `features`.
    model_columns: Vec<usize>,
}

impl FeatureSpec {
    /// The spec for a model taking `model_features`, in that order.
    pub fn for_model<S: AsRef<str>>(model_features: &[S]) -> Result<FeatureSpec, FeatureError> {
        FeatureSpec::for_models(model_features, &[] as &[S])
    }

    /// The spec for a model taking `model_features`, also computing `also` (a shadow model's
    /// features): those the model does not take come after its own, so that the model's columns
    /// are the same as in its own spec.
    pub fn for_models<S: AsRef<str>>(
        model_features: &[S],
        also: &[S],
    ) -> Result<FeatureSpec, FeatureError> {
        let mut names: Vec<String> = ALWAYS.iter().map(|s| s.to_string()).collect();
        let mut model_columns = Vec::with_capacity(model_features.len());
        for (i, name) in model_features.iter().enumerate() {
            let name = name.as_ref();
            if model_features[..i].iter().any(|n| n.as_ref() == name) {
                return Err(FeatureError::Duplicate(name.to_string()));
            }
            let column = match names.iter().position(|n| n == name) {
                Some(column) => column,
                None => {
                    names.push(name.to_string());
                    names.len() - 1
                }
            };
            model_columns.push(column);
        }
        for name in also {
            if !names.iter().any(|n| n == name.as_ref()) {
                names.push(name.as_ref().to_string());
            }
        }
        let features = names
            .iter()
            .map(|n| Feature::parse(n))
            .collect::<Result<Vec<_>, _>>()?;
        let mut windows: Vec<WindowLen> = features.iter().filter_map(|f| f.window()).collect();
        windows.sort();
        windows.dedup();
        let mut terminal_windows: Vec<DelayedWindow> =
            features.iter().filter_map(|f| f.delayed_window()).collect();
        terminal_windows.sort();
        terminal_windows.dedup();
        let window_index = features
            .iter()
            .map(|f| {
                let windowed = f
                    .window()
                    .and_then(|w| windows.iter().position(|x| *x == w));
                let delayed = f
                    .delayed_window()
                    .and_then(|w| terminal_windows.iter().position(|x| *x == w));
                windowed.or(delayed).unwrap_or(0)
            })
            .collect();
        Ok(FeatureSpec {
            names,
            features,
            windows,
            terminal_windows,
            window_index,
            model_columns,
        })
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn windows(&self) -> &[WindowLen] {
        &self.windows
    }

    /// The delayed windows over terminals' labels the features need; empty for a model without
    /// terminal features.
    pub fn terminal_windows(&self) -> &[DelayedWindow] {
        &self.terminal_windows
    }

    /// How far back from a transaction the terminal windows reach (window + delay); None for a
    /// model without terminal features.
    pub fn terminal_reach_ms(&self) -> Option<i64> {
        self.terminal_windows.iter().map(|w| w.reach_ms()).max()
    }

    /// The longest window: how far back the state must reach.
    pub fn longest_window(&self) -> WindowLen {
        // ALWAYS holds windowed features, so `windows` is never empty.
        self.windows.last().copied().unwrap_or(WindowLen::SHORTEST)
    }

    /// Where each of `model_features` is in this spec's [`Features`]; None when one is not computed.
    pub fn columns_of<S: AsRef<str>>(&self, model_features: &[S]) -> Option<Vec<usize>> {
        model_features
            .iter()
            .map(|f| self.names.iter().position(|n| n == f.as_ref()))
            .collect()
    }

    /// The model's input names, in its column order.
    pub fn model_names(&self) -> impl Iterator<Item = &str> {
        self.model_columns.iter().map(|&c| self.names[c].as_str())
    }

    /// The name of the model's input column `column`.
    pub fn model_name(&self, column: usize) -> &str {
        self.model_columns
            .get(column)
            .map_or("", |&c| self.names[c].as_str())
    }

    pub fn model_width(&self) -> usize {
        self.model_columns.len()
    }

    /// Computes every feature for an event, given the per-window stats of its customer and of
    /// its terminal (in [`FeatureSpec::windows`] and [`FeatureSpec::terminal_windows`] order).
    pub fn compute(
        &self,
        amount: f64,
        at: EventTime,
        stats: &[WindowStats],
        terminal: &[TerminalStats],
    ) -> Features {
        let values = self
            .features
            .iter()
            .zip(&self.window_index)
            .map(|(f, &wi)| {
                let s = stats.get(wi).copied().unwrap_or_default();
                let t = terminal.get(wi).copied().unwrap_or_default();
                match f {
                    Feature::TerminalCount(_) => t.labelled as f64,
                    Feature::TerminalFraud(_) => t.fraud as f64,
                    Feature::TerminalRisk(_) => t.risk(),
                    Feature::TerminalFraudAge(_) => t.fraud_age_days(at),
                    Feature::TerminalLastLabelFraud(_) => t.last_fraud() as u8 as f64,
                    Feature::Count(_) => s.count as f64,
                    Feature::Sum(_) => s.sum,
                    Feature::Avg(_) => s.mean(),
                    // A mean of zero means every amount in the window is zero, this one included.
                    Feature::AmountToAvg(_) if s.mean() == 0.0 => 1.0,
                    Feature::AmountToAvg(_) => amount / s.mean(),
                    Feature::Amount => amount,
                    Feature::HourOfDay => at.hour_of_day() as f64,
                    Feature::IsWeekend => at.is_weekend() as u8 as f64,
                }
            })
            .collect();
        Features { values }
    }

    /// Appends the model's input row for `features` to `row`, as f32 in the model's order.
    pub fn model_row(&self, features: &Features, row: &mut Vec<f32>) {
        row.extend(
            self.model_columns
                .iter()
                .map(|&c| features.values[c] as f32),
        );
    }

    /// Serializes features as a JSON object in spec order.
    pub fn named<'a>(&'a self, features: &'a Features) -> NamedFeatures<'a> {
        NamedFeatures {
            spec: self,
            features,
        }
    }

    /// Each feature's name and value as the wire format gives it, in spec order.
    pub fn entries<'a>(
        &'a self,
        features: &'a Features,
    ) -> impl Iterator<Item = (&'a str, FeatureValue)> + 'a {
        self.names
            .iter()
            .zip(&self.features)
            .zip(&features.values)
            .map(|((name, f), &v)| {
                let value = if f.is_integer() {
                    FeatureValue::Integer(v as u64)
                } else {
                    FeatureValue::Real(v)
                };
                (name.as_str(), value)
            })
    }
}

/// A feature's value on the wire: counts and flags are integers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FeatureValue {
    Integer(u64),
    Real(f64),
}

/// The feature values of one event, in [`FeatureSpec`] order.
#[derive(Debug, Clone, PartialEq)]
pub struct Features {
    /// Inline up to the shipped model's count and some: one heap allocation per event was a
    /// seventh of the engine's time on a large state (the allocator's free lists there are cold).
    values: SmallVec<[f64; 24]>,
}

impl Features {
    pub fn values(&self) -> &[f64] {
        &self.values
    }
}

pub struct NamedFeatures<'a> {
    spec: &'a FeatureSpec,
    features: &'a Features,
}

impl Serialize for NamedFeatures<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.spec.names.len()))?;
        for (name, value) in self.spec.entries(self.features) {
            match value {
                FeatureValue::Integer(v) => map.serialize_entry(name, &v)?,
                FeatureValue::Real(v) => map.serialize_entry(name, &v)?,
            }
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A shadow's features come after the model's, so the model's columns do not move.
    #[test]
    fn a_spec_for_two_models_keeps_the_first_models_columns() {
        let main = ["amount", "customer_tx_count_1h"];
        let shadow = [
            "customer_tx_count_1h",
            "is_weekend",
            "customer_avg_amount_7d",
        ];
        let alone = FeatureSpec::for_model(&main).unwrap();
        let both = FeatureSpec::for_models(&main, &shadow).unwrap();
        assert_eq!(
            both.names(),
            [
                "customer_tx_count_10m",
                "customer_avg_amount_7d",
                "amount",
                "customer_tx_count_1h",
                "is_weekend"
            ]
        );
        assert_eq!(both.model_names().collect::<Vec<_>>(), main);
        assert_eq!(both.columns_of(&main), alone.columns_of(&main));
        assert_eq!(both.columns_of(&shadow), Some(vec![3, 4, 1]));
        assert_eq!(alone.columns_of(&shadow), None);
    }

    #[test]
    fn spec_puts_always_features_first_and_maps_model_columns() {
        let spec =
            FeatureSpec::for_model(&["amount", "customer_avg_amount_7d", "amount_to_avg_1d"])
                .unwrap();
        assert_eq!(
            spec.names(),
            [
                "customer_tx_count_10m",
                "customer_avg_amount_7d",
                "amount",
                "amount_to_avg_1d"
            ]
        );
        assert_eq!(
            spec.windows()
                .iter()
                .map(|w| w.millis())
                .collect::<Vec<_>>(),
            [600_000, 86_400_000, 7 * 86_400_000]
        );
        assert_eq!(spec.longest_window().millis(), 7 * 86_400_000);
        let stats = [
            WindowStats {
                count: 2,
                sum: 30.0,
            },
            WindowStats {
                count: 4,
                sum: 40.0,
            },
            WindowStats {
                count: 5,
                sum: 100.0,
            },
        ];
        let at = EventTime::checked(1_795_824_000_000i64).unwrap();
        let f = spec.compute(20.0, at, &stats, &[]);
        assert_eq!(f.values(), [2.0, 20.0, 20.0, 2.0]);
        let mut row = Vec::new();
        spec.model_row(&f, &mut row);
        assert_eq!(row, [20.0, 20.0, 2.0]);
        let json = serde_json::to_string(&spec.named(&f)).unwrap();
        assert_eq!(
            json,
            r#"{"customer_tx_count_10m":2,"customer_avg_amount_7d":20.0,"amount":20.0,"amount_to_avg_1d":2.0}"#
        );
    }

    #[test]
    fn terminal_features_share_their_delayed_windows() {
        let spec = FeatureSpec::for_model(&[
            "terminal_risk_7d_delay_7d",
            "terminal_tx_count_1d_delay_7d",
            "terminal_fraud_count_7d_delay_7d",
            "terminal_fraud_age_7d_delay_7d",
            "terminal_last_label_fraud_7d_delay_7d",
            "terminal_last_label_fraud_1d_delay_7d",
        ])
        .unwrap();
        let day = WindowLen::parse("1d").unwrap();
        let week = WindowLen::parse("7d").unwrap();
        assert_eq!(
            spec.terminal_windows(),
            [
                DelayedWindow {
                    len: day,
                    delay: week
                },
                DelayedWindow {
                    len: week,
                    delay: week
                }
            ]
        );
        let at = EventTime::checked(1_795_824_000_000i64).unwrap();
        let stats = [WindowStats::default(); 2];
        let day_ms = 86_400_000;
        let terminal = [
            TerminalStats {
                labelled: 3,
                fraud: 0,
                first_fraud_ms: None,
                last: Some((at.millis() - 7 * day_ms, false)),
            },
            TerminalStats {
                labelled: 8,
                fraud: 2,
                first_fraud_ms: Some(at.millis() - 10 * day_ms - day_ms / 2),
                last: Some((at.millis() - 8 * day_ms, true)),
            },
        ];
        let f = spec.compute(1.0, at, &stats, &terminal);
        assert_eq!(f.values(), [0.0, 0.0, 0.25, 3.0, 2.0, 10.5, 1.0, 0.0]);
        let json = serde_json::to_string(&spec.named(&f)).unwrap();
        assert!(
            json.contains(r#""terminal_tx_count_1d_delay_7d":3"#),
            "{json}"
        );
        assert!(
            json.contains(r#""terminal_last_label_fraud_7d_delay_7d":1,"#),
            "{json}"
        );
    }

    #[test]
    fn calendar_and_zero_mean_features() {
        let spec =
            FeatureSpec::for_model(&["hour_of_day", "is_weekend", "amount_to_avg_10m"]).unwrap();
        let sat_23h = EventTime::checked(1_795_824_000_000i64 + 23 * 3_600_000).unwrap();
        let stats = [
            WindowStats { count: 1, sum: 0.0 },
            WindowStats { count: 1, sum: 0.0 },
        ];
        let f = spec.compute(0.0, sat_23h, &stats, &[]);
        assert_eq!(f.values(), [1.0, 0.0, 23.0, 1.0, 1.0]);
    }

    #[test]
    fn unknown_or_bad_features_are_named() {
        let e = FeatureSpec::for_model(&["amount", "terminal_score_7d"]).unwrap_err();
        assert_eq!(e, FeatureError::Unknown("terminal_score_7d".into()));
        assert!(e.to_string().contains("terminal_score_7d"));
        for bad in [
            "terminal_risk_7d",
            "terminal_risk_7d_delay_",
            "terminal_tx_count_7d_delay_45d",
        ] {
            let e = FeatureSpec::for_model(&[bad]).unwrap_err();
            assert!(matches!(e, FeatureError::BadWindow { .. }), "{bad}: {e}");
        }
        let e = FeatureSpec::for_model(&["customer_tx_count_45d"]).unwrap_err();
        assert!(e.to_string().contains("customer_tx_count_45d"), "{e}");
        let e = FeatureSpec::for_model(&["amount", "amount"]).unwrap_err();
        assert_eq!(e, FeatureError::Duplicate("amount".into()));
    }
}
