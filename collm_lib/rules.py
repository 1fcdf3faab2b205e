"""Config dataclasses' fields, checked as the configs are built: CONFIG_RULES holds a rule for every field of every
config class, `check_config` applies them (each config's __post_init__ calls it, so dataclasses.replace does too).

Fields are checked, not coerced: a value of another type would change a run's identity (the hash of its config).
A refused value raises ConfigError naming the field and what it accepts; the CLI turns it into an error naming
the option (cli._checked), the library where the config enters. Notebook parameters are params.py's.
"""
from __future__ import annotations

import importlib
import math
import numbers
from collections.abc import Callable, Iterable, Mapping
from dataclasses import fields
from typing import Any

from .settings import PROFILES


def profile_names() -> Iterable[str]:
    """The run profiles (settings.PROFILES), for the rules that name one."""
    return PROFILES


def listing(options: Iterable[Any]) -> str:
    """Options as a message lists them: 'a', 'b'."""
    return ", ".join(map(repr, options))

class ConfigError(ValueError):
    """A config field's bad value. `path` names the field (("llm", "lora_r") once options.apply has nested it),
    `problem` the value and what the field accepts, for a message in the caller's terms (the CLI names the option)."""

    def __init__(self, owner: str, name: str, problem: str):
        super().__init__(f"{owner}.{name}: {problem}")
        self.path: tuple[str, ...] = (name,)
        self.problem = problem


# A rule returns None for a value it accepts, else what the field accepts, in words.
Rule = Callable[[Any], str | None]


def _test(fits: Callable[[Any], bool], words: str) -> Rule:
    return lambda value: None if fits(value) else words


def _whole(low: int, high: int | None = None) -> Rule:
    return _test(lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool)  # True as a size is a slip
                 and low <= v and (high is None or v <= high),
                 f"a whole number >= {low}" + (f" and <= {high}" if high is not None else ""))


def _real(low: float, above: bool, below: float | None = None) -> Rule:
    """Finite numbers > `low` (`above`) or >= it, and < `below` when given; an int is a number too."""
    return _test(lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)
                 and (v > low if above else v >= low) and (below is None or v < below),
                 f"a number {'>' if above else '>='} {low:g}" + (f" and < {below:g}" if below is not None else ""))


def _one_of(options: Callable[[], Iterable[Any]]) -> Rule:
    def rule(value: Any) -> str | None:
        allowed = tuple(options())
        return None if not isinstance(value, bool) and value in allowed else f"one of {listing(allowed)}"
    return rule


def _lazy(module: str, name: str) -> Callable[[], Iterable[Any]]:
    """A collection from a module that imports this one (configs) or torch (prompts), read when a config is
    checked."""
    return lambda: getattr(importlib.import_module(module), name)


def _or_none(rule: Rule, meaning: str) -> Rule:
    def either(value: Any) -> str | None:
        wanted = None if value is None else rule(value)
        return wanted and f"None ({meaning}) or {wanted}"
    return either


def _tuple_of(rule: Rule) -> Rule:
    def each(value: Any) -> str | None:
        if not isinstance(value, tuple) or not value:
            return "a non-empty tuple"
        wanted = next((w for w in map(rule, value) if w is not None), None)
        return wanted and f"a non-empty tuple, each element {wanted}"
    return each


def _device(value: Any) -> str | None:
    from collm_lib.settings import device_problem  # torch: loaded only when a device is checked, as _lazy

    return device_problem(value)


_FLAG = _test(lambda v: isinstance(v, bool), "True or False")
_NAME = _test(lambda v: isinstance(v, str) and bool(v.strip()), "a non-empty string")
_MAPPING = _test(lambda v: isinstance(v, Mapping), "a dict of field -> value")
# LLMConfig.lora_targets: module names, or "all-linear" alone
_MODULES = _test(lambda v: isinstance(v, tuple) and bool(v) and all(_NAME(n) is None for n in v)
                 and ("all-linear" not in v or len(v) == 1),
                 "a tuple of module names such as ('q_proj', 'v_proj'), or ('all-linear',): 'all-linear' already "
                 "covers every linear layer, pass it alone")
_SEED = _whole(0, 2**32 - 1)  # numpy's and pandas' seed range
_POSITIVE, _NON_NEGATIVE = _real(0, above=True), _real(0, above=False)
_COUNT = _whole(1)
_FINITE = _test(lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v),
                "a finite number")
