"""Uncertainty of Table 1 (docs/protocol.md §7.5): seed replicates and user-level bootstrap intervals.

Two kinds, both from saved per-row scores:
- seed spread: MF, popularity and CTRL(DIN) trained over several seeds and scored on the full test split (cheap on
  any machine), the LLM stages over the plan's LLM seeds (a GPU job); reported as mean and standard deviation;
- sampling interval: a 95 % user-level bootstrap of AUC and UAUC for every cell scored on the LLM stages' rows
  (`metrics.bootstrap`): how much the number would move on another draw of test users.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from . import ctrl, encoders, io, metrics, popularity, profiles, runs
from .data import Splits, load_dataset
from .io import score_rows
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
                 encoder: ctrl.TextEncoder | None, progress: bool) -> tuple[Path, dict[str, Any]]:
    """MF's run folder and CTRL(DIN)'s results of one dataset at one seed, made unless finished."""
    mf_dir = encoders.ensure(data, profiles.mf(profile, data.name, seed=seed), progress=progress)
    made = ctrl.run_ctrl(data, profiles.ctrl(profile, seed=seed, **ctrl_overrides), encoder, progress=progress)
    return mf_dir, made


def _cheap_seed(task: tuple) -> None:
    """_mf_and_ctrl in a worker process (cheap_replicates with jobs > 1)."""
    profile, name, seed, ctrl_overrides, llm, data_dir = task
    _mf_and_ctrl(profile, load_dataset(name, data_dir), seed, ctrl_overrides,
                 text_encoder(llm, progress=False) if llm else None, progress=False)


def cheap_replicates(profile: str, splits: dict[str, Splits], seeds: tuple[int, ...], ctrl_overrides: dict[str, Any],
                     llm: LLMConfig | None, progress: bool = True, jobs: int = 1,
                     data_dir: str | None = None) -> pd.DataFrame:
    """MF and CTRL(DIN) at the profile's settings over `seeds`, and popularity (no seed), on each full test split;
    runs already finished (the main seed's, from notebooks 02 and 06) are found, not retrained. CTRL aligns with
    `llm`'s text encodings (None: plain DIN). jobs > 1: the (dataset, seed) runs are made that many at a time in
    their own processes first (MF and CTRL train on one thread each)."""
    if jobs > 1:
        tasks = [(profile, name, seed, ctrl_overrides, llm, data_dir) for name in splits for seed in seeds]
        runs.in_processes(_cheap_seed, tasks, jobs)
    encoder = text_encoder(llm, progress=progress) if llm else None
    rows = []
    for name, data in splits.items():
        made = popularity.ensure_popularity(data)
        rows.append(replicate_row("Popularity", name, None, made["metrics"]["test"],
                                  Path(made["run_dir"]) / "test_scores.csv"))
        for seed in seeds:
            mf_dir, made = _mf_and_ctrl(profile, data, seed, ctrl_overrides, encoder, progress)
            rows.append(replicate_row("MF", name, seed, io.read_json(mf_dir / "config.json")["metrics"]["test"],
                                      mf_dir / "test_scores.csv"))
            rows.append(replicate_row("CTRL (DIN)", name, seed, made["metrics"]["test"],
                                      Path(made["run_dir"]) / "test_scores.csv"))
    return frame_of(rows)


def frame_of(rows: list[dict]) -> pd.DataFrame:
    """Replicate rows as a frame; seeds stay whole numbers, blank (<NA>) where a method has none."""
    columns = ["method", "dataset", "seed", "AUC", "UAUC", "rows", "warm AUC", "cold AUC", "scores"]
    return pd.DataFrame(rows, columns=columns).astype({"seed": "Int64"})


def spread(replicates: pd.DataFrame) -> pd.DataFrame:
    """Mean and sample standard deviation of AUC and UAUC per (method, dataset) over its replicates; one
    replicate (or popularity, which has no seed) has no spread: std is blank, not 0."""
    grouped = replicates.astype({"AUC": float, "UAUC": float}).groupby(["method", "dataset"], sort=False)
    out = grouped.agg(**{"replicates": ("AUC", "size"), "replicate rows": ("rows", "first"),
                         "replicate AUC mean": ("AUC", "mean"), "replicate AUC std": ("AUC", "std"),
                         "replicate UAUC mean": ("UAUC", "mean"), "replicate UAUC std": ("UAUC", "std")})
    return out.reset_index()


def intervals(scores: pd.DataFrame, seed: int) -> pd.DataFrame:
    """The user-level bootstrap interval of AUC and UAUC of every (method, dataset) of Table 1's per-row scores
    (table1_scores); all methods of a dataset share their users, hence their resamples."""
    rows = []
    for (method, dataset), frame in scores.groupby(["method", "dataset"], sort=False):
        boot = metrics.bootstrap(frame, seed=seed, **metrics.BOOTSTRAP)
        rows.append({"method": method, "dataset": dataset, "AUC lo": boot["auc_lo"], "AUC hi": boot["auc_hi"],
                     "UAUC lo": boot["uauc_lo"], "UAUC hi": boot["uauc_hi"],
                     "interval": f"{boot['level']:.0%} {boot['method']}"})
    return pd.DataFrame(rows)


def table1_scores(sources: dict[str, dict]) -> pd.DataFrame:
    """The per-row scores behind Table 1's cells on the LLM stages' rows (table1_results' `sources`), keyed by
    method and dataset."""
    return score_rows({(method, name): path for name, source in sources.items()
                       for method, path in source["scores"].items()}, keys=("method", "dataset"))


def replicate_scores(frame: pd.DataFrame) -> pd.DataFrame:
    """The per-row scores behind Table 1's seed spread (table1_replicates' frame), keyed by method, dataset, seed."""
    return score_rows({(r.method, r.dataset, "" if pd.isna(r.seed) else int(r.seed)): r.scores
                       for r in frame.itertuples()}, keys=("method", "dataset", "seed"))
