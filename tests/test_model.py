"""The CoLLM model: hybrid inputs, what each stage trains, checkpoints, bf16 stability."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from collm_lib import collab, prompts, scoring, settings
from collm_lib.fece import HybridEncoder, build_inputs_embeds
from collm_lib.llm import LLMConfig, add_lora, answer_logits, bundle_from
from collm_lib.model import CoLLM, adapter_state, load_adapter_state, set_trainable
from collm_lib.scoring import collate, score
from collm_lib.train import StageConfig, fit
from tiny_llm import movie_frame, real_tokenizer, tiny_llama


@pytest.fixture(scope="module")
def tok():
    return real_tokenizer()


def _model(tok, hybrid: bool, seed: int = 0, dtype=torch.float32) -> CoLLM:
    config = LLMConfig(model="tiny", device="cpu", precision="bf16" if dtype == torch.bfloat16 else "fp32")
    bundle = add_lora(bundle_from(tiny_llama(len(tok), seed, dtype), tok, config, "tiny"), config)
    enc = HybridEncoder(collab.MatrixFactorization(12, 20, dim=8), 64) if hybrid else None
    return CoLLM(bundle, enc)


def _encoded(tok, template: str, n: int = 12, seed: int = 0):
    return prompts.encode_frame(movie_frame(n, 12, 20, -1, seed), template, tok, progress=False)


def test_hybrid_path_equals_plain_path(tok):
    """Slot vectors equal to the embedding of the token they replace give the plain path's logits."""
    model = _model(tok, hybrid=False)
    model.eval()
    enc = _encoded(tok, "movie_id")
    batch = collate(enc, np.arange(len(enc)), tok.pad_token_id, torch.device("cpu"))
    table = model.llm.get_base_model().get_input_embeddings()
    with torch.no_grad():
        plain = model.llm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        last = batch["attention_mask"].sum(1) - 1
        plain_yes = plain[torch.arange(len(enc)), last, model.answer_id]
        slot_vecs = [(batch["user_pos"], table(batch["input_ids"][torch.arange(len(enc)), batch["user_pos"]])),
                     (batch["item_pos"], table(batch["input_ids"][torch.arange(len(enc)), batch["item_pos"]]))]
        hybrid = answer_logits(model.llm, build_inputs_embeds(table, batch["input_ids"], slot_vecs),
                               batch["attention_mask"], model.answer_id)
        other = answer_logits(model.llm, build_inputs_embeds(table, batch["input_ids"],
                                                             [(batch["user_pos"], slot_vecs[0][1] + 1.0)]),
                              batch["attention_mask"], model.answer_id)
    torch.testing.assert_close(hybrid, plain_yes, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(other, plain_yes)  # and the slot really feeds the model


def _changed(before: dict, model: CoLLM) -> set[str]:
    return {n for n, p in model.named_parameters() if not torch.equal(before[n], p.detach())}


@pytest.mark.parametrize("stage,unfreeze", [(1, False), (2, False), (2, True)])
def test_each_stage_changes_only_its_weights(tok, stage, unfreeze):
    model = _model(tok, hybrid=True)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    set_trainable(model, stage, unfreeze)
    enc = _encoded(tok, "movie_text" if stage == 1 else "movie_id")
    config = StageConfig(stage=stage, batch_size=4, max_steps=3, eval_every=3, warmup_steps=1, lr=1e-2,
                         weight_decay=0.1, score_batch_size=8)
    fit(model, enc, enc, config, tok.pad_token_id, progress=False)
    changed = _changed(before, model)
    assert changed
    if stage == 1:
        assert all("lora_" in n for n in changed)
        assert any("lora_A" in n for n in changed) and any("lora_B" in n for n in changed)
    else:
        assert all(n.startswith("hybrid.mapper.") or (unfreeze and n.startswith("hybrid.collab.")) for n in changed)
        assert any(n.startswith("hybrid.collab.") for n in changed) == unfreeze


def test_checkpoint_round_trip_scores_identically(tok, tmp_path):
    model = _model(tok, hybrid=True, seed=1)
    set_trainable(model, 2)
    enc = _encoded(tok, "movie_id", n=10)
    config = StageConfig(stage=2, batch_size=4, max_steps=2, eval_every=1, warmup_steps=1, score_batch_size=4)
    fit(model, enc, enc, config, tok.pad_token_id, out_dir=tmp_path, progress=False)
    expected = score(model, enc, tok.pad_token_id, batch_size=3, progress=False)
    fresh = _model(tok, hybrid=True, seed=1)  # the same base LLM and MF, as load_trained's loading gives
    saved = torch.load(tmp_path / "best.pt")
    assert not any(k.startswith("hybrid.collab.") for k in saved), "a frozen MF stays in its own folder"
    torch.manual_seed(99)
    with torch.no_grad():
        for name, p in fresh.named_parameters():
            if name in saved:
                p.normal_(0, 0.05)
    assert not np.allclose(score(fresh, enc, tok.pad_token_id, batch_size=3, progress=False), expected)
    load_adapter_state(fresh, torch.load(tmp_path / "best.pt"))
    np.testing.assert_array_equal(score(fresh, enc, tok.pad_token_id, batch_size=3, progress=False), expected)
    assert set(saved) == set(adapter_state(model))
    assert not any(k.endswith("embed_tokens.weight") for k in adapter_state(model))
    set_trainable(model, 2, unfreeze_mf=True)
    assert any(k.startswith("hybrid.collab.") for k in adapter_state(model)), "a trained MF is checkpointed"


def test_batching_and_padding_do_not_change_scores(tok):
    model = _model(tok, hybrid=True)
    enc = _encoded(tok, "movie_id", n=9)
    one = np.array([score(model, enc.subset(np.array([i])), tok.pad_token_id, progress=False)[0]
                    for i in range(len(enc))])
    np.testing.assert_allclose(score(model, enc, tok.pad_token_id, batch_size=4, progress=False), one,
                               rtol=1e-4, atol=1e-4)


def test_bf16_autocast_training_on_mixed_lengths_stays_finite(tok):
    """bf16 base weights, fp32 LoRA, right padding and a gather of the last real token."""
    model = _model(tok, hybrid=False, dtype=torch.bfloat16)
    set_trainable(model, 1)
    assert all(p.dtype == torch.float32 for p in model.parameters() if p.requires_grad)
    enc = _encoded(tok, "movie_text", n=24, seed=5)
    assert enc.lengths.min() < enc.lengths.max() - 20  # really mixed lengths
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    for step in range(6):
        idx = np.arange(step * 4, step * 4 + 4) % len(enc)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(**collate(enc, idx, tok.pad_token_id, torch.device("cpu")))
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), torch.as_tensor(enc.label[idx]))
        opt.zero_grad()
        loss.backward()
        grads = [p.grad for p in model.parameters() if p.requires_grad]
        assert torch.isfinite(loss) and all(torch.isfinite(g).all() for g in grads)
        opt.step()


