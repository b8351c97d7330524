"""Writes the scorer parity fixtures: feature rows with ONNX Runtime's fraud probabilities, and
the same rows with LightGBM's exact TreeSHAP contributions (`pred_contrib`).

The Rust scorer must reproduce these probabilities (column 1 of `probabilities`) within
1e-6 for the same float32 rows. Rows, about 200 in all:
  * edge rows: all zeros, large amounts and ratios;
  * split-threshold rows: a real row with one feature set exactly on a split threshold of
    the model, and on the next float32 above it (checks the `<=` of BRANCH_LEQ);
  * rows of the engine's output for the simulated data, spread over the score range.

The engine's reason codes must reproduce the contributions within 1e-5, and with the bias
(the expected margin) they sum to the margin, log(p / (1 - p)).

    python models/make_fixture.py --model models/fraud.onnx --features features.jsonl \
        --output models/fixtures/model_expected.json \
        --booster booster.txt --contributions models/fixtures/contributions_expected.json
"""

import argparse
import hashlib
import json

import lightgbm as lgb
import numpy as np
import onnx
import onnxruntime as ort

SEED = 7
CANDIDATES = 5000  # real rows scored before picking some across the score range
REAL_ROWS = 150
THRESHOLD_SPLITS = 20  # each gives two rows


def model_features(model):
    """Ordered feature names from the model's metadata."""
    props = {p.key: p.value for p in model.metadata_props}
    return json.loads(props["fraudscore.features"])


def predict(session, rows):
    """Probability of fraud for float32 rows."""
    return session.run(["probabilities"], {"features": np.asarray(rows, dtype=np.float32)})[0][:, 1]


def sample_engine_rows(path, names, count, rng):
    """`count` rows of the engine output, drawn uniformly without replacement, as float32."""
    with open(path) as f:
        total = sum(1 for _ in f)
    chosen = set(rng.choice(total, size=min(count, total), replace=False).tolist())
    rows = []
    with open(path) as f:
        for i, line in enumerate(f):
            if i in chosen:
                features = json.loads(line)["features"]
                rows.append([features[n] for n in names])
    return np.asarray(rows, dtype=np.float32)


def spread_over_scores(session, rows, count):
    """`count` of the rows, at evenly spaced ranks of their score (so high scores are in)."""
    order = np.argsort(predict(session, rows), kind="stable")
    picks = np.unique(np.linspace(0, len(rows) - 1, count).round().astype(int))
    return rows[order[picks]]


def edge_rows(names, typical):
    """All zeros, and a typical row with large amounts (and ratios to match)."""
    rows = [np.zeros(len(names), dtype=np.float32)]
    for amount in (0.0, 0.01, 220.0, 220.01, 1e3, 1e4, 1e6, 1e9):
        row = typical.copy()
        for i, name in enumerate(names):
            if name == "amount":
                row[i] = amount
            elif name.startswith("amount_to_avg_"):
                row[i] = amount / max(float(typical[names.index("customer_avg_amount_7d")]), 1e-6)
        rows.append(row)
    return rows


def threshold_rows(model, base_rows, rng):
    """Rows with one feature exactly on a split threshold, and just above it."""
    tree = next(n for n in model.graph.node if n.op_type.startswith("TreeEnsemble"))
    attrs = {a.name: a for a in tree.attribute}
    modes = list(attrs["nodes_modes"].strings)
    splits = [i for i, m in enumerate(modes) if m != b"LEAF"]
    rows = []
    for k in rng.choice(len(splits), size=THRESHOLD_SPLITS, replace=False):
        node = splits[int(k)]
        feature = attrs["nodes_featureids"].ints[node]
        threshold = np.float32(attrs["nodes_values"].floats[node])
        base = base_rows[int(rng.integers(len(base_rows)))]
        for value in (threshold, np.nextafter(threshold, np.float32(np.inf))):
            row = base.copy()
            row[feature] = value
            rows.append(row)
    return rows


def sha256_file(path):
    """Hex sha256 of a file's bytes."""
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/fraud.onnx")
    parser.add_argument("--features", required=True, help="engine replay output (JSON lines)")
    parser.add_argument("--output", default="models/fixtures/model_expected.json")
    parser.add_argument("--booster", help="the shipped booster saved by train.py --booster")
    parser.add_argument("--contributions", default="models/fixtures/contributions_expected.json")
    args = parser.parse_args()

    rng = np.random.default_rng(SEED)
    model = onnx.load(args.model)
    names = model_features(model)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(args.model, options, providers=["CPUExecutionProvider"])

    real = spread_over_scores(session, sample_engine_rows(args.features, names, CANDIDATES, rng), REAL_ROWS)
    typical = np.median(real, axis=0).astype(np.float32)
    rows = np.vstack(edge_rows(names, typical) + threshold_rows(model, real, rng) + list(real)).astype(np.float32)
    probabilities = predict(session, rows)

    fixture = {
        "model": args.model,
        "model_sha256": sha256_file(args.model),
        "features": names,
        "rows": [[float(v) for v in row] for row in rows],
        "probabilities": [float(p) for p in probabilities],
    }
    with open(args.output, "w") as f:
        json.dump(fixture, f)
        f.write("\n")
    print(f"wrote {args.output}: {len(rows)} rows, probabilities {probabilities.min():.4f}..{probabilities.max():.4f}")
    if args.booster:
        write_contributions(args, names, rows, probabilities)


def write_contributions(args, names, rows, probabilities):
    """LightGBM's pred_contrib for the same float32 rows (LightGBM reads them as doubles, which
    float32 values are exactly, so its splits see what ONNX Runtime sees)."""
    booster = lgb.Booster(model_file=args.booster)
    contributions = booster.predict(rows.astype(np.float64), pred_contrib=True)
    margins = booster.predict(rows.astype(np.float64), raw_score=True)
    assert np.allclose(contributions.sum(axis=1), margins, atol=1e-9)
    assert np.allclose(1 / (1 + np.exp(-margins)), probabilities, atol=1e-5)
    fixture = {
        "model": args.model,
        "model_sha256": sha256_file(args.model),
        "features": names,
        "rows": [[float(v) for v in row] for row in rows],
        "contributions": [[float(c) for c in row[:-1]] for row in contributions],
        "bias": [float(row[-1]) for row in contributions],
        "margins": [float(m) for m in margins],
    }
    with open(args.contributions, "w") as f:
        json.dump(fixture, f)
        f.write("\n")
    print(f"wrote {args.contributions}: {len(rows)} rows, bias {contributions[0, -1]:.6f}")


if __name__ == "__main__":
    main()
