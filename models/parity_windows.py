"""Independent check of the engine's customer window features.

Reads a simulator file (JSON lines: transaction_id, customer_id, amount, timestamp, ...)
and the engine's `replay` output for it, recomputes every feature found in the replay
output with pandas (per-customer time-based rolling windows over (t - w, t], event time,
ties included), and compares:

  * counts, hour_of_day, is_weekend: exact;
  * sums, means, amount_to_avg_<w>, amount: within 1e-9 relative.

One check per feature name, plus a self-test of the reference and one for the row alignment
(every input line accepted once, in input order). Prints a line per check and a closing
`N passed, M failed`; exits 1 on any failure.

Random simulated data rarely puts two transactions of a customer exactly one window apart
or at the same instant, so `add-edges` first merges in a few made-up customers whose
transactions sit exactly on and next to every window boundary, with same-instant ties:

    python models/parity_windows.py add-edges --input sim.jsonl --output tx.jsonl
    (engine) replay --features ... --input tx.jsonl --output features.jsonl --dlq rejected.jsonl
    python models/parity_windows.py check --transactions tx.jsonl --features features.jsonl
"""

import argparse
import json
import re
import sys

import numpy as np
import pandas as pd

REL_TOL = 1e-9
ABS_TOL = 1e-12
WINDOWED = re.compile(r"^(customer_tx_count|customer_sum_amount|customer_avg_amount|amount_to_avg)_(\d+)([smhd])$")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_window(name):
    """Splits a windowed feature name into (kind, window as pd.Timedelta); None if not windowed."""
    m = WINDOWED.match(name)
    if m is None:
        return None
    kind, n, unit = m.groups()
    return kind, pd.Timedelta(seconds=int(n) * UNIT_SECONDS[unit])


def read_transactions(path):
    """Loads the simulator output: one row per transaction, in file order."""
    with open(path) as f:
        tx = pd.DataFrame([json.loads(line) for line in f])
    tx["amount"] = tx["amount"].astype(float)
    tx["ts"] = pd.to_datetime(tx["timestamp"], utc=True, format="ISO8601")
    return tx


def read_engine_output(path):
    """Loads the replay output: transaction ids in output order and a DataFrame of features."""
    ids, rows = [], []
    with open(path) as f:
        for line in f:
            rec = json.loads(line)
            ids.append(rec["transaction_id"])
            rows.append(rec["features"])
    return ids, pd.DataFrame(rows)


def window_stats(tx, window, ties="all"):
    """Per transaction: count and sum of its customer's amounts with timestamp in (t - window, t].

    ties="all": every transaction of the customer at the same instant is in the window (the
    rolling runs over (customer, timestamp) groups, not rows: pandas would otherwise count a
    tie only up to the current row). ties="arrived": only those earlier in the file, as a
    streaming engine sees them.
    """
    per_instant = (
        tx.groupby(["customer_id", "ts"], sort=True)["amount"]
        .agg(n="size", s="sum")
        .reset_index(level="customer_id")
    )
    rolled = (
        per_instant.groupby("customer_id", sort=False)[["n", "s"]]
        .rolling(window, closed="right")
        .sum()
    )
    keys = pd.MultiIndex.from_frame(tx[["customer_id", "ts"]])
    aligned = rolled.reindex(keys)
    count = aligned["n"].to_numpy().astype(np.int64)
    total = aligned["s"].to_numpy()
    if ties == "arrived":
        same_instant = tx.groupby(["customer_id", "ts"], sort=False)["amount"]
        count = count - same_instant.cumcount(ascending=False).to_numpy()
        total = total - (same_instant.transform("sum") - same_instant.cumsum()).to_numpy()
    return count, total


