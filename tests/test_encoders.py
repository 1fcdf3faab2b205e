"""The collaborative encoders beside MF (LightGCN, SASRec): LightGCN against a dense brute-force propagation, SASRec's
causal reading of a history and a toy where only order tells (SASRec must win, MF cannot), and stage 2, Faiss
retrieval and cold matching over any of them."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from collm_lib import catalogue, collab, encoder_registry, encoders, matching, profiles, stages
from collm_lib.data import Splits
from collm_lib.lightgcn import LightGCN, LightGCNConfig
from collm_lib.llm import LLMConfig
from collm_lib.prompts import encode_frame, history_matrix
from collm_lib.sasrec import SASRec, SASRecConfig
from collm_lib.scoring import score
from collm_lib.train import StageConfig
import toy_encoder
from tiny_llm import TITLES, movie_splits, save_tiny


def test_lightgcn_propagation_equals_dense_reference():
    rows = pd.DataFrame({"uid": [1, 1, 2, 3, 3, 3], "iid": [1, 2, 2, 1, 3, 3], "label": [1, 1, 1, 1, 1, 0]})
    model = LightGCN(5, 5, LightGCNConfig(dim=3, layers=3), LightGCN.edges_from(rows))
    n = 10  # users 0..4, then items 0..4
    adj = torch.zeros(n, n)
    for u, i in [(1, 1), (1, 2), (2, 2), (3, 1), (3, 3)]:  # distinct positive pairs only
        adj[u, 5 + i] = adj[5 + i, u] = 1
    degree = adj.sum(1)
    norm = torch.where(degree > 0, degree.rsqrt(), torch.zeros(n))
    a_hat = norm[:, None] * adj * norm[None, :]
    x = torch.cat([model.user_embedding.weight, model.item_embedding.weight]).detach()
    expected = sum(torch.linalg.matrix_power(a_hat, k) @ x for k in range(4)) / 4
    users, items = model.propagate()
    torch.testing.assert_close(users.detach(), expected[:5])
    torch.testing.assert_close(items.detach(), expected[5:])
    torch.testing.assert_close(model(torch.tensor([3]), torch.tensor([2])).detach(), (expected[3] * expected[7]).sum()[None])


def test_sasrec_reads_history_causally_and_ignores_padding():
    torch.manual_seed(0)
    model = SASRec(4, 30, SASRecConfig(dim=8, max_len=6, dropout=0.0), torch.zeros(4, 6, dtype=torch.long)).eval()
    his = history_matrix([[3, 7, 9], [3, 7, 9]], 6)
    assert his.tolist() == [[0, 0, 0, 3, 7, 9]] * 2  # oldest first, left-padded
    short = torch.as_tensor(history_matrix([[3, 7, 9]], 4))
    uid = torch.tensor([1])
    with torch.no_grad():
        full = model.user_vectors(uid, torch.as_tensor(his[:1]))
        torch.testing.assert_close(model.user_vectors(uid, short), full)  # more padding, same vector
        assert not torch.allclose(model.user_vectors(uid, torch.as_tensor(history_matrix([[4, 7, 9]], 6))), full)
        empty = model.user_vectors(uid, torch.zeros(1, 6, dtype=torch.long))
        assert torch.isfinite(empty).all()  # a row without history still has a vector
        # without a history, a user reads the last one known from training (a buffer)
        model.last_history[1] = torch.as_tensor(his[0])
        torch.testing.assert_close(model.user_vectors(uid), full)


def _sequence_splits(n_users: int = 40, n_items: int = 30, seed: int = 0) -> Splits:
    """Liked iff the target is the item after the user's last one (a cycle over items): only order tells."""
    rng = np.random.default_rng(seed)

    def frame(n: int, flag: int) -> pd.DataFrame:
        rows = []
        for _ in range(n):
            start, length = int(rng.integers(1, n_items)), int(rng.integers(1, 6))
            his = [(start + k - 1) % (n_items - 1) + 1 for k in range(length)]
            follows = his[-1] % (n_items - 1) + 1
            iid = follows if rng.random() < 0.5 else int(rng.integers(1, n_items))
            rows.append({"uid": int(rng.integers(1, n_users)), "iid": iid, "label": int(iid == follows),
                         "timestamp": int(rng.integers(1e9, 2e9)), "his": his,
                         "his_title": [TITLES[i % len(TITLES)] for i in his], "title": TITLES[iid % len(TITLES)],
                         "flag": flag, "not_cold": 1})
        return pd.DataFrame(rows)

    valid = frame(300, 0)
    return Splits("seq-synthetic", frame(3000, -1), valid, valid, frame(300, 1), n_users, n_items)


