"""Scoring (collm_lib.scoring): prefix groups give the scores of every full prompt scored on its own, and a row's
score does not depend on the rows that share its batch or its group."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from collm_lib import collab, prompts
from collm_lib.fece import HybridEncoder
from collm_lib.llm import LLMConfig, add_lora, bundle_from
from collm_lib.model import CoLLM
from collm_lib.scoring import _batches, prefix_groups, score
from tiny_llm import TITLES, movie_frame, real_tokenizer, tiny_llama


@pytest.fixture(scope="module")
def tok():
    return real_tokenizer()


def _model(tok, hybrid: bool) -> CoLLM:
    bundle = add_lora(bundle_from(tiny_llama(len(tok), 0), tok, LLMConfig(model="tiny", precision="fp32"), "tiny"),
                      LLMConfig(model="tiny"))
    with torch.no_grad():  # LoRA B starts at zero; a non-zero B makes the adapter part of what is compared
        for name, p in bundle.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    torch.manual_seed(1)
    return CoLLM(bundle, HybridEncoder(collab.MatrixFactorization(12, 20, dim=8), 64) if hybrid else None).eval()


def _catalogue_frame(n_users: int = 3, n_items: int = 19) -> pd.DataFrame:
    """Each user's history crossed with many candidate items, as in retrieve-then-rank; one user with an
    empty history and one with a single candidate."""
    base = movie_frame(n_users, 12, 20, 1, seed=5).drop_duplicates("uid").reset_index(drop=True)
    base.loc[0, ["his", "his_title"]] = pd.Series([[], []], index=["his", "his_title"])
    rows = [dict(user, iid=iid, title=TITLES[iid % len(TITLES)], label=iid % 2)
            for u, user in enumerate(base.to_dict("records")) for iid in range(1, 2 if u == 1 else n_items + 1)]
    return pd.DataFrame(rows).sample(frac=1.0, random_state=0)  # rows of a user not contiguous


def _test_split_frame() -> pd.DataFrame:
    """A test split's shape: users with several histories, each history with one to four targets."""
    base = movie_frame(24, 6, 20, 1, seed=3)
    extra = base.sample(n=30, replace=True, random_state=1).assign(iid=lambda f: (f["iid"] + 3) % 19 + 1)
    return pd.concat([base, extra]).assign(title=lambda f: [TITLES[i % len(TITLES)] for i in f["iid"]]) \
        .sample(frac=1.0, random_state=2).reset_index(drop=True)


@pytest.mark.parametrize("template,hybrid", [("movie_id", True), ("movie_text", False), ("movie_text", True)])
def test_prefix_groups_score_as_full_prompts(tok, template, hybrid):
    model = _model(tok, hybrid)
    enc = prompts.encode_frame(_catalogue_frame(), template, tok, progress=False)
    full = score(model, enc, tok.pad_token_id, batch_size=7, progress=False, shared_prefix=False)
    shared = score(model, enc, tok.pad_token_id, batch_size=5, progress=False)
    np.testing.assert_allclose(shared, full, rtol=1e-4, atol=1e-4)
    assert np.std(full) > 1e-3, "scores must differ across items for the comparison to mean anything"


@pytest.mark.parametrize("template", ["movie_id", "movie_text"])
def test_prefix_groups_on_a_test_split(tok, template):
    """The rows of one user carry different histories; each history's targets share it."""
    model = _model(tok, hybrid=True)
    enc = prompts.encode_frame(_test_split_frame(), template, tok, progress=False)
    groups = prefix_groups(enc)
    assert len(groups) < len(enc), "rows with one history must share a group"
    np.testing.assert_allclose(score(model, enc, tok.pad_token_id, 4, progress=False),
                               score(model, enc, tok.pad_token_id, 8, progress=False, shared_prefix=False),
                               rtol=1e-4, atol=1e-4)


def test_prefix_groups_share_only_what_their_rows_share(tok):
    frame = _test_split_frame()
    enc = prompts.encode_frame(frame, "movie_id", tok, progress=False)
    groups = prefix_groups(enc)
    assert sorted(np.concatenate([rows for _, rows in groups]).tolist()) == list(range(len(enc))), "each row once"
    histories = frame["his"].map(tuple)
    for p, rows in groups:
        assert len(set(enc.uid[rows])) == 1, "a group never mixes users (the user slot carries the user)"
        head = enc.input_ids[rows[0]][:p]
        for r in rows:
            assert np.array_equal(enc.input_ids[r][:p], head)
            assert p < len(enc.input_ids[r]), "every row keeps a token of its own"
            assert p <= enc.item_pos[r], "the item slot differs per row: never in a prefix"
        if len(rows) > 1:
            assert len(set(histories[rows])) <= 2, "a group is one history (or one history and its extension)"
    same = frame.groupby(["uid", frame["his"].map(tuple)]).size()
    assert len(groups) <= len(same), "rows of one user and one history always share a group"


def test_a_rows_score_does_not_depend_on_its_batch(tok):
    """Scored alone, in a shuffled subset, or with other batch sizes: the same score for every row."""
    model = _model(tok, hybrid=True)
    enc = prompts.encode_frame(pd.concat([_test_split_frame(), _catalogue_frame()]), "movie_id", tok, progress=False)
    reference = score(model, enc, tok.pad_token_id, batch_size=16, progress=False)
    alone = np.array([score(model, enc.subset(np.array([i])), tok.pad_token_id, progress=False)[0]
                      for i in range(0, len(enc), 7)])
    np.testing.assert_allclose(alone, reference[::7], rtol=1e-4, atol=1e-4)
    rng = np.random.default_rng(0)
    for batch_size in (1, 3, 32):
        idx = rng.permutation(len(enc))[: len(enc) // 2]
        np.testing.assert_allclose(score(model, enc.subset(idx), tok.pad_token_id, batch_size, progress=False),
                                   reference[idx], rtol=1e-4, atol=1e-4)


def test_a_group_larger_than_a_batch_keeps_its_prefix_across_batches(tok):
    groups = [(120, np.arange(50)), (90, np.arange(50, 53)), (0, np.arange(53, 55)), (100, np.arange(55, 60))]
    batches = _batches(groups, 16, np.full(60, 30))
    assert sum(len(r) for batch in batches for _, _, r in batch) == 60
    assert all(sum(len(r) for _, _, r in batch) <= 16 for batch in batches)
    big = [batch for batch in batches if batch[0][0] == 0 and len(batch) == 1]
    assert len(big) == 3 and all(len(batch[0][2]) == 16 for batch in big), "whole batches of the large group"
    assert all((p == 0) == (batch[0][1] == 0) for batch in batches for _, p, _ in batch), "full prompts apart"
    lengths = np.random.default_rng(0).integers(20, 200, 40)
    single = _batches([(0, np.array([i])) for i in range(40)], 8, lengths)
    widths = [lengths[np.concatenate([r for _, _, r in batch])] for batch in single]
    assert all(a.max() <= b.min() for a, b in zip(widths, widths[1:])), "full prompts batched by length"
    model = _model(tok, hybrid=False)
    enc = prompts.encode_frame(_catalogue_frame(n_items=40), "movie_text", tok, progress=False)
    np.testing.assert_allclose(score(model, enc, tok.pad_token_id, 8, progress=False),
                               score(model, enc, tok.pad_token_id, 8, progress=False, shared_prefix=False),
                               rtol=1e-4, atol=1e-4)
