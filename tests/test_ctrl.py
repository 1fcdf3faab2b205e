"""ctrl: DIN learns a planted signal, masks padding; phase 1 aligns, phase 2 leaves the heads alone; disk and cache."""
from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from collm_lib import ctrl, io, profiles
from collm_lib.data import Splits
from collm_lib.llm import LLMConfig, text_encoder

N_USERS, N_ITEMS, TEXT_DIM = 40, 61, 24  # ids 1..N-1; 0 is padding
CLUSTER = np.arange(N_ITEMS) % 3  # item i belongs to cluster i % 3


def _frame(rng: np.random.Generator, n: int) -> pd.DataFrame:
    """Each user's history comes from one cluster; label 1 (p = 0.9) when the target shares it, else p = 0.1."""
    rows = []
    for _ in range(n):
        uid = int(rng.integers(1, N_USERS))
        taste = uid % 3
        his = [int(i) for i in rng.choice(np.flatnonzero(CLUSTER[1:] == taste) + 1, rng.integers(0, 12))]
        iid = int(rng.integers(1, N_ITEMS))
        p = 0.9 if his and CLUSTER[iid] == taste else 0.1
        rows.append({"uid": uid, "iid": iid, "label": int(rng.random() < p), "his": his,
                     "his_title": [f"item {i}" for i in his], "title": f"item {iid}", "not_cold": 1})
    return pd.DataFrame(rows)


def _splits(seed: int = 0) -> Splits:
    rng = np.random.default_rng(seed)
    valid = _frame(rng, 600)
    return Splits(name="synthetic", train=_frame(rng, 2500), valid=valid, valid_small=valid.iloc[::2],
                  test=_frame(rng, 600), n_users=N_USERS, n_items=N_ITEMS)


class PlantedEncoder:
    """Stands in for the LLM: the target title's fixed random vector plus noise; counts its calls."""

    def __init__(self) -> None:
        self.table = np.random.default_rng(1).normal(size=(N_ITEMS, TEXT_DIM)).astype(np.float32)
        self.calls = 0

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        ids = [int(re.search(r'titled "item (\d+)"', t).group(1)) for t in texts]
        return self.table[ids] + 0.1 * np.random.default_rng(2).normal(size=(len(ids), TEXT_DIM)).astype(np.float32)


def _config(**overrides) -> ctrl.CTRLConfig:
    base = dict(embed_dim=12, attention_hidden=(16,), mlp_hidden=(32, 16), proj_dim=16, lr=5e-3, batch_size=128,
                max_epochs=25, patience=8, align_rows=800, align_epochs=8, align_batch_size=64, align_lr=5e-3,
                template="movie_text", encoder="planted", device="cpu")
    return profiles.ctrl("cpu", **(base | overrides))


@pytest.fixture(scope="module")
def splits() -> Splits:
    return _splits()


@pytest.fixture(scope="module")
def aligned(splits, tmp_path_factory):
    """One two-phase run; a spy on phase 2 snapshots the weights it starts from."""
    encoder, snap = PlantedEncoder(), {}
    finetune = ctrl._finetune

    def spy(model, *args, **kwargs):
        snap["start"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return finetune(model, *args, **kwargs)

    cache = tmp_path_factory.mktemp("ctrl_cache")
    out = tmp_path_factory.mktemp("ctrl_run")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ctrl, "_finetune", spy)
        result = ctrl.train_ctrl(splits, _config(), encoder, out_dir=out, cache_dir=cache, progress=False)
    return {"result": result, "encoder": encoder, "start": snap["start"], "cache": cache, "out": out}


def test_din_learns_planted_signal(splits):
    result = ctrl.train_ctrl(splits, _config(), None, progress=False)
    assert result.metrics["test"]["all"]["auc"] > 0.8
    assert result.alignment == {} and result.model.din_proj is None
    assert (result.history["phase"] == 2).all()
    hist = result.history
    assert result.best_epoch == int(hist.loc[hist["valid_auc"].idxmax(), "epoch"])


def test_attention_masks_padding(splits):
    config = _config()
    torch.manual_seed(0)
    model = ctrl.CTRL(N_USERS, N_ITEMS, config, None).eval()
    frame = splits.test.iloc[:64]
    his, lab, mask = (torch.as_tensor(a) for a in ctrl.history_arrays(frame, config.max_history))
    assert (mask == 0).any() and (mask == 1).any()
    uid, iid = torch.tensor(frame["uid"].to_numpy()), torch.tensor(frame["iid"].to_numpy())
    base = model.din(uid, iid, his, lab, mask)
    noisy = torch.where(mask == 0, torch.randint(1, N_ITEMS, his.shape), his)
    noisy_lab = torch.where(mask == 0, torch.randint(0, 2, his.shape), lab)
    assert torch.equal(model.din(uid, iid, noisy, noisy_lab, mask), base)
    # a real (unmasked) history item, or its label, does matter
    real = torch.where(mask == 1, torch.randint(1, N_ITEMS, his.shape), his)
    assert not torch.allclose(model.din(uid, iid, real, lab, mask), base)
    assert not torch.allclose(model.din(uid, iid, his, 1 - lab, mask), base)


def test_history_arrays_last_items_and_labels():
    frame = pd.DataFrame({"his": [[5, 6, 7, 8], [], [9]], "his_label": [[1, 1, 0, 1], [], [0]]})
    ids, labels, mask = ctrl.history_arrays(frame, 3)
    assert ids.tolist() == [[6, 7, 8], [0, 0, 0], [9, 0, 0]]
    assert labels.tolist() == [[1, 0, 1], [0, 0, 0], [0, 0, 0]] and mask.tolist() == [[1, 1, 1], [0, 0, 0], [1, 0, 0]]
    ids, labels, _ = ctrl.history_arrays(frame[["his"]], 3)  # MovieLens: every history item was liked
    assert labels.tolist() == [[1, 1, 1], [0, 0, 0], [1, 0, 0]]


