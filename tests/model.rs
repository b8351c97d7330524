//! The scorer on real `.onnx` files through ONNX Runtime, and the offline replay end to end.

use std::path::Path;
use std::sync::Arc;

use fraudscore::engine::{Engine, EngineConfig, Thresholds};
use fraudscore::model::{Model, ModelError};
use fraudscore::scorer::Scorer;
use fraudscore::store::Store;
use serde_json::Value;

fn data(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// What tests/data/make_models.py put into tiny.onnx.
fn tiny_score(x: [f32; 3]) -> f32 {
    let z = 0.01 * x[0] + 0.5 * x[1] - 1.0 * x[2] - 2.0;
    1.0 / (1.0 + (-z).exp())
}

#[test]
fn tiny_model_scores_like_its_formula_at_every_batch_size() {
    let mut model = Model::load(&data("tiny.onnx"), 1).unwrap();
    assert_eq!(model.version(), "tiny-logistic-1");
    assert_eq!(
        model.spec().names(),
        [
            "customer_tx_count_10m",
            "customer_avg_amount_7d",
            "amount",
            "customer_tx_count_1h",
            "is_weekend"
        ]
    );
    let rows: Vec<[f32; 3]> = (0..37)
        .map(|i| [i as f32 * 13.7, (i % 5) as f32, (i % 2) as f32])
        .collect();
    let mut scores = Vec::new();
    for batch in [1, 2, 16, 37] {
        for chunk in rows.chunks(batch) {
            let flat: Vec<f32> = chunk.iter().flatten().copied().collect();
            model.score(&flat, &mut scores).unwrap();
            assert_eq!(scores.len(), chunk.len());
            for (row, s) in chunk.iter().zip(&scores) {
                assert!(
                    (s - tiny_score(*row)).abs() < 1e-6,
                    "{row:?}: {s} vs {}",
                    tiny_score(*row)
                );
            }
        }
    }
}

#[test]
fn models_the_engine_cannot_serve_fail_at_load_naming_the_problem() {
    let e = Model::load(&data("unknown_feature.onnx"), 1).unwrap_err();
    assert!(matches!(e, ModelError::Feature { .. }), "{e}");
    assert!(e.to_string().contains("terminal_risk_7d"), "{e}");

    let e = Model::load(&data("wrong_width.onnx"), 1).unwrap_err();
    assert!(matches!(e, ModelError::Shape { .. }), "{e}");
    assert!(e.to_string().contains("amount, is_weekend"), "{e}");

    let e = Model::load(&data("no_features.onnx"), 1).unwrap_err();
    assert!(matches!(e, ModelError::NoFeatureList { .. }), "{e}");

    let e = Model::load(&data("does_not_exist.onnx"), 1).unwrap_err();
    assert!(matches!(e, ModelError::Load { .. }), "{e}");
}

#[test]
fn replay_scores_every_good_line_and_dead_letters_every_bad_one() {
    let model = Model::load(&data("tiny.onnx"), 1).unwrap();
    let spec = model.spec().clone();
    let mut scorer = Scorer::new(
        model,
        Thresholds {
            review: 0.5,
            decline: 0.9,
        },
    );
    let mut engine = Engine::new(spec, &EngineConfig::default(), Arc::new(Store::default()));
    let input = [
        r#"{"transaction_id":"t1","customer_id":"c1","terminal_id":"k","amount":100,"timestamp":"2026-11-21T10:00:00Z"}"#,
        r#"{"transaction_id":"t2","customer_id":"c1","amount":"250.5","timestamp":"2026-11-21T10:30:00.5Z"}"#,
        r#"not json"#,
        r#"{"transaction_id":"t3","customer_id":"c1","amount":50,"timestamp":"2026-11-21T10:20:00Z"}"#,
        r#"{"transaction_id":"t4","customer_id":"c2","amount":-1,"timestamp":"2026-11-21T10:20:00Z"}"#,
        r#"{"transaction_id":"t2","customer_id":"c1","amount":"250.5","timestamp":"2026-11-21T10:30:00.5Z"}"#,
    ]
    .join("\n");
    let (mut out, mut dlq) = (Vec::new(), Vec::new());
    let summary = fraudscore::replay::replay(
        &mut engine,
        Some(&mut scorer),
        2,
        input.as_bytes(),
        &mut out,
        &mut dlq,
        None,
    )
    .unwrap();
    assert_eq!(
        (
            summary.lines,
            summary.scored,
            summary.rejected,
            summary.duplicates
        ),
        (6, 4, 2, 1)
    );

    let out: Vec<Value> = out
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    let ids: Vec<&str> = out
        .iter()
        .map(|v| v["transaction_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["t1", "t2", "t3", "t2"]);
    // t3 arrives late, between t1 and t2: its hour holds t1 and itself; t2's re-delivery then sees all three.
    let counts: Vec<u64> = out
        .iter()
        .map(|v| v["features"]["customer_tx_count_1h"].as_u64().unwrap())
        .collect();
    assert_eq!(counts, [1, 2, 2, 3]);
    assert_eq!(out[3]["duplicate"], true);
    assert!(out[0].get("duplicate").is_none());
    assert_eq!(
        out[3]["features"]["customer_avg_amount_7d"],
        (100.0 + 250.5 + 50.0) / 3.0
    );
    assert_eq!(out[1]["timestamp"], "2026-11-21T10:30:00.500Z");
    assert_eq!(out[0]["terminal_id"], "k");
    for v in &out {
        let f = &v["features"];
        let x = [
            f["amount"].as_f64().unwrap() as f32,
            f["customer_tx_count_1h"].as_f64().unwrap() as f32,
            f["is_weekend"].as_f64().unwrap() as f32,
        ];
        assert_eq!(x[2], 1.0, "2026-11-21 is a Saturday");
        let score = v["score"].as_f64().unwrap() as f32;
        assert!((score - tiny_score(x)).abs() < 1e-6);
        let decision = if score >= 0.9 {
            "decline"
        } else if score >= 0.5 {
            "review"
        } else {
            "approve"
        };
        assert_eq!(v["decision"], decision);
        assert_eq!(v["model_version"], "tiny-logistic-1");
        // A model without tree covers loads and scores, and its outputs carry no reasons.
        assert!(v.get("reasons").is_none(), "{v}");
        assert!(v["scored_at"].as_str().unwrap().ends_with('Z'));
    }

    let dlq: Vec<Value> = dlq
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    assert_eq!(dlq.len(), 2);
    assert_eq!(
        (dlq[0]["line"].as_u64(), dlq[0]["reason"].as_str()),
        (Some(3), Some("invalid_json"))
    );
    assert_eq!(dlq[0]["value"], "not json");
    assert_eq!(
        (dlq[1]["line"].as_u64(), dlq[1]["reason"].as_str()),
        (Some(5), Some("invalid_field"))
    );
    assert!(dlq[1]["error"].as_str().unwrap().contains("amount"));
}

/// The shipped model scores like Python's onnxruntime on the fixture rows (models/make_fixture.py).
#[test]
fn shipped_model_matches_python_onnxruntime() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let fixture: Value = serde_json::from_slice(
        &std::fs::read(root.join("models/fixtures/model_expected.json")).unwrap(),
    )
    .unwrap();
    let mut model = Model::load(&root.join("models/fraud.onnx"), 1).unwrap();
    let names: Vec<&str> = fixture["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let width = names.len();
    assert_eq!(model.spec().model_width(), width);
    let rows: Vec<f32> = fixture["rows"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
        })
        .collect();
    let expected: Vec<f64> = fixture["probabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_f64().unwrap())
        .collect();
    assert!(expected.len() >= 100);
    let mut scores = Vec::new();
    for batch in [1, 64, expected.len()] {
        for (chunk, want) in rows.chunks(batch * width).zip(expected.chunks(batch)) {
            model.score(chunk, &mut scores).unwrap();
            for (got, want) in scores.iter().zip(want) {
                assert!((*got as f64 - want).abs() <= 1e-6, "{got} vs {want}");
            }
        }
    }
}

/// A one-split tree (tests/data/make_models.py): its reason codes worked out by hand, and the
/// same tree with covers that do not add up, refused at load.
#[test]
fn a_stump_explains_as_worked_out_by_hand_and_bad_covers_are_refused() {
    let mut model = Model::load(&data("stump.onnx"), 1).unwrap();
    let mut scores = Vec::new();
    model
        .score(&[7.0, 0.0, 0.0, 3.0, 0.0, 0.0], &mut scores)
        .unwrap();
    let explainer = model.explainer().unwrap();
    assert_eq!(explainer.bias(), -0.25);
    let mut phi = Vec::new();
    for (row, margin, contribution) in
        [([7.0, 0.0, 0.0], 2.0, 2.25), ([3.0, 0.0, 0.0], -1.0, -0.75)]
    {
        explainer.contributions(&row, &mut phi);
        assert_eq!(phi, [contribution, 0.0, 0.0]);
        assert_eq!(explainer.margin(&row), margin);
    }
    assert!(
        (scores[0] as f64 - 1.0 / (1.0 + (-2.0f64).exp())).abs() < 1e-6,
        "{scores:?}"
    );

    // A step before the trees: it scores as before, without reason codes.
    let mut after_identity = Model::load(&data("stump_after_identity.onnx"), 1).unwrap();
    assert!(after_identity.explainer().is_none());
    after_identity.score(&[7.0, 0.0, 0.0], &mut scores).unwrap();
    assert!((scores[0] as f64 - 1.0 / (1.0 + (-2.0f64).exp())).abs() < 1e-6);

    let e = Model::load(&data("bad_covers.onnx"), 1).unwrap_err();
    assert!(matches!(e, ModelError::Explain { .. }), "{e}");
    assert!(e.to_string().contains("node 0 covers 40"), "{e}");
}

/// `n` transactions a minute apart from 2026-11-21T10:00Z, of `customers` customers and
/// `terminals` terminals in turn, transaction i of `amount(i)`, as JSON lines.
fn transactions(
    n: usize,
    customers: usize,
    terminals: usize,
    amount: impl Fn(usize) -> usize,
) -> String {
    (0..n)
        .map(|i| {
            format!(
                r#"{{"transaction_id":"t{i}","customer_id":"c{}","terminal_id":"k{}","amount":{},"timestamp":"2026-11-21T10:{:02}:00Z"}}"#,
                i % customers,
                i % terminals,
                amount(i),
                i
            ) + "\n"
        })
        .collect()
}

/// Replays `input` (JSON lines) through an engine computing what `scorer` needs, in batches of 8,
/// and returns the outputs; nothing may be dead-lettered.
fn replay_scored(scorer: &mut Scorer, input: &str) -> Vec<Value> {
    let spec = fraudscore::features::FeatureSpec::clone(scorer.spec());
    let mut engine = Engine::new(spec, &EngineConfig::default(), Arc::new(Store::default()));
    let (mut out, mut dlq) = (Vec::new(), Vec::new());
    fraudscore::replay::replay(
        &mut engine,
        Some(scorer),
        8,
        input.as_bytes(),
        &mut out,
        &mut dlq,
        None,
    )
    .unwrap();
    assert!(dlq.is_empty(), "{}", String::from_utf8_lossy(&dlq));
    out.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect()
}

fn fixture(name: &str) -> Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    serde_json::from_slice(&std::fs::read(root.join("models/fixtures").join(name)).unwrap())
        .unwrap()
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// The reason codes are exact TreeSHAP values: on the fixture rows (edge rows and rows on split
/// thresholds included) they equal LightGBM's own `pred_contrib` for the shipped model, and with
/// the bias they add up to the margin ONNX Runtime turned into the score.
#[test]
fn shipped_model_contributions_match_lightgbm_pred_contrib() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let fixture = fixture("contributions_expected.json");
    let mut model = Model::load(&root.join("models/fraud.onnx"), 1).unwrap();
    let width = model.spec().model_width();
    let names: Vec<&str> = fixture["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        (0..width)
            .map(|c| model.spec().model_name(c))
            .collect::<Vec<_>>()
    );
    let rows: Vec<Vec<f32>> = fixture["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| f64s(r).into_iter().map(|x| x as f32).collect())
        .collect();
    let contributions: Vec<Vec<f64>> = fixture["contributions"]
        .as_array()
        .unwrap()
        .iter()
        .map(f64s)
        .collect();
    let (bias, margins) = (f64s(&fixture["bias"]), f64s(&fixture["margins"]));
    assert!(rows.len() >= 100);

    let mut scores = Vec::new();
    model.score(&rows.concat(), &mut scores).unwrap();
    let explainer = model
        .explainer()
        .expect("the shipped model carries its tree covers");
    let mut phi = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        explainer.contributions(row, &mut phi);
        for (c, (got, want)) in phi.iter().zip(&contributions[i]).enumerate() {
            assert!(
                (got - want).abs() <= 1e-5,
                "row {i}, {}: {got} vs LightGBM's {want}",
                names[c]
            );
        }
        assert!(
            (explainer.bias() - bias[i]).abs() <= 1e-5,
            "{} vs {}",
            explainer.bias(),
            bias[i]
        );
        let total = explainer.bias() + phi.iter().sum::<f64>();
        assert!(
            (total - margins[i]).abs() <= 1e-5,
            "row {i}: bias + contributions {total}, margin {}",
            margins[i]
        );
        let p = 1.0 / (1.0 + (-total).exp());
        assert!(
            (p - scores[i] as f64).abs() <= 1e-6,
            "row {i}: {p} vs ONNX Runtime's {}",
            scores[i]
        );
    }
}

/// Which outputs carry reasons follows the policy and the decision; each reason names a model
/// feature with the value the output shows, largest contribution first.
#[test]
fn flagged_outputs_carry_reasons_with_their_values() {
    use fraudscore::explain::{ReasonPolicy, ReasonsFor};
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let input = transactions(40, 3, 4, |i| 10 + i * 37 % 400);
    let run = |thresholds: Thresholds, reasons_for: ReasonsFor, top: usize| -> Vec<Value> {
        let model = Model::load(&root.join("models/fraud.onnx"), 1).unwrap();
        let mut scorer =
            Scorer::new(model, thresholds).with_reasons(ReasonPolicy { reasons_for, top });
        replay_scored(&mut scorer, &input)
    };
    let everything_reviewed = Thresholds {
        review: 0.0,
        decline: 1.0,
    };
    let nothing_flagged = Thresholds {
        review: 1.0,
        decline: 1.0,
    };

    let flagged = run(everything_reviewed, ReasonsFor::Flagged, 3);
    assert_eq!(flagged.len(), 40);
    for v in &flagged {
        assert_eq!(v["decision"], "review");
        let reasons = v["reasons"]
            .as_array()
            .unwrap_or_else(|| panic!("no reasons: {v}"));
        assert!(!reasons.is_empty() && reasons.len() <= 3, "{v}");
        let mut last = f64::INFINITY;
        for r in reasons {
            let feature = r["feature"].as_str().unwrap();
            let value = r["value"].as_f64().unwrap();
            assert_eq!(
                value as f32,
                v["features"][feature].as_f64().unwrap() as f32,
                "{feature} in {v}"
            );
            let c = r["contribution"].as_f64().unwrap().abs();
            assert!(c > 0.0 && c <= last, "{reasons:?}");
            last = c;
        }
    }
    for v in run(nothing_flagged, ReasonsFor::Flagged, 3) {
        assert_eq!(v["decision"], "approve");
        assert!(v.get("reasons").is_none(), "{v}");
    }
    let all = run(nothing_flagged, ReasonsFor::All, 5);
    assert!(all
        .iter()
        .all(|v| v["reasons"].as_array().is_some_and(|r| r.len() == 5)));
    assert!(run(everything_reviewed, ReasonsFor::None, 5)
        .iter()
        .all(|v| v.get("reasons").is_none()));
}

/// Replay with a shadow: the model's scores and decisions are those it gives alone, and the
/// shadow's are those the shadow gives alone, from one engine computing both models' features.
#[test]
fn a_shadow_scores_as_it_would_alone_and_never_decides() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let input = transactions(60, 4, 3, |i| 5 + i * 53 % 700);
    let run = |main: &Path, shadow: Option<&Path>| -> Vec<Value> {
        let model = Model::load(main, 1).unwrap();
        let thresholds = model.thresholds().unwrap_or_default();
        let mut scorer = Scorer::new(model, thresholds);
        if let Some(shadow) = shadow {
            scorer = scorer.with_shadow(Model::load(shadow, 1).unwrap()).unwrap();
        }
        replay_scored(&mut scorer, &input)
    };
    let (tiny, shipped) = (data("tiny.onnx"), root.join("models/fraud.onnx"));
    let alone = run(&tiny, None);
    let other = run(&shipped, None);
    let both = run(&tiny, Some(&shipped));
    assert_eq!(both.len(), 60);
    for ((b, a), o) in both.iter().zip(&alone).zip(&other) {
        for field in ["score", "decision", "model_version"] {
            assert_eq!(b[field], a[field], "{field}: {b} vs {a}");
        }
        assert_eq!(b["shadow_score"], o["score"], "{b} vs {o}");
        assert_eq!(b["shadow_decision"], o["decision"], "{b} vs {o}");
        assert_eq!(b["shadow_model_version"], o["model_version"]);
        for (name, value) in a["features"]
            .as_object()
            .unwrap()
            .iter()
            .chain(o["features"].as_object().unwrap())
        {
            assert_eq!(&b["features"][name], value, "{name}");
        }
        assert!(a.get("shadow_score").is_none());
    }
    // Not every transaction gets the same decision from both, or this would show nothing.
    assert!(both.iter().any(|v| v["decision"] != v["shadow_decision"]));
}

/// Rules beside the shipped model: each output names the rules that fired, the decision is the
/// strictest of the model's and theirs unless an allow-list fired, and a feature only a rule
/// reads is computed and shown.
#[test]
fn rules_fire_decide_beside_the_model_and_get_the_features_they_read() {
    use fraudscore::rules::Rules;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rules.toml");
    std::fs::write(
        &file,
        r#"
[[rule]]
name = "velocity_1h"
when = "customer_sum_amount_1h > 800"
action = "decline"

[[rule]]
name = "trusted_terminal"
when = "terminal_id == 'k0' and amount < 300"
action = "approve"
"#,
    )
    .unwrap();
    let input = transactions(40, 2, 3, |i| 10 + i * 37 % 400);
    let run = |rules: Option<Rules>| -> Vec<Value> {
        let model = Model::load(&root.join("models/fraud.onnx"), 1).unwrap();
        let thresholds = model.thresholds().unwrap();
        let mut scorer = Scorer::new(model, thresholds).with_rules(rules).unwrap();
        replay_scored(&mut scorer, &input)
    };
    let plain = run(None);
    let ruled = run(Some(Rules::load(&file).unwrap()));
    let strictness = |d: &Value| {
        ["approve", "review", "decline"]
            .iter()
            .position(|x| d == x)
            .unwrap()
    };
    let mut seen = std::collections::BTreeSet::new();
    for (p, r) in plain.iter().zip(&ruled) {
        assert_eq!(p["score"], r["score"], "rules do not change the score");
        assert!(p["features"].get("customer_sum_amount_1h").is_none());
        let sum = r["features"]["customer_sum_amount_1h"]
            .as_f64()
            .expect("computed for the rule");
        let amount = r["amount"].as_f64().unwrap();
        let velocity = sum > 800.0;
        let trusted = r["terminal_id"] == "k0" && amount < 300.0;
        let fired: Vec<&str> = r["rules"]
            .as_array()
            .map(|a| a.iter().map(|v| v.as_str().unwrap()).collect())
            .unwrap_or_default();
        let expected: Vec<&str> = [("velocity_1h", velocity), ("trusted_terminal", trusted)]
            .iter()
            .filter(|(_, fires)| *fires)
            .map(|(n, _)| *n)
            .collect();
        assert_eq!(fired, expected, "{r}");
        let decision = if trusted {
            0
        } else if velocity {
            2
        } else {
            strictness(&p["decision"])
        };
        assert_eq!(strictness(&r["decision"]), decision, "{r}");
        seen.insert((velocity, trusted));
    }
    // Each rule fired alone and both fired together somewhere, or this shows less than it says.
    for case in [(true, false), (false, true), (true, true)] {
        assert!(seen.contains(&case), "{case:?} never happened: {seen:?}");
    }
}

/// The example rules file loads, and the shipped model with it is served.
#[test]
fn the_example_rules_file_loads_beside_the_shipped_model() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let rules = fraudscore::rules::Rules::load(&root.join("config/rules.toml")).unwrap();
    assert!(rules.len() >= 3);
    let model = Model::load(&root.join("models/fraud.onnx"), 1).unwrap();
    let scorer = Scorer::new(model, Thresholds::default())
        .with_rules(Some(rules))
        .unwrap();
    assert!(scorer
        .spec()
        .names()
        .iter()
        .any(|n| n == "customer_tx_count_30d"));
}

