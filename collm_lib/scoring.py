"""Scoring prompts with a CoLLM model: batches (`collate`), autocast, `score` and per-row score frames.

`score` runs each prompt in full, prompts grouped by length so batches carry little padding, and under
torch.distributed each rank scores its share. With `shared_prefix=True` it scores the rows of each user through
one pass over their common beginning: every prompt of one user in retrieve-then-rank (K candidates, or the whole
catalogue) repeats the same history, on ML-1M ~130 of ~160 tokens. Per group of rows with the same user, the
longest common token prefix (cut before the first item slot, whose vector changes per row) goes through the
decoder once; its keys/values are shared by every suffix of the group, which only runs its own ~25-35 tokens.
The logits are those of scoring the full prompts (tests compare both paths), for ~5x fewer tokens through the
model; the time it saves is measured by benchmarks/bench_rerank.py (benchmarks/results/rerank_cpu_ml1m.json).

`frozen_prefix` tells training which tokens of a row it may run forward-only (before the first ID slot).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from . import settings
from .distributed import rank_world
from .llm import answer_head, base_causal_lm, cache_arg_name, last_positions
from .prompts import EncodedSplit


def frozen_prefix(enc: EncodedSplit, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(prefix, lengths) of the rows `idx`: the tokens each row has before its first ID slot, which stage 2 can run
    forward-only, and its length; None when a row has no such token (nothing to gain, nothing to pack)."""
    slots = np.stack([enc.user_pos[idx], enc.item_pos[idx]])
    prefix = np.where(slots >= 0, slots, np.iinfo(np.int64).max).min(axis=0)
    if (prefix <= 0).any() or (prefix == np.iinfo(np.int64).max).any():
        return None
    lengths = np.fromiter((len(enc.input_ids[i]) for i in idx), dtype=np.int64, count=len(idx))  # this batch only
    return prefix.astype(np.int64), lengths