# Upper bounds far above any sensible value, below what fails as an allocator traceback or a diverged loss
_LR = _real(0, above=True, below=10)
DIM = _whole(1, 2**14)  # an embedding of 16,384 per id is already 64 KiB per user
_BATCH = _whole(1, 2**24)
_EPOCHS = _whole(1, 10**5)
_STEPS = _whole(1, 10**8)
_WIDTH = _whole(1, 2**14)  # hidden layer sizes, LoRA rank
_DEPTH = _whole(1, 256)  # layers, heads
_DEVICE = _or_none(_device, "a GPU when present, else the CPU")
_ALL = "all of them"
_LLM = _test(lambda v: type(v).__name__ == "LLMConfig", "an LLMConfig")  # which checked itself when built

# configs.TrainSettings: the fields every collaborative model's config shares (its subclasses' through rule_of)
_TRAINING: dict[str, Rule] = {
    "lr": _LR, "weight_decay": _NON_NEGATIVE, "batch_size": _BATCH, "max_epochs": _EPOCHS, "patience": _EPOCHS,
    "init_std": _POSITIVE, "seed": _SEED, "device": _DEVICE, "eval_batch_size": _BATCH,
    "cpu_threads": _or_none(_COUNT, "torch's own thread count")}

# Every field of every config class checked here, by class name (a subclass's inherited fields by its base's name), or
# by the field's own rule (field_rule): check_config refuses a field without one, so a new field cannot go unchecked
# (tests/test_bad_input.py holds every config class's fields to rule_of).
CONFIG_RULES: dict[str, dict[str, Rule]] = {
    "LLMConfig": {"model": _NAME, "lora_r": _WIDTH, "lora_alpha": _WIDTH, "lora_dropout": _real(0, False, 1),
                  "lora_targets": _MODULES, "device": _DEVICE,
                  "precision": _one_of(_lazy("collm_lib.settings", "PRECISIONS"))},
    "StageConfig": {
        "stage": _one_of(lambda: (1, 2)), "dataset": _NAME,
        "template": _or_none(_one_of(_lazy("collm_lib.prompts", "TEMPLATES")), "the dataset's default"),
        "max_history": _COUNT,  # 0 would slice [-0:], the whole history
        "lr": _LR, "min_lr": _NON_NEGATIVE, "weight_decay": _NON_NEGATIVE, "warmup_steps": _whole(0, 10**8),
        "batch_size": _BATCH, "grad_accum": _STEPS, "max_steps": _STEPS, "eval_every": _STEPS,
        "eval_every_early": _whole(0, 10**8), "early_until": _whole(0, 10**8), "patience": _STEPS,
        "train_rows": _or_none(_COUNT, _ALL), "eval_rows": _or_none(_COUNT, _ALL),
        "test_rows": _or_none(_COUNT, _ALL), "score_batch_size": _BATCH, "unfreeze_mf": _FLAG,
        "prefix_no_grad": _FLAG, "seed": _SEED, "llm": _LLM},
    "TrainSettings": _TRAINING,
    "MFConfig": {"dim": DIM, "bias": _FLAG},
    "LightGCNConfig": {"dim": DIM, "layers": _whole(0, 256)},
    "SASRecConfig": {"dim": DIM, "layers": _DEPTH, "heads": _DEPTH,
                     "max_len": _whole(1, 50),  # prompts.HISTORY_IDS: what an EncodedSplit keeps
                     "dropout": _real(0, False, 1)},
    "SweepPlan": {
        "profile": _one_of(profile_names), "lrs": _tuple_of(_POSITIVE), "dims": _tuple_of(_COUNT), "stage": _MAPPING,
        "mf": _MAPPING, "ctrl": _MAPPING, "n_seeds": _whole(1, 1000), "n_llm_seeds": _whole(1, 1000),
        "jobs": _whole(1, 1024), "sweep": _MAPPING},
    "CTRLConfig": {
        "embed_dim": DIM, "attention_hidden": _tuple_of(_WIDTH), "mlp_hidden": _tuple_of(_WIDTH), "proj_dim": DIM,
        "max_history": _COUNT, "lr": _LR, "weight_decay": _NON_NEGATIVE, "batch_size": _BATCH,
        "max_epochs": _EPOCHS, "patience": _EPOCHS, "align_lr": _LR, "align_batch_size": _BATCH,
        "align_epochs": _EPOCHS, "align_rows": _or_none(_COUNT, _ALL), "align_seed": _SEED,
        "temperature": _POSITIVE, "encoder": _NAME, "seed": _SEED, "device": _DEVICE,
        "template": _or_none(_one_of(_lazy("collm_lib.prompts", "TEMPLATES")), "the dataset's default"),
        "cpu_threads": _or_none(_COUNT, "torch's own thread count"), "eval_batch_size": _BATCH},
    "IndexConfig": {
        "kind": _one_of(_lazy("collm_lib.configs", "KINDS")),
        "metric": _one_of(_lazy("collm_lib.configs", "METRICS")),
        "nlist": _whole(1, 2**20), "nprobe": _whole(1, 2**20), "train_points_per_list": _whole(1, 2**16),
        "hnsw_m": _whole(2, 512), "ef_construction": _whole(1, 2**16), "ef_search": _whole(1, 2**16),
        "use_gpu": _test(lambda v: v in ("auto", True, False) and v is not None, "'auto', True or False"),
        "seed": _SEED},
    "RerankConfig": {
        "ks": _tuple_of(_whole(1, 10**6)), "n_users": _or_none(_COUNT, _ALL), "n_full_users": _whole(0, 10**6),
        "n_neighbors": _whole(1, 10**4), "neighbor_curve": _tuple_of(_whole(1, 10**4)),
        "weighting": _one_of(lambda: ("uniform", "similarity")), "item_text": _one_of(lambda: ("llm", "hashed")),
        "index": _test(lambda v: type(v).__name__ == "IndexConfig", "an IndexConfig"), "score_batch_size": _BATCH,
        "test_rows": _or_none(_COUNT, _ALL), "shared_prefix": _FLAG, "seed": _SEED},
    "PrepareConfig": {"datasets": _tuple_of(_NAME), "rebuild": _FLAG},
    "InteractionSpec": {
        "user": _NAME, "item": _NAME, "label": _or_none(_NAME, "a rating column"),
        "rating": _or_none(_NAME, "a label column"), "threshold": _FINITE,
        "timestamp": _NAME, "title": _NAME, "split": _one_of(lambda: ("temporal", "user")),
        "fractions": _test(lambda v: isinstance(v, (tuple, list)) and len(v) == 3
                           and all(_POSITIVE(f) is None for f in v)
                           and abs(sum(v) - 1) < 1e-6, "three positive fractions (train, valid, test) summing to 1"),
        "valid_small_frac": _test(lambda v: _FINITE(v) is None and 0 < v <= 1, "a number > 0 and <= 1"),
        "seed": _SEED,
        "duplicates": _one_of(lambda: ("last", "first"))},
}