/// What a reload accepts: a model whose features the running state serves exactly, scoring
/// probabilities; anything else is refused with the reason.
#[test]
fn a_reload_accepts_a_model_the_state_can_serve_and_refuses_the_rest() {
    use fraudscore::engine::ThresholdOverrides;
    use fraudscore::reload::{check, Limits, Refusal};
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/fraud.onnx");
    let running = Limits::of(Model::load(&shipped, 1).unwrap().spec());
    let none = ThresholdOverrides::default();

    let tiny = check(&data("tiny.onnx"), 1, &running, none, None).unwrap();
    assert_eq!(tiny.model.version(), "tiny-logistic-1");
    assert_eq!(tiny.thresholds, Thresholds::default());
    assert!(check(&shipped, 1, &running, none, None).is_ok());

    // Windows longer than the running model's: the state does not hold them.
    let tiny_limits = Limits::of(tiny.model.spec());
    let e = check(&shipped, 1, &tiny_limits, none, None).unwrap_err();
    assert!(matches!(e, Refusal::LongerWindow { .. }), "{e}");
    // Terminal features while no labels are read.
    let without_labels = Limits {
        terminal_reach_ms: None,
        ..running
    };
    let e = check(&shipped, 1, &without_labels, none, None).unwrap_err();
    assert!(matches!(e, Refusal::NoLabels), "{e}");
    // Not a model, or one the engine cannot feed.
    for broken in [
        "no_features.onnx",
        "unknown_feature.onnx",
        "wrong_width.onnx",
    ] {
        let e = check(&data(broken), 1, &running, none, None).unwrap_err();
        assert!(matches!(e, Refusal::Load(_)), "{broken}: {e}");
    }
    // Scores that are not probabilities (a raw margin): 0.01 * 100 + 0.5 * 100 - 100 - 2 = -51.
    let e = check(&data("raw_margin.onnx"), 1, &running, none, None).unwrap_err();
    assert!(matches!(e, Refusal::BadScore { .. }), "{e}");
    // Thresholds that cross the new model's: refused, not reordered.
    let crossing = ThresholdOverrides {
        review: Some(0.95),
        decline: None,
    };
    let e = check(&shipped, 1, &running, crossing, None).unwrap_err();
    assert!(matches!(e, Refusal::Thresholds(_)), "{e}");
}

