"""Ablation of candidate extra features for the fraud model, and the cold-start scores.

Not part of the build: a one-off study (results in the git-ignored out/ablation/).

Task 1: candidate features computed here in pandas/numpy, strictly causally (a transaction at
time t sees the transaction stream up to and including itself, in file order for equal
timestamps, and the labels whose `labelled_at` <= t, the engine's rule), each added to the
shipped 19 engine features and measured on train.py's 4 validation folds (7 days train,
7 days delay, 7 days test, LGBM_PARAMS, LightGBM scores as train.py's selection does). The
best combination chosen there is then checked on the protocol test week of seed 42 and of the
hold-out seeds 1, 2, 3 with the shipped-model recipe (train SHIPPED_TRAIN, ONNX scores).

Task 2: the shipped models/fraud.onnx on seed 42: score distributions at cold start.

    PY=.tools/venv/bin/python
    $PY models/ablation.py selftest   # vectorised candidate features vs brute-force loops
    $PY models/ablation.py cache      # parse the JSON lines of seeds 42, 1, 2, 3 once (~6 min)
    $PY models/ablation.py ablate     # task 1: singles + greedy on train.py's 4 folds
    $PY models/ablation.py extended   # task 1: 11 weekly folds, paired deltas, ceilings
    $PY models/ablation.py extra4     # task 1: the 11-fold combinations on the 4 folds
    $PY models/ablation.py long       # task 1: folds with the shipped training period
    $PY models/ablation.py holdout    # task 1: protocol test week, seeds 42, 1, 2, 3
    $PY models/ablation.py ceilings   # task 1: CP@100 ceilings on those test weeks
    $PY models/ablation.py coldstart  # task 2
    $PY models/ablation.py tables     # out/ablation/tables.md from results.json

Every step merges its results into out/ablation/results.json.
"""

import json
import os
import pickle
import sys
import time

import numpy as np
import pandas as pd

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import train as T  # noqa: E402

OUT = os.path.join(ROOT, "out", "ablation")
RESULTS = os.path.join(OUT, "results.json")
BASE = T.CANDIDATE_SETS["book+ratios+terminal"]
DAY_S = 86400
SEEDS = {
    "42": ("out/models/transactions.jsonl", "out/models/labels.jsonl", "out/models/features.jsonl"),
    "1": ("out/holdout/tx-1.jsonl", "out/holdout/labels-1.jsonl", "out/holdout/features-1.jsonl"),
    "2": ("out/holdout/tx-2.jsonl", "out/holdout/labels-2.jsonl", "out/holdout/features-2.jsonl"),
    "3": ("out/holdout/tx-3.jsonl", "out/holdout/labels-3.jsonl", "out/holdout/features-3.jsonl"),
}
EPOCH = pd.Timestamp("2018-04-01T00:00:00Z")


def log(*args):
    print(time.strftime("%H:%M:%S"), *args, flush=True)


# ---------------------------------------------------------------------------------------------
# loading and caching


