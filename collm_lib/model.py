"""The CoLLM model: an LLM (+LoRA) that scores a prompt, its ID slots filled by the FECE hybrid encoder.

Also what each stage trains (`set_trainable`) and what a checkpoint holds (`adapter_state`, `load_adapter_state`).
Scoring prompts with it lives in `scoring`, training it in `train`.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .fece import HybridEncoder, build_inputs_embeds
from .llm import LLMBundle, answer_logits, base_causal_lm


class CoLLM(nn.Module):
    """LLM (+LoRA) scoring a prompt; with a HybridEncoder, the ID slots carry collaborative tokens."""

    def __init__(self, bundle: LLMBundle, hybrid: HybridEncoder | None = None):
        super().__init__()
        self.llm = bundle.model
        self.hybrid = hybrid
        self.answer_id = bundle.answer_id
        self.runtime = bundle.runtime  # device and precision, resolved as the LLM loaded (settings.Runtime)

    def embed(self, input_ids, user_pos, item_pos, uids, iids, history=None) -> torch.Tensor:
        """Token embeddings with the ID slots (position -1: none in that row) filled by the hybrid encoder (`history`:
        each row's last history item ids, for an encoder that reads them)."""
        embedding = base_causal_lm(self.llm).get_input_embeddings()
        slots = []
        if self.hybrid is not None:  # no "any slot?" test: it would sync with the GPU on every step
            user_vec, item_vec = self.hybrid(uids, iids, history)
            slots = [(user_pos, user_vec), (item_pos, item_vec)]
        return build_inputs_embeds(embedding, input_ids, slots)

    def forward(self, input_ids, attention_mask, user_pos, item_pos, uids, iids, history=None,
                split: tuple[np.ndarray, np.ndarray] | None = None) -> torch.Tensor:
        """Answer logits; with split = (prefix, lengths) per row, each row's tokens before its ID slots run without
        autograd (llm.answer_logits)."""
        embeds = self.embed(input_ids, user_pos, item_pos, uids, iids, history)
        return answer_logits(self.llm, embeds, attention_mask, self.answer_id, split)


def set_trainable(model: CoLLM, stage: int, unfreeze_mf: bool = False) -> list[str]:
    """Stage 1: LoRA only. Stage 2: the mapping only (+ MF if asked). Returns the trainable names."""
    for name, p in model.named_parameters():
        if stage == 1:
            p.requires_grad_("lora_" in name)
        else:
            p.requires_grad_(name.startswith("hybrid.mapper.") or (unfreeze_mf and name.startswith("hybrid.collab.")))
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    if not names:
        raise ValueError(f"stage {stage}: nothing to train (no LoRA layers or no hybrid encoder)")
    return names


def adapter_state(model: CoLLM) -> dict[str, torch.Tensor]:
    """What a checkpoint holds: LoRA and the mapping, plus the collaborative model only while it trains (a frozen
    MF is reloaded from its own folder; BookCrossing's alone is ~130 MB); never the base LLM."""
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters()
            if "lora_" in n or n.startswith("hybrid.mapper.") or (n.startswith("hybrid.") and p.requires_grad)}


def load_adapter_state(model: CoLLM, state: dict[str, torch.Tensor]) -> None:
    """Copy a checkpoint's tensors into `model`, on its device and in its dtype; a name it lacks is an error."""
    own = dict(model.named_parameters())
    unknown = [k for k in state if k not in own]
    if unknown:
        raise KeyError(f"checkpoint holds parameters this model lacks: {unknown[:3]} (+{max(0, len(unknown) - 3)})")
    with torch.no_grad():
        for k, v in state.items():
            own[k].copy_(v.to(own[k].device, own[k].dtype))
