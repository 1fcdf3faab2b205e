"""Where each value of a step's config comes from: `collm config --profile cpu --step stage2`.

One precedence, lowest first: the dataclass's defaults (with the code it configures) < the profile's tables in
profiles.py, in the order profiles.layers lists them < a notebook parameter or a CLI option < a keyword argument
in code. `sources` builds the step's config as the notebooks do (profiles.py), then names, for every field, the
last layer that set it; the values that are resolved on the machine at run time (the LLM's precision "auto" and
device None) say what they resolve to here.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from . import encoder_registry, profiles, settings


def build(step: str, profile: str | None = None, dataset: str = "ml-1m") -> Any:
    """The config of `step` (profiles.steps()) at the profile's values, as the notebooks build it."""
    if step in ("stage1", "stage2"):
        return profiles.stage(profile, int(step[-1]), dataset=dataset)
    if step in encoder_registry.ENCODERS:
        return profiles.encoder(profile, dataset, step)
    builders = {"prepare": profiles.prepare, "index": profiles.index, "rerank": profiles.rerank,
                "ctrl": profiles.ctrl, "compare": profiles.compare, "plan": profiles.plan}
    if step not in builders:
        raise ValueError(f"step {step!r}: choose one of {', '.join(profiles.steps())}")
    return builders[step](profile)


def _flat(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a.b": value} of nested dicts (a dataclass's asdict, a table's entry)."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict) and value and all(isinstance(k, str) for k in value):
            out |= _flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def _defaults(config: Any, prefix: str = "") -> dict[str, str]:
    """{"field": "default (Class)"} of a dataclass and the dataclasses it holds."""
    out = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            out |= _defaults(value, f"{prefix}{f.name}.")
        else:
            out[f"{prefix}{f.name}"] = f"default ({type(config).__name__})"
    return out


def sources(step: str, profile: str | None = None, dataset: str = "ml-1m") -> list[dict[str, Any]]:
    """Every field of the step's config: {"field", "value", "source"}, plus "here" where the value is resolved on
    this machine at run time."""
    config = build(step, profile, dataset)
    origin = _defaults(config)
    found = profiles.layers(step, profile, dataset if step in encoder_registry.ENCODERS else None)
    if step == "stage1" or step == "stage2":
        found = [*found, (f"keyword argument dataset={dataset!r} (--dataset)", {"dataset": dataset}),
                 (f"the step ({step})", {"stage": int(step[-1])})]
    if step in ("compare", "plan"):  # the plans carry their profile's name
        found = [("the profile (--profile)", {"profile": settings.profile_name(profile)}), *found]
    for where, fields in found:
        origin |= {key: where for key in _flat(fields)}
    rows = []
    for key, value in _flat(dataclasses.asdict(config)).items():
        row = {"field": key, "value": value, "source": origin.get(key, origin.get(key.split(".")[0], "default"))}
        if key == "llm.precision" and value == "auto":
            row["here"] = settings.precision_note(settings.device(config.llm.device))
        elif key.endswith("device") and value is None:
            row["here"] = str(settings.device())
        rows.append(row)
    return rows


def lines(step: str, rows: list[dict[str, Any]], profile: str | None) -> list[str]:
    """`collm config`'s text: one line per field, value and source aligned."""
    width = max(len(r["field"]) for r in rows)
    value_width = min(40, max(len(repr(r["value"])) for r in rows))
    head = [f"{step} at profile {settings.profile_name(profile)} (defaults < profile tables < notebook parameter / "
            "CLI option < keyword argument)"]
    return head + [f"{r['field']:<{width}}  {repr(r['value']):<{value_width}}  {r['source']}"
                   + (f"  -> here: {r['here']}" if "here" in r else "") for r in rows]
