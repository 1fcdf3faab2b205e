"""Retrieve-then-rank and cold-id matching on a tiny random Llama + MF (collm_lib.rerank, collm_lib.matching)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

pytest.importorskip("faiss", reason="pip install faiss-cpu to run the re-rank tests")

from collm_lib import catalogue, collab, encoders, matching, profiles, rerank, retrieval  # noqa: E402
from collm_lib.llm import LLMConfig  # noqa: E402
from collm_lib.stages import build_model  # noqa: E402
from collm_lib.train import StageConfig  # noqa: E402
from tiny_llm import movie_splits, save_tiny  # noqa: E402

COLD_USERS = (12, 13)  # users given no train rows below; user 13 also has an empty history


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Splits with two planted cold users, an MF on them and an untrained stage-2 model around a tiny Llama."""
    tmp = tmp_path_factory.mktemp("rerank")
    splits = movie_splits(n_train=48, n_eval=24, n_users=14, n_items=60)
    splits.train.loc[splits.train["uid"].isin(COLD_USERS), "uid"] = 1
    test = splits.test
    test.loc[test["uid"].isin(COLD_USERS), "uid"] = 1
    test.loc[test.index[:4], "uid"] = COLD_USERS[0]
    test.loc[test.index[4:7], "uid"] = COLD_USERS[1]
    warm_items = splits.train["iid"].head(3).tolist()
    for row in test.index[:7]:
        his = warm_items if row in test.index[:4] else []
        test.at[row, "his"], test.at[row, "his_title"] = his, [f"Movie {i}" for i in his]
    mf = encoders.train(splits, collab.MFConfig(dim=8, max_epochs=2, patience=2), progress=False)
    mf_dir = encoders.save(mf, tmp / "mf")
    config = StageConfig(stage=2, score_batch_size=8, llm=LLMConfig(model=str(save_tiny(tmp / "llm"))))
    torch.manual_seed(0)
    model, bundle = build_model(config, mf_dir=mf_dir, device=torch.device("cpu"))
    return splits, model.eval(), bundle, config, tmp


def test_rerank_keeps_k_per_user_and_excludes_history(tiny):
    splits, model, bundle, config, _ = tiny
    cfg = rerank.RerankConfig(ks=(3, 5), n_users=None, n_full_users=2,
                              index=retrieval.IndexConfig(kind="flat", use_gpu=False))
    out = rerank.retrieve_then_rank(model, bundle, splits, config, cfg, progress=False)
    users = rerank.sample_test_users(splits, None, cfg.seed, catalogue.train_ids(splits)[0])
    assert not set(users["uid"]) & set(COLD_USERS), "retrieval samples warm users only"
    rows = out["rows"]
    reranked = rows[rows["method"] == "faiss+llm"]
    for user in users.itertuples():
        cands = reranked[reranked["uid"] == user.uid]
        assert len(cands) == 5 and cands["iid"].is_unique
        assert not set(cands["iid"]) & set(user.seen), "history items must never be candidates"
        full = rows[(rows["method"] == "llm_full") & (rows["uid"] == user.uid)]
        if len(full):  # the whole catalogue minus what the user has seen
            assert len(full) == 59 - len(set(user.seen) & set(range(1, 60)))
    table = out["table"].set_index(["method", "K"])
    assert table.loc[("Faiss top-K + LLM re-rank", 5), "llm_calls"] == 5 * len(users)
    # re-ranking the same K candidates cannot change which items are in the top K
    assert table.loc[("Faiss top-K + LLM re-rank", 5), "Recall@K"] == table.loc[("Faiss top-K (MF order)", 5), "Recall@K"]
    assert out["info"]["index_recall_vs_exact"][5] == 1.0  # flat index = exact search
    assert ("LLM whole catalogue", 3) in table.index
    plain = rerank.retrieve_then_rank(model, bundle, splits, config, dataclasses.replace(cfg, shared_prefix=False),
                                      progress=False)["rows"]
    np.testing.assert_allclose(rows["llm_score"], plain["llm_score"], rtol=1e-4, atol=1e-4,
                               err_msg="shared-prefix scoring must give the full prompts' scores")


def test_ranking_metrics_on_a_planted_case():
    ranked, relevant = [[1, 2, 3], [4, 5, 6]], [[2], [7, 4]]
    m = rerank.ranking_metrics(ranked, relevant, (1, 3))
    assert m["recall@1"] == pytest.approx((0 + 0.5) / 2) and m["hit@1"] == pytest.approx(0.5)
    assert m["recall@3"] == pytest.approx(0.75) and m["hit@3"] == 1.0
    ndcg_u1 = 1 / np.log2(3)  # one hit at rank 2 of one relevant item
    ndcg_u2 = 1 / (1 + 1 / np.log2(3))  # one hit at rank 1 of two relevant items
    assert m["ndcg@3"] == pytest.approx((ndcg_u1 + ndcg_u2) / 2)


def test_llm_scores_decide_the_final_order():
    frame = pd.DataFrame({"uid": [1, 1, 1, 2, 2], "iid": [10, 11, 12, 20, 21], "rank": [0, 1, 2, 0, 1]})
    lists = rerank._rerank(frame, np.array([0.1, 0.9, 0.5, -1.0, 2.0]), np.array([2, 1]))
    assert lists == [[21, 20], [11, 12, 10]]
    assert rerank._rerank(frame, np.array([0.1, 0.9, 0.5, -1.0, 2.0]), np.array([1]), top=2) == [[11, 10]]


