"""Scoring prompts with a CoLLM model: batches (`collate`), precision (`autocast`), `score` and per-row score frames.

`score` finds the rows that share a beginning (`prefix_groups`): every candidate of one user in retrieve-then-rank
repeats the same history (on ML-1M ~130 of ~160 tokens), and so do the test rows of one user with the same history
(ML-1M's test split: 7,331 rows, ~4,100 distinct histories). Each group's shared prefix goes through the decoder once
(llm.prefix_states), its keys/values serving every row of the group, which then runs only its own tokens
(llm.continue_logits). Groups are batched by prefix length, so batches carry little padding; a group larger than a
batch keeps its prefix states across its batches. A row that shares nothing with another runs as a full prompt,
batched with such rows by length (no prefix states to hold). The logits are those of scoring every full prompt on
its own, up to float rounding (tests compare both, and a row's score with the rows around it changed);
`shared_prefix=False` runs every row as a full prompt. Under torch.distributed each rank scores its share of the
batches.

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
from .llm import base_causal_lm, continue_logits, prefix_states
from .prompts import EncodedSplit

SHARE = 0.5  # neighbouring rows (same user, sorted) share a group while their common prefix is half the shorter row


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
            "item_pos": as_t(enc.item_pos[idx]), "uids": as_t(enc.uid[idx]), "iids": as_t(enc.iid[idx]),
            "history": None if enc.history is None else as_t(enc.history[idx].astype(np.int64))}


def reads_history(module: nn.Module) -> bool:
    """Whether a CoLLM model's collaborative encoder reads each row's history (SASRec)."""
    return bool(getattr(getattr(module.hybrid, "collab", None), "max_len", 0))


def autocast(model: nn.Module) -> torch.autocast:
    """The autocast of a CoLLM model's runtime (its LLM's precision, resolved as it loaded: settings.Runtime):
    bf16, so that LoRA, FECE and the encoder, kept in fp32, run their matmuls in bf16 too; a no-op in fp32. A
    DistributedDataParallel wrapper is looked through."""
    return (model.module if hasattr(model, "module") else model).runtime.autocast()


def _common(a: np.ndarray, b: np.ndarray) -> int:
    """Length of the common token prefix of a and b."""
    n = min(len(a), len(b))
    differs = a[:n] != b[:n]
    return int(np.argmax(differs)) if differs.any() else n


def prefix_groups(enc: EncodedSplit, row_users: bool = False) -> list[tuple[int, np.ndarray]]:
    """(prefix length, rows) per group of rows that share their first `prefix length` tokens, for one prefix pass.

    Rows are sorted by user, then by the bytes of their token ids (any lexicographic order makes rows with a common
    beginning neighbours); a group runs while neighbours share at least SHARE of the shorter row. Its prefix is the
    tokens all its rows share, cut before any item slot (its vector differs per row) and before a user slot that is
    not at one position in every row (or before any user slot with `row_users`: the collaborative model reads each
    row's history, so one user's rows carry different user vectors), and leaving every row at least one token of its
    own (the one whose state predicts the answer). A group of one row gets prefix 0, as does a group whose rows share nothing before a slot:
    they run as full prompts.
    """
    order = sorted(range(len(enc)), key=lambda i: (int(enc.uid[i]), enc.input_ids[i].tobytes()))
    groups: list[list[int]] = []
    shared: list[int] = []
    for i in order:
        row = enc.input_ids[i]
        if groups:
            last = enc.input_ids[groups[-1][-1]]
            common = _common(last, row)
            if enc.uid[i] == enc.uid[groups[-1][-1]] and common >= SHARE * min(len(last), len(row)):
                groups[-1].append(i)
                shared[-1] = min(shared[-1], common)
                continue
        groups.append([i])
        shared.append(len(row))
    lengths = enc.lengths
    return [(_cut(enc, lengths, np.asarray(rows), p, row_users) if len(rows) > 1 else 0, np.asarray(rows))
            for rows, p in zip(groups, shared)]


def _cut(enc: EncodedSplit, lengths: np.ndarray, rows: np.ndarray, shared: int, row_users: bool) -> int:
    """The prefix a group of `rows` sharing `shared` tokens may run once (prefix_groups)."""
    p = min(shared, int(lengths[rows].min()) - 1)
    items = enc.item_pos[rows]
    if (items >= 0).any():
        p = min(p, int(items[items >= 0].min()))
    users = enc.user_pos[rows]
    if (row_users or len(set(users.tolist())) > 1) and (users >= 0).any():
        p = min(p, int(users[users >= 0].min()))
    return max(p, 0)


def _batches(groups: list[tuple[int, np.ndarray]], batch_size: int,
             lengths: np.ndarray) -> list[list[tuple[int, int, np.ndarray]]]:
    """Batches of at most batch_size rows, each a list of (group number, prefix, rows): groups in order of prefix
    length, then size (little padding in the prefix pass); a group larger than a batch fills whole batches of its own,
    one after another (they share its prefix states), its remainder joining other groups; full-prompt groups (prefix
    0) batch only among themselves, by length (`lengths`: tokens per row)."""
    def key(g: int) -> tuple:
        p, rows = groups[g]
        return (True, int(lengths[rows].max()), len(rows)) if p == 0 else (False, p, len(rows))

    order = sorted(range(len(groups)), key=key)
    batches: list[list[tuple[int, int, np.ndarray]]] = []
    open_batch: list[tuple[int, int, np.ndarray]] = []
    for g in order:
        p, rows = groups[g]
        whole = len(rows) - len(rows) % batch_size
        batches += [[(g, p, rows[s:s + batch_size])] for s in range(0, whole, batch_size)]
        rest = rows[whole:]
        if not len(rest):
            continue
        if open_batch and (sum(len(r) for _, _, r in open_batch) + len(rest) > batch_size
                           or (open_batch[0][1] == 0) != (p == 0)):
            batches.append(open_batch)
            open_batch = []
        open_batch.append((g, p, rest))
    return batches + ([open_batch] if open_batch else [])


@torch.no_grad()
def score(model: nn.Module, enc: EncodedSplit, pad_id: int, batch_size: int = 64, progress: bool = True,
          shared_prefix: bool = True) -> np.ndarray:
    """Answer logits for every prompt of `enc` (a CoLLM model, or one wrapped in DistributedDataParallel).

    shared_prefix: the rows of each prefix group (prefix_groups) share one prefix pass; False: every prompt in full.
    Under torch.distributed each rank scores its share of the batches and the scores are gathered on every rank.
    """
    module = model.module if hasattr(model, "module") else model
    was_training = module.training
    module.eval()
    try:
        return _score(module, enc, pad_id, batch_size, progress, shared_prefix)
    finally:
        module.train(was_training)


def _score(module: nn.Module, enc: EncodedSplit, pad_id: int, batch_size: int, progress: bool,
           shared_prefix: bool) -> np.ndarray:
    device = next(module.parameters()).device
    rank, world = rank_world()
    lm, lengths = base_causal_lm(module.llm), enc.lengths
    if shared_prefix:
        batches = _batches(prefix_groups(enc, reads_history(module)), batch_size, lengths)
    else:  # every prompt in full, by length
        order = np.argsort(enc.lengths, kind="stable")
        batches = [[(-1, 0, order[s:s + batch_size])] for s in range(0, len(order), batch_size)]
    mine = batches[rank::world]
    rows = np.concatenate([r for batch in mine for _, _, r in batch]) if mine else np.empty(0, np.int64)
    out = np.empty(len(rows), dtype=np.float32)
    kept: tuple[int, object] | None = None  # (group, its prefix states): a large group's batches share them
    done = 0
    bar = tqdm(total=len(rows), desc="score", disable=settings.quiet(progress) or rank != 0, leave=False)
    for batch in mine:
        idx = np.concatenate([r for _, _, r in batch])
        inputs = collate(enc, idx, pad_id, device)
        with autocast(module):
            if batch[0][1] == 0:  # full prompts
                logits = module(**inputs)
            else:
                embeds = module.embed(inputs["input_ids"], inputs["user_pos"], inputs["item_pos"], inputs["uids"],
                                      inputs["iids"], inputs["history"])
                prefix = np.concatenate([np.full(len(r), p) for _, p, r in batch])
                owner = np.repeat(np.arange(len(batch)), [len(r) for _, _, r in batch])
                heads = np.cumsum([0] + [len(r) for _, _, r in batch[:-1]])  # each group's first row in the batch
                if len(batch) == 1 and kept is not None and kept[0] == batch[0][0]:
                    states = kept[1]
                else:
                    states = prefix_states(lm, embeds[torch.as_tensor(heads, device=device)], prefix[heads])
                    kept = (batch[0][0], states) if len(batch) == 1 else None
                logits = continue_logits(lm, embeds, prefix, lengths[idx], states.select(owner), module.answer_id)
        out[done:done + len(idx)] = logits.float().cpu().numpy()
        done += len(idx)
        bar.update(len(idx))
    bar.close()
    if world == 1:
        return _place(len(enc), rows, out)
    gathered: list = [None] * world
    dist.all_gather_object(gathered, (rows, out))
    return _place(len(enc), np.concatenate([g[0] for g in gathered]), np.concatenate([g[1] for g in gathered]))


def _place(n: int, order: np.ndarray, values: np.ndarray) -> np.ndarray:
    result = np.empty(n, dtype=np.float32)
    result[order] = values
    return result


def scores_frame(enc: EncodedSplit, scores: np.ndarray) -> pd.DataFrame:
    """Per-row scores (user, item, label, score, not_cold): enough to recompute every metric."""
    return pd.DataFrame({"uid": enc.uid, "iid": enc.iid, "label": enc.label.astype(int), "score": scores,
                         "not_cold": enc.not_cold})