def test_phase1_aligns(aligned):
    before, after = aligned["result"].alignment["before"], aligned["result"].alignment["after"]
    assert after["loss"] < before["loss"] - 0.5
    assert after["cos_matched"] - after["cos_mismatched"] > before["cos_matched"] - before["cos_mismatched"] + 0.2
    phase1 = aligned["result"].history.query("phase == 1")
    assert len(phase1) == aligned["result"].config.align_epochs
    assert phase1["loss"].iloc[-1] < phase1["loss"].iloc[0]


def test_phase2_changes_only_din(aligned):
    start, end = aligned["start"], aligned["result"].model.state_dict()
    heads = [k for k in end if not k.startswith("din.")]
    assert heads and all(torch.equal(start[k], end[k]) for k in heads)
    assert not torch.equal(start["din.head.0.weight"], end["din.head.0.weight"])
    assert aligned["result"].metrics["test"]["all"]["auc"] > 0.8


def test_save_load_round_trip(aligned, splits):
    model, config = ctrl.load_ctrl(aligned["out"])
    assert config == aligned["result"].config
    np.testing.assert_allclose(ctrl.score_ctrl(model, splits.test, config),
                               ctrl.score_ctrl(aligned["result"].model, splits.test, config))
    scores = pd.read_csv(aligned["out"] / "test_scores.csv")
    assert list(scores.columns) == ["uid", "iid", "label", "score", "not_cold"] and len(scores) == len(splits.test)
    record = io.read_json(aligned["out"] / "results.json")
    assert record["run"]["seed"] == config.seed and record["config"]["temperature"] == config.temperature
    assert record["info"]["aligned_rows"] == config.align_rows


def test_encoding_cache_reused(aligned, splits, tmp_path):
    encoder = aligned["encoder"]
    assert encoder.calls == 1
    again = ctrl.train_ctrl(splits, _config(max_epochs=1), encoder, cache_dir=aligned["cache"], progress=False)
    assert encoder.calls == 1  # same rows, template and encoder: read from the .npy
    assert again.alignment["before"] == aligned["result"].alignment["before"]
    ctrl.train_ctrl(splits, _config(max_epochs=1, align_rows=100, align_epochs=1), encoder,
                    cache_dir=aligned["cache"], progress=False)
    assert encoder.calls == 2  # other rows: encoded anew
    assert len(list(aligned["cache"].glob("*.npy"))) == 2


def test_run_ctrl_skips_finished(aligned, splits, tmp_path):
    calls = aligned["encoder"].calls
    config = aligned["result"].config
    record = ctrl.run_ctrl(splits, config, aligned["encoder"], tmp_path / "run", cache_dir=aligned["cache"],
                           progress=False)
    assert aligned["encoder"].calls == calls  # the encodings came from the cache
    assert record["metrics"]["test"]["all"]["auc"] == pytest.approx(aligned["result"].metrics["test"]["all"]["auc"])
    stamp = (tmp_path / "run" / "ctrl.pt").stat().st_mtime_ns
    again = ctrl.run_ctrl(splits, config, aligned["encoder"], tmp_path / "run", cache_dir=aligned["cache"],
                          progress=False)
    assert again == record and (tmp_path / "run" / "ctrl.pt").stat().st_mtime_ns == stamp  # finished: not retrained
    row = ctrl.summary(record)
    assert row["model"] == "CTRL(DIN)" and row["test_auc"] > 0.8


def test_profiles_and_bad_input(splits):
    assert profiles.ctrl("gpu").align_rows is None
    assert profiles.ctrl("smoke", seed=3).seed == 3
    empty = Splits(name="x", train=splits.train.iloc[:0], valid=splits.valid, valid_small=splits.valid_small,
                   test=splits.test, n_users=N_USERS, n_items=N_ITEMS)
    with pytest.raises(ValueError, match="train split is empty"):
        ctrl.train_ctrl(empty, _config(), None, progress=False)


def test_an_llm_encoders_model_keys_the_run(aligned, splits, tmp_path, monkeypatch):
    """A CTRL run made with one LLM's encodings is never found finished for another LLM (notebook 06's `model`)."""
    monkeypatch.setenv("COLLM_WORK_DIR", str(tmp_path))
    config = aligned["result"].config
    named = {}
    for model in ("org/llm-a", "org/llm-b"):
        encoder = PlantedEncoder()
        encoder.model = model  # what llm.text_encoder sets
        named[model] = ctrl.run_ctrl(splits, replace(config, max_epochs=1, align_epochs=1), encoder,
                                     cache_dir=tmp_path / "cache", progress=False)
        assert encoder.calls == 1, "each LLM encodes its own texts: no cached encodings of the other"
        assert named[model]["config"]["encoder"] == model
    assert named["org/llm-a"]["run_dir"] != named["org/llm-b"]["run_dir"]
    monkeypatch.setenv("COLLM_PRECISION", "fp32")
    assert text_encoder(LLMConfig(model="org/llm-a")).model == "org/llm-a"
    assert text_encoder().model == LLMConfig().model == profiles.ctrl("cpu").encoder  # default: unchanged
    monkeypatch.setenv("COLLM_PRECISION", "bf16")  # bf16 encodings are another encoder's (tests/test_precision.py)
    assert text_encoder().model == f"{LLMConfig().model}+bf16"