def reference_features(tx, names, ties="all"):
    """Recomputes the named features for every transaction of `tx`, as a DataFrame in tx order."""
    out = {}
    cache = {}
    amount = tx["amount"].to_numpy(dtype=float)
    for name in names:
        parsed = parse_window(name)
        if parsed is not None:
            kind, window = parsed
            if window not in cache:
                cache[window] = window_stats(tx, window, ties)
            count, total = cache[window]
            mean = total / count
            if kind == "customer_tx_count":
                out[name] = count
            elif kind == "customer_sum_amount":
                out[name] = total
            elif kind == "customer_avg_amount":
                out[name] = mean
            else:  # amount_to_avg: the engine defines x / 0 as 1 (every amount in the window is 0)
                with np.errstate(divide="ignore", invalid="ignore"):
                    out[name] = np.where(mean == 0, 1.0, amount / mean)
        elif name == "amount":
            out[name] = amount
        elif name == "hour_of_day":
            out[name] = tx["ts"].dt.hour.to_numpy()
        elif name == "is_weekend":
            out[name] = (tx["ts"].dt.day_of_week >= 5).astype(int).to_numpy()
        else:
            raise ValueError(f"no reference implementation for feature {name!r}")
    return pd.DataFrame(out, index=tx.index)


def is_exact(name):
    """Counts and calendar features must match exactly; the rest are floating point."""
    return name.startswith("customer_tx_count_") or name in ("hour_of_day", "is_weekend")


def compare(name, expected, actual, ids, tied):
    """Returns (ok, detail) for one feature column; `tied` marks rows in same-instant ties."""
    expected = np.asarray(expected, dtype=float)
    actual = np.asarray(actual, dtype=float)
    if np.isnan(actual).any():
        return False, f"{int(np.isnan(actual).sum())} missing values"
    if is_exact(name):
        bad = expected != actual
    else:
        bad = np.abs(expected - actual) > REL_TOL * np.maximum(np.abs(expected), np.abs(actual)) + ABS_TOL
    if not bad.any():
        worst = np.max(np.abs(expected - actual) / np.maximum(np.abs(expected), 1e-300)) if len(expected) else 0.0
        return True, f"{len(expected)} rows, max relative difference {worst:.2e}"
    i = int(np.flatnonzero(bad)[0])
    where = " (all in same-instant ties)" if tied[bad].all() else ""
    return False, (
        f"{int(bad.sum())} of {len(expected)} rows differ{where}; first {ids[i]}: "
        f"expected {float(expected[i])!r}, engine {float(actual[i])!r}"
    )


def check_alignment(tx, ids):
    """Every input transaction must come out exactly once, in input order."""
    expected = tx["transaction_id"].tolist()
    if ids == expected:
        return True, f"{len(ids)} rows in input order"
    return False, f"{len(ids)} output rows for {len(expected)} inputs, or a different order"


def check_reference(ties):
    """Checks the reference itself on a hand-made case: window bounds and same-instant ties."""
    t0 = pd.Timestamp("2018-04-07T12:00:00Z")
    seconds = [0, 30, 30, 60, 60, 90]
    tx = pd.DataFrame(
        {
            "customer_id": ["a", "a", "b", "a", "a", "a"],
            "amount": [1.0, 2.0, 100.0, 4.0, 8.0, 0.0],
            "ts": [t0 + pd.Timedelta(seconds=x) for x in seconds],
        }
    )
    got = reference_features(tx, ["customer_tx_count_30s", "customer_sum_amount_30s", "customer_avg_amount_1m",
                                  "amount_to_avg_30s", "hour_of_day", "is_weekend"], ties)
    # (t - 30s, t]: a transaction exactly 30 s earlier is out; the two at t0+60s see each other
    # (with ties="arrived", only the second sees the first); the last one is alone in its
    # 30 s window with amount 0, and x / 0 is defined as 1.
    expected = {
        "customer_tx_count_30s": [1, 1, 1, 2, 2, 1],
        "customer_sum_amount_30s": [1.0, 2.0, 100.0, 12.0, 12.0, 0.0],
        "customer_avg_amount_1m": [1.0, 1.5, 100.0, 14.0 / 3, 14.0 / 3, 4.0],
        "amount_to_avg_30s": [1.0, 1.0, 1.0, 4.0 / 6, 8.0 / 6, 1.0],
        "hour_of_day": [12] * 6,
        "is_weekend": [1] * 6,
    }
    if ties == "arrived":
        expected["customer_tx_count_30s"][3] = 1
        expected["customer_sum_amount_30s"][3] = 4.0
        expected["customer_avg_amount_1m"][3] = 3.0
        expected["amount_to_avg_30s"][3] = 1.0
    for name, values in expected.items():
        if not np.allclose(got[name].to_numpy(dtype=float), values, rtol=1e-15, atol=0):
            return False, f"{name}: got {got[name].tolist()}, expected {values}"
    return True, f"window bounds (t - w, t] and same-instant ties ({ties}) on a hand-made case"


