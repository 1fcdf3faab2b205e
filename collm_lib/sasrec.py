"""SASRec (Kang and McAuley, ICDM 2018), one of the collaborative models CoLLM ships, as a collaborative encoder.

A row's user vector is a causal self-attention encoder's output at the last position of the row's history (its
`his` column: the items before it, last `max_len`, left-padded with 0); an item's vector is its input embedding.
score = <user vector, item vector>, trained like MF (configs.TrainSettings: BCE on the explicit labels). Because it
reads the history each row carries, a user absent from training still gets a vector from their own history.
Without a history (Faiss retrieval over uids) it reads each user's last known one: the history of their last
training row followed by that row's item when it was liked.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn

from .configs import SASRecConfig
from .prompts import history_matrix


class SASRec(nn.Module):
    """Item + learned position embeddings, `layers` pre-norm causal transformer blocks, the last position's output."""

    def __init__(self, n_users: int, n_items: int, config: SASRecConfig, last_history: torch.Tensor) -> None:
        super().__init__()
        self.n_users, self.n_items, self.dim, self.max_len = n_users, n_items, config.dim, config.max_len
        self.item_embedding = nn.Embedding(n_items, config.dim, padding_idx=0)
        self.position_embedding = nn.Embedding(config.max_len, config.dim)
        nn.init.normal_(self.item_embedding.weight, std=config.init_std)
        nn.init.normal_(self.position_embedding.weight, std=config.init_std)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()
        block = nn.TransformerEncoderLayer(config.dim, config.heads, dim_feedforward=config.dim,
                                           dropout=config.dropout, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(block, config.layers, norm=nn.LayerNorm(config.dim),
                                            enable_nested_tensor=False)
        self.dropout = nn.Dropout(config.dropout)
        self.register_buffer("last_history", last_history.long())  # [n_users, max_len]: saved with the weights
        self.register_buffer("causal", nn.Transformer.generate_square_subsequent_mask(config.max_len) == float("-inf"),
                             persistent=False)

    @staticmethod
    def last_history_from(rows: pd.DataFrame, n_users: int, max_len: int) -> torch.Tensor:
        """Each user's history at the end of `rows` (their last row's `his`, plus its item when liked)."""
        ordered = rows.sort_values("timestamp", kind="stable") if "timestamp" in rows else rows
        last = ordered.groupby("uid").tail(1)
        histories = [list(h) + ([int(i)] if y > 0 else []) for h, i, y in zip(last["his"], last["iid"], last["label"])]
        table = np.zeros((n_users, max_len), dtype=np.int64)
        table[last["uid"].to_numpy()] = history_matrix(histories, max_len)
        return torch.as_tensor(table)

    def encode(self, history: torch.LongTensor) -> torch.Tensor:
        """[rows, dim]: the output at the last position (the newest item; a row without history reads only pads)."""
        x = self.item_embedding(history) * self.dim ** 0.5 + self.position_embedding.weight[-history.shape[1]:]
        pad = history == 0
        # every position attends to itself, so an all-pad row still has one key and no NaN
        mask = self.causal[-history.shape[1]:, -history.shape[1]:]
        keys = pad[:, None, :] & ~torch.eye(history.shape[1], dtype=torch.bool, device=history.device)
        full = (mask[None] | keys).repeat_interleave(self.blocks.layers[0].self_attn.num_heads, dim=0)
        out = self.blocks(self.dropout(x), mask=full)
        return out[:, -1]

    def user_vectors(self, uids: torch.LongTensor, history: torch.LongTensor | None = None) -> torch.Tensor:
        return self.encode(self.last_history[uids] if history is None else history[:, -self.max_len:])

    def item_vectors(self, iids: torch.LongTensor) -> torch.Tensor:
        return self.item_embedding(iids)

    def forward(self, uids: torch.LongTensor, iids: torch.LongTensor,
                history: torch.LongTensor | None = None) -> torch.Tensor:
        return (self.user_vectors(uids, history) * self.item_vectors(iids)).sum(-1)


def build(config: SASRecConfig, n_users: int, n_items: int, rows: pd.DataFrame | None = None,
          state: dict[str, torch.Tensor] | None = None) -> SASRec:
    """A fresh SASRec of `config`, each user's last history from the training `rows` or a saved `state`
    (encoder_registry's builder)."""
    last = state["last_history"] if state else SASRec.last_history_from(rows, n_users, config.max_len)
    return SASRec(n_users, n_items, config, last)