def test_the_sequence_model_wins_where_only_order_tells(one_thread):
    splits = _sequence_splits()
    settings = dict(max_epochs=40, patience=10, lr=1e-2, batch_size=256)
    sas = encoders.train(splits, SASRecConfig(dim=16, max_len=5, dropout=0.0, **settings), progress=False)
    mf = encoders.train(splits, collab.MFConfig(dim=16, **settings), progress=False)
    sas_auc, mf_auc = (r.metrics["test"]["all"]["auc"] for r in (sas, mf))
    assert sas_auc > 0.9 and mf_auc < 0.7, (sas_auc, mf_auc)


@pytest.mark.integration  # the tiny LLM
@pytest.mark.parametrize("name", ["lightgcn", "sasrec", "toy"])
def test_stage2_over_any_encoder(name, tmp_path, one_thread, monkeypatch):
    """Stage 2 stands on the encoder's run (its identity changes with it); scores with shared prefixes equal full
    prompts (SASRec's user vector differs per row); Faiss retrieval and cold matching read its vectors. "toy" is
    tests/toy_encoder.py, registered here only."""
    monkeypatch.setattr(encoder_registry, "ENCODERS", dict(encoder_registry.ENCODERS))
    encoder_registry.register("toy", toy_encoder.ENTRY)
    splits = movie_splits()
    model_dir = save_tiny(tmp_path / "tiny-llm")
    mf_dir = encoders.ensure(splits, profiles.encoder("smoke", name="mf"), progress=False)
    enc_dir = encoders.ensure(splits, profiles.encoder("smoke", name=name), progress=False)
    assert encoders.kind_at(enc_dir) == name and enc_dir.name.startswith(f"{name}-")
    common = dict(batch_size=4, max_steps=2, eval_every=1, warmup_steps=1, score_batch_size=8,
                  llm=LLMConfig(model=str(model_dir)))
    s1 = stages.run_stage(splits, StageConfig(stage=1, **common), progress=False)["run_dir"]
    config = StageConfig(stage=2, **common)
    ident, upstream = stages.stage_identity(splits, config, s1, enc_dir)
    assert name in upstream and "mf" not in upstream
    assert ident != stages.stage_identity(splits, config, s1, mf_dir)[0]
    s2 = stages.run_stage(splits, config, stage1_dir=s1, mf_dir=enc_dir, progress=False)
    assert s2["upstream"] == upstream and s2["test"]["all"]["rows"] == len(splits.test)
    model, bundle, _ = stages.load_trained(s2["run_dir"])
    assert type(model.hybrid.collab) is type(encoders.load(enc_dir))
    assert type(model.hybrid.collab).__name__ == {"lightgcn": "LightGCN", "sasrec": "SASRec", "toy": "Toy"}[name]
    # one user's two rows with the same titles shown but other history ids: one prefix pass, two user vectors
    twins = splits.test.iloc[[0, 0]].assign(his=[[1, 2, 3], [4, 5, 6]], his_title=[[TITLES[1]] * 3] * 2, iid=[2, 3])
    enc = encode_frame(pd.concat([splits.test, twins]), "item_id", bundle.tokenizer, progress=False)
    pad = bundle.tokenizer.pad_token_id
    shared = score(model, enc, pad, progress=False)
    np.testing.assert_allclose(shared, score(model, enc, pad, progress=False, shared_prefix=False), atol=1e-5)
    np.testing.assert_allclose(shared[:-2], pd.read_csv(f"{s2['run_dir']}/scores_test.csv")["score"], atol=1e-5)
    users, items = catalogue.mf_tables(model.hybrid.collab, splits.n_users, splits.n_items)
    assert users.shape == (splits.n_users, model.hybrid.collab.dim) and np.isfinite(users).all()
    cold_items = np.array([3, 5])
    matched = matching.MatchedEncoder(model.hybrid.collab, splits.n_users, splits.n_items, np.array([], np.int64),
                                      np.zeros((0, model.hybrid.collab.dim)), cold_items, items[[1, 2]])
    np.testing.assert_allclose(matched.item_vectors(torch.as_tensor(cold_items)).detach().numpy(), items[[1, 2]])
    history = torch.tensor(enc.history[:3], dtype=torch.long)
    torch.testing.assert_close(matched.user_vectors(torch.as_tensor(enc.uid[:3]), history),
                               model.hybrid.collab.user_vectors(torch.as_tensor(enc.uid[:3]), history))
