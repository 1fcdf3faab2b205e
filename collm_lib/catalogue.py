"""A dataset's ids as a trained stage-2 model sees them, shared by retrieve-then-rank (`rerank`) and cold-id matching
(`matching`): item titles by id, the warm users and items (those the MF was trained on), and every id's
collaborative vector.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .data import Splits


def item_titles(splits: Splits) -> dict[int, str]:
    """iid -> title from every split, targets and histories alike (valid_small is a subset of valid)."""
    titles: dict[int, str] = {}
    for frame in (splits.train, splits.valid, splits.test):
        for his, his_title in zip(frame["his"], frame["his_title"]):
            titles.update(zip(map(int, his), his_title))
        titles.update(zip(frame["iid"].astype(int), frame["title"]))
    if not titles:
        raise ValueError(f"{splits.name}: no item titles in any split; rebuild the dataset")
    return titles


def train_ids(splits: Splits) -> tuple[set[int], set[int]]:
    """Warm users and items: those with rows in the frame the MF was trained on."""
    train = splits.collab_rows
    return set(train["uid"].astype(int)), set(train["iid"].astype(int))


@torch.no_grad()
def mf_tables(collab: nn.Module, n_users: int, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """All user and item vectors (row = id) of any collaborative encoder, as float32 numpy."""
    dev = next(collab.parameters()).device
    users = collab.user_vectors(torch.arange(n_users, device=dev)).float().cpu().numpy()
    return users, collab.item_vectors(torch.arange(n_items, device=dev)).float().cpu().numpy()