def collate(enc: EncodedSplit, idx: np.ndarray, pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Right padding: real tokens never attend to pads and keep their natural positions."""
    seqs = [enc.input_ids[i] for i in idx]
    width = max(len(s) for s in seqs)
    ids = np.full((len(seqs), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(seqs), width), dtype=np.int64)
    for r, s in enumerate(seqs):
        ids[r, : len(s)] = s
        mask[r, : len(s)] = 1
    as_t = lambda a: torch.as_tensor(a, device=device)  # noqa: E731
    return {"input_ids": as_t(ids), "attention_mask": as_t(mask), "user_pos": as_t(enc.user_pos[idx]),
            "item_pos": as_t(enc.item_pos[idx]), "uids": as_t(enc.uid[idx]), "iids": as_t(enc.iid[idx])}


def autocast(device: torch.device):
    """bf16 autocast on GPU (settings.compute_dtype); a no-op on CPU."""
    return torch.autocast(device.type, dtype=settings.compute_dtype(device), enabled=device.type == "cuda")


@torch.no_grad()
def score(model: nn.Module, enc: EncodedSplit, pad_id: int, batch_size: int = 64, progress: bool = True,
          shared_prefix: bool = False) -> np.ndarray:
    """Answer logits for every prompt of `enc` (a CoLLM model, or one wrapped in DistributedDataParallel).

    Full prompts: under torch.distributed each rank scores its share and the scores are gathered on every rank.
    shared_prefix: the rows of each user share one prefix pass; same values up to float rounding, pays off when
    users have many rows each; single process (it does not shard rows under torch.distributed).
    """
    module = model.module if hasattr(model, "module") else model
    was_training = module.training
    module.eval()
    try:
        return (_score_grouped if shared_prefix else _score_full)(module, enc, pad_id, batch_size, progress)
    finally:
        module.train(was_training)


def _score_full(module: nn.Module, enc: EncodedSplit, pad_id: int, batch_size: int, progress: bool) -> np.ndarray:
    """Full prompts grouped by length so batches carry little padding; each rank its share, gathered."""
    device = next(module.parameters()).device
    rank, world = rank_world()
    order = np.argsort(enc.lengths, kind="stable")[rank::world]
    out = np.empty(len(order), dtype=np.float32)
    for start in tqdm(range(0, len(order), batch_size), desc="score", disable=settings.quiet(progress) or rank != 0,
                      leave=False):
        idx = order[start:start + batch_size]
        with autocast(device):
            out[start:start + len(idx)] = module(**collate(enc, idx, pad_id, device)).float().cpu().numpy()
    if world == 1:
        return _place(len(enc), order, out)
    gathered: list = [None] * world
    dist.all_gather_object(gathered, (order, out))
    return _place(len(enc), np.concatenate([g[0] for g in gathered]), np.concatenate([g[1] for g in gathered]))


def _place(n: int, order: np.ndarray, values: np.ndarray) -> np.ndarray:
    result = np.empty(n, dtype=np.float32)
    result[order] = values
    return result


def _score_grouped(module: nn.Module, enc: EncodedSplit, pad_id: int, batch_size: int, progress: bool) -> np.ndarray:
    """The rows of each user through one pass over their shared prefix and batched suffix passes."""
    device = next(module.parameters()).device
    out = np.empty(len(enc), dtype=np.float32)
    groups = pd.Series(np.arange(len(enc))).groupby(enc.uid).indices
    for idx in tqdm(groups.values(), desc="score (shared prefix)", disable=settings.quiet(progress), leave=False):
        with autocast(device):
            out[idx] = _group_scores(module, enc, np.asarray(idx), pad_id, batch_size, device)
    return out


def shared_length(seqs: list[np.ndarray], cut_before: np.ndarray) -> int:
    """Tokens common to all `seqs`, ending before every position in `cut_before` (-1: none) and leaving each
    sequence at least one token of its own (the position whose state predicts the answer)."""
    width = min(len(s) for s in seqs) - 1
    if width <= 0:
        return 0
    block = np.stack([s[:width] for s in seqs])
    differs = (block != block[0]).any(axis=0)
    n = int(np.argmax(differs)) if differs.any() else width
    cuts = cut_before[cut_before >= 0]
    return min(n, int(cuts.min())) if len(cuts) else n


def _layer_tensors(cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    if hasattr(cache, "layers"):
        return [(layer.keys, layer.values) for layer in cache.layers]
    return list(zip(cache.key_cache, cache.value_cache))


def _group_scores(module: nn.Module, enc: EncodedSplit, idx: np.ndarray, pad_id: int, batch_size: int,
                  device: torch.device) -> np.ndarray:
    """Answer logits of the rows `idx` (one user) through one prefix pass and batched suffix passes."""
    from transformers import DynamicCache

    lm = base_causal_lm(module.llm)
    decoder, cache_arg = lm.get_decoder(), cache_arg_name(lm.get_decoder())
    seqs = [enc.input_ids[i] for i in idx]
    user_pos, item_pos = enc.user_pos[idx], enc.item_pos[idx]
    # the user slot may sit in the prefix only where it is at one position in every row
    p = shared_length(seqs, np.concatenate([item_pos, user_pos if len(set(user_pos)) > 1 else [-1]]))
    as_t = lambda a: torch.as_tensor(np.asarray(a), device=device)  # noqa: E731
    uids, iids = as_t(enc.uid[idx]), as_t(enc.iid[idx])
    layers = None
    if p > 0:
        prefix_cache = DynamicCache()
        in_prefix = user_pos[0] if 0 <= user_pos[0] < p else -1
        embeds = module.embed(as_t(seqs[0][:p])[None], as_t([in_prefix]), as_t([-1]), uids[:1], iids[:1])
        decoder(inputs_embeds=embeds, attention_mask=torch.ones(1, p, dtype=torch.long, device=device),
                use_cache=True, **{cache_arg: prefix_cache})
        layers = _layer_tensors(prefix_cache)
    out = np.empty(len(idx), dtype=np.float32)
    order = np.argsort([len(s) for s in seqs], kind="stable")  # similar suffix lengths batched together
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        suffixes = [seqs[r][p:] for r in rows]
        width = max(len(s) for s in suffixes)
        ids = np.full((len(rows), width), pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), p + width), dtype=np.int64)
        mask[:, :p] = 1
        for r, s in enumerate(suffixes):
            ids[r, :len(s)] = s
            mask[r, p:p + len(s)] = 1
        shift = lambda pos: np.where(pos[rows] >= p, pos[rows] - p, -1)  # noqa: E731
        embeds = module.embed(as_t(ids), as_t(shift(user_pos)), as_t(shift(item_pos)), uids[rows], iids[rows])
        kwargs = {}
        if layers is not None:
            kwargs[cache_arg] = DynamicCache([(k.expand(len(rows), -1, -1, -1), v.expand(len(rows), -1, -1, -1))
                                              for k, v in layers])
        positions = torch.arange(p, p + width, device=device)[None].expand(len(rows), -1)
        hidden = decoder(inputs_embeds=embeds, attention_mask=as_t(mask), position_ids=positions,
                         use_cache=layers is not None, **kwargs).last_hidden_state
        last = as_t([len(s) - 1 for s in suffixes])
        out[rows] = answer_head(lm, last_positions(hidden, last), module.answer_id).float().cpu().numpy()
    return out


def scores_frame(enc: EncodedSplit, scores: np.ndarray) -> pd.DataFrame:
    """Per-row scores (user, item, label, score, not_cold): enough to recompute every metric."""
    return pd.DataFrame({"uid": enc.uid, "iid": enc.iid, "label": enc.label.astype(int), "score": scores,
                         "not_cold": enc.not_cold})
