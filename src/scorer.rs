//! Scoring a batch: the model, its thresholds and reason policy, the rules beside it, and a shadow model scored beside it that never decides.

use std::sync::Arc;

use tracing::warn;

use crate::engine::{Decision, Prepared, Thresholds};
use crate::explain::{Reason, ReasonPolicy};
use crate::features::{FeatureError, FeatureSpec};
use crate::model::{Model, ModelError};
use crate::rules::Rules;

/// A model's verdict on one transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub score: f32,
    pub decision: Decision,
    /// Why, when the reason policy asks for it and the model can say (empty otherwise).
    pub reasons: Vec<Reason>,
    /// What the shadow model would have decided, when one runs.
    pub shadow: Option<ShadowVerdict>,
    /// The rules that fired (indices into [`Scorer::rules`]), in file order.
    pub rules: Vec<usize>,
}

/// The shadow model's score and decision (by its own thresholds) for a transaction, beside the
/// model's own decision before any rule, which is what the shadow is compared with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShadowVerdict {
    pub score: f32,
    pub decision: Decision,
    pub model_decision: Decision,
}

/// A candidate model scored on the same feature rows as the model in use (`model.shadow`).
struct Shadow {
    model: Model,
    thresholds: Thresholds,
    scores: Vec<f32>,
}

/// Turns a batch of prepared transactions into verdicts.
pub struct Scorer {
    model: Model,
    thresholds: Thresholds,
    reasons: ReasonPolicy,
    shadow: Option<Shadow>,
    rules: Option<Rules>,
    /// What the engine computes: the model's features, then those of the shadow and the rules
    /// that it lacks.
    spec: Arc<FeatureSpec>,
    scores: Vec<f32>,
}

impl Scorer {
    pub fn new(model: Model, thresholds: Thresholds) -> Scorer {
        Scorer {
            spec: Arc::new(model.spec().clone()),
            model,
            thresholds,
            reasons: ReasonPolicy::default(),
            shadow: None,
            rules: None,
            scores: Vec::new(),
        }
    }

    pub fn with_reasons(self, reasons: ReasonPolicy) -> Scorer {
        Scorer { reasons, ..self }
    }

    /// Scores `model` beside the model in use, deciding by its own thresholds (its metadata's);
    /// the engine then computes its features too.
    pub fn with_shadow(mut self, model: Model) -> Result<Scorer, FeatureError> {
        let spec = served(&self.model, Some(&model), self.rules.as_ref())?;
        self.shadow = Some(Shadow {
            thresholds: model.thresholds().unwrap_or_default(),
            model,
            scores: Vec::new(),
        });
        self.bind(spec);
        Ok(self)
    }

    /// Puts rules beside the model; the engine then computes the features they read too.
    pub fn with_rules(mut self, rules: Option<Rules>) -> Result<Scorer, FeatureError> {
        self.replace(None, rules)?;
        Ok(self)
    }

    /// Puts a new model (when given) and rules in use (a reload), keeping the reason policy and
    /// the shadow; on an error the running ones stay.
    pub fn replace(
        &mut self,
        model: Option<(Model, Thresholds)>,
        rules: Option<Rules>,
    ) -> Result<(), FeatureError> {
        let main = model.as_ref().map_or(&self.model, |(m, _)| m);
        let spec = served(main, self.shadow(), rules.as_ref())?;
        if let Some((model, thresholds)) = model {
            self.model = model;
            self.thresholds = thresholds;
        }
        self.rules = rules;
        self.bind(spec);
        Ok(())
    }

    /// Serves both models and the rules from `spec`, which computes every feature of each.
    fn bind(&mut self, spec: FeatureSpec) {
        let bound = self.model.bind(&spec)
            && self.shadow.as_mut().is_none_or(|s| s.model.bind(&spec))
            && self.rules.as_mut().is_none_or(|r| r.bind(&spec));
        debug_assert!(bound, "a feature is missing from the spec served");
        self.spec = Arc::new(spec);
    }

    pub fn rules(&self) -> Option<&Rules> {
        self.rules.as_ref()
    }

    /// The features the engine must compute for this scorer.
    pub fn spec(&self) -> &Arc<FeatureSpec> {
        &self.spec
    }

    pub fn reason_policy(&self) -> ReasonPolicy {
        self.reasons
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    pub fn shadow(&self) -> Option<&Model> {
        self.shadow.as_ref().map(|s| &s.model)
    }

    pub fn thresholds(&self) -> Thresholds {
        self.thresholds
    }

    /// One inference call for the whole batch (two with a shadow).
    pub fn score(
        &mut self,
        batch: &[Prepared],
        verdicts: &mut Vec<Verdict>,
    ) -> Result<(), ModelError> {
        self.model
            .score_features(batch.iter().map(|p| &p.features), &mut self.scores)?;
        // A failing shadow must not hold up the decisions: its verdicts are left out.
        let mut shadow = None;
        if let Some(s) = self.shadow.as_mut() {
            match s
                .model
                .score_features(batch.iter().map(|p| &p.features), &mut s.scores)
            {
                Ok(()) => shadow = Some((&s.scores, s.thresholds)),
                Err(e) => {
                    warn!(error = %e, version = s.model.version(), "shadow model failed: its scores are left out of this batch")
                }
            }
        }
        verdicts.clear();
        for (i, (&score, prepared)) in self.scores.iter().zip(batch).enumerate() {
            let model_decision = self.thresholds.decide(score);
            let mut decision = model_decision;
            let mut fired = Vec::new();
            if let Some(rules) = &self.rules {
                fired = rules.evaluate(prepared, score);
                decision = rules.decide(decision, &fired);
            }
            let reasons = if self.reasons.wants(decision) {
                self.model.reasons(i, self.reasons.top)
            } else {
                Vec::new()
            };
            verdicts.push(Verdict {
                score,
                decision,
                reasons,
                shadow: shadow.and_then(|(scores, thresholds)| {
                    scores.get(i).map(|&score| ShadowVerdict {
                        score,
                        decision: thresholds.decide(score),
                        model_decision,
                    })
                }),
                rules: fired,
            });
        }
        Ok(())
    }
}

/// The spec computing the model's features in its own column order, then those of the shadow
/// and the rules that it lacks.
pub fn served(
    model: &Model,
    shadow: Option<&Model>,
    rules: Option<&Rules>,
) -> Result<FeatureSpec, FeatureError> {
    let main: Vec<&str> = model.spec().model_names().collect();
    let mut also: Vec<&str> = shadow
        .map(|s| s.spec().model_names().collect())
        .unwrap_or_default();
    also.extend(rules.iter().flat_map(|r| r.features()));
    FeatureSpec::for_models(&main, &also)
}
