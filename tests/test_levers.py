"""The speed levers of the gpu profile change no result: a forward-only prompt prefix in stage 2, slot filling
without host syncs, the train loss read once per evaluation, tokenisation shared across a sweep's runs.
Their CPU throughput is in benchmarks/results/levers_cpu.json (benchmarks/bench_levers.py)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from collm_lib import collab, encoders, stages
from collm_lib.fece import build_inputs_embeds
from collm_lib.llm import LLMConfig, text_encoder
from collm_lib.scoring import frozen_prefix
from collm_lib.train import StageConfig
from tiny_llm import movie_splits


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread, a private work dir


def _masked_reference(embedding, input_ids, slots):
    """The former slot filling (boolean-mask indexing: one GPU->host sync per slot)."""
    embeds = embedding(input_ids).clone()
    rows = torch.arange(input_ids.shape[0])
    for positions, vectors in slots:
        has = positions >= 0
        embeds[rows[has], positions[has]] = vectors[has]
    return embeds


def test_slot_filling_without_masks_equals_the_masked_one():
    torch.manual_seed(0)
    embedding = torch.nn.Embedding(50, 6)
    ids = torch.randint(0, 50, (5, 9))
    user = torch.tensor([2, -1, 0, 4, -1])  # rows without a slot, and a slot at position 0
    item = torch.tensor([5, 3, -1, 8, -1])
    slots = [(user, torch.randn(5, 6, requires_grad=True)), (item, torch.randn(5, 6, requires_grad=True))]
    ours, ref = build_inputs_embeds(embedding, ids, slots), _masked_reference(embedding, ids, slots)
    assert torch.equal(ours, ref)
    ours.sum().backward()
    assert torch.equal(slots[0][1].grad[[0, 2, 3]], torch.ones(3, 6)) and not slots[0][1].grad[[1, 4]].any()


def _stage2(tiny: Path, **changes) -> tuple[dict, dict]:
    splits = movie_splits(n_train=48)
    mf = encoders.ensure(splits, collab.MFConfig(dim=8, max_epochs=2, patience=1, batch_size=16), progress=False)
    base = dict(batch_size=4, max_steps=6, eval_every=2, warmup_steps=1, score_batch_size=8, patience=10,
                llm=LLMConfig(model=str(tiny), lora_dropout=0.0))
    first = stages.run_stage(splits, StageConfig(stage=1, **base), progress=False)
    results = {flag: stages.run_stage(splits, StageConfig(stage=2, prefix_no_grad=flag, **base),
                                      stage1_dir=first["run_dir"], mf_dir=mf, progress=False) for flag in (False, True)}
    return results[False], results[True]


def test_stage2_forward_only_prefix_gives_the_same_run(tiny):
    """Same losses, valid AUCs, best step and test scores with and without the forward-only prefix."""
    full, prefixed = _stage2(tiny)
    assert np.allclose(full["fit"]["history"]["loss"], prefixed["fit"]["history"]["loss"], rtol=1e-5, atol=1e-6)
    assert full["fit"]["history"]["valid_auc"] == prefixed["fit"]["history"]["valid_auc"]
    assert full["fit"]["best_step"] == prefixed["fit"]["best_step"]
    import pandas as pd

    a, b = (pd.read_csv(Path(r["run_dir"]) / "scores_test.csv") for r in (full, prefixed))
    assert np.allclose(a["score"], b["score"], atol=1e-5)


def test_frozen_prefix_is_each_rows_tokens_before_its_first_slot():
    from collm_lib.prompts import EncodedSplit

    enc = EncodedSplit("t", [np.arange(12), np.arange(11), np.arange(6)], np.array([7, 5, -1]),
                       np.array([10, 9, 4]), np.zeros(3, int), np.zeros(3, int), np.zeros(3, np.float32),
                       np.ones(3, int))
    prefix, lengths = frozen_prefix(enc, np.array([0, 1, 2]))
    assert prefix.tolist() == [7, 5, 4] and lengths.tolist() == [12, 11, 6]  # a row's item slot may come first
    text_only = EncodedSplit("t", [np.arange(12)], np.array([-1]), np.array([-1]), *[np.zeros(1, int)] * 2,
                             np.zeros(1, np.float32), np.ones(1, int))
    assert frozen_prefix(text_only, np.array([0])) is None
    slot_first = EncodedSplit("t", [np.arange(5)], np.array([0]), np.array([3]), *[np.zeros(1, int)] * 2,
                              np.zeros(1, np.float32), np.ones(1, int))
    assert frozen_prefix(slot_first, np.array([0])) is None


def test_a_sweep_tokenises_each_sample_once(tiny, monkeypatch):
    """Two runs differing in lr only: the second reuses the first's tokenised samples."""
    calls = []
    real = stages.encode_frame
    monkeypatch.setattr(stages, "encode_frame", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr(stages, "_ENCODED", {})
    splits = movie_splits()
    base = dict(stage=1, batch_size=4, max_steps=2, eval_every=2, warmup_steps=1, score_batch_size=8,
                llm=LLMConfig(model=str(tiny)))
    stages.run_stage(splits, StageConfig(lr=1e-3, **base), progress=False)
    assert len(calls) == 3  # train, valid, test
    stages.run_stage(splits, StageConfig(lr=3e-4, **base), progress=False)
    assert len(calls) == 3
    stages.run_stage(splits, StageConfig(lr=3e-4, max_history=4, **{**base, "max_steps": 2}), progress=False)
    assert len(calls) == 6  # another prompt length: tokenised again


def test_text_encodings_do_not_depend_on_the_batch(tiny):
    """CTRL's LLM encodings at the GPU's large batch equal the CPU's small one (right padding, masked mean)."""

    texts = [f"Movie {i} " * (1 + i % 5) for i in range(12)]
    small = text_encoder(LLMConfig(model=str(tiny)), batch_size=2, progress=False)(texts)
    large = text_encoder(LLMConfig(model=str(tiny)), batch_size=12, progress=False)(texts)
    assert np.abs(small - large).max() <= 1e-5 * max(1.0, np.abs(small).max())
