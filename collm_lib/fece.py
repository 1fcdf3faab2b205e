"""FECE: the hybrid encoder that puts collaborative vectors into the LLM's token space.

A shared MLP g (d -> 10 d -> H) maps the collaborative model's user and item vectors to one LLM
token each; the prompt's ID slots take those vectors while every text token keeps its embedding
from the LLM's own table. The collaborative model is anything with `dim`, `user_vectors` and
`item_vectors` (collab.CollaborativeEncoder): MF, LightGCN or SASRec (encoders.py), which also reads each
row's history.
"""
from __future__ import annotations

import torch
from torch import nn


class FECE(nn.Module):
    """g: Linear(d, 10 d) -> ReLU -> Linear(10 d, H), shared by users and items."""

    def __init__(self, collab_dim: int, hidden_size: int, expansion: int = 10):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(collab_dim, expansion * collab_dim), nn.ReLU(),
                                 nn.Linear(expansion * collab_dim, hidden_size))

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        return self.net(vectors)


class HybridEncoder(nn.Module):
    """Collaborative model + mapping: slot vectors for (user, item) pairs."""

    def __init__(self, collab: nn.Module, hidden_size: int, expansion: int = 10):
        super().__init__()
        self.collab = collab
        self.mapper = FECE(collab.dim, hidden_size, expansion)

    def forward(self, uids: torch.Tensor, iids: torch.Tensor,
                history: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mapper(self.collab.user_vectors(uids, history)), self.mapper(self.collab.item_vectors(iids))


def build_inputs_embeds(embedding: nn.Module, input_ids: torch.Tensor,
                        slots: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """Text tokens from the LLM's embedding table; each (positions, vectors) pair fills one slot.

    `positions` holds one index per row (-1: this row has no such slot); `vectors` is [B, H].
    """
    embeds = embedding(input_ids)
    if not slots:
        return embeds
    embeds = embeds.clone()
    rows = torch.arange(input_ids.shape[0], device=input_ids.device)
    for positions, vectors in slots:
        # no boolean-mask indexing: its result size is data-dependent, which costs a GPU->host sync per batch
        # (this runs every training step); rows without the slot write their position 0 back unchanged
        at = positions.clamp(min=0)
        keep = embeds[rows, at]
        embeds[rows, at] = torch.where((positions >= 0)[:, None], vectors.to(embeds.dtype), keep)
    return embeds
