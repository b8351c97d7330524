"""Checks the shipped model and its recipe on simulations it was never trained or tuned on.

For one simulation (another seed than the training one), with the engine's replay features:
  * the shipped model (models/fraud.onnx), as is, on the protocol's test week;
  * the protocol's 7-day model trained on this simulation with the shipped model's features
    and parameters (no selection, no tuning), on the same test week.
Prints one JSON line.

    python models/holdout.py --seed 1 --transactions tx.jsonl --features features.jsonl \
        --model models/fraud.onnx
"""

import argparse
import json
import os
import sys

import numpy as np
import onnx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train  # noqa: E402  (the same functions the training used)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--transactions", required=True)
    parser.add_argument("--features", required=True)
    parser.add_argument("--model", default="models/fraud.onnx")
    args = parser.parse_args()

    shipped = onnx.load(args.model)
    props = {p.key: p.value for p in shipped.metadata_props}
    names = json.loads(props["fraudscore.features"])
    data = train.join(train.load_transactions(args.transactions), train.load_features(args.features, names))
    train_mask, test = train.protocol_split(data, **train.PROTOCOL)
    as_shipped = train.evaluate(data[test], train.onnx_scores(shipped, data.loc[test, names].to_numpy()))
    retrained = train.fit(data, train_mask, names)
    protocol = train.evaluate(
        data[test], train.onnx_scores(train.to_onnx(retrained, names), data.loc[test, names].to_numpy())
    )
    keep = ("auc_roc", "average_precision", "card_precision_at_100", "test_frauds", "per_scenario")
    print(json.dumps({
        "seed": args.seed,
        "shipped_model": {k: as_shipped[k] for k in keep},
        "protocol_7_day_model": {k: protocol[k] for k in keep},
    }, default=lambda x: x.item() if isinstance(x, np.generic) else str(x)))


if __name__ == "__main__":
    main()
