"""collab: MF learns a planted low-rank signal, keeps its best epoch, stops on time, round-trips to disk."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from collm_lib import collab, encoders, metrics, profiles
from collm_lib.data import Splits

N_USERS, N_ITEMS = 60, 80  # real ids 1..N-1; 0 is padding


def _synthetic_splits(seed: int = 0) -> Splits:
    """Labels drawn from sigmoid(4 <a_u, b_i>) with rank-2 factors; random (user, item) rows per split."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(N_USERS, 2))
    b = rng.normal(size=(N_ITEMS, 2))

    def frame(n: int) -> pd.DataFrame:
        u = rng.integers(1, N_USERS, n)
        i = rng.integers(1, N_ITEMS, n)
        p = 1 / (1 + np.exp(-4 * (a[u] * b[i]).sum(1)))
        return pd.DataFrame({"uid": u, "iid": i, "label": (rng.random(n) < p).astype(int),
                             "not_cold": np.ones(n, dtype=int)})

    valid = frame(1500)
    return Splits(name="synthetic", train=frame(6000), valid=valid, valid_small=valid.iloc[::2],
                  test=frame(1500), n_users=N_USERS, n_items=N_ITEMS)


@pytest.fixture(scope="module")
def splits() -> Splits:
    return _synthetic_splits()


@pytest.fixture(scope="module")
def trained(splits):
    config = profiles.mf("cpu", dim=16, lr=1e-2, batch_size=256, max_epochs=60, patience=5, device="cpu")
    return encoders.train(splits, config, progress=False)


def test_mf_learns_planted_signal(trained):
    assert trained.metrics["test"]["all"]["auc"] > 0.75
    assert trained.metrics["test"]["all"]["uauc"] > 0.7
    assert trained.history["loss"].iloc[-1] < trained.history["loss"].iloc[0]


def test_best_weights_kept_and_early_stop(trained):
    hist = trained.history
    assert trained.best_epoch == int(hist.loc[hist["valid_auc"].idxmax(), "epoch"])
    assert len(hist) == trained.best_epoch + trained.config.patience < trained.config.max_epochs
    # the returned model is the best epoch's, not the last one's
    assert trained.metrics["valid"]["all"]["auc"] == pytest.approx(hist["valid_auc"].max(), abs=1e-9)


def test_embedding_dim_respected(splits):
    config = profiles.mf("smoke", dim=8, device="cpu")
    result = encoders.train(splits, config, progress=False)
    assert result.model.user_embedding.weight.shape == (N_USERS, 8)
    assert result.model.item_vectors(torch.tensor([1, 2])).shape == (2, 8)
    assert len(result.history) == config.max_epochs
    assert isinstance(result.model, collab.CollaborativeEncoder)


def test_save_load_round_trip(trained, splits, tmp_path):
    encoders.save(trained, tmp_path / "ckpt")
    loaded = encoders.load(tmp_path / "ckpt")
    assert loaded.dim == 16
    np.testing.assert_array_equal(encoders.score(loaded, splits.test), encoders.score(trained.model, splits.test))
    # the per-row test scores beside the checkpoint reproduce the reported metrics
    rows = pd.read_csv(tmp_path / "ckpt" / "test_scores.csv")
    assert metrics.auc(rows["label"], rows["score"]) == pytest.approx(trained.metrics["test"]["all"]["auc"])


def test_load_missing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="encoders.ensure"):
        encoders.load(tmp_path)


def test_bad_ids_rejected(trained):
    with pytest.raises(ValueError, match="out of range"):
        encoders.score(trained.model, pd.DataFrame({"uid": [N_USERS], "iid": [1]}))


def test_profiles():
    assert profiles.mf("smoke").max_epochs < profiles.mf("cpu").max_epochs
    assert profiles.mf("gpu", dim=64).dim == 64
    with pytest.raises(ValueError):
        profiles.mf("laptop")


def _habit_splits(seed: int = 0) -> Splits:
    """BookCrossing's shape in small: each label is mostly the user's habit, and most items occur once."""
    rng = np.random.default_rng(seed)
    n_users, n_items = 300, 5000
    habit = rng.normal(size=n_users) * 2

    def frame(n: int) -> pd.DataFrame:
        u, i = rng.integers(1, n_users, n), rng.integers(1, n_items, n)
        return pd.DataFrame({"uid": u, "iid": i, "label": (rng.random(n) < 1 / (1 + np.exp(-habit[u]))).astype(int),
                             "not_cold": np.ones(n, dtype=int)})

    valid = frame(1000)
    return Splits(name="habit", train=frame(4000), valid=valid, valid_small=valid.iloc[::2], test=frame(1000),
                  n_users=n_users, n_items=n_items)


def test_biases_carry_a_users_habit_to_unseen_items():
    splits = _habit_splits()
    aucs = {}
    for bias in (False, True):
        config = profiles.mf("cpu", dim=8, lr=1e-2, batch_size=256, max_epochs=30, patience=3, device="cpu",
                             bias=bias)
        aucs[bias] = encoders.train(splits, config, progress=False).metrics["test"]["all"]["auc"]
    assert aucs[True] > 0.7 and aucs[True] > aucs[False] + 0.1, aucs
    assert profiles.mf("cpu", dataset="bookcrossing").bias
    assert not profiles.mf("cpu", dataset="ml-1m").bias  # CoLLM's MF: no biases


def test_biased_vectors_give_the_score_and_survive_saving(tmp_path):
    mf = collab.MatrixFactorization(5, 6, dim=4, bias=True)
    with torch.no_grad():
        mf.user_bias.weight.normal_()
        mf.item_bias.weight.normal_()
        mf.global_bias.fill_(0.3)
    u, i = torch.tensor([1, 2, 4]), torch.tensor([5, 1, 3])
    expected = (mf.user_embedding(u) * mf.item_embedding(i)).sum(-1) + mf.user_bias(u)[:, 0] + mf.item_bias(i)[:, 0] + 0.3
    assert mf.dim == 6 and mf.user_vectors(u).shape == (3, 6)
    torch.testing.assert_close(mf(u, i), expected)
    encoders.save(encoders.EncoderResult(mf, pd.DataFrame({"epoch": [1]}), 1, {}, collab.MFConfig(dim=4, bias=True)),
                  tmp_path / "ckpt")
    loaded = encoders.load(tmp_path / "ckpt")
    assert loaded.bias and loaded.dim == 6
    torch.testing.assert_close(loaded(u, i), expected)