def test_unknown_model_path_is_a_clear_error(tmp_path):
    from collm_lib.llm import load_llm

    with pytest.raises(FileNotFoundError, match="no Hugging Face model folder"):
        load_llm(LLMConfig(model=str(tmp_path / "missing")))


def test_the_runtime_is_resolved_once_and_carried_not_read_from_the_weights(tok):
    """The precision a model was loaded for travels with it (bundle, CoLLM) to the scorer's autocast and matching's
    tolerance; fp32 weights under a bf16 runtime still get bf16 autocast, where the old scorer read the weights."""
    bf16 = settings.runtime("cpu", "bf16")
    assert (bf16.dtype, bf16.score_tolerance) == (torch.bfloat16, {"atol": 0.25, "rtol": 1e-2})
    assert "bf16 (as requested" in bf16.note
    fp32 = settings.runtime(torch.device("cpu"), "fp32")
    assert (fp32.dtype, fp32.score_tolerance["atol"]) == (torch.float32, 1e-3)
    model = CoLLM(bundle_from(tiny_llama(len(tok), 0), tok, LLMConfig(model="tiny"), "tiny", bf16))
    assert model.runtime is bf16
    with scoring.autocast(model):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    with scoring.autocast(_model(tok, hybrid=False)):  # fp32 asked for by its config
        assert not torch.is_autocast_enabled("cpu")
    assert bundle_from(tiny_llama(len(tok), 0), tok, LLMConfig(model="tiny", device="cpu", precision="bf16"),
                       "tiny").runtime == bf16  # without one given: the config's, resolved
