"""Table 1's sanity row and seeds: popularity, seed numbering, shared keys."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from collm_lib import baselines, metrics, popularity, replicates
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


def test_seeds_start_at_the_runs_own():
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


def test_a_tables_methods_must_share_their_keys():
    scores = _scores()
    assert baselines.check_same_keys(scores) == {"d": 240}
    shifted = scores.copy()
    shifted.loc[shifted.index[-1], "iid"] = 99
    with pytest.raises(ValueError, match="noise scored other"):
        baselines.check_same_keys(shifted)
