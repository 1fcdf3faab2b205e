"""LightGCN (He et al., SIGIR 2020), one of the collaborative models CoLLM ships, as a collaborative encoder.

Embeddings E0 of users and items are smoothed over the user-item graph of the training split's positive rows:
E(k+1) = A_hat E(k), with A_hat = D^-1/2 A D^-1/2 the symmetrically normalised adjacency, and the vectors are
the mean of E0..E(layers). score(u, i) = <e_u, e_i>, trained like MF (configs.TrainSettings: BCE on the explicit
labels). Ids without a positive training row keep their E0 row, scaled by 1 / (layers + 1).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn

from .configs import LightGCNConfig


class LightGCN(nn.Module):
    """User and item embeddings propagated over the bipartite graph given by `edges` ([2, E]: user id, item id)."""

    max_len = 0

    def __init__(self, n_users: int, n_items: int, config: LightGCNConfig, edges: torch.Tensor) -> None:
        super().__init__()
        self.n_users, self.n_items, self.layers, self.dim = n_users, n_items, config.layers, config.dim
        self.user_embedding = nn.Embedding(n_users, config.dim)
        self.item_embedding = nn.Embedding(n_items, config.dim)
        nn.init.normal_(self.user_embedding.weight, std=config.init_std)
        nn.init.normal_(self.item_embedding.weight, std=config.init_std)
        self.register_buffer("edges", edges.long())  # saved with the weights: the graph is part of the model

    @staticmethod
    def edges_from(rows: pd.DataFrame) -> torch.Tensor:
        """The graph of the training rows: one edge per distinct (user, item) with a positive label."""
        pos = rows.loc[rows["label"] > 0, ["uid", "iid"]].drop_duplicates().to_numpy(np.int64)
        return torch.as_tensor(pos.T.copy()).reshape(2, -1)

    def adjacency(self) -> torch.Tensor:
        """A_hat over n_users + n_items nodes (items after users), sparse."""
        n = self.n_users + self.n_items
        u, i = self.edges[0], self.edges[1] + self.n_users
        index = torch.cat([torch.stack([u, i]), torch.stack([i, u])], dim=1)
        degree = torch.zeros(n, device=index.device).index_add_(0, index[0], torch.ones(index.shape[1], device=index.device))
        norm = degree.clamp(min=1).rsqrt()
        values = norm[index[0]] * norm[index[1]]
        return torch.sparse_coo_tensor(index, values, (n, n), check_invariants=False).coalesce()

    def propagate(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(user vectors, item vectors) of every id: the mean of the layer outputs."""
        x = torch.cat([self.user_embedding.weight, self.item_embedding.weight])
        adj, total = self.adjacency(), x
        for _ in range(self.layers):
            x = torch.sparse.mm(adj, x)
            total = total + x
        total = total / (self.layers + 1)
        return total[: self.n_users], total[self.n_users:]

    def user_vectors(self, uids: torch.LongTensor, history: torch.LongTensor | None = None) -> torch.Tensor:
        return self.propagate()[0][uids]

    def item_vectors(self, iids: torch.LongTensor) -> torch.Tensor:
        return self.propagate()[1][iids]

    def forward(self, uids: torch.LongTensor, iids: torch.LongTensor,
                history: torch.LongTensor | None = None) -> torch.Tensor:
        users, items = self.propagate()  # once per batch for both sides
        return (users[uids] * items[iids]).sum(-1)


def build(config: LightGCNConfig, n_users: int, n_items: int, rows: pd.DataFrame | None = None,
          state: dict[str, torch.Tensor] | None = None) -> LightGCN:
    """A fresh LightGCN of `config` over the graph of the training `rows`, or of a saved `state`
    (encoder_registry's builder)."""
    return LightGCN(n_users, n_items, config, state["edges"] if state else LightGCN.edges_from(rows))
