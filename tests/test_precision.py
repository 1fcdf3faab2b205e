"""bf16 on CPUs with bf16 matrix units (settings.precision): chosen at run time, forced on request, recorded, part of
a run's identity; bf16 scores and training stay close to fp32's, on a tiny model everywhere and on the real model
and real prompts where bf16 is what runs (a CPU with the units; elsewhere bf16 is emulated and ~7x slower than
fp32, so those two tests run only there or with COLLM_TEST_BF16=1)."""
from __future__ import annotations

import os
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from collm_lib import metrics, prompts, settings, stages
from collm_lib.llm import LLMConfig, add_lora, load_llm, text_encoder
from collm_lib.model import CoLLM, set_trainable
from collm_lib.scoring import autocast, collate, score
from collm_lib.train import StageConfig
from tiny_llm import movie_frame, movie_splits

CPU = torch.device("cpu")


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(pd.Series(a).rank(), pd.Series(b).rank())[0, 1])


where_bf16_runs = pytest.mark.skipif(
    not (settings.bf16_units() or os.environ.get("COLLM_TEST_BF16") == "1"),
    reason="this CPU has no bf16 matrix units: bf16 is emulated there, slower than fp32, and never chosen "
           "(COLLM_TEST_BF16=1 runs it anyway)")


@pytest.fixture
def auto(monkeypatch):
    """$COLLM_PRECISION unset: "auto" decides."""
    monkeypatch.delenv(settings.PRECISION_ENV, raising=False)
    return monkeypatch


def test_auto_is_bf16_on_a_gpu_or_with_bf16_units_and_fp32_elsewhere(auto):
    auto.setattr(settings, "bf16_units", lambda: False)
    assert settings.precision(CPU) == "fp32" and "no bf16 matrix units" in settings.precision_note(CPU)
    gpu = torch.device("cuda")  # only named: no GPU needed
    auto.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert settings.precision(gpu) == "bf16" and settings.precision_note(gpu) == "bf16 (a GPU with bf16)"
    auto.setattr(torch.cuda, "is_bf16_supported", lambda: False)  # a pre-Ampere card
    assert settings.precision(gpu) == "fp32"
    assert settings.precision(CPU, "bf16") == "bf16" and "emulated" in settings.precision_note(CPU, "bf16")
    auto.setattr(settings, "bf16_units", lambda: True)
    assert settings.precision(CPU) == "bf16" and "has bf16 matrix units" in settings.precision_note(CPU)
    assert settings.precision(CPU, "fp32") == "fp32", "on request"
    auto.setenv(settings.PRECISION_ENV, "fp32")
    assert settings.precision(CPU) == "fp32" and "$COLLM_PRECISION" in settings.precision_note(CPU)
    assert settings.precision(CPU, "bf16") == "bf16", "a run's own setting comes before the environment's"
    auto.setenv(settings.PRECISION_ENV, "half")
    with pytest.raises(ValueError, match=r"\$COLLM_PRECISION 'half'.*auto"):
        settings.precision(CPU)
    with pytest.raises(ValueError, match="precision: 'fp16'; it must be one of"):
        LLMConfig(precision="fp16")


@pytest.mark.skipif(not Path("/proc/cpuinfo").is_file(), reason="reads Linux's /proc/cpuinfo")
def test_bf16_units_agree_with_the_kernels_cpu_flags():
    flags = set(re.search(r"^flags\s*:(.*)$", Path("/proc/cpuinfo").read_text(), re.M).group(1).split())
    assert settings.bf16_units() == bool(flags & {"amx_bf16", "avx512_bf16"})


def test_precision_is_part_of_a_stage_runs_identity_and_record(auto, tiny):
    splits = movie_splits()
    config = StageConfig(stage=1, llm=LLMConfig(model=str(tiny), device="cpu"))  # a GPU would mean bf16
    ident = {}
    for value in ("fp32", "bf16"):
        auto.setenv(settings.PRECISION_ENV, value)
        ident[value], upstream = stages.stage_identity(splits, config)
        assert upstream["precision"] == value
    assert ident["fp32"] != ident["bf16"], "a bf16 run never reuses an fp32 one, nor the reverse"
    auto.delenv(settings.PRECISION_ENV)
    for units, value in ((False, "fp32"), (True, "bf16")):
        auto.setattr(settings, "bf16_units", lambda units=units: units)
        assert stages.stage_identity(splits, config)[0] == ident[value], "auto is the precision it resolves to"
        explicit = replace(config, llm=replace(config.llm, precision=value))
        assert stages.stage_identity(splits, explicit)[0] == ident[value], "asked for or chosen: one run"
        assert text_encoder(config.llm).model == str(tiny) + ("+bf16" if units else ""), "CTRL's encoder name"


def _lora_model(tiny: Path, precision: str) -> CoLLM:
    config = LLMConfig(model=str(tiny), device="cpu", precision=precision)
    bundle = load_llm(config)
    torch.manual_seed(0)  # the same adapter in both precisions: LoRA A's initialisation draws, B set non-zero
    bundle = add_lora(bundle, config)
    with torch.no_grad():
        for name, p in bundle.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    return CoLLM(bundle).eval()


