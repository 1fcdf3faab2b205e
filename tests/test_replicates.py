"""Table 1's uncertainty and sanity row: popularity, seed replicates, bootstrap intervals, shared keys, the table."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from collm_lib import baselines, metrics, popularity, replicates, report
from collm_lib.data import Splits


def _splits() -> Splits:
    train_rows = pd.DataFrame({"uid": [1, 2, 3, 1, 2, 3], "iid": [5, 5, 5, 6, 6, 7], "label": [1, 1, 0, 1, 0, 0],
                               "not_cold": 1})
    test = pd.DataFrame({"uid": [1, 2, 3, 1], "iid": [5, 6, 7, 8], "label": [1, 0, 0, 1], "not_cold": [1, 1, 1, 0]})
    collab = pd.concat([train_rows, pd.DataFrame({"uid": [4], "iid": [8], "label": [1], "not_cold": 1})])
    return Splits("tiny", train_rows, test, test, test, 5, 9, collab_train=collab)


def test_popularity_counts_positive_training_rows_and_recomputes(tmp_path):
    splits = _splits()
    counts = popularity.positive_counts(splits)
    assert counts.to_dict() == {5: 2, 6: 1, 8: 1}  # from collab_train (item 8's one positive), not train
    assert list(popularity.score_popularity(counts, splits.test)) == [2.0, 1.0, 0.0, 1.0]  # unseen item 7: 0
    made = popularity.ensure_popularity(splits, work_dir=tmp_path)
    rows = pd.read_csv(f"{made['run_dir']}/test_scores.csv")
    assert metrics.auc(rows["label"], rows["score"]) == made["metrics"]["test"]["all"]["auc"] == 0.875
    assert popularity.ensure_popularity(splits, work_dir=tmp_path)["run_dir"] == made["run_dir"]  # found, not remade
    with pytest.raises(ValueError, match="iid"):
        popularity.score_popularity(counts, splits.test.drop(columns="iid"))


def test_seed_spread_blank_for_a_single_replicate():
    frame = pd.DataFrame([replicates.replicate_row("MF", "d", s, {"all": {"auc": a, "uauc": None, "rows": 10}}, "x")
                          for s, a in ((1, 0.6), (2, 0.7), (3, 0.8))]
                         + [replicates.replicate_row("Popularity", "d", None, {"all": {"auc": 0.55, "uauc": 0.5, "rows": 10}}, "y")])
    out = replicates.spread(frame).set_index("method")
    assert out.loc["MF", "replicate AUC mean"] == pytest.approx(0.7)
    assert out.loc["MF", "replicate AUC std"] == pytest.approx(0.1)  # sample std (ddof 1)
    assert np.isnan(out.loc["MF", "replicate UAUC mean"])  # undefined everywhere stays undefined
    assert out.loc["Popularity", "replicates"] == 1 and np.isnan(out.loc["Popularity", "replicate AUC std"])
    assert replicates.seeds_from(2023, 3) == (2023, 2024, 2025)
    with pytest.raises(ValueError, match="at least 1"):
        replicates.seeds_from(2023, 0)


def _scores(n_users: int = 40, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    uid = np.repeat(np.arange(1, n_users + 1), 6)
    label = rng.integers(0, 2, len(uid))
    base = pd.DataFrame({"dataset": "d", "uid": uid, "iid": np.tile(np.arange(6), n_users), "label": label})
    return pd.concat([base.assign(method="good", score=label + rng.normal(size=len(uid))),
                      base.assign(method="noise", score=rng.normal(size=len(uid)))], ignore_index=True)


def test_intervals_hold_the_value_and_keys_are_checked():
    scores = _scores()
    ci = replicates.intervals(scores, seed=1).set_index("method")
    for method, part in scores.groupby("method"):
        value = metrics.auc(part["label"], part["score"])
        assert ci.loc[method, "AUC lo"] < value < ci.loc[method, "AUC hi"]
    assert ci.loc["good", "AUC lo"] > ci.loc["noise", "AUC hi"]  # a real gap shows
    assert baselines.check_same_keys(scores) == {"d": 240}
    shifted = scores.copy()
    shifted.loc[shifted.index[-1], "iid"] = 99
    with pytest.raises(ValueError, match="noise scored other"):
        baselines.check_same_keys(shifted)


def test_table1_shows_intervals_spread_and_popularity():
    scores = _scores().replace({"method": {"good": "CoLLM-FaissRet", "noise": "Popularity"}}).replace({"d": "ml-1m"})
    results = {(m, "ml-1m"): {"test": metrics.evaluate(part) | {"rows": len(part)}} for m, part in scores.groupby("method")}
    seeds = pd.DataFrame([replicates.replicate_row("Popularity", "ml-1m", None, {"all": {"auc": 0.5, "uauc": 0.5, "rows": 9}}, "")])
    long, wide = report.table1(results, intervals=replicates.intervals(scores, 1), spread=replicates.spread(seeds))
    row = long.query("method == 'CoLLM-FaissRet' and dataset == 'ml-1m'").iloc[0]
    cell = wide.set_index("method").loc["CoLLM-FaissRet", "ML-1M (ours)"]
    assert cell.startswith(f"{row['AUC']:.4f} [{row['AUC lo']:.3f}, {row['AUC hi']:.3f}] / {row['UAUC']:.4f} [")
    assert wide.set_index("method").loc["Popularity", "ML-1M (ours, seeds)"] == "0.5000 / 0.5000"  # no seed: no ±
    assert wide.set_index("method").loc["MF", "ML-1M (ours)"] == "not run"
    assert pd.isna(long.query("method == 'Popularity'")["paper AUC"]).all()



def test_table1_panels_keep_every_cell_of_the_wide_table():
    results = {("MF", "ml-1m"): {"test": metrics.evaluate(_scores().query("method == 'good'")) | {"rows": 240}}}
    _, wide = report.table1(results)
    panels = report.table1_panels(wide)
    assert list(panels) == [title for title, _ in report.TABLE1_COLUMNS.values()]
    ml = panels["ML-1M"]
    assert ml.loc["MF", "paper"] == "0.6482 / 0.6361"
    assert ml.loc["MF", "ours, same rows: AUC [95 % CI] / UAUC [95 % CI]"] == wide.set_index("method").loc["MF", "ML-1M (ours)"]
    assert sum(p.shape[1] for p in panels.values()) == wide.shape[1] - 1  # every column but "method", once
