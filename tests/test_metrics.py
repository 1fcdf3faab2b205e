"""metrics: AUC / UAUC against scikit-learn, the undefined cases, evaluate's subsets, top-K metrics."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from collm_lib import metrics, ranking


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
    assert ranking.recall_at_k(ranked, relevant, 2) == pytest.approx((1 / 2 + 0) / 2)
    assert ranking.recall_at_k(ranked, relevant, 4) == pytest.approx((2 / 2 + 1) / 2)
    assert ranking.hit_rate_at_k(ranked, relevant, 2) == pytest.approx(0.5)
    assert ranking.hit_rate_at_k(ranked, relevant, 4) == pytest.approx(1.0)
    d = lambda r: 1 / math.log2(r + 1)  # noqa: E731
    ndcg0 = (d(2) + d(4)) / (d(1) + d(2))
    ndcg1 = d(4) / d(1)
    assert ranking.ndcg_at_k(ranked, relevant, 4) == pytest.approx((ndcg0 + ndcg1) / 2)
    assert ranking.ndcg_at_k([[1, 2]], [{1, 2}], 2) == pytest.approx(1.0)


def test_ranking_metrics_undefined_and_bad_k():
    with pytest.raises(ValueError, match="no user"):
        ranking.recall_at_k([[1, 2]], [set()], 2)
    with pytest.raises(ValueError, match="k must"):
        ranking.ndcg_at_k([[1, 2]], [{1}], 0)


# ---- user-level bootstrap ----------------------------------------------------------------------


def _bootstrap_frame(rng, n_users, rows_per_user=12, effect=0.8, user_sd=0.5):
    """Each user: half positives, scores = user offset + effect * label + noise."""
    uid = np.repeat(rng.permutation(n_users) * 5 + 2, rows_per_user)
    label = np.tile(np.arange(rows_per_user) % 2, n_users)
    score = np.repeat(rng.normal(0, user_sd, n_users), rows_per_user) + effect * label + rng.normal(size=uid.size)
    return pd.DataFrame({"uid": uid, "label": label, "score": score})


def _first_draw(frame, seed):
    """The users of the first resample, drawn the documented way (sorted unique uids, default_rng)."""
    uids = np.unique(frame["uid"])
    return uids[np.random.default_rng(seed).integers(uids.size, size=uids.size)]


@pytest.mark.parametrize("tied", [False, True])
def test_bootstrap_resample_equals_explicit_concatenation(tied):
    rng = np.random.default_rng(21)
    users, labels = _random_users(rng, 60)  # single-row and single-class users included
    frame = pd.DataFrame({"uid": users, "label": labels, "score": rng.normal(size=users.size) + 0.7 * labels,
                          "iid": rng.integers(0, 50, users.size)})
    if tied:
        frame["score"] = np.round(frame["score"])
        assert frame["score"].nunique() < 10
    resample_aucs = []
    for seed in range(5):  # n_boot=1: the interval collapses onto the one resample's value
        got = metrics.bootstrap(frame, n_boot=1, seed=seed)
        parts = [frame[frame["uid"] == u] for u in _first_draw(frame, seed)]
        rows = pd.concat(parts)  # a user drawn k times appears k times
        assert rows["uid"].nunique() < frame["uid"].nunique()  # repeats really happened
        expected = metrics.auc(rows["label"], rows["score"])
        assert expected == pytest.approx(roc_auc_score(rows["label"], rows["score"]), abs=1e-12)
        assert got["auc_lo"] == pytest.approx(expected, abs=1e-12) and got["auc_hi"] == got["auc_lo"]
        per_user = [roc_auc_score(p["label"], p["score"]) for p in parts if p["label"].nunique() == 2]
        assert got["uauc_lo"] == pytest.approx(np.mean(per_user), abs=1e-12)
        resample_aucs.append(got["auc_lo"])
    assert len(set(resample_aucs)) == 5 and got["auc"] not in resample_aucs  # resamples differ from the data


def test_bootstrap_point_values_and_keys():
    frame = _bootstrap_frame(np.random.default_rng(1), 50)
    got = metrics.bootstrap(frame, n_boot=50)
    assert got["auc"] == metrics.auc(frame["label"], frame["score"])
    assert got["uauc"] == metrics.uauc(frame["uid"].to_numpy(), frame["label"], frame["score"]).value
    assert (got["users"], got["rows"], got["n_boot"], got["level"], got["seed"]) == (50, 600, 50, 0.95, 2023)
    assert got["method"] == "user-level bootstrap, percentile interval"
    assert got["n_undefined_auc"] == got["n_undefined_uauc"] == 0
    for key in ("auc", "auc_lo", "auc_hi", "uauc", "uauc_lo", "uauc_hi"):
        assert type(got[key]) is float, key


def test_bootstrap_same_users_same_resamples():
    rng = np.random.default_rng(2)
    frame = _bootstrap_frame(rng, 80)
    shuffled = frame.sample(frac=1, random_state=3).assign(extra=1)  # row order and extra columns don't matter
    assert metrics.bootstrap(frame, n_boot=200) == metrics.bootstrap(shuffled, n_boot=200)
    assert metrics.bootstrap(frame, n_boot=200, seed=1) != metrics.bootstrap(frame, n_boot=200, seed=2)
    # paired: another method's scores on the same users use the same draw
    other = frame.assign(score=frame["score"] + rng.normal(size=len(frame)))
    for f in (frame, other):
        rows = pd.concat([f[f["uid"] == u] for u in _first_draw(f, 9)])
        assert metrics.bootstrap(f, n_boot=1, seed=9)["auc_lo"] == pytest.approx(
            metrics.auc(rows["label"], rows["score"]), abs=1e-12)


def test_bootstrap_interval_contains_point_and_shrinks_with_users():
    widths = {}
    for n_users in (20, 500):
        got = metrics.bootstrap(_bootstrap_frame(np.random.default_rng(n_users), n_users), n_boot=500)
        for name in ("auc", "uauc"):
            assert got[f"{name}_lo"] < got[name] < got[f"{name}_hi"]
            widths[name, n_users] = got[f"{name}_hi"] - got[f"{name}_lo"]
    for name in ("auc", "uauc"):  # width ~ 1 / sqrt(users): about 5x narrower
        assert widths[name, 500] < 0.4 * widths[name, 20]
    half = metrics.bootstrap(_bootstrap_frame(np.random.default_rng(20), 20), n_boot=500, level=0.5)
    assert half["auc_hi"] - half["auc_lo"] < 0.6 * widths["auc", 20]  # a lower level: a narrower interval


def test_bootstrap_coverage_of_known_population_auc():
    from statistics import NormalDist
    n_users, m, effect, user_sd = 100, 10, 0.8, 0.5
    phi = NormalDist().cdf
    # expected estimator values: within-user pairs compare noise only, cross-user pairs also user offsets;
    # each user has m/2 positives and m/2 negatives, so a fraction 1/n_users of all pairs is within-user
    true_uauc = phi(effect / math.sqrt(2))
    true_auc = true_uauc / n_users + phi(effect / math.sqrt(2 + 2 * user_sd**2)) * (1 - 1 / n_users)
    rng = np.random.default_rng(4)
    covered = {"auc": 0, "uauc": 0}
    widths = []
    for rep in range(100):
        got = metrics.bootstrap(_bootstrap_frame(rng, n_users, m, effect, user_sd), n_boot=200, seed=rep)
        covered["auc"] += got["auc_lo"] <= true_auc <= got["auc_hi"]
        covered["uauc"] += got["uauc_lo"] <= true_uauc <= got["uauc_hi"]
        widths.append(got["auc_hi"] - got["auc_lo"])
    assert 85 <= covered["auc"] <= 100 and 85 <= covered["uauc"] <= 100, covered
    assert np.median(widths) < 0.1  # informative, not just wide


def test_bootstrap_one_row_per_user():
    rng = np.random.default_rng(6)
    frame = pd.DataFrame({"uid": np.arange(300), "label": np.arange(300) % 2})
    frame["score"] = rng.normal(size=300) + frame["label"]
    got = metrics.bootstrap(frame, n_boot=100)
    assert got["uauc"] is None and got["uauc_lo"] is None and got["uauc_hi"] is None
    assert got["n_undefined_uauc"] == 100 and got["n_undefined_auc"] == 0
    assert got["auc_lo"] < got["auc"] < got["auc_hi"]


def test_bootstrap_counts_undefined_resamples():
    # user 1: positives only, user 2: negatives only, user 3: both classes
    frame = pd.DataFrame({"uid": [1, 1, 2, 2, 3, 3], "label": [1, 1, 0, 0, 1, 0],
                          "score": [0.9, 0.2, 0.5, 0.1, 0.7, 0.3]})
    got = metrics.bootstrap(frame, n_boot=400, seed=5)
    rng = np.random.default_rng(5)
    draws = [set(rng.integers(3, size=3).tolist()) for _ in range(400)]
    assert got["n_undefined_auc"] == sum(d in ({0}, {1}) for d in draws) > 0
    assert got["n_undefined_uauc"] == sum(2 not in d for d in draws) > 0
    assert got["uauc_lo"] == got["uauc_hi"] == got["uauc"] == 1.0  # only user 3 counts, AUC 1
    assert 0 <= got["auc_lo"] <= got["auc"] <= got["auc_hi"] <= 1


def test_bootstrap_single_class_and_bad_input():
    one_class = pd.DataFrame({"uid": [1, 1, 2], "label": [1, 1, 1], "score": [0.1, 0.2, 0.3]})
    got = metrics.bootstrap(one_class, n_boot=10)
    assert got["auc"] is None and got["auc_lo"] is None and got["n_undefined_auc"] == 10
    frame = _bootstrap_frame(np.random.default_rng(8), 10)
    with pytest.raises(ValueError, match=r"lacks columns \['label', 'score'\]"):
        metrics.bootstrap(frame[["uid"]])
    with pytest.raises(ValueError, match="empty"):
        metrics.bootstrap(frame.iloc[:0])
    with pytest.raises(ValueError, match="n_boot"):
        metrics.bootstrap(frame, n_boot=0)
    for level in (0, 1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="level"):
            metrics.bootstrap(frame, level=level)
    with pytest.raises(ValueError, match="NaN"):
        metrics.bootstrap(frame.assign(score=np.nan))


def _with_items(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(iid=np.arange(len(frame)))


def test_paired_difference_is_the_difference_on_each_shared_resample():
    rng = np.random.default_rng(5)
    a = _with_items(_bootstrap_frame(rng, 40))
    b = a.assign(score=a["score"] + rng.normal(size=len(a)))
    for seed in range(3):  # n_boot=1: the interval is the one resample's difference
        got = metrics.paired_difference(a, b.sample(frac=1, random_state=seed), n_boot=1, seed=seed)
        rows = [pd.concat([f[f["uid"] == u] for u in _first_draw(f, seed)]) for f in (a, b)]
        expected = metrics.auc(rows[0]["label"], rows[0]["score"]) - metrics.auc(rows[1]["label"], rows[1]["score"])
        assert got["auc_lo"] == pytest.approx(expected, abs=1e-12) and got["auc_hi"] == got["auc_lo"]
    got = metrics.paired_difference(a, b, n_boot=300)
    assert got["auc"] == pytest.approx(metrics.auc(a["label"], a["score"]) - metrics.auc(b["label"], b["score"]))
    assert got["auc_lo"] <= got["auc"] <= got["auc_hi"] and got["uauc_lo"] <= got["uauc"] <= got["uauc_hi"]
    assert got["auc_share_below_0"] + got["auc_share_above_0"] == pytest.approx(1.0)
    assert got["method"] == "paired user-level bootstrap, percentile interval" and got["users"] == 40


def test_paired_difference_is_narrower_than_two_separate_intervals_and_zero_for_one_method():
    rng = np.random.default_rng(6)
    a = _with_items(_bootstrap_frame(rng, 60))
    b = a.assign(score=a["score"] + 0.3 * rng.normal(size=len(a)))  # two methods that agree on most users
    pair = metrics.paired_difference(a, b, n_boot=400)
    alone = [metrics.bootstrap(f, n_boot=400) for f in (a, b)]
    assert pair["auc_hi"] - pair["auc_lo"] < 0.5 * min(x["auc_hi"] - x["auc_lo"] for x in alone)
    same = metrics.paired_difference(a, a.copy(), n_boot=50)
    assert (same["auc"], same["auc_lo"], same["auc_hi"], same["auc_share_below_0"]) == (0.0, 0.0, 0.0, 0.0)


def test_paired_difference_needs_the_same_rows():
    a = _with_items(_bootstrap_frame(np.random.default_rng(7), 20))
    with pytest.raises(ValueError, match="same \\(uid, iid\\) rows"):
        metrics.paired_difference(a, a.iloc[1:], n_boot=10)
    with pytest.raises(ValueError, match="same \\(uid, iid\\) rows"):
        metrics.paired_difference(a, a.assign(iid=a["iid"] + 1), n_boot=10)


def _seeded(frames: list[pd.DataFrame]) -> pd.DataFrame:
    return pd.concat([f.assign(seed=2023 + k) for k, f in enumerate(frames)], ignore_index=True)


def test_a_seed_column_with_one_seed_changes_nothing():
    a = _with_items(_bootstrap_frame(np.random.default_rng(8), 30))
    b = a.assign(score=a["score"] + np.random.default_rng(9).normal(size=len(a)))
    plain, seeded = metrics.bootstrap(a, n_boot=200), metrics.bootstrap(a.assign(seed=2023), n_boot=200)
    assert {k: plain[k] for k in ("auc", "auc_lo", "auc_hi", "uauc_lo")} == \
        {k: seeded[k] for k in ("auc", "auc_lo", "auc_hi", "uauc_lo")} and seeded["seeds"] == 1
    assert metrics.paired_difference(a, b, n_boot=100)["auc_lo"] == \
        metrics.paired_difference(a.assign(seed=1), b.assign(seed=7), n_boot=100)["auc_lo"]


def test_seeds_give_the_mean_and_an_interval_that_takes_their_spread():
    rng = np.random.default_rng(10)
    base = _with_items(_bootstrap_frame(rng, 80))
    runs = [base.assign(score=base["score"] + shift * base["label"]) for shift in (0.0, 2.0, 4.0)]  # ever stronger
    aucs = [metrics.auc(r["label"], r["score"]) for r in runs]
    got = metrics.bootstrap(_seeded(runs), n_boot=600)
    assert got["seeds"] == 3 and got["auc"] == pytest.approx(np.mean(aucs))
    one = metrics.bootstrap(runs[1], n_boot=600)
    assert got["auc_hi"] - got["auc_lo"] > one["auc_hi"] - one["auc_lo"], "the seeds' spread widens it"
    assert got["auc_lo"] < aucs[0] + 0.02 and got["auc_hi"] > aucs[2] - 0.02
    same = metrics.bootstrap(_seeded([base, base.copy()]), n_boot=200)
    assert (same["auc"], same["auc_lo"], same["auc_hi"]) == tuple(metrics.bootstrap(base, n_boot=200)[k]
                                                                  for k in ("auc", "auc_lo", "auc_hi"))
    pair = metrics.paired_difference(_seeded(runs), base, n_boot=300)
    assert pair["auc"] == pytest.approx(np.mean(aucs) - metrics.auc(base["label"], base["score"]))
    assert pair["seeds"] == (3, 1) and "seeds" in pair["method"]


def test_seeds_must_score_the_same_rows():
    a = _with_items(_bootstrap_frame(np.random.default_rng(11), 20))
    with pytest.raises(ValueError, match="its seeds scored other"):
        metrics.bootstrap(_seeded([a, a.iloc[1:]]), n_boot=10)
    with pytest.raises(ValueError, match="its seeds scored other"):
        metrics.paired_difference(a, _seeded([a, a.assign(iid=a["iid"] + 1)]), n_boot=10)
