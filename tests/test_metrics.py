"""metrics: AUC / UAUC against scikit-learn, the undefined cases, evaluate's subsets, top-K metrics."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from collm_lib import metrics


def _per_user_reference(users, labels, scores):
    """UAUC the slow, obvious way: a loop over users with scikit-learn."""
    values, rows = [], 0
    for u in np.unique(users):
        m = users == u
        if m.sum() > 1 and len(np.unique(labels[m])) == 2:
            values.append(roc_auc_score(labels[m], scores[m]))
            rows += int(m.sum())
    return float(np.mean(values)), len(values), rows


def _random_users(rng, n_users=400):
    """Users with random sizes, including single-row and single-class users."""
    sizes = rng.choice([1, 1, 2, 3, 5, 8, 20, 60], size=n_users)
    users = np.repeat(rng.permutation(n_users) * 7 + 3, sizes)  # sparse, unordered ids
    labels = rng.integers(0, 2, users.size)
    single_class = rng.random(n_users) < 0.1  # force some users to one class
    for u in np.unique(users)[single_class]:
        labels[users == u] = 1
    perm = rng.permutation(users.size)  # rows not grouped by user
    return users[perm], labels[perm]


@pytest.mark.parametrize("tied", [False, True])
def test_uauc_matches_per_user_sklearn(tied):
    rng = np.random.default_rng(7 + tied)
    users, labels = _random_users(rng)
    scores = rng.normal(size=users.size) + 0.5 * labels
    if tied:  # bf16-like: very few distinct values, many ties inside users
        scores = np.round(scores * 2) / 2
        assert len(np.unique(scores)) < 20
    expected, n_users, n_rows = _per_user_reference(users, labels, scores)
    got = metrics.uauc(users, labels, scores)
    assert got.value == pytest.approx(expected, abs=1e-12)
    assert (got.n_users, got.n_rows) == (n_users, n_rows)
    assert n_users < len(np.unique(users))  # some users really were skipped


def test_uauc_string_user_ids():
    rng = np.random.default_rng(3)
    users, labels = _random_users(rng, 50)
    scores = rng.normal(size=users.size)
    got = metrics.uauc(users.astype(str), labels, scores)
    assert got.value == pytest.approx(_per_user_reference(users, labels, scores)[0], abs=1e-12)


@pytest.mark.parametrize("tied", [False, True])
def test_auc_matches_sklearn(tied):
    rng = np.random.default_rng(11)
    labels = rng.integers(0, 2, 5000)
    scores = rng.normal(size=5000) + 0.3 * labels
    if tied:
        scores = np.round(scores, 0)
    assert metrics.auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_auc_ties_count_half_and_infinities():
    assert metrics.auc([0, 1], [0.5, 0.5]) == 0.5
    assert metrics.auc([0, 1, 0, 1], [-np.inf, np.inf, np.inf, np.inf]) == pytest.approx(0.75)


def test_auc_bad_input():
    with pytest.raises(ValueError, match="one class"):
        metrics.auc([1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="empty"):
        metrics.auc([], [])
    with pytest.raises(ValueError, match="NaN"):
        metrics.auc([0, 1], [0.1, np.nan])
    with pytest.raises(ValueError, match="0/1"):
        metrics.auc([0, 2], [0.1, 0.2])


def test_uauc_undefined_with_one_target_per_user():
    got = metrics.uauc(np.arange(100), np.arange(100) % 2, np.linspace(0, 1, 100))
    assert got.value is None and got.n_users == 0 and got.n_rows == 0
    assert got.note == metrics.UNDEFINED_UAUC


def test_evaluate_subsets_and_notes():
    rng = np.random.default_rng(5)
    users, labels = _random_users(rng, 200)
    frame = pd.DataFrame({"uid": users, "iid": rng.integers(1, 30, users.size), "label": labels,
                          "score": rng.normal(size=users.size) + labels})
    frame["not_cold"] = (frame["uid"] % 2).astype(int)
    frame.loc[frame["not_cold"] == 0, "label"] = 1  # cold subset: a single class
    train = pd.DataFrame({"uid": np.repeat([3, 10], 5), "iid": np.repeat([1, 2], 5)})
    res = metrics.evaluate(frame, train_frame=train)
    assert set(res) == {"all", "warm", "cold", "warm_gt3", "cold_gt3"}
    assert res["all"]["auc"] == pytest.approx(roc_auc_score(frame["label"], frame["score"]))
    warm = frame[frame["not_cold"] == 1]
    assert res["warm"]["rows"] == len(warm)
    assert res["warm"]["pos_rate"] == pytest.approx(warm["label"].mean())
    assert res["warm"]["uauc"] == pytest.approx(
        _per_user_reference(warm["uid"].to_numpy(), warm["label"].to_numpy(), warm["score"].to_numpy())[0])
    assert res["cold"]["auc"] is None and "only label 1" in res["cold"]["auc_note"]
    assert res["cold"]["uauc"] is None
    expected_warm3 = frame["uid"].isin([3, 10]) & frame["iid"].isin([1, 2])
    assert res["warm_gt3"]["rows"] == int(expected_warm3.sum())
    assert res["warm_gt3"]["rows"] + res["cold_gt3"]["rows"] == len(frame)


def test_evaluate_missing_score_column():
    with pytest.raises(ValueError, match="score"):
        metrics.evaluate(pd.DataFrame({"uid": [1], "label": [1]}))


def test_ranking_metrics_by_hand():
    ranked = [[5, 1, 7, 2], [3, 4, 9, 8], [1, 2, 3, 4]]
    relevant = [{1, 2}, {8}, set()]  # the third user has nothing relevant: skipped
    # user 0: hits at ranks 2 and 4; user 1: hit at rank 4
    assert metrics.recall_at_k(ranked, relevant, 2) == pytest.approx((1 / 2 + 0) / 2)
    assert metrics.recall_at_k(ranked, relevant, 4) == pytest.approx((2 / 2 + 1) / 2)
    assert metrics.hit_rate_at_k(ranked, relevant, 2) == pytest.approx(0.5)
    assert metrics.hit_rate_at_k(ranked, relevant, 4) == pytest.approx(1.0)
    d = lambda r: 1 / math.log2(r + 1)  # noqa: E731
    ndcg0 = (d(2) + d(4)) / (d(1) + d(2))
    ndcg1 = d(4) / d(1)
    assert metrics.ndcg_at_k(ranked, relevant, 4) == pytest.approx((ndcg0 + ndcg1) / 2)
    assert metrics.ndcg_at_k([[1, 2]], [{1, 2}], 2) == pytest.approx(1.0)


def test_ranking_metrics_undefined_and_bad_k():
    with pytest.raises(ValueError, match="no user"):
        metrics.recall_at_k([[1, 2]], [set()], 2)
    with pytest.raises(ValueError, match="k must"):
        metrics.ndcg_at_k([[1, 2]], [{1}], 0)