def test_bf16_freezes_bf16_weights_trains_fp32_ones_and_scores_like_fp32(tiny):
    models = {p: _lora_model(tiny, p) for p in ("fp32", "bf16")}
    bf16 = models["bf16"]
    assert bf16.llm.get_base_model().get_input_embeddings().weight.dtype == torch.bfloat16
    assert {p.dtype for n, p in bf16.named_parameters() if "lora_" in n} == {torch.float32}
    tok = load_llm(LLMConfig(model=str(tiny), device="cpu")).tokenizer
    enc = prompts.encode_frame(movie_frame(64, 8, 20, 1, seed=4), "movie_text", tok, progress=False)
    scores = {p: score(m, enc, tok.pad_token_id, 16, progress=False) for p, m in models.items()}
    assert np.std(scores["fp32"]) > 1e-3
    assert spearman(scores["fp32"], scores["bf16"]) >= 0.99
    assert np.abs(scores["fp32"] - scores["bf16"]).max() < 0.2 * np.std(scores["fp32"])


def test_a_short_bf16_training_run_stays_finite_and_near_fp32(auto, tiny, tmp_path):
    splits = movie_splits(n_train=32, n_eval=16)
    base = StageConfig(stage=1, batch_size=4, max_steps=6, eval_every=2, warmup_steps=1, score_batch_size=8,
                       patience=10, lr=1e-2, llm=LLMConfig(model=str(tiny), device="cpu"))
    losses, record = {}, {}
    for value in ("fp32", "bf16"):
        config = replace(base, llm=replace(base.llm, precision=value))
        record[value] = stages.run_stage(splits, config, tmp_path / value, progress=False)
        losses[value] = np.array(record[value]["fit"]["history"]["loss"])
    assert np.isfinite(losses["bf16"]).all() and len(losses["bf16"]) == 3
    np.testing.assert_allclose(losses["bf16"], losses["fp32"], atol=0.02)
    assert record["bf16"]["upstream"]["precision"] == "bf16" and record["bf16"]["config"]["llm"]["precision"] == "bf16"
    assert record["bf16"]["llm"]["precision"].startswith("bf16") and record["bf16"]["llm"]["dtype"] == "torch.bfloat16"
    assert record["bf16"]["identity"] != record["fp32"]["identity"]


# ---- the real model on real prompts: where bf16 is what runs -------------------------------------------------

@pytest.fixture(scope="module")
def ml1m_rows(shared_data, data_work_dir) -> pd.DataFrame:
    from collm_lib.data import load_dataset

    test = load_dataset("ml-1m", data_dir=shared_data, work_dir=data_work_dir).test
    users = test["uid"].drop_duplicates().sample(n=40, random_state=0)
    return test[test["uid"].isin(users)].head(240)


def _real_model(rows: pd.DataFrame, precision: str, lora: bool) -> tuple[CoLLM, prompts.EncodedSplit, int]:
    """The embedded model in `precision` (with a LoRA initialised alike in both precisions) and `rows` encoded."""
    config = LLMConfig(device="cpu", precision=precision)
    bundle = load_llm(config)
    torch.manual_seed(0)
    model = CoLLM(add_lora(bundle, config) if lora else bundle)
    return model, prompts.encode_frame(rows, "movie_text", bundle.tokenizer, progress=False), bundle.tokenizer.pad_token_id


@where_bf16_runs
def test_bf16_scores_real_prompts_like_fp32(ml1m_rows):
    scores = {}
    for value in ("fp32", "bf16"):
        model, enc, pad = _real_model(ml1m_rows, value, lora=False)
        scores[value] = score(model, enc, pad, 32, progress=False)
    labels = ml1m_rows["label"].to_numpy()
    assert abs(metrics.auc(labels, scores["bf16"]) - metrics.auc(labels, scores["fp32"])) <= 0.005
    assert spearman(scores["fp32"], scores["bf16"]) >= 0.99


@where_bf16_runs
def test_bf16_lora_training_on_real_prompts_stays_near_fp32(ml1m_rows):
    losses = {}
    for value in ("fp32", "bf16"):
        model, enc, pad = _real_model(ml1m_rows, value, lora=True)
        set_trainable(model, 1)
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
        losses[value] = []
        for step in range(4):
            idx = np.arange(step * 8, step * 8 + 8)
            with autocast(model):
                logits = model(**collate(enc, idx, pad, CPU))
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(),
                                                                        torch.as_tensor(enc.label[idx]))
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses[value].append(loss.item())
    assert np.isfinite(losses["bf16"]).all()
    np.testing.assert_allclose(losses["bf16"], losses["fp32"], atol=0.05)


def test_bf16_scores_do_not_tie_on_the_bf16_grid(tiny):
    """The answer logit leaves autocast: in bf16 a logit near 14 could only move in steps of 1/16, and tied scores
    move an AUC."""
    model = _lora_model(tiny, "bf16")
    tok = load_llm(LLMConfig(model=str(tiny), device="cpu")).tokenizer
    enc = prompts.encode_frame(movie_frame(64, 8, 20, 1, seed=4), "movie_text", tok, progress=False)
    scores = score(model, enc, tok.pad_token_id, 16, progress=False)
    as_bf16 = torch.as_tensor(scores).to(torch.bfloat16).float().numpy()
    assert (scores != as_bf16).mean() > 0.9, "scores carry fp32 precision"
