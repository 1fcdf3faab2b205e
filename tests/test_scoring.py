"""Shared-prefix scoring (collm_lib.scoring, shared_prefix=True) gives the scores of scoring every full prompt."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from collm_lib import collab, prompts
from collm_lib.fece import HybridEncoder
from collm_lib.llm import LLMConfig, add_lora, bundle_from
from collm_lib.model import CoLLM
from collm_lib.scoring import score, shared_length
from tiny_llm import TITLES, movie_frame, real_tokenizer, tiny_llama


@pytest.fixture(scope="module")
def tok():
    return real_tokenizer()


def _model(tok, hybrid: bool) -> CoLLM:
    bundle = add_lora(bundle_from(tiny_llama(len(tok), 0), tok, LLMConfig(model="tiny"), "tiny"),
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


@pytest.mark.parametrize("template,hybrid", [("movie_id", True), ("movie_text", False), ("movie_text", True)])
def test_shared_prefix_scores_equal_full_prompt_scores(tok, template, hybrid):
    model = _model(tok, hybrid)
    enc = prompts.encode_frame(_catalogue_frame(), template, tok, progress=False)
    full = score(model, enc, tok.pad_token_id, batch_size=7, progress=False)
    shared = score(model, enc, tok.pad_token_id, batch_size=5, progress=False, shared_prefix=True)
    np.testing.assert_allclose(shared, full, rtol=1e-4, atol=1e-4)
    assert np.std(full) > 1e-3, "scores must differ across items for the comparison to mean anything"


def test_shared_prefix_on_rows_with_different_histories(tok):
    """A test split: the rows of one user carry different histories, so the shared part is shorter."""
    model = _model(tok, hybrid=True)
    enc = prompts.encode_frame(movie_frame(30, 4, 20, 1, seed=3), "movie_id", tok, progress=False)
    np.testing.assert_allclose(score(model, enc, tok.pad_token_id, 4, progress=False, shared_prefix=True),
                               score(model, enc, tok.pad_token_id, 8, progress=False), rtol=1e-4, atol=1e-4)


def test_shared_length_stops_before_item_slots_and_keeps_a_token_per_row():
    a, b = np.array([1, 2, 3, 4, 5]), np.array([1, 2, 3, 9])
    assert shared_length([a, b], np.array([-1, -1])) == 3
    assert shared_length([a, b], np.array([2, 2])) == 2
    assert shared_length([a, a.copy()], np.array([-1, -1])) == 4, "identical rows still keep one own token"
    assert shared_length([np.array([7])], np.array([-1])) == 0