def field_rule(rule: Rule) -> dict[str, Rule]:
    """A field's own rule, as its metadata: `dim: int = field(default=8, metadata=rules.field_rule(rules.DIM))`."""
    return {"rule": rule}


def rule_of(owner: str | type, name: str) -> Rule | None:
    """The rule of field `name` of config class `owner` (a class, or its name for CONFIG_RULES alone): the field's
    own (field_rule), else CONFIG_RULES' for the class or the nearest base class that has one; None: no rule."""
    if isinstance(owner, str):
        return CONFIG_RULES.get(owner, {}).get(name)
    own = next((f for f in fields(owner) if f.name == name), None)
    if own is not None and "rule" in own.metadata:
        return own.metadata["rule"]
    return next((CONFIG_RULES[c.__name__][name] for c in owner.__mro__ if name in CONFIG_RULES.get(c.__name__, {})),
                None)


def check_field(owner: str | type, name: str, value: Any) -> None:
    """ConfigError when the rule of field `name` of config class `owner` (rule_of) refuses `value` (also for a
    value that is about to become one, such as a command-line seed); TypeError when the field has no rule."""
    rule = rule_of(owner, name)
    owner_name = owner if isinstance(owner, str) else owner.__name__
    if rule is None:
        raise TypeError(f"{owner_name}.{name} has no rule: give the field one (metadata=rules.field_rule(...)) or add "
                        "it to rules.CONFIG_RULES")
    wanted = rule(value)
    if wanted is not None:
        raise ConfigError(owner_name, name, f"{value!r}; it must be {wanted}")


def check_config(config: Any) -> None:
    """ConfigError for the first field of the dataclass `config` whose value its rule refuses."""
    for f in fields(config):
        check_field(type(config), f.name, getattr(config, f.name))
