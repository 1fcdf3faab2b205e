"""A toy collaborative encoder, all that a new one takes beside its registry entry (ENTRY, which
tests/test_encoder_registry.py puts into encoder_registry.ENCODERS): a config, a builder and a model. Its vectors
are an id embedding passed through one shared linear map, so that it is not MF under another name."""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
import torch
from torch import nn

from collm_lib import rules
from collm_lib.configs import TrainSettings
from collm_lib.encoder_registry import EncoderInfo

ENTRY = EncoderInfo("Toy", "toy_encoder:ToyConfig", "toy_encoder:build", "a toy of tests/toy_encoder.py")


@dataclass
class ToyConfig(TrainSettings):
    dim: int = field(default=8, metadata=rules.field_rule(rules.DIM))
    max_epochs: int = 2
    patience: int = 1


class Toy(nn.Module):
    max_len = 0  # reads no history

    def __init__(self, n_users: int, n_items: int, config: ToyConfig) -> None:
        super().__init__()
        self.n_users, self.n_items, self.dim = n_users, n_items, config.dim
        self.user_embedding = nn.Embedding(n_users, config.dim)
        self.item_embedding = nn.Embedding(n_items, config.dim)
        self.mix = nn.Linear(config.dim, config.dim, bias=False)
        for table in (self.user_embedding, self.item_embedding):
            nn.init.normal_(table.weight, std=config.init_std)

    def user_vectors(self, uids: torch.LongTensor, history: torch.LongTensor | None = None) -> torch.Tensor:
        return self.mix(self.user_embedding(uids))

    def item_vectors(self, iids: torch.LongTensor) -> torch.Tensor:
        return self.mix(self.item_embedding(iids))

    def forward(self, uids: torch.LongTensor, iids: torch.LongTensor,
                history: torch.LongTensor | None = None) -> torch.Tensor:
        return (self.user_vectors(uids) * self.item_vectors(iids)).sum(-1)


def build(config: ToyConfig, n_users: int, n_items: int, rows: pd.DataFrame | None = None,
          state: dict[str, torch.Tensor] | None = None) -> Toy:
    return Toy(n_users, n_items, config)
