"""Notebook parameters, checked where they enter: `check(values)` returns each coerced to its declared type (the
config dataclasses' fields are rules.py's).

papermill parses `-p name value` itself ("True"/"False"/"None" -> bool/None, numbers -> int/float, anything else
stays a string), so a notebook can receive the truthy string "false" for a bool, or 64.5 for a size, and fail
much later or not at all. Each notebook calls, right after its parameters cell and before loading anything,

    p = params.check(dict(profile=profile, data_dir=data_dir, seed=seed, lr=lr))

and uses p["lr"] etc. A bad value raises a ValueError naming the parameter, the value and what it accepts.
SPECS is the single table of every notebook parameter; tests/test_params.py fails when a notebook's parameters
cell has a name without a spec here, or a default that check() would change.
"""
from __future__ import annotations

import contextvars
import json
import math
import numbers
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from . import encoder_registry
from .configs import KINDS as INDEX_KINDS
from .rules import listing, profile_names

ITEM_TEXTS = ("llm", "hashed")  # configs.RerankConfig.item_text's Literal (a test keeps them in step)
_ENCODERS = "a list of encoder names such as mf,sasrec (collm_lib/encoder_registry.py)"
_BOOL_WORDS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


class _Bad(Exception):
    """What is wrong with a value, worded to follow it ("is not a number")."""


@dataclass(frozen=True)
class Spec:
    coerce: Callable[[Any], Any]  # the value in its declared type, or raises _Bad
    accepts: str  # what to give instead, for the error message
    none: str | None = None  # what None stands for; None: None is not accepted


# The data_dir given to the same check() call: own datasets are discovered there (docs/own_data.md).
_DATA_DIR: contextvars.ContextVar[str | None] = contextvars.ContextVar("data_dir", default=None)


def _dataset(value: Any) -> str:
    """A built-in dataset, an own dataset's name, or a path to an own dataset folder (given as its name)."""
    from collm_lib import data  # the datasets' loaders: read only when a dataset parameter is checked

    if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
        raise _Bad("is not a dataset name")
    try:
        return data.dataset_name(value, _DATA_DIR.get())
    except data.UnknownDataset:
        options = [*data.DATASETS, *data.own_datasets(_DATA_DIR.get())]
        raise _Bad(f"is not one of {listing(options)}, nor a folder holding dataset.json (docs/own_data.md)") \
            from None
    except ValueError as err:  # a misnamed or clashing folder: its message says the fix
        raise _Bad(f"cannot be used: {err}") from None


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, numbers.Integral) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _BOOL_WORDS:
        return _BOOL_WORDS[value.strip().lower()]
    raise _Bad("is not true or false")


def _integer(minimum: int, maximum: int | None = None) -> Callable[[Any], int]:
    def coerce(value: Any) -> int:
        if isinstance(value, bool):  # bool is an int subclass; True as a size is a slip
            raise _Bad("is not an integer")
        if isinstance(value, numbers.Integral) or (isinstance(value, numbers.Real) and float(value).is_integer()):
            number = int(value)
        elif isinstance(value, str):
            try:
                number = int(value)
            except ValueError:
                raise _Bad("is not an integer") from None
        else:
            raise _Bad("is not an integer")
        if number < minimum:
            raise _Bad(f"is below {minimum}")
        if maximum is not None and number > maximum:
            raise _Bad(f"is above {maximum}")
        return number
    return coerce


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, str)):
        raise _Bad("is not a number")
    try:
        return float(value)
    except ValueError:
        raise _Bad("is not a number") from None


def _positive_float(value: Any) -> float:
    number = _number(value)
    if not math.isfinite(number):
        raise _Bad("is not finite")
    if number <= 0:
        raise _Bad("is not positive")
    return number


def _fraction(value: Any) -> float:
    number = _number(value)
    if not 0 <= number < 1:
        raise _Bad("is not in [0, 1)")
    return number


def _choice(options: Callable[[], Iterable[str]]) -> Callable[[Any], str]:
    def coerce(value: Any) -> str:
        allowed = tuple(options())
        if value not in allowed:
            raise _Bad(f"is not one of {listing(allowed)}")
        return value
    return coerce


def _list_of(element: Callable[[Any], Any]) -> Callable[[Any], list]:
    def coerce(value: Any) -> list:
        if isinstance(value, str):  # from the command line: JSON ("[1e-4, 1e-3]") or comma-separated ("1e-4,1e-3")
            try:
                value = json.loads(value)
            except ValueError:
                value = [part.strip() for part in value.split(",")]
        if isinstance(value, Mapping):
            raise _Bad("is not a list")
        items = list(value) if isinstance(value, (list, tuple)) else [value]  # a lone value: `-p ks 10` gives 10
        if not items:
            raise _Bad("is empty")
        out = []
        for item in items:
            try:
                out.append(element(item))
            except _Bad as bad:
                raise _Bad(f"has element {item!r}, which {bad}") from None
        return out
    return coerce


def _json_dict(value: Any) -> Mapping:
    """A dict given as such or as its JSON (from the command line)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise _Bad("is not JSON") from None
    if not isinstance(value, Mapping):
        raise _Bad("is not a dict")
    return value


def _overrides(value: Any) -> dict[str, dict]:
    value = _json_dict(value)
    out = {}
    for name, change in value.items():
        try:
            key = _dataset(name)
        except _Bad as bad:
            raise _Bad(f"has key {name!r}, which {bad}") from None
        if not isinstance(change, Mapping):
            raise _Bad(f"maps {name!r} to {change!r}, which is not a dict")
        out[key] = dict(change)
    return out


def _lora(value: Any) -> dict[str, Any]:
    """LLMConfig's LoRA fields to change: {"lora_r": 16, "lora_targets": ["all-linear"]}, a dict or its JSON."""
    value = _json_dict(value)
    out = {}
    for name, change in value.items():
        if name not in _LORA:
            raise _Bad(f"has key {name!r}, which is not one of {listing(LORA_FIELDS)}")
        try:
            out[name] = _LORA[name](change)
        except _Bad as bad:
            raise _Bad(f"maps {name!r} to {change!r}, which {bad}") from None
    return out