def seconds(series):
    """ISO timestamps as int64 seconds since the simulation start."""
    ts = pd.to_datetime(series, utc=True, format="ISO8601")
    return ((ts - EPOCH) // pd.Timedelta(seconds=1)).astype(np.int64).to_numpy()


def load_seed(seed):
    """The simulation of one seed: transactions (file order), labelled_at, the 19 engine
    features (float32); cached as a pickle under out/ablation/."""
    cache = os.path.join(OUT, f"cache-{seed}.pkl")
    if os.path.exists(cache):
        with open(cache, "rb") as f:
            return pickle.load(f)
    tx_path, labels_path, features_path = (os.path.join(ROOT, p) for p in SEEDS[seed])
    log(f"seed {seed}: reading {tx_path}")
    with open(tx_path) as f:
        tx = pd.DataFrame.from_records([json.loads(line) for line in f])
    tx = tx.rename(columns={"amount": "amount_tx"})
    tx["customer_id"] = tx["customer_id"].str.slice(2).astype(np.int64)
    tx["terminal"] = tx.pop("terminal_id").str.slice(2).astype(np.int64)
    tx["ts"] = seconds(tx.pop("timestamp"))
    tx["day"] = tx["ts"] // DAY_S
    tx["is_fraud"] = tx["is_fraud"].astype(np.int64)
    tx = tx.set_index("transaction_id")

    log(f"seed {seed}: reading {labels_path}")
    with open(labels_path) as f:
        labels = pd.DataFrame.from_records([json.loads(line) for line in f],
                                           columns=["transaction_id", "label", "labelled_at"])
    labels = labels.set_index("transaction_id")
    tx["labelled_at"] = pd.Series(seconds(labels["labelled_at"]), index=labels.index).reindex(tx.index).to_numpy()
    label_fraud = (labels["label"] == "fraud").astype(np.int64).reindex(tx.index).to_numpy()
    assert (label_fraud == tx["is_fraud"].to_numpy()).all(), "labels disagree with is_fraud"
    assert not tx["labelled_at"].isna().any()
    tx["labelled_at"] = tx["labelled_at"].astype(np.int64)

    log(f"seed {seed}: reading {features_path}")
    features = T.load_features(features_path, BASE)
    data = T.join(tx, features)
    data["row"] = np.arange(len(data), dtype=np.int64)
    os.makedirs(OUT, exist_ok=True)
    with open(cache, "wb") as f:
        pickle.dump(data, f, protocol=pickle.HIGHEST_PROTOCOL)
    log(f"seed {seed}: {len(data)} rows cached in {cache}")
    return data


# ---------------------------------------------------------------------------------------------
# candidate features (numpy, causal)


def _sorted_keys(group, ts, row):
    """Order by (group, ts, file row) and the int64 keys group * 2^32 + ts in that order."""
    order = np.lexsort((row, ts, group))
    keys = group[order] * (1 << 32) + ts[order]
    return order, keys


def window_count_self(group, ts, row, window_s):
    """Per row: rows of the same group with ts in (t - window, t] that came at or before it
    in file order (itself included): the engine's streaming window count."""
    order, keys = _sorted_keys(group, ts, row)
    rank = np.arange(len(order))
    lo = np.searchsorted(keys, keys - window_s, side="right")
    out = np.empty(len(order), dtype=np.int64)
    out[order] = rank - lo + 1
    return out


def group_rank(group, ts, row):
    """Per row: how many rows of its group came before it (ts, then file order)."""
    order = np.lexsort((row, ts, group))
    g = group[order]
    start = np.r_[0, np.flatnonzero(g[1:] != g[:-1]) + 1]
    first = np.repeat(start, np.diff(np.r_[start, len(g)]))
    out = np.empty(len(order), dtype=np.int64)
    out[order] = np.arange(len(order)) - first
    return out


def _grouped_cumsum(g, values):
    """Cumulative sums restarting at each group (a true per-group sum: subtracting a global
    cumulative sum would cancel catastrophically with the exponential weights)."""
    return pd.DataFrame(values).groupby(g, sort=False).cumsum().to_numpy()


def known_label_lookup(q_group, q_t, l_group, l_known, values):
    """For each query (group, t): sums of `values` (n x k) over the group's labels with
    known time <= t. Returns (sums n_q x k, index of the last such label or -1, in the
    label order, and that order)."""
    order = np.lexsort((l_known, l_group))
    lg = l_group[order]
    lkeys = lg * (1 << 32) + l_known[order]
    cs = _grouped_cumsum(lg, values[order])
    qkeys = q_group * (1 << 32) + q_t
    p = np.searchsorted(lkeys, qkeys, side="right")  # labels with key <= query key
    g0 = np.searchsorted(lkeys, q_group * (1 << 32), side="left")
    has = p > g0
    sums = np.zeros((len(q_t), values.shape[1]))
    sums[has] = cs[p[has] - 1]
    last = np.where(has, p - 1, -1)
    return sums, last, order


def decayed_terminal(data, half_life_days):
    """(a) the terminal's labels known by t, each weighted 2^(-(t - tx time) / half-life):
    decayed fraud share and decayed fraud mass. Weights factor as 2^(tx time / h) * 2^(-t / h);
    the second factor is common to a query's sums, so per-terminal cumulative sums of the
    first (up to 2^(183 / h), fine in float64) give them exactly, without cancellation."""
    term = data["terminal"].to_numpy()
    ts = data["ts"].to_numpy()
    known = data["labelled_at"].to_numpy()
    y = data["is_fraud"].to_numpy().astype(float)
    h = half_life_days * DAY_S
    w = np.exp2(ts / h)
    sums, _, _ = known_label_lookup(term, ts, term, known, np.c_[w * y, w])
    scale = np.exp2(-ts / h)
    fraud, total = sums[:, 0] * scale, sums[:, 1] * scale
    risk = np.divide(fraud, total, out=np.zeros_like(fraud), where=total > 0)
    return risk, fraud


def terminal_label_state(data, streak_days=45):
    """(e) about the terminal's labels known by t:
    * days from the last known fraud's transaction to t (999 if none);
    * whether the latest known label (by transaction time) is a fraud;
    * days from the earliest known fraud with transaction time in (t - streak_days, t] to t
      (0 if none): the age of the current compromise as far as the labels tell."""
    term = data["terminal"].to_numpy()
    ts = data["ts"].to_numpy()
    known = data["labelled_at"].to_numpy()
    y = data["is_fraud"].to_numpy()
    n = len(ts)
    # labels are known a fixed delay after their transaction in these files, so "latest known
    # label by known time" is also the latest by transaction time; checked here.
    delay = known - ts
    assert (delay == delay[0]).all(), "labelled_at - timestamp is not constant"
    # last known fraud: among fraud labels only
    f = y == 1
    _, last, order = known_label_lookup(term, ts, term[f], known[f], np.ones((f.sum(), 1)))
    fts = ts[f][order]
    days_since_fraud = np.where(last >= 0, (ts - fts[np.maximum(last, 0)]) / DAY_S, 999.0)
    # latest known label
    _, last_all, order_all = known_label_lookup(term, ts, term, known, np.ones((n, 1)))
    yl = y[order_all]
    last_is_fraud = np.where(last_all >= 0, yl[np.maximum(last_all, 0)], 0)
    # earliest known fraud with tx time > t - streak: fraud labels sorted by (terminal, tx time)
    fts_all = ts[f]
    forder = np.lexsort((fts_all, term[f]))
    fkeys = term[f][forder] * (1 << 32) + fts_all[forder]
    p = np.searchsorted(fkeys, term * (1 << 32) + ts - streak_days * DAY_S, side="right")
    age = np.zeros(n)
    ok = p < len(fkeys)
    cand = np.where(ok, p, 0)
    same = ok & (fkeys[cand] >> 32 == term)
    first_ts = fts_all[forder][cand]
    known_first = same & (first_ts + delay[0] <= ts)
    age[known_first] = (ts[known_first] - first_ts[known_first]) / DAY_S
    return days_since_fraud, last_is_fraud.astype(float), age


def candidate_features(data):
    """All candidate features, as float32 columns (the model sees float32)."""
    t0 = time.time()
    term = data["terminal"].to_numpy()
    cust = data["customer_id"].to_numpy()
    ts = data["ts"].to_numpy()
    row = data["row"].to_numpy()
    # the stream is in time order: "came before in file order" is "seen before by the engine"
    assert (np.diff(ts[np.argsort(row)]) >= 0).all(), "transactions are not in time order"
    out = {}
    # (a) decayed terminal risk over the labels known by t
    for h in (1, 3, 7):
        risk, mass = decayed_terminal(data, h)
        out[f"terminal_risk_decay_{h}d"] = risk
        out[f"terminal_fraud_mass_decay_{h}d"] = mass
    # (b) terminal transaction counts without delay, the current one included
    for w in (1, 7):
        out[f"terminal_tx_count_{w}d"] = window_count_self(term, ts, row, w * DAY_S)
    # (c) customer-terminal novelty
    pair = cust * 100_000 + term
    out["cust_term_first_ever"] = (group_rank(pair, ts, row) == 0).astype(float)
    prev30 = window_count_self(pair, ts, row, 30 * DAY_S) - 1
    out["cust_term_prev_count_30d"] = prev30
    out["cust_term_first_30d"] = (prev30 == 0).astype(float)
    # (d) the customer's frauds known by t over 30 days, 7 days back: frauds with labelled_at
    # in (t - 30d, t], i.e. transaction time in (t - 37d, t - 7d] (labelled_at = time + 7d)
    f = data["is_fraud"].to_numpy() == 1
    known = data["labelled_at"].to_numpy()
    order = np.lexsort((known[f], cust[f]))
    fkeys = cust[f][order] * (1 << 32) + known[f][order]
    qkeys = cust * (1 << 32) + ts
    out["customer_known_frauds_30d_delay_7d"] = (
        np.searchsorted(fkeys, qkeys, side="right") - np.searchsorted(fkeys, qkeys - 30 * DAY_S, side="right")
    )
    out["customer_known_frauds_ever"] = np.searchsorted(fkeys, qkeys, side="right") - np.searchsorted(
        fkeys, cust * (1 << 32), side="left")
    # (e) terminal label state
    since, last_fraud, age = terminal_label_state(data)
    out["terminal_days_since_known_fraud"] = since
    out["terminal_last_known_label_fraud"] = last_fraud
    out["terminal_known_fraud_age"] = age
    frame = pd.DataFrame({k: np.asarray(v, dtype=np.float32) for k, v in out.items()}, index=data.index)
    log(f"candidate features computed in {time.time() - t0:.0f} s")
    return frame


def load_with_candidates(seed):
    cache = os.path.join(OUT, f"cand-{seed}.pkl")
    data = load_seed(seed)
    if os.path.exists(cache):
        with open(cache, "rb") as f:
            cand = pickle.load(f)
    else:
        cand = candidate_features(data)
        with open(cache, "wb") as f:
            pickle.dump(cand, f, protocol=pickle.HIGHEST_PROTOCOL)
    return pd.concat([data, cand], axis=1)


def cmd_selftest():
    """The vectorised candidate features against brute-force loops on a small made-up stream
    (ties in time, several terminals and customers, labels 7 days after)."""
    rng = np.random.default_rng(0)
    n = 600
    ts = np.sort(rng.integers(0, 60 * DAY_S, n))
    ts[10:14] = ts[10]  # ties
    ts[200:203] = ts[200]
    data = pd.DataFrame({
        "terminal": rng.integers(0, 4, n), "customer_id": rng.integers(0, 5, n), "ts": ts,
        "is_fraud": (rng.random(n) < 0.3).astype(np.int64), "row": np.arange(n),
    })
    data["labelled_at"] = data["ts"] + 7 * DAY_S
    got = candidate_features(data)
    term, cust, y, known = (data[c].to_numpy() for c in ("terminal", "customer_id", "is_fraud", "labelled_at"))
    want = {k: np.zeros(n) for k in got.columns}
    for j in range(n):
        t = ts[j]
        kn = (term == term[j]) & (known <= t)
        for h in (1, 3, 7):
            w = np.exp2(-(t - ts[kn]) / (h * DAY_S))
            want[f"terminal_risk_decay_{h}d"][j] = (w * y[kn]).sum() / w.sum() if kn.any() else 0
            want[f"terminal_fraud_mass_decay_{h}d"][j] = (w * y[kn]).sum()
        upto = np.arange(n) <= j  # file order = time order here, ties by row
        for d in (1, 7):
            want[f"terminal_tx_count_{d}d"][j] = ((term == term[j]) & upto & (ts > t - d * DAY_S)).sum()
        same_pair = (term == term[j]) & (cust == cust[j]) & (np.arange(n) < j)
        want["cust_term_first_ever"][j] = float(not same_pair.any())
        want["cust_term_prev_count_30d"][j] = (same_pair & (ts > t - 30 * DAY_S)).sum()
        want["cust_term_first_30d"][j] = float(want["cust_term_prev_count_30d"][j] == 0)
        cf = (cust == cust[j]) & (y == 1) & (known <= t)
        want["customer_known_frauds_30d_delay_7d"][j] = (cf & (ts > t - 37 * DAY_S)).sum()
        want["customer_known_frauds_ever"][j] = cf.sum()
        kf = kn & (y == 1)
        want["terminal_days_since_known_fraud"][j] = (t - ts[kf].max()) / DAY_S if kf.any() else 999
        want["terminal_last_known_label_fraud"][j] = y[np.flatnonzero(kn)[-1]] if kn.any() else 0
        recent = kf & (ts > t - 45 * DAY_S)
        want["terminal_known_fraud_age"][j] = (t - ts[recent].min()) / DAY_S if recent.any() else 0
    bad = 0
    for k in got.columns:
        diff = np.abs(got[k].to_numpy(np.float64) - np.float32(want[k]).astype(np.float64))
        ok = np.all(diff <= 1e-6 * np.maximum(1, np.abs(want[k])))
        bad += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {k}: max abs diff {diff.max():.3g}, mean value {np.mean(want[k]):.4g}")
    if bad:
        sys.exit(1)


# ---------------------------------------------------------------------------------------------
# task 1: validation folds


def check_alignment(data):
    """The engine's terminal_tx_count_7d_delay_7d recomputed from this file's terminals, times
    and labelled_at: proves the rows, ids and times line up with the engine's view."""
    term, ts, known = (data[c].to_numpy() for c in ("terminal", "ts", "labelled_at"))
    order = np.lexsort((ts, term))
    keys = term[order] * (1 << 32) + ts[order]
    q = term * (1 << 32) + ts - 7 * DAY_S
    mine = np.searchsorted(keys, q, side="right") - np.searchsorted(keys, q - 7 * DAY_S, side="right")
    assert (known - ts == 7 * DAY_S).all()
    engine = data["terminal_tx_count_7d_delay_7d"].to_numpy()
    mismatches = int((mine != engine).sum())
    log(f"alignment check: terminal_tx_count_7d_delay_7d recomputed, {mismatches} mismatches of {len(mine)}")
    return mismatches


GROUPS = {
    "a: terminal_risk_decay_1d": ["terminal_risk_decay_1d"],
    "a: terminal_risk_decay_3d": ["terminal_risk_decay_3d"],
    "a: terminal_risk_decay_7d": ["terminal_risk_decay_7d"],
    "a: terminal_risk_decay_3d+7d": ["terminal_risk_decay_3d", "terminal_risk_decay_7d"],
    "a: risk+mass_decay_3d": ["terminal_risk_decay_3d", "terminal_fraud_mass_decay_3d"],
    "b: terminal_tx_count_1d/7d (no delay)": ["terminal_tx_count_1d", "terminal_tx_count_7d"],
    "c: customer-terminal novelty": ["cust_term_first_ever", "cust_term_first_30d", "cust_term_prev_count_30d"],
    "d: customer_known_frauds_30d_delay_7d": ["customer_known_frauds_30d_delay_7d"],
    "d: + customer_known_frauds_ever": ["customer_known_frauds_30d_delay_7d", "customer_known_frauds_ever"],
    "e1: terminal_known_fraud_age": ["terminal_known_fraud_age"],
    "e2: terminal_days_since_known_fraud": ["terminal_days_since_known_fraud"],
    "e3: terminal_last_known_label_fraud": ["terminal_last_known_label_fraud"],
}
KEYS = ("auc_roc", "average_precision", "card_precision_at_100")


class Folds:
    """train.py's validation folds on one data set, masks computed once."""

    def __init__(self, data, long_train=False):
        self.data = data
        self.splits = []
        for start in T.validation_start_dates():
            train, test = T.protocol_split(data, start, T.PROTOCOL["delta_train"], T.PROTOCOL["delta_delay"],
                                           T.PROTOCOL["delta_test"])
            if long_train:  # the shipped model's recipe: from SHIPPED_TRAIN's start to the fold's training end
                day = data["day"].to_numpy()
                train = (day >= T.day_index(T.SHIPPED_TRAIN[0])) & (day < T.day_index(start) + T.PROTOCOL["delta_train"])
            self.splits.append((start, train, test))

    def run(self, names):
        folds = []
        for start, train, test in self.splits:
            model = T.fit(self.data, train, names)
            ev = T.evaluate(self.data[test], T.lgbm_scores(model, self.data, test, names))
            folds.append({"train_start": start, **{k: ev[k] for k in KEYS},
                          "s2_auc": ev["per_scenario"]["2"]["auc_roc"],
                          "s2_card_recall": ev["per_scenario"]["2"]["card_recall_at_100"],
                          "s3_auc": ev["per_scenario"]["3"]["auc_roc"],
                          "s3_card_recall": ev["per_scenario"]["3"]["card_recall_at_100"]})
        mean = {k: round(float(np.mean([f[k] for f in folds])), 4) for k in folds[0] if k != "train_start"}
        return {"features": list(names), "mean": mean, "folds": folds}


def with_deltas(result, base):
    result["delta"] = {k: round(result["mean"][k] - base["mean"][k], 4) for k in KEYS}
    result["delta_ap_per_fold"] = [round(f["average_precision"] - b["average_precision"], 4)
                                   for f, b in zip(result["folds"], base["folds"])]
    return result


def load_results():
    if os.path.exists(RESULTS):
        with open(RESULTS) as f:
            return json.load(f)
    return {}


def save_results(update):
    results = load_results()
    results.update(update)
    with open(RESULTS, "w") as f:
        json.dump(results, f, indent=2)
        f.write("\n")


def cmd_ablate():
    t0 = time.time()
    data = load_with_candidates("42")
    mismatches = check_alignment(data)
    folds = Folds(data)
    base = folds.run(BASE)
    log(f"baseline: {base['mean']}")
    singles = {}
    for name, extra in GROUPS.items():
        singles[name] = with_deltas(folds.run(BASE + extra), base)
        log(f"{name}: {singles[name]['mean']} delta {singles[name]['delta']} per fold {singles[name]['delta_ap_per_fold']}")
    # greedy forward selection over the groups (one variant of a and of d at a time), on mean
    # validation AP with train.py's SELECTION_MARGIN; the first step is the singles above
    chosen, families, current, steps = [], set(), base, []
    pool = dict(singles)
    while pool:
        best = max(pool, key=lambda n: pool[n]["mean"]["average_precision"])
        gain = pool[best]["mean"]["average_precision"] - current["mean"]["average_precision"]
        steps.append({"added": best, "mean": pool[best]["mean"], "gain_ap": round(gain, 4)})
        log(f"greedy: best addition {best}, AP gain {gain:+.4f}")
        if gain < T.SELECTION_MARGIN:
            break
        chosen.append(best)
        current = pool[best]
        families.add(best.split(":")[0])
        names = list(dict.fromkeys(current["features"]))
        pool = {}
        for name, extra in GROUPS.items():
            if name.split(":")[0] in families:
                continue
            pool[name] = with_deltas(folds.run(list(dict.fromkeys(names + extra))), base)
            log(f"  + {name}: {pool[name]['mean']} delta {pool[name]['delta']}")
    everything = list(dict.fromkeys(BASE + [f for g in ("a: terminal_risk_decay_3d+7d", "b: terminal_tx_count_1d/7d (no delay)",
                                                         "c: customer-terminal novelty", "d: + customer_known_frauds_ever",
                                                         "e1: terminal_known_fraud_age", "e2: terminal_days_since_known_fraud",
                                                         "e3: terminal_last_known_label_fraud") for f in GROUPS[g]]))
    all_result = with_deltas(folds.run(everything), base)
    log(f"all candidates: {all_result['mean']} delta {all_result['delta']}")
    best_features = list(dict.fromkeys(current["features"]))
    save_results({"validation": {
        "protocol": "train.py validation folds (train starts " + ", ".join(T.validation_start_dates())
                    + "), 7d train / 7d delay / 7d test, LGBM_PARAMS, LightGBM scores, seed 42",
        "alignment_mismatches": mismatches,
        "baseline": base, "singles": singles, "greedy_steps": steps, "greedy_chosen": chosen,
        "best_features": best_features, "all_candidates": all_result,
        "seconds": round(time.time() - t0),
    }})


EXTENDED_STARTS = [(pd.Timestamp("2018-07-11") - pd.Timedelta(days=7 * i)).strftime("%Y-%m-%d") for i in range(11)]
EXTRA_SETS = {  # combinations fixed before this check, from the 4-fold results
    "e1+e3": ["terminal_known_fraud_age", "terminal_last_known_label_fraud"],
    "e1+a(risk+mass 3d)": ["terminal_known_fraud_age", "terminal_risk_decay_3d", "terminal_fraud_mass_decay_3d"],
    "e1+e3+a(risk+mass 3d)": ["terminal_known_fraud_age", "terminal_last_known_label_fraud", "terminal_risk_decay_3d",
                              "terminal_fraud_mass_decay_3d"],
}


def visible_bound(data, test, cards):
    """Best CP@100 if every card with a fraud a label-delayed feature could see came first:
    scenario 1 or 3 frauds (the card's own features), and scenario 2 frauds at a terminal with
    a fraud label known by t in the last 45 days (nothing can be known in a compromise's first
    7 days). Also the share of scenario 2 test frauds so visible."""
    t = data[test]
    vis = (t["fraud_scenario"].isin([1, 3]) | ((t["fraud_scenario"] == 2) & (t["terminal_known_fraud_age"] > 0)))
    visible = t.loc[vis, ["day", "customer_id"]].drop_duplicates()
    marked = cards.merge(visible.assign(visible=1), on=["day", "customer_id"], how="left").fillna({"visible": 0})
    per_day = marked.groupby("day")["visible"].sum()
    s2 = t["fraud_scenario"] == 2
    return (round(float(np.minimum(per_day, T.TOP_K).mean() / T.TOP_K), 4),
            round(float((t.loc[s2, "terminal_known_fraud_age"] > 0).mean()), 4))


def cmd_extended():
    """Robustness of the 4-fold ranking on seed 42 only: 11 weekly validation folds (train
    starts 2018-07-11 back to 2018-05-02, all before the protocol's test week), paired deltas
    with their standard error over folds; and the ceiling of label-delayed features."""
    t0 = time.time()
    data = load_with_candidates("42")
    val = load_results()["validation"]
    folds = Folds(data)
    folds.splits = []
    for start in EXTENDED_STARTS:
        train, test = T.protocol_split(data, start, T.PROTOCOL["delta_train"], T.PROTOCOL["delta_delay"], T.PROTOCOL["delta_test"])
        folds.splits.append((start, train, test))
    base = folds.run(BASE)
    # ceilings, from the baseline's cards
    bounds = []
    for start, train, test in folds.splits:
        model = T.fit(data, train, BASE)
        cp, cards = T.card_precision_top_k(data[test], T.lgbm_scores(model, data, test, BASE))
        b_all, _ = T.card_precision_bounds(data[test], cards)
        b_vis, s2_vis = visible_bound(data, test, cards)
        bounds.append({"train_start": start, "cp_at_100": round(cp, 4), "best_possible": b_all,
                       "best_possible_label_visible": b_vis, "s2_test_frauds_visible_share": s2_vis})
    log(f"extended baseline: {base['mean']}")
    sets = {name: BASE + extra for name, extra in GROUPS.items()}
    sets.update({name: BASE + extra for name, extra in EXTRA_SETS.items()})
    sets["greedy best"] = val["best_features"]
    sets["all candidates"] = val["all_candidates"]["features"]
    out = {"train_starts": EXTENDED_STARTS, "baseline": base, "ceilings": bounds, "sets": {}}
    for name, names in sets.items():
        names = list(dict.fromkeys(names))
        r = with_deltas(folds.run(names), base)
        d = {k: np.array([f[k] - b[k] for f, b in zip(r["folds"], base["folds"])]) for k in KEYS}
        r["delta_stderr"] = {k: round(float(v.std(ddof=1) / np.sqrt(len(v))), 4) for k, v in d.items()}
        r["folds_better_ap"] = int((d["average_precision"] > 0).sum())
        r["folds_better_cp"] = int((d["card_precision_at_100"] > 0).sum())
        out["sets"][name] = r
        log(f"{name}: delta {r['delta']} +- {r['delta_stderr']}, AP better in {r['folds_better_ap']}/11, "
            f"CP better in {r['folds_better_cp']}/11")
    out["seconds"] = round(time.time() - t0)
    save_results({"validation_extended": out})


def cmd_extra4():
    """The combinations of the 11-fold check on train.py's 4 folds too (seed 42)."""
    data = load_with_candidates("42")
    folds = Folds(data)
    base = folds.run(BASE)
    out = {}
    for name, extra in EXTRA_SETS.items():
        out[name] = with_deltas(folds.run(BASE + extra), base)
        log(f"{name}: {out[name]['mean']} delta {out[name]['delta']} per fold {out[name]['delta_ap_per_fold']}")
    results = load_results()
    results["validation"]["extra_sets"] = out
    save_results({"validation": results["validation"]})


def cmd_long():
    """Validation folds with the shipped model's training period (from SHIPPED_TRAIN's start up
    to each fold's training end), baseline vs the chosen set."""
    t0 = time.time()
    data = load_with_candidates("42")
    best = load_results()["validation"]["best_features"]
    folds = Folds(data, long_train=True)
    base = folds.run(BASE)
    log(f"long baseline: {base['mean']}")
    out = {"baseline": base}
    for name, names in (("best", best), ("e1+e3", BASE + EXTRA_SETS["e1+e3"])):
        out[name] = with_deltas(folds.run(names), base)
        log(f"long {name}: {out[name]['mean']} delta {out[name]['delta']} per fold {out[name]['delta_ap_per_fold']}")
    out["seconds"] = round(time.time() - t0)
    save_results({"validation_long_train": out})


# ---------------------------------------------------------------------------------------------
# task 1: the chosen set on the protocol test week, seed 42 and hold-out seeds


def cmd_holdout():
    """Per seed: the shipped recipe (train SHIPPED_TRAIN on that seed) and the 7-day protocol
    model, baseline vs the chosen set, ONNX scores on the protocol test week; and the models
    trained on seed 42 applied as they are to the other seeds (what fraud.onnx is)."""
    t0 = time.time()
    best = load_results()["validation"]["best_features"]
    # "best": the greedy 4-fold choice; "e1+e3": the best set of the 11-fold check (seed 42 too),
    # both fixed before this step looks at any test week
    sets = {"baseline": BASE, "best": best, "e1+e3": BASE + EXTRA_SETS["e1+e3"]}
    keep = ("auc_roc", "average_precision", "card_precision_at_100", "test_frauds", "per_scenario")
    out = {"features": sets}
    seed42_models = {}
    for seed in ("42", "1", "2", "3"):
        data = load_with_candidates(seed)
        train7, test = T.protocol_split(data, **T.PROTOCOL)
        day = data["day"].to_numpy()
        shipped_train = (day >= T.day_index(T.SHIPPED_TRAIN[0])) & (day < T.day_index(T.SHIPPED_TRAIN[1]))
        res = {}
        for set_name, names in sets.items():
            x = data.loc[test, names].to_numpy()
            onx = T.to_onnx(T.fit(data, shipped_train, names), names)
            if seed == "42":
                seed42_models[set_name] = onx
            r = {"shipped_recipe": {k: T.evaluate(data[test], T.onnx_scores(onx, x))[k] for k in keep},
                 "protocol_7_day": {k: T.evaluate(data[test], T.onnx_scores(T.to_onnx(T.fit(data, train7, names), names), x))[k]
                                    for k in keep}}
            if seed != "42":
                r["seed_42_model_as_is"] = {k: T.evaluate(data[test], T.onnx_scores(seed42_models[set_name], x))[k] for k in keep}
            res[set_name] = r
            log(f"seed {seed} {set_name}: " + "; ".join(
                f"{m}: AUC {v['auc_roc']} AP {v['average_precision']} CP {v['card_precision_at_100']}" for m, v in r.items()))
        out[seed] = res
    out["seconds"] = round(time.time() - t0)
    save_results({"holdout": out})


def cmd_ceilings():
    """Protocol test week of each seed: the best CP@100 possible, and with only the frauds a
    label-delayed feature can see (visible_bound), on the baseline shipped-recipe model's cards."""
    out = {}
    for seed in ("42", "1", "2", "3"):
        data = load_with_candidates(seed)
        _, test = T.protocol_split(data, **T.PROTOCOL)
        day = data["day"].to_numpy()
        shipped_train = (day >= T.day_index(T.SHIPPED_TRAIN[0])) & (day < T.day_index(T.SHIPPED_TRAIN[1]))
        model = T.fit(data, shipped_train, BASE)
        cp, cards = T.card_precision_top_k(data[test], T.lgbm_scores(model, data, test, BASE))
        b_all, b_no_s2 = T.card_precision_bounds(data[test], cards)
        b_vis, s2_vis = visible_bound(data, test, cards)
        out[seed] = {"cp_at_100_lgbm": round(cp, 4), "best_possible": b_all, "best_possible_without_s2": b_no_s2,
                     "best_possible_label_visible": b_vis, "s2_test_frauds_visible_share": s2_vis}
        log(f"seed {seed}: {out[seed]}")
    save_results({"test_week_ceilings": out})


# ---------------------------------------------------------------------------------------------
# task 2: cold start


def describe(scores, y=None):
    s = np.asarray(scores, dtype=np.float64)
    if len(s) == 0:
        return {"n": 0}
    q = np.percentile(s, [10, 50, 90, 99])
    d = {"n": int(len(s)), "min": float(s.min()), "p10": float(q[0]), "p50": float(q[1]), "p90": float(q[2]),
         "p99": float(q[3]), "max": float(s.max()), "share_above_0.5": float((s > 0.5).mean()),
         "share_above_0.9": float((s > 0.9).mean()), "distinct_values": int(len(np.unique(s)))}
    d = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in d.items()}
    if y is not None:
        y = np.asarray(y)
        d["frauds"] = int(y.sum())
        d["fraud_rate"] = round(float(y.mean()), 5)
        if 0 < y.sum() < len(y):
            from sklearn.metrics import average_precision_score, roc_auc_score
            d["average_precision"] = round(float(average_precision_score(y, s)), 4)
            d["auc_roc"] = round(float(roc_auc_score(y, s)), 4)
    return d