def run_checks(tx, ids, engine, ties):
    """Runs all checks; returns a list of (name, ok, detail)."""
    results = [("reference self-test", *check_reference(ties)), ("row alignment", *check_alignment(tx, ids))]
    if not all(ok for _, ok, _ in results):
        return results
    reference = reference_features(tx, list(engine.columns), ties)
    tied = tx.duplicated(["customer_id", "ts"], keep=False).to_numpy()
    for name in engine.columns:
        results.append((name, *compare(name, reference[name], engine[name], ids, tied)))
    return results


def edge_case_transactions(start):
    """Made-up transactions on window boundaries, as dicts in the simulator's format.

    For each window w, one customer with transactions at t0, t0 + w - 1s, t0 + w, a tie at
    t0 + w, t0 + 2w and t0 + 2w + 1s (when they fit in 39 days), amounts including 0.
    """
    windows = {"30s": 30, "10m": 600, "1h": 3600, "1d": 86400, "7d": 7 * 86400, "30d": 30 * 86400}
    amounts = [1.5, 0.0, 12.34, 100.0, 0.01, 999.99]
    t0 = pd.Timestamp(start) + pd.Timedelta(hours=1, seconds=7)
    out = []
    for name, w in windows.items():
        offsets = [0, w - 1, w, w, 2 * w, 2 * w + 1]
        for k, offset in enumerate(o for o in offsets if o < 39 * 86400):
            out.append(
                {
                    "transaction_id": f"edge-{name}-{k}",
                    "customer_id": f"c-edge-{name}",
                    "terminal_id": "t-edge",
                    "amount": amounts[k],
                    "timestamp": (t0 + pd.Timedelta(seconds=offset)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "is_fraud": 0,
                    "fraud_scenario": 0,
                }
            )
    return out


def add_edges(input_path, output_path):
    """Writes the simulator lines merged with the edge-case ones, in timestamp order."""
    with open(input_path) as f:
        lines = [line.rstrip("\n") for line in f if line.strip()]
    first = pd.Timestamp(json.loads(lines[0])["timestamp"]).floor("D")
    keyed = [(pd.Timestamp(json.loads(line)["timestamp"]), 0, i, line) for i, line in enumerate(lines)]
    edges = edge_case_transactions(first)
    keyed += [(pd.Timestamp(e["timestamp"]), 1, i, json.dumps(e)) for i, e in enumerate(edges)]
    keyed.sort(key=lambda k: k[:3])
    with open(output_path, "w") as f:
        f.writelines(k[3] + "\n" for k in keyed)
    print(f"wrote {output_path}: {len(lines)} simulated and {len(edges)} edge-case transactions")


def check(transactions_path, features_path, ties):
    """Runs the checks, prints them, and returns the number of failures."""
    tx = read_transactions(transactions_path)
    ids, engine = read_engine_output(features_path)
    results = run_checks(tx, ids, engine, ties)
    for name, ok, detail in results:
        print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}")
    failed = sum(not ok for _, ok, _ in results)
    customers = tx["customer_id"].nunique()
    ties = int(tx.duplicated(["customer_id", "ts"], keep=False).sum())
    print(f"({len(tx)} transactions, {customers} customers, {ties} in same-customer timestamp ties)")
    print(f"{len(results) - failed} passed, {failed} failed")
    return failed


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    edges = commands.add_parser("add-edges", help="merge boundary and tie cases into a simulator file")
    edges.add_argument("--input", required=True, help="simulator output (JSON lines)")
    edges.add_argument("--output", required=True)
    checks = commands.add_parser("check", help="compare the engine's features with the reference")
    checks.add_argument("--transactions", required=True, help="the file the engine replayed")
    checks.add_argument("--features", required=True, help="engine replay output (JSON lines)")
    checks.add_argument("--ties", choices=["all", "arrived"], default="all",
                        help="same-customer transactions at the same instant: all in each other's windows "
                             "(default), or only those earlier in the file")
    args = parser.parse_args()
    if args.command == "add-edges":
        add_edges(args.input, args.output)
    else:
        sys.exit(1 if check(args.transactions, args.features, args.ties) else 0)


if __name__ == "__main__":
    main()
