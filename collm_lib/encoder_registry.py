"""The collaborative models (encoders) under FECE, by name: each one's config class, model builder, label and
whether it reads each row's history. Read here, without torch, by the CLI, the profiles, the notebook parameters,
the comparison and encoders.py, so that a new encoder is its own module plus one entry in ENCODERS
(CONTRIBUTING.md). One kept outside the library joins at run time with register() (tests/toy_encoder.py is one,
registered by tests/test_encoder_registry.py): the CLI, the profiles, the notebook parameters and the comparison
then offer it too.

An encoder's module holds:
- its config, a dataclass subclassing configs.TrainSettings (how every encoder trains) with a `dim` field; each
  field of its own carries its rule (`field(metadata=rules.rule(...))`, rules.py) unless CONFIG_RULES has one;
- a builder `build(config, n_users, n_items, rows=None, state=None) -> nn.Module`: a fresh model, whose data (a
  graph, last histories) come from the training `rows` (uid, iid, label[, his]) or from a saved `state`;
- the model (collab.CollaborativeEncoder): n_users, n_items, dim, max_len (history items read; 0: none),
  user_vectors, item_vectors, and forward(uids, iids[, history]) -> one logit per row.
"""
from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any


@dataclass(frozen=True)
class EncoderInfo:
    label: str  # as logs, tables and the comparison name it ("MF with biases")
    config: str  # "module:Class": its config dataclass (a configs.TrainSettings)
    builder: str  # "module:function": build(config, n_users, n_items, rows=None, state=None) -> model
    description: str  # one line, for the CLI's help
    reads_history: bool = False  # the model reads each row's history (its `his` column), as SASRec does
    kind: str = ""  # the run kind (run folder prefix, weights file): "" is the name; "mf-bias" is a kind "mf" run
    fixed: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))  # config fields the name sets


ENCODERS: dict[str, EncoderInfo] = {
    "mf": EncoderInfo("MF", "collm_lib.configs:MFConfig", "collm_lib.collab:build",
                      "matrix factorisation, the paper's (its settings: the MF options)"),
    "mf-bias": EncoderInfo("MF with biases", "collm_lib.configs:MFConfig", "collm_lib.collab:build",
                           "MF with user, item and global biases", kind="mf",
                           fixed=MappingProxyType({"bias": True})),
    "lightgcn": EncoderInfo("LightGCN", "collm_lib.configs:LightGCNConfig", "collm_lib.lightgcn:build",
                            "LightGCN, graph propagation over the training interactions"),
    "sasrec": EncoderInfo("SASRec", "collm_lib.configs:SASRecConfig", "collm_lib.sasrec:build",
                          "SASRec, self-attention over each row's history", reads_history=True),
}


def names() -> tuple[str, ...]:
    """Every encoder's name, in the registry's order."""
    return tuple(ENCODERS)


def info(name: str) -> EncoderInfo:
    """The entry of encoder `name`; ValueError naming the choices for an unknown one."""
    if name not in ENCODERS:
        raise ValueError(f"encoder {name!r}: choose one of {', '.join(ENCODERS)} (collm_lib/encoder_registry.py)")
    return ENCODERS[name]


def kind(name: str) -> str:
    """The run kind of encoder `name`: its entry's kind, else the name."""
    return info(name).kind or name


def kinds() -> dict[str, EncoderInfo]:
    """{run kind: its entry}: the encoders whose kind is their own name (not a variant such as mf-bias)."""
    return {name: entry for name, entry in ENCODERS.items() if not entry.kind or entry.kind == name}


def resolve(target: str) -> Any:
    """The object a "module:attribute" string names (imported now: the models' modules load torch)."""
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)


def config_class(name: str) -> type:
    """The config dataclass of encoder `name`."""
    return resolve(info(name).config)


def register(name: str, entry: EncoderInfo) -> EncoderInfo:
    """Add encoder `name` (an encoder of your own, outside the library) after checking that its entry resolves:
    ValueError naming the problem for a name already taken or malformed, a config that is not a configs.TrainSettings
    dataclass with a `dim` and a rule for every field, or a builder that is not callable."""
    import dataclasses

    from . import rules
    from .configs import TrainSettings

    if name in ENCODERS:
        raise ValueError(f"encoder {name!r} is registered already ({ENCODERS[name].label}); choose another name")
    if not name or not all(c.isalnum() or c in "-_" for c in name):
        raise ValueError(f"encoder name {name!r}: use letters, digits, '-' and '_' (it names run folders)")
    try:
        config, builder = resolve(entry.config), resolve(entry.builder)
    except (ImportError, AttributeError, ValueError) as err:
        raise ValueError(f"encoder {name!r}: {err}; config and builder are 'module:attribute' strings of an "
                         "importable module") from err
    if not (isinstance(config, type) and issubclass(config, TrainSettings) and dataclasses.is_dataclass(config)):
        raise ValueError(f"encoder {name!r}: config {entry.config} is not a dataclass subclassing "
                         "collm_lib.configs.TrainSettings")
    fields = [f.name for f in dataclasses.fields(config)]
    if "dim" not in fields:
        raise ValueError(f"encoder {name!r}: config {entry.config} has no `dim` field (its vectors' width)")
    unruled = [f for f in fields if rules.rule_of(config, f) is None]
    if unruled:
        raise ValueError(f"encoder {name!r}: config {entry.config} field(s) {', '.join(unruled)} have no rule; give "
                         "each metadata=rules.field_rule(...)")
    if not callable(builder):
        raise ValueError(f"encoder {name!r}: builder {entry.builder} is not callable")
    ENCODERS[name] = entry
    return entry


def help_text() -> str:
    """The encoders and what each is, for the CLI's --encoder."""
    return "; ".join(f"{name}: {entry.description}" for name, entry in ENCODERS.items())