def cmd_coldstart():
    import onnx
    t0 = time.time()
    data = load_seed("42")
    import hashlib
    import subprocess
    path = os.path.join(HERE, "fraud.onnx")
    model = onnx.load(path)
    props = {p.key: p.value for p in model.metadata_props}
    names = json.loads(props["fraudscore.features"])
    assert names == BASE, names
    x = data[names].to_numpy()
    scores = T.onnx_scores(model, x)
    y = data["is_fraud"].to_numpy()
    cust, term, ts, row, day = (data[c].to_numpy() for c in ("customer_id", "terminal", "ts", "row", "day"))
    crank = group_rank(cust, ts, row)
    term_first_day = pd.Series(day).groupby(term).transform("min").to_numpy()
    groups = {
        "all transactions": np.ones(len(y), bool),
        "customer's first transaction": crank == 0,
        "customer's first 5 transactions": crank < 5,
        "customer's 6th transaction on": crank >= 5,
        "terminal's first day": day == term_first_day,
        "all transactions of days 0-1 (2018-04-01..02)": day <= 1,
        "all transactions from 2018-05-01 on (30-day windows full)": day >= T.day_index("2018-05-01"),
    }
    out = {"model": "models/fraud.onnx", "model_sha256": T.sha256_file(path),
           "model_version": props.get("fraudscore.model_version"), "seed": 42, "groups": {}}
    # the committed model (git HEAD) gives the same scores? (the working tree's may differ in metadata)
    try:
        out["other_versions"] = {}
        sample = np.arange(0, len(x), 97)
        for rev in ("HEAD", "05bceae"):  # 05bceae: the model the brief's figures are from (sha 5ba5abdb...)
            blob = subprocess.run(["git", "-C", ROOT, "show", f"{rev}:models/fraud.onnx"], capture_output=True, check=True).stdout
            diff = np.abs(T.onnx_scores(onnx.load_from_string(blob), x[sample]) - scores[sample]).max()
            out["other_versions"][rev] = {"sha256": hashlib.sha256(blob).hexdigest(), "max_abs_score_diff_on_sample": float(diff),
                                          "sample_rows": int(len(sample))}
    except Exception as e:  # noqa: BLE001
        out["other_versions"] = {"error": str(e)}
    for gname, mask in groups.items():
        out["groups"][gname] = {
            "all": describe(scores[mask], y[mask]),
            "genuine": describe(scores[mask & (y == 0)]),
            "fraud": describe(scores[mask & (y == 1)]),
            "days_covered": [int(day[mask].min()), int(day[mask].max())],
            "fraud_scenarios": {str(k): int(v) for k, v in pd.Series(data["fraud_scenario"].to_numpy()[mask & (y == 1)]).value_counts().sort_index().items()},
        }
        log(f"{gname}: {out['groups'][gname]['all']}")
    # counterfactual: a customer with no history appearing in the steady state. Every
    # transaction from 2018-05-01 on, with its customer window features replaced by those of a
    # first transaction (counts 1, means = amount, ratios 1); terminal features as they were.
    steady = day >= T.day_index("2018-05-01")
    xs = data.loc[steady, names].copy()
    for c in names:
        if c.startswith("customer_tx_count_"):
            xs[c] = 1.0
        elif c.startswith("customer_avg_amount_"):
            xs[c] = xs["amount"]
        elif c.startswith("amount_to_avg_"):
            xs[c] = 1.0
    cf = T.onnx_scores(model, xs.to_numpy())
    ys = y[steady]
    sc = data["fraud_scenario"].to_numpy()[steady]
    out["counterfactual_new_customer_steady_state"] = {
        "what": "transactions from 2018-05-01 on, customer features replaced by a first transaction's",
        "all": describe(cf, ys), "genuine": describe(cf[ys == 0]), "fraud": describe(cf[ys == 1]),
        "same rows, real features": describe(scores[steady], ys),
        "per_scenario_auc_vs_genuine": {},
    }
    from sklearn.metrics import roc_auc_score
    for s_ in (1, 2, 3):
        m = (ys == 0) | (sc == s_)
        out["counterfactual_new_customer_steady_state"]["per_scenario_auc_vs_genuine"][str(s_)] = {
            "counterfactual": round(float(roc_auc_score(ys[m], cf[m])), 4),
            "real": round(float(roc_auc_score(ys[m], scores[steady][m])), 4)}
    cfo = out["counterfactual_new_customer_steady_state"]
    cfo["per_scenario_fraud_scores"] = {
        str(s_): {"counterfactual": describe(cf[sc == s_]), "real": describe(scores[steady][sc == s_])} for s_ in (1, 2, 3)}
    log(f"counterfactual: {cfo['all']}")
    # when the first transactions happen (the simulator starts every customer on 2018-04-01)
    fday = day[crank == 0]
    out["first_transaction_days"] = {"customers": int(len(fday)), "share_day_0": round(float((fday == 0).mean()), 4),
                                     "share_days_0_1": round(float((fday <= 1).mean()), 4),
                                     "share_days_0_6": round(float((fday <= 6).mean()), 4), "max_day": int(fday.max())}
    # amount > 220 is always a fraud (scenario 1 or a later scenario on top): how the model scores
    # it without customer history
    amount = data["amount"].to_numpy()
    big = amount > 220
    out["amount_over_220_scores"] = {
        "customer's first 5 transactions": describe(scores[big & (crank < 5)]),
        "customer's 6th transaction on": describe(scores[big & (crank >= 5)]),
        "counterfactual new customer (steady state)": describe(cf[amount[steady] > 220]),
    }
    # against the review / decline thresholds in the model's metadata, when it has them
    if "fraudscore.thresholds" in props:
        th = json.loads(props["fraudscore.thresholds"])
        groups_s = {"customer's first 5 transactions, amount > 220": scores[big & (crank < 5)],
                    "customer's 6th transaction on, amount > 220": scores[big & (crank >= 5)],
                    "counterfactual new customer, amount > 220": cf[amount[steady] > 220],
                    "counterfactual new customer, scenario 3 frauds": cf[sc == 3],
                    "real, steady state, scenario 3 frauds": scores[steady][sc == 3]}
        out["thresholds"] = {"review": th["review"]["threshold"], "decline": th["decline"]["threshold"], "share_at_or_above": {
            k: {"review": round(float((v >= th["review"]["threshold"]).mean()), 4),
                "decline": round(float((v >= th["decline"]["threshold"]).mean()), 4)} for k, v in groups_s.items()}}
    out["seconds"] = round(time.time() - t0)
    save_results({"coldstart": out})