/// The output wire format, spelled out with serde as the oracle for the hand-written encoder:
/// field order, optional fields, integer features and number formatting, byte for byte.
#[derive(serde::Serialize)]
struct WireScored<'a> {
    transaction_id: &'a str,
    customer_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    terminal_id: Option<&'a str>,
    amount: f64,
    timestamp: String,
    features: fraudscore::features::NamedFeatures<'a>,
    score: f32,
    decision: &'a str,
    model_version: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    reasons: Vec<WireReason<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    rules: Vec<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    shadow_score: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    shadow_decision: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    shadow_model_version: Option<&'a str>,
    scored_at: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    duplicate: bool,
}

#[derive(serde::Serialize)]
struct WireReason<'a> {
    feature: &'a str,
    value: f32,
    contribution: f32,
}

/// Ids that need escaping, every decision, reasons, fired rules with a name that needs escaping,
/// a shadow inline or not, a duplicate: the encoder writes what serde writes for the same record.
#[test]
fn the_output_encoder_writes_the_wire_format_byte_for_byte() {
    use fraudscore::engine::Prepared;
    use fraudscore::explain::{ReasonPolicy, ReasonsFor};
    use fraudscore::rules::Rules;
    use fraudscore::time::EventTime;

    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let load = || Model::load(&root.join("models/fraud.onnx"), 1).unwrap();
    let rules = Rules::parse(
        Path::new("rules.toml"),
        "[[rule]]\nname = 'big \"one\" \\\\ é'\nwhen = 'amount > 900'\naction = 'review'\n\n\
         [[rule]]\nname = 'tagged'\nwhen = \"terminal_id == 'T\\\"1'\"\naction = 'decline'\n",
    )
    .unwrap();
    let mut scorer = Scorer::new(load(), Thresholds::default())
        .with_reasons(ReasonPolicy {
            reasons_for: ReasonsFor::All,
            ..ReasonPolicy::default()
        })
        .with_shadow(load())
        .unwrap()
        .with_rules(Some(rules))
        .unwrap();
    let spec = fraudscore::features::FeatureSpec::clone(scorer.spec());
    let mut engine = Engine::new(spec, &EngineConfig::default(), Arc::new(Store::default()));
    let mut prepared: Vec<Prepared> = Vec::new();
    for (i, (customer, terminal, amount)) in [
        ("c-1", Some("T\"1"), 12.5),
        ("c\"2\\é\u{1}", None, 950.0),
        ("c-1", Some("t-9"), 0.1),
        ("c-3", Some("t-9"), 1e-7),
        ("c-3", Some("t-9"), 123456.789),
    ]
    .into_iter()
    .enumerate()
    {
        let mut tx = serde_json::json!({
            "transaction_id": format!("tx-{i}\u{2028}\"/"),
            "customer_id": customer,
            "amount": amount,
            "timestamp": 1_795_000_000_123i64 + i as i64 * 1_000,
        });
        if let Some(terminal) = terminal {
            tx["terminal_id"] = terminal.into();
        }
        let value = serde_json::to_vec(&tx).unwrap();
        prepared.push(engine.prepare(0, i as i64, None, &value).unwrap());
    }
    // The same transaction again: a duplicate.
    let again = serde_json::to_vec(&serde_json::json!({"transaction_id": "tx-0\u{2028}\"/",
        "customer_id": "c-1", "terminal_id": "T\"1", "amount": 12.5, "timestamp": 1_795_000_000_123i64}))
    .unwrap();
    prepared.push(engine.prepare(0, 9, None, &again).unwrap());
    assert!(prepared.last().unwrap().duplicate);

    let mut verdicts = Vec::new();
    scorer.score(&prepared, &mut verdicts).unwrap();
    assert!(verdicts.iter().any(|v| !v.rules.is_empty()));
    assert!(verdicts.iter().any(|v| !v.reasons.is_empty()));
    let scored_at = EventTime::checked(1_795_000_060_000i64).unwrap();
    let spec = engine.spec();
    let mut encoded = Vec::new();
    for (p, v) in prepared.iter().zip(&verdicts) {
        for shadow_inline in [true, false] {
            let t = &p.transaction;
            let shadow = v.shadow.filter(|_| shadow_inline);
            let expected = WireScored {
                transaction_id: &t.transaction_id,
                customer_id: t.customer_id.as_str(),
                terminal_id: t.terminal_id.as_deref(),
                amount: t.amount,
                timestamp: t.timestamp.to_string(),
                features: spec.named(&p.features),
                score: v.score,
                decision: v.decision.as_str(),
                model_version: scorer.model().version(),
                reasons: v
                    .reasons
                    .iter()
                    .map(|r| WireReason {
                        feature: spec.model_name(r.column),
                        value: r.value,
                        contribution: r.contribution,
                    })
                    .collect(),
                rules: v
                    .rules
                    .iter()
                    .map(|&i| scorer.rules().unwrap().name(i))
                    .collect(),
                shadow_score: shadow.map(|s| s.score),
                shadow_decision: shadow.map(|s| s.decision.as_str()),
                shadow_model_version: shadow.map(|_| scorer.shadow().unwrap().version()),
                scored_at: scored_at.to_string(),
                duplicate: p.duplicate,
            };
            fraudscore::output::scored(
                &mut encoded,
                spec,
                p,
                Some((v, &scorer)),
                shadow_inline,
                scored_at,
            );
            assert_eq!(
                String::from_utf8(encoded.clone()).unwrap(),
                serde_json::to_string(&expected).unwrap()
            );
        }
    }
}
