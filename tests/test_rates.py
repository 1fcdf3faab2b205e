"""The no-training baselines (rates.py): each row's shrunk positive rate, the pseudo-count chosen on valid only, and
the real runs recomputed from the splits by independent code."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from collm_lib import metrics, rates
from collm_lib.data import Splits, load_dataset


def _frame(rows: list[tuple[int, int, int]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["uid", "iid", "label"]).assign(not_cold=1)


def _splits(valid: pd.DataFrame | None = None, test: pd.DataFrame | None = None) -> Splits:
    # item 1: 3 of 3 positive, item 2: 1 of 4, item 3: 0 of 1; global rate 4 / 8
    train = _frame([(1, 1, 1), (2, 1, 1), (3, 1, 1), (1, 2, 1), (2, 2, 0), (3, 2, 0), (4, 2, 0), (4, 3, 0)])
    valid = valid if valid is not None else _frame([(5, 1, 1), (5, 2, 0), (6, 3, 1), (6, 2, 0)])
    test = test if test is not None else _frame([(1, 1, 1), (2, 3, 0), (3, 9, 1), (9, 2, 0)])
    return Splits("tiny", train, valid, valid, test, 10, 10)


def test_a_rate_is_shrunk_toward_the_global_rate_and_unseen_keys_score_it():
    splits = _splits()
    table = rates.counts(splits, "item")
    assert table.set_index("key")[["positives", "rows"]].to_dict("index") == {
        1: {"positives": 3, "rows": 3}, 2: {"positives": 1, "rows": 4}, 3: {"positives": 0, "rows": 1}}
    raw = rates.score_rates(splits.test, table, "item", 0, 0.5)
    np.testing.assert_allclose(raw, [1.0, 0.0, 0.5, 0.25])  # item 9 has no rows: the global rate
    shrunk = rates.score_rates(splits.test, table, "item", 2, 0.5)
    np.testing.assert_allclose(shrunk, [(3 + 1) / 5, (0 + 1) / 3, 0.5, (1 + 1) / 6])
    users = rates.score_rates(splits.test, rates.counts(splits, "user"), "user", 1, 0.5)
    np.testing.assert_allclose(users, [(2 + 0.5) / 3, (1 + 0.5) / 3, (1 + 0.5) / 3, 0.5])  # user 9 unseen
    with pytest.raises(ValueError, match="choose one of item, user"):
        rates.counts(splits, "session")


def test_the_user_rate_reads_the_history_a_row_shows_where_rows_carry_its_labels():
    frame = pd.DataFrame({"uid": [1, 2, 3], "iid": [1, 1, 1], "label": [1, 0, 1],
                          "his_label": [[1, 1, 0], [0, 0], []]})
    assert rates.reads_history(frame)
    np.testing.assert_allclose(rates.score_rates(frame, pd.DataFrame(), "user", 0, 0.4, history=True),
                               [2 / 3, 0.0, 0.4])  # an empty history: the global rate
    np.testing.assert_allclose(rates.score_rates(frame, pd.DataFrame(), "user", 1, 0.4, history=True),
                               [2.4 / 4, 0.4 / 3, 0.4])


def test_the_pseudo_count_is_chosen_on_valid_never_on_test(tmp_path):
    made = rates.ensure_rates(_splits(), "item", work_dir=tmp_path)
    choice = pd.read_csv(f"{made['run_dir']}/choice.csv")
    assert choice["chosen"].sum() == 1 and made["pseudo_count"] == choice.loc[choice["valid_auc"].idxmax(),
                                                                             "pseudo_count"]
    flipped = _splits(test=_splits().test.assign(label=lambda f: 1 - f["label"]))  # test labels cannot move it
    other = rates.ensure_rates(flipped, "item", work_dir=tmp_path / "flipped")
    assert other["pseudo_count"] == made["pseudo_count"]
    rows = pd.read_csv(f"{made['run_dir']}/test_scores.csv")
    assert metrics.auc(rows["label"], rows["score"]) == made["metrics"]["test"]["all"]["auc"]
    np.testing.assert_allclose(rates.score_with(made["run_dir"], _splits().test), rows["score"])
    assert rates.ensure_rates(_splits(), "item", work_dir=tmp_path)["run_dir"] == made["run_dir"]  # found, not remade


@pytest.fixture(scope="module")
def ml1m(shared_data, data_work_dir) -> Splits:
    return load_dataset("ml-1m", data_dir=shared_data, work_dir=data_work_dir)


def test_the_ml1m_item_rate_recomputes_from_the_splits(ml1m, tmp_path):
    """Independent code: pandas group-bys on train, the grid searched on valid, AUC on test."""
    made = rates.ensure_rates(ml1m, "item", work_dir=tmp_path)
    train, rate = ml1m.train, ml1m.train["label"].mean()
    stats = train.groupby("iid")["label"].agg(["sum", "count"])

    def score(frame: pd.DataFrame, k: float) -> np.ndarray:
        s = frame["iid"].map(stats["sum"]).fillna(0)
        n = frame["iid"].map(stats["count"]).fillna(0)
        return np.where(n + k > 0, (s + k * rate) / (n + k).where(n + k > 0, 1), rate)

    valid = {k: metrics.auc(ml1m.valid["label"], score(ml1m.valid, k)) for k in rates.PSEUDO_COUNTS}
    k = max(valid, key=valid.get)
    assert made["pseudo_count"] == k
    assert made["metrics"]["test"]["all"]["auc"] == pytest.approx(metrics.auc(ml1m.test["label"], score(ml1m.test, k)))
    assert made["metrics"]["test"]["all"]["auc"] > 0.69, "ML-1M's item positive rate is a strong no-training baseline"
    user = rates.ensure_rates(ml1m, "user", work_dir=tmp_path)
    assert user["metrics"]["test"]["all"]["uauc"] == 0.5, "a user's own rate cannot order the user's rows"
