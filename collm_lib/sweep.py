"""Hyper-parameter sweeps that resume: one folder per setting, each finished run kept and never redone.

`run_sweep` walks the product of a grid over a dataclass config (nested fields addressed with dots, e.g.
"llm.lora_r"). Each setting gets root/<name>/<setting>/ holding config.json (the swept values and the
full config) and, once the run succeeded, result.json (written atomically, so an interrupted or failed
run never leaves one). A setting's identity (runs.identity) is its full config plus the fingerprints of its
inputs (`upstream`, e.g. the stage-1 run and MF it stands on); a folder whose result.json holds the same
identity is skipped, so re-running a sweep only runs what is missing or what changed. A failure is written
to error.txt.
"""
from __future__ import annotations

import dataclasses
import itertools
import re
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import pandas as pd
from tqdm.auto import tqdm

from . import runs, settings
from .io import atomic_path, run_info, write_json


def with_overrides(config: Any, changes: dict[str, Any]) -> Any:
    """A copy of dataclass `config` with `changes` applied; "a.b" sets field b of the dataclass in field a."""
    for key, value in changes.items():
        config = _set(config, key.split("."), value, key)
    return config


def _set(config: Any, path: list[str], value: Any, key: str) -> Any:
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise TypeError(f"sweep key {key!r}: {type(config).__name__} is not a dataclass instance")
    names = {f.name for f in dataclasses.fields(config)}
    if path[0] not in names:
        raise KeyError(f"sweep key {key!r}: {type(config).__name__} has no field {path[0]!r}; fields: {sorted(names)}")
    if len(path) > 1:
        value = _set(getattr(config, path[0]), path[1:], value, key)
    return dataclasses.replace(config, **{path[0]: value})


def format_value(value: Any) -> str:
    """Short, file-safe text for a swept value: 3e-4, 0.05, 128, True, None."""
    if isinstance(value, float) and value != 0 and not 1e-2 <= abs(value) < 1e4:
        mantissa, exponent = f"{value:.6e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return re.sub(r"[^A-Za-z0-9_.+-]+", "-", text)


def setting_name(changes: dict[str, Any]) -> str:
    """The folder of one setting, e.g. "lr=3e-4" or "lr=3e-4,llm.lora_r=8"; "base" when nothing is swept."""
    return ",".join(f"{k}={format_value(v)}" for k, v in changes.items()) or "base"


def _flatten(result: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    row = {}
    for key, value in result.items():
        if isinstance(value, dict):
            row |= _flatten(value, f"{prefix}{key}.")
        else:
            row[f"{prefix}{key}"] = value
    return row


def run_sweep(name: str, base_config: Any, grid: dict[str, list], run_fn: Callable[[Any, Path], dict],
              root: str | Path, errors: str = "collect", progress: bool = True,
              upstream: Callable[[Any], dict] | None = None) -> pd.DataFrame:
    """Run `run_fn(config, out_dir)` for every setting of `grid` over `base_config`; skip finished ones.

    upstream(config): fingerprints of the inputs a setting's run depends on; part of its identity.

    errors="collect": a failing setting is recorded (error.txt, status "failed") and the others still run;
    errors="raise": the first failure is re-raised after error.txt is written.
    Returns one row per setting: its name (the folder's, e.g. "stage.lr=3e-4"), the swept values, status ("ran",
    "cached", "failed"), folder, seconds, error, and the (flattened, dotted) entries of the dict run_fn returned.
    """
    if errors not in ("collect", "raise"):
        raise ValueError(f"errors must be 'collect' or 'raise', got {errors!r}")
    if not dataclasses.is_dataclass(base_config) or isinstance(base_config, type):
        raise TypeError(f"base_config must be a dataclass instance, got {type(base_config).__name__}")
    empty = [k for k, v in grid.items() if len(v) == 0]
    if empty:
        raise ValueError(f"grid entries {empty} have no values; give each swept key at least one value")
    keys = list(grid)
    settings_list = [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]
    base = Path(root) / name
    rows = []
    for changes in tqdm(settings_list, desc=f"sweep {name}", disable=settings.quiet(progress)):
        config = with_overrides(base_config, changes)
        out = base / setting_name(changes)
        ident = runs.identity(f"sweep:{name}", config, upstream(config) if upstream else None)
        rows.append({"setting": setting_name(changes)} | changes | _run_one(config, changes, ident, run_fn, out, errors))
    return pd.DataFrame(rows)


def _run_one(config: Any, changes: dict[str, Any], ident: str, run_fn: Callable[[Any, Path], dict], out: Path,
             errors: str) -> dict[str, Any]:
    done, error_file = out / "result.json", out / "error.txt"
    row: dict[str, Any] = {"folder": str(out)}
    saved = runs.read_record(done)
    if saved is not None and saved.get("identity") == ident:
        runs.mark_used(out)
        return row | {"status": "cached", "seconds": saved.get("seconds"), "error": None} | _flatten(saved["result"])
    done.unlink(missing_ok=True)  # a stale result of another config must not survive a failed rerun
    error_file.unlink(missing_ok=True)
    write_json(out / "config.json", {"changes": changes, "config": config})
    start = time.perf_counter()
    try:
        result = run_fn(config, out)
        if not isinstance(result, dict):
            raise TypeError(f"run_fn must return a dict of results, got {type(result).__name__}")
    except Exception as exc:
        with atomic_path(error_file) as tmp:
            tmp.write_text(traceback.format_exc())
        if errors == "raise":
            raise
        return row | {"status": "failed", "seconds": round(time.perf_counter() - start, 2),
                      "error": f"{type(exc).__name__}: {exc}"}
    seconds = round(time.perf_counter() - start, 2)
    write_json(done, {"changes": changes, "config": config, "identity": ident, "result": result, "seconds": seconds,
                      "run": run_info(getattr(config, "seed", None))})
    runs.mark_used(out)
    return row | {"status": "ran", "seconds": seconds, "error": None} | _flatten(runs.plain(result))
