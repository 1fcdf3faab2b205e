"""Seed replicates of the cheap models (docs/protocol.md §7.5): MF and CTRL(DIN) trained over several seeds and
scored on the full test split, and popularity (no seed), made unless finished. Table 1 (table1.py) cuts their
per-row scores to its rows and reads every seed; its intervals resample users and seeds (metrics.bootstrap).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from . import ctrl, encoders, io, popularity, profiles, runs
from .data import Splits, load_dataset
from .llm import LLMConfig, text_encoder


def seeds_from(first: int, n: int) -> tuple[int, ...]:
    """n consecutive seeds starting at the run's own seed, so its main run is always the first replicate."""
    if n < 1:
        raise ValueError(f"the number of seeds must be at least 1, got {n}")
    return tuple(first + k for k in range(n))


def replicate_row(method: str, dataset: str, seed: int | None, test: dict[str, Any], scores: str | Path) -> dict:
    """One replicate of a method on a dataset: its test metrics (metrics.evaluate's dict: all rows, and warm and cold
    rows where present) and per-row score file."""
    part = {name: test.get(name) or {} for name in ("warm", "cold")}
    return {"method": method, "dataset": dataset, "seed": seed, "AUC": test["all"]["auc"], "UAUC": test["all"]["uauc"],
            "rows": test["all"]["rows"], "warm AUC": part["warm"].get("auc"), "cold AUC": part["cold"].get("auc"),
            "scores": str(scores)}


def _mf_and_ctrl(profile: str, data: Splits, seed: int, ctrl_overrides: dict[str, Any],
                 encoder: ctrl.TextEncoder | None, progress: bool, make: bool = True
                 ) -> tuple[Path | None, dict[str, Any] | None]:
    """MF's run folder and CTRL(DIN)'s results of one dataset at one seed, made unless finished; without `make`,
    those finished only (None for one that is not)."""
    mf_config = profiles.mf(profile, data.name, seed=seed)
    ctrl_config = profiles.ctrl(profile, seed=seed, **ctrl_overrides)
    if not make:
        mf_dir = encoders.default_dir(data, mf_config)
        return mf_dir if runs.finished(mf_dir) else None, ctrl.finished_run(data, ctrl_config, encoder)
    mf_dir = encoders.ensure(data, mf_config, progress=progress)
    return mf_dir, ctrl.run_ctrl(data, ctrl_config, encoder, progress=progress)


def _cheap_seed(task: tuple) -> None:
    """_mf_and_ctrl in a worker process (cheap_replicates with jobs > 1)."""
    profile, name, seed, ctrl_overrides, llm, data_dir = task
    _mf_and_ctrl(profile, load_dataset(name, data_dir), seed, ctrl_overrides,
                 text_encoder(llm, progress=False) if llm else None, progress=False)


def cheap_replicates(profile: str, splits: dict[str, Splits], seeds: tuple[int, ...], ctrl_overrides: dict[str, Any],
                     llm: LLMConfig | None, progress: bool = True, jobs: int = 1,
                     data_dir: str | None = None, make: bool = True) -> pd.DataFrame:
    """MF and CTRL(DIN) at the profile's settings over `seeds`, and popularity (no seed), on each full test split;
    runs already finished (the main seed's, from notebooks 02 and 06) are found, not retrained; without `make`, only
    those finished are listed (popularity, cheap, is made). CTRL aligns with `llm`'s text encodings (None: plain
    DIN). jobs > 1: the (dataset, seed) runs are made that many at a time in their own processes first (MF and CTRL
    train on one thread each)."""
    if jobs > 1 and make:
        tasks = [(profile, name, seed, ctrl_overrides, llm, data_dir) for name in splits for seed in seeds]
        runs.in_processes(_cheap_seed, tasks, jobs)
    encoder = text_encoder(llm, progress=progress) if llm else None
    rows = []
    for name, data in splits.items():
        made = popularity.ensure_popularity(data)
        rows.append(replicate_row("Popularity", name, None, made["metrics"]["test"],
                                  Path(made["run_dir"]) / "test_scores.csv"))
        for seed in seeds:
            mf_dir, made = _mf_and_ctrl(profile, data, seed, ctrl_overrides, encoder, progress, make)
            if mf_dir is not None:
                rows.append(replicate_row("MF", name, seed, io.read_json(mf_dir / "config.json")["metrics"]["test"],
                                          mf_dir / "test_scores.csv"))
            if made is not None:
                rows.append(replicate_row("CTRL (DIN)", name, seed, made["metrics"]["test"],
                                          Path(made["run_dir"]) / "test_scores.csv"))
    return frame_of(rows)


def frame_of(rows: list[dict]) -> pd.DataFrame:
    """Replicate rows as a frame; seeds stay whole numbers, blank (<NA>) where a method has none."""
    columns = ["method", "dataset", "seed", "AUC", "UAUC", "rows", "warm AUC", "cold AUC", "scores"]
    return pd.DataFrame(rows, columns=columns).astype({"seed": "Int64"})