def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Bad("is not a non-empty string")
    return value


def _path(value: Any) -> str:
    return _text(os.fspath(value) if isinstance(value, os.PathLike) else value)


_BOOL = "True or False (or true/false, yes/no, 1/0)"
_PROFILE = "the profile's value"
_PLAN = "the profile's plan"

# llm.LLMConfig's LoRA fields, each with its coercion (tests keep the names in step with LLMConfig)
_LORA: dict[str, Callable[[Any], Any]] = {"lora_r": _integer(1), "lora_alpha": _integer(1), "lora_dropout": _fraction,
                                         "lora_targets": lambda v: tuple(_list_of(_text)(v))}
LORA_FIELDS = tuple(_LORA)

SPECS: dict[str, Spec] = {
    "profile": Spec(_choice(profile_names), "a run profile name", "$COLLM_PROFILE, else 'cpu'"),
    "data_dir": Spec(_path, "a folder path", "$COLLM_DATA_DIR, else <repo>/data/raw"),
    "work_dir": Spec(_path, "a folder path", "$COLLM_WORK_DIR, else <repo>/data"),
    "rebuild": Spec(_boolean, _BOOL),
    "seed": Spec(_integer(0, 2**32 - 1), "an int from 0 to 2**32 - 1 such as 2023"),  # numpy's seed range
    "dim": Spec(_integer(1), "a positive int such as 256"),
    "init_std": Spec(_positive_float, "a positive float such as 0.1"),
    "datasets": Spec(_list_of(_dataset), "a list of dataset names or folders such as ml-1m,bookcrossing"),
    "overrides": Spec(_overrides, 'a dict of dataset -> MFConfig changes such as {"bookcrossing": {"patience": 5}}'),
    "dataset": Spec(_dataset, "a dataset name or folder such as ml-1m"),
    "model": Spec(_text, "the embedded smollm2-135m, a model folder, or a Hugging Face Hub id such as "
                         "Qwen/Qwen2.5-0.5B-Instruct"),
    "lora": Spec(_lora, 'a dict of LoRA settings such as {"lora_r": 16, "lora_targets": ["all-linear"]} ({} for '
                        "LLMConfig's: r 8, alpha 16, dropout 0.05, q_proj and v_proj)"),
    "lr": Spec(_positive_float, "a positive float such as 1e-3", _PROFILE),
    "stage1_lr": Spec(_positive_float, "a positive float such as 1e-3", _PROFILE),
    "unfreeze_mf": Spec(_boolean, _BOOL),
    "ks": Spec(_list_of(_integer(1)), "a list of positive ints such as 10,20,50", _PROFILE),
    "n_users": Spec(_integer(0), "a non-negative int such as 20", _PROFILE),
    "n_full_users": Spec(_integer(0), "a non-negative int such as 2", _PROFILE),
    "n_neighbors": Spec(_integer(1), "a positive int such as 10", _PROFILE),
    "neighbor_curve": Spec(_list_of(_integer(1)), "a list of positive ints such as 1,10", _PROFILE),
    "index_kind": Spec(_choice(lambda: INDEX_KINDS), f"one of {listing(INDEX_KINDS)}", _PROFILE),
    "item_text": Spec(_choice(lambda: ITEM_TEXTS), f"one of {listing(ITEM_TEXTS)}", _PROFILE),
    "shared_prefix": Spec(_boolean, _BOOL, "True"),
    "lrs": Spec(_list_of(_positive_float), "a list of positive floats such as 1e-4,1e-3", _PLAN),
    "dims": Spec(_list_of(_integer(1)), "a list of positive ints such as 64,128,256", _PLAN),
    "encoders": Spec(_list_of(_choice(encoder_registry.names)), _ENCODERS, _PROFILE),
    "stage2_encoders": Spec(_list_of(_choice(encoder_registry.names)), _ENCODERS, _PROFILE),
}


def check(values: Mapping[str, Any]) -> dict[str, Any]:
    """The given parameters coerced to their specs (a new dict); ValueError on an unknown name or a bad value.
    Every notebook calls it first, so in a replay it also prints where the notebook's runs come from."""
    from . import bundle, settings  # bundle loads torch (runs, distributed): only once a notebook checks them

    if settings.replaying():
        for line in bundle.provenance():
            print(line)
    unknown = sorted(set(values) - set(SPECS))
    if unknown:
        raise ValueError(f"unknown parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(SPECS))}")
    data_dir = values.get("data_dir")
    token = _DATA_DIR.set(os.fspath(data_dir) if isinstance(data_dir, (str, os.PathLike)) and data_dir else None)
    try:
        return {name: _coerce(name, SPECS[name], value) for name, value in values.items()}
    finally:
        _DATA_DIR.reset(token)


def _coerce(name: str, spec: Spec, value: Any) -> Any:
    give = spec.accepts + (f", or None for {spec.none}" if spec.none is not None else "")
    if value is None:
        if spec.none is not None:
            return None
        problem = "None is not accepted"
    else:
        try:
            return spec.coerce(value)
        except _Bad as bad:
            problem = f"{value!r} {bad}"
    raise ValueError(f"parameter {name}: {problem}; give {give}")
