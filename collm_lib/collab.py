"""The collaborative model f that FECE maps into the LLM (docs/protocol.md §4): its interface, the settings every
collaborative model trains with, and matrix factorisation, the paper's.

Other collaborative models (LightGCN in lightgcn.py, SASRec in sasrec.py) implement the same interface; training,
saving, loading and scoring any of them is encoders.py.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Protocol, runtime_checkable

import pandas as pd
import torch
from torch import nn

from .configs import MFConfig, TrainSettings  # noqa: F401 (TrainSettings: re-exported, where it was before)


@runtime_checkable
class CollaborativeEncoder(Protocol):
    """Anything that maps user / item ids to `dim`-wide vectors whose dot product is its score.

    `history` ([rows, max_len] item ids, left-padded with 0) is what a sequential model reads: the items before
    each row (its `his` column). Models with `max_len == 0` ignore it; SASRec without it reads each user's last
    known history (the end of their training rows)."""

    dim: int
    max_len: int  # history items a row's user vector reads; 0: none

    def user_vectors(self, uids: torch.LongTensor, history: torch.LongTensor | None = None) -> torch.Tensor: ...

    def item_vectors(self, iids: torch.LongTensor) -> torch.Tensor: ...


class MatrixFactorization(nn.Module):
    """score(u, i) = <P_u, Q_i>; embeddings drawn from N(0, init_std); id 0 is padding (never trained on).

    bias=True adds a user, an item and a global bias (zero at start): score = <P_u, Q_i> + b_u + b_i + g. They are
    carried inside the vectors, user [P_u, b_u + g, 1] and item [Q_i, 1, b_i], so `dim` is embedding_dim + 2,
    the dot product stays the score, and FECE and Faiss see the biases like any other coordinate."""

    max_len = 0

    def __init__(self, n_users: int, n_items: int, dim: int = 256, init_std: float = 0.1, bias: bool = False) -> None:
        super().__init__()
        self.n_users, self.n_items, self.embedding_dim, self.init_std, self.bias = n_users, n_items, dim, init_std, bias
        self.dim = dim + 2 if bias else dim  # the width of user_vectors / item_vectors
        self.user_embedding = nn.Embedding(n_users, dim)
        self.item_embedding = nn.Embedding(n_items, dim)
        nn.init.normal_(self.user_embedding.weight, std=init_std)
        nn.init.normal_(self.item_embedding.weight, std=init_std)
        if bias:
            self.user_bias, self.item_bias = nn.Embedding(n_users, 1), nn.Embedding(n_items, 1)
            nn.init.zeros_(self.user_bias.weight)
            nn.init.zeros_(self.item_bias.weight)
            self.global_bias = nn.Parameter(torch.zeros(1))

    def user_vectors(self, uids: torch.LongTensor, history: torch.LongTensor | None = None) -> torch.Tensor:
        p = self.user_embedding(uids)
        if not self.bias:
            return p
        return torch.cat([p, self.user_bias(uids) + self.global_bias, torch.ones_like(p[..., :1])], dim=-1)

    def item_vectors(self, iids: torch.LongTensor) -> torch.Tensor:
        q = self.item_embedding(iids)
        if not self.bias:
            return q
        return torch.cat([q, torch.ones_like(q[..., :1]), self.item_bias(iids)], dim=-1)

    def forward(self, uids: torch.LongTensor, iids: torch.LongTensor,
                history: torch.LongTensor | None = None) -> torch.Tensor:
        return (self.user_vectors(uids) * self.item_vectors(iids)).sum(-1)


def build(config: MFConfig, n_users: int, n_items: int, rows: pd.DataFrame | None = None,
          state: dict[str, torch.Tensor] | None = None) -> MatrixFactorization:
    """A fresh MF of `config` (encoder_registry's builder; MF needs neither rows nor a state)."""
    return MatrixFactorization(n_users, n_items, config.dim, config.init_std, config.bias)


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with `n` torch CPU threads (None: unchanged): small models are faster on one."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