def test_matched_encoder_overrides_only_given_ids():
    mf = collab.MatrixFactorization(6, 7, dim=4)
    borrowed_u, borrowed_i = np.full((1, 4), 3.0, np.float32), np.full((2, 4), -2.0, np.float32)
    enc = matching.MatchedEncoder(mf, 6, 7, np.array([2]), borrowed_u, np.array([1, 5]), borrowed_i)
    assert isinstance(enc, collab.CollaborativeEncoder) and enc.dim == 4
    uids, iids = torch.tensor([0, 2, 3]), torch.tensor([1, 2, 5])
    with torch.no_grad():
        u, i = enc.user_vectors(uids), enc.item_vectors(iids)
        torch.testing.assert_close(u[1], torch.full((4,), 3.0))
        torch.testing.assert_close(u[[0, 2]], mf.user_vectors(torch.tensor([0, 3])))
        torch.testing.assert_close(i[[0, 2]], torch.full((2, 4), -2.0))
        torch.testing.assert_close(i[1], mf.item_vectors(torch.tensor(2)))


def test_cold_user_with_empty_history_gets_the_fallback(tiny):
    splits, model, bundle, _, _ = tiny
    base = model.hybrid.collab
    inputs = matching.matching_inputs(base, splits, splits.test, "hashed")
    assert set(inputs.cold_users) == set(COLD_USERS)
    enc, counts = matching.matched_encoder(base, inputs, n_neighbors=3)
    assert counts["cold_users"] == 2 and counts["user_fallbacks"] == 1
    user_tab, _ = catalogue.mf_tables(base, splits.n_users, splits.n_items)
    with torch.no_grad():
        empty = enc.user_vectors(torch.tensor([COLD_USERS[1]]))[0].numpy()
        warm = enc.user_vectors(torch.tensor([1]))[0].numpy()
    np.testing.assert_allclose(empty, user_tab[inputs.warm_users].mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(warm, user_tab[1], rtol=1e-6)


def test_cold_matching_rescores_only_rows_with_cold_ids(tiny):
    splits, model, bundle, config, tmp = tiny
    cfg = rerank.RerankConfig(n_neighbors=2, neighbor_curve=(1, 2), item_text="llm")
    out = matching.cold_matching(model, bundle, splits, config, tmp / "no_stage", cfg, progress=False)
    assert model.hybrid.collab.__class__ is collab.MatrixFactorization, "the MF is put back afterwards"
    rows = out["rows"]
    without, matched = (rows[rows["setting"] == s].reset_index(drop=True)
                        for s in ("without matching", "matching, 2 neighbours"))
    assert (without[["uid", "iid"]] == matched[["uid", "iid"]]).all().all()
    cold = without["uid"].isin(COLD_USERS).to_numpy()
    unchanged = np.isclose(without["score"], matched["score"])
    assert unchanged.sum() == len(without) - out["info"]["rescored_rows"]
    assert not unchanged[cold].all(), "borrowed vectors must change cold rows' scores"
    assert set(out["table"]["setting"]) == {"without matching", "matching, 1 neighbours", "matching, 2 neighbours"}
    assert out["info"]["baseline_scores"].startswith("rescored")


def test_cold_matching_on_a_user_sample_reads_the_stages_scores_of_those_rows(tiny):
    """A sample of the stage's test rows (test_rows) takes the stage's saved scores of exactly those rows."""
    from collm_lib import io, prompts
    from collm_lib.scoring import score, scores_frame

    splits, model, bundle, config, tmp = tiny
    template = prompts.default_template(splits.name, with_ids=True)  # the stage's, as cold_matching encodes
    enc = prompts.encode_frame(splits.test, template, bundle.tokenizer, progress=False)
    saved = scores_frame(enc, score(model, enc, bundle.tokenizer.pad_token_id, 8, progress=False))
    io.write_frame(tmp / "stage" / "scores_test.csv", saved)
    cfg = matching.MatchingConfig(n_neighbors=2, neighbor_curve=(2,), item_text="hashed", test_rows=8)
    out = matching.cold_matching(model, bundle, splits, config, tmp / "stage", cfg, progress=False)
    assert out["info"]["baseline_scores"].endswith("(reproduced on 8 rescored rows)")
    without = out["rows"][out["rows"]["setting"] == "without matching"]
    assert 8 <= len(without) < len(saved)
    expected = without[["uid", "iid"]].merge(saved, how="left")["score"].to_numpy()
    np.testing.assert_array_equal(without["score"].to_numpy(), expected.astype(np.float32))


def test_matching_config_is_the_rerank_configs_matching_fields():
    """Matching's settings come from RerankConfig's own fields (a rerank run's identity hashes them)."""
    from collm_lib import runs

    config = profiles.rerank("cpu", n_neighbors=3, weighting="similarity")
    assert config.matching == matching.MatchingConfig(n_neighbors=3, neighbor_curve=(1, 10), weighting="similarity",
                                                      item_text="hashed", score_batch_size=16, test_rows=1500,
                                                      seed=2023)
    settings_ = config.matching
    assert matching.MatchingConfig.of(settings_) is settings_
    assert set(runs.plain(config)) == {"ks", "n_users", "n_full_users", "n_neighbors", "neighbor_curve", "weighting",
                                       "item_text", "index", "score_batch_size", "test_rows", "shared_prefix", "seed"}


def test_relevant_counts_and_subset_counts_read_the_rows():
    import pandas as pd

    from collm_lib import matching, rerank
    rows = pd.DataFrame({"uid": [1, 1, 2, 3], "relevant": [4, 4, 1, 2], "method": "faiss+llm"})
    assert rerank.relevant_counts(rows) == {"n_relevant": 7, "min_relevant": 1}
    cold = pd.DataFrame({"uid": [1, 1, 2, 1, 1, 2], "not_cold": [1, 0, 0] * 2,
                         "setting": ["without matching"] * 3 + ["matching, 10 neighbours"] * 3})
    assert matching.subset_counts(cold) == {"all": (3, 2), "warm": (1, 1), "cold": (2, 2)}