# ---------------------------------------------------------------------------------------------
# tables


def fmt(v, signed=False):
    if v is None:
        return "–"
    return f"{v:+.4f}" if signed else f"{v:.4f}"


def cmd_tables():
    """Markdown tables of everything in results.json, to out/ablation/tables.md."""
    r = load_results()
    lines = []
    v = r["validation"]
    ext = r.get("validation_extended", {}).get("sets", {})
    lines += ["### Task 1: validation (seed 42, train.py's 4 folds; extended = 11 weekly folds)", "",
              "| candidate (added to the 19) | AUC | AP | CP@100 | ΔAUC | ΔAP | ΔCP@100 | ΔAP per fold (07-11, 07-04, 06-27, 06-20) "
              "| S2 AUC | S2 card recall | 11 folds: ΔAP ± se (better/11) | 11 folds: ΔCP ± se (better/11) |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    b = v["baseline"]["mean"]
    lines.append(f"| **baseline** (19 shipped) | {fmt(b['auc_roc'])} | {fmt(b['average_precision'])} | "
                 f"{fmt(b['card_precision_at_100'])} | | | | | {fmt(b['s2_auc'])} | {fmt(b['s2_card_recall'])} | | |")
    rows = list(v["singles"].items()) + list(v.get("extra_sets", {}).items()) + [("all candidates", v["all_candidates"])]
    for name, x in rows:
        m, d = x["mean"], x["delta"]
        e = ext.get(name)
        extra = ("| " + f"{fmt(e['delta']['average_precision'], True)} ± {e['delta_stderr']['average_precision']:.4f} ({e['folds_better_ap']}/11)"
                 + f" | {fmt(e['delta']['card_precision_at_100'], True)} ± {e['delta_stderr']['card_precision_at_100']:.4f} ({e['folds_better_cp']}/11) |"
                 ) if e else "| | |"
        lines.append(f"| {name} | {fmt(m['auc_roc'])} | {fmt(m['average_precision'])} | {fmt(m['card_precision_at_100'])} | "
                     f"{fmt(d['auc_roc'], True)} | {fmt(d['average_precision'], True)} | {fmt(d['card_precision_at_100'], True)} | "
                     f"{', '.join(f'{z:+.4f}' for z in x['delta_ap_per_fold'])} | {fmt(m['s2_auc'])} | {fmt(m['s2_card_recall'])} {extra}")
    lines += ["", "Greedy forward selection (mean 4-fold AP, a group is kept if it adds >= 0.005):", ""]
    for st in v["greedy_steps"]:
        lines.append(f"* {st['added']}: AP {st['mean']['average_precision']:.4f} (gain {st['gain_ap']:+.4f}), "
                     f"CP@100 {st['mean']['card_precision_at_100']:.4f}")
    if ext:
        lines += ["", "Extended check (11 folds), baseline mean: " + ", ".join(
            f"{k} {r['validation_extended']['baseline']['mean'][k]:.4f}" for k in KEYS), "",
                  "| set | ΔAUC | ΔAP ± se | ΔCP@100 ± se | AP better | CP better |", "|---|---|---|---|---|---|"]
        for name, e in ext.items():
            lines.append(f"| {name} | {fmt(e['delta']['auc_roc'], True)} | {fmt(e['delta']['average_precision'], True)} ± "
                         f"{e['delta_stderr']['average_precision']:.4f} | {fmt(e['delta']['card_precision_at_100'], True)} ± "
                         f"{e['delta_stderr']['card_precision_at_100']:.4f} | {e['folds_better_ap']}/11 | {e['folds_better_cp']}/11 |")
        c = r["validation_extended"]["ceilings"]
        lines += ["", "Ceilings (baseline model's cards, per fold): "
                  "| fold | CP@100 | best possible | best possible, label-visible frauds only | S2 test frauds visible |",
                  "|---|---|---|---|---|"]
        for f in c:
            lines.append(f"| {f['train_start']} | {f['cp_at_100']:.4f} | {f['best_possible']:.4f} | "
                         f"{f['best_possible_label_visible']:.4f} | {f['s2_test_frauds_visible_share']:.4f} |")
        lines.append("| mean | " + " | ".join(f"{np.mean([f[k] for f in c]):.4f}" for k in
                                             ("cp_at_100", "best_possible", "best_possible_label_visible", "s2_test_frauds_visible_share")) + " |")
    if "validation_long_train" in r:
        lt = r["validation_long_train"]
        lines += ["", "### Validation folds with the shipped training period (from 2018-05-01 to each fold's training end)", "",
                  "| set | AUC | AP | CP@100 | S2 card recall |", "|---|---|---|---|---|"]
        for name in ("baseline", "best", "e1+e3"):
            if name in lt:
                m = lt[name]["mean"]
                lines.append(f"| {name} | {fmt(m['auc_roc'])} | {fmt(m['average_precision'])} | {fmt(m['card_precision_at_100'])} | {fmt(m['s2_card_recall'])} |")
    if "holdout" in r:
        h = r["holdout"]
        lines += ["", "### Protocol test week (2018-08-08..14), ONNX scores", "",
                  "| seed | model | features | AUC | AP | CP@100 | S2 AUC | S2 card recall | S3 card recall |", "|---|---|---|---|---|---|---|---|---|"]
        for seed in ("42", "1", "2", "3"):
            for recipe in ("shipped_recipe", "protocol_7_day", "seed_42_model_as_is"):
                for set_name in h["features"]:
                    x = h[seed][set_name].get(recipe)
                    if not x:
                        continue
                    ps = x["per_scenario"]
                    lines.append(f"| {seed} | {recipe} | {set_name} | {x['auc_roc']:.4f} | {x['average_precision']:.4f} | "
                                 f"{x['card_precision_at_100']:.4f} | {ps['2']['auc_roc']:.4f} | {ps['2']['card_recall_at_100']:.4f} | "
                                 f"{ps['3']['card_recall_at_100']:.4f} |")
        lines += ["", "Mean over the unseen seeds 1, 2, 3:", "", "| model | features | AUC | AP | CP@100 |", "|---|---|---|---|---|"]
        for recipe in ("shipped_recipe", "protocol_7_day", "seed_42_model_as_is"):
            for set_name in h["features"]:
                xs = [h[s_][set_name][recipe] for s_ in ("1", "2", "3")]
                lines.append(f"| {recipe} | {set_name} | " + " | ".join(f"{np.mean([x[k] for x in xs]):.4f}" for k in KEYS) + " |")
    if "test_week_ceilings" in r:
        lines += ["", "Protocol test week ceilings (baseline shipped-recipe LightGBM model's cards):", "",
                  "| seed | CP@100 | best possible | best possible, label-visible frauds only | S2 test frauds visible |",
                  "|---|---|---|---|---|"]
        for seed, c in r["test_week_ceilings"].items():
            lines.append(f"| {seed} | {c['cp_at_100_lgbm']:.4f} | {c['best_possible']:.4f} | {c['best_possible_label_visible']:.4f} | "
                         f"{c['s2_test_frauds_visible_share']:.4f} |")
    if "coldstart" in r:
        cs = r["coldstart"]
        lines += ["", f"### Task 2: cold start, {cs['model']} (sha256 {cs['model_sha256'][:12]}…, {cs['model_version']}), seed 42", "",
                  "| group | class | n | min | p10 | p50 | p90 | p99 | max | >0.5 | >0.9 | distinct |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        def row(g, cls, d):
            if d.get("n", 0) == 0:
                return f"| {g} | {cls} | 0 | | | | | | | | | |"
            return (f"| {g} | {cls} | {d['n']} | {d['min']:.4f} | {d['p10']:.4f} | {d['p50']:.4f} | {d['p90']:.4f} | {d['p99']:.4f} | "
                    f"{d['max']:.4f} | {d['share_above_0.5']:.4f} | {d['share_above_0.9']:.4f} | {d['distinct_values']} |")
        for g, x in cs["groups"].items():
            for cls in ("all", "genuine", "fraud"):
                lines.append(row(g, cls, x[cls]))
        cf = cs["counterfactual_new_customer_steady_state"]
        for cls in ("all", "genuine", "fraud"):
            lines.append(row("counterfactual: steady state, customer features of a first transaction", cls, cf[cls]))
        lines.append(row("(same rows, real features)", "all", cf["same rows, real features"]))
        lines += ["", "| group | days | frauds | fraud rate | AP | AUC | frauds by scenario |", "|---|---|---|---|---|---|---|"]
        for g, x in cs["groups"].items():
            a = x["all"]
            lines.append(f"| {g} | {x['days_covered'][0]}..{x['days_covered'][1]} | {a['frauds']} | {a['fraud_rate']:.5f} | "
                         f"{a.get('average_precision', '–')} | {a.get('auc_roc', '–')} | {x['fraud_scenarios']} |")
        for nm, a in (("counterfactual new customer", cf["all"]), ("same rows, real features", cf["same rows, real features"])):
            lines.append(f"| {nm} | 30..182 | {a['frauds']} | {a['fraud_rate']:.5f} | {a.get('average_precision', '–')} | {a.get('auc_roc', '–')} | |")
        lines += ["", "Counterfactual per-scenario AUC vs genuine: " + ", ".join(
            f"S{k}: {z['counterfactual']} (real {z['real']})" for k, z in cf["per_scenario_auc_vs_genuine"].items())]
        lines += ["", "Fraud scores per scenario, steady state (from 2018-05-01), real features vs counterfactual new customer:", "",
                  "| scenario | real p10 | real p50 | real >0.5 | counterfactual p10 | counterfactual p50 | counterfactual >0.5 |",
                  "|---|---|---|---|---|---|---|"]
        for k, z in cf["per_scenario_fraud_scores"].items():
            lines.append(f"| {k} | {z['real']['p10']:.4f} | {z['real']['p50']:.4f} | {z['real']['share_above_0.5']:.4f} | "
                         f"{z['counterfactual']['p10']:.4f} | {z['counterfactual']['p50']:.4f} | {z['counterfactual']['share_above_0.5']:.4f} |")
        lines += ["", "Amount > 220 (always a fraud in the simulator):", "", "| rows | n | min | p10 | p50 | p90 | max | >0.5 |", "|---|---|---|---|---|---|---|---|"]
        for k, z in cs["amount_over_220_scores"].items():
            lines.append(f"| {k} | {z['n']} | {z['min']:.4f} | {z['p10']:.4f} | {z['p50']:.4f} | {z['p90']:.4f} | {z['max']:.4f} | {z['share_above_0.5']:.4f} |")
        if "thresholds" in cs:
            lines += ["", f"Share at or above the model metadata's thresholds (review {cs['thresholds']['review']:.4f}, "
                      f"decline {cs['thresholds']['decline']:.4f}):", "", "| rows | review | decline |", "|---|---|---|"]
            for k, z in cs["thresholds"]["share_at_or_above"].items():
                lines.append(f"| {k} | {z['review']:.4f} | {z['decline']:.4f} |")
        lines += ["", f"First transactions by day: {cs['first_transaction_days']}", "",
                  f"Other versions of the model file: {cs.get('other_versions')}"]
    with open(os.path.join(OUT, "tables.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


def cmd_cache():
    for seed in SEEDS:
        load_with_candidates(seed)


if __name__ == "__main__":
    {"cache": cmd_cache, "selftest": cmd_selftest, "ablate": cmd_ablate, "long": cmd_long, "extended": cmd_extended, "extra4": cmd_extra4,
     "holdout": cmd_holdout, "coldstart": cmd_coldstart, "tables": cmd_tables, "ceilings": cmd_ceilings}[sys.argv[1]]()
