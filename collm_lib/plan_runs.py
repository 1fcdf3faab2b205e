"""What reproduce (Table 1, the parts) and figure3 (Figure 3's sweeps) share, below both: the stage runs of a
profiles.SweepPlan, notebooks 02-04's runs they stand on, sweeps of stage runs, and the phases and deadline of a
reproduction part. figure3 builds on this module, and reproduce, the orchestrator, runs figure3.
"""
from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

from . import logs, pipeline, profiles, runs, stages
from .data import Splits
from .io import read_json
from .llm import LLMConfig
from .profiles import SweepPlan
from .sweep import run_sweep

SUBSTITUTE = "amazon-book-msl"  # stands in for Amazon-Book (Figure 3b) where its raw files are absent
MAKES_ML = "run notebooks 02-04 with this profile first (or: collm reproduce --part mf, then --part ml-1m)"
MAKES_TABLE1 = "run the table1 part first: collm reproduce --part table1 (notebook 09's LLM stages of the book datasets)"


class DeadlineReached(BaseException):
    """Raised by the alarm at --deadline: a BaseException, so no `except Exception` on the way swallows it."""


def deadline_alarm(signum, frame) -> None:
    """The SIGALRM handler of a part with a deadline."""
    raise DeadlineReached("deadline reached")


class Phases:
    """Seconds per phase of a reproduction, logged as each phase ends and kept for the bundle. A phase starting after
    `deadline` (time.time()) raises DeadlineReached too: the alarm alone has let a run go on past its deadline (its
    exception lost somewhere in library code, not found), and this check does not depend on the signal."""

    def __init__(self, progress: bool = True, deadline: float | None = None):
        self.rows: list[dict[str, Any]] = []
        self.progress = progress
        self.deadline = deadline

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        if self.deadline is not None and time.time() >= self.deadline:
            raise DeadlineReached(f"deadline reached before {name}")
        start = time.perf_counter()
        status = "stopped"
        try:
            yield
            status = "done"
        finally:
            seconds = round(time.perf_counter() - start, 2)
            self.rows.append({"phase": name, "seconds": seconds, "status": status})
            logs.say(f"[phase] {name}: {seconds:.1f} s ({status})")


def stage_run(plan: SweepPlan, stage: int, dataset: str, seed: int = 2023, llm: LLMConfig | None = None,
              sweep: bool = False, **mf_changes: Any) -> stages.StageRun:
    """A stage run of the plan's size: ML-1M's at notebooks 03-04's (the profile's), the other datasets' with
    plan.stage over it; with `sweep`, a Figure 3 point's, plan.sweep over that. Stage 2 sits on the profile's MF for
    the dataset, changed by `mf_changes`."""
    sizes = ({} if dataset == "ml-1m" else plan.stage) | (plan.sweep if sweep else {})
    config = profiles.stage(plan.profile, stage, dataset=dataset, seed=seed, llm=llm or LLMConfig(), **sizes)
    mf = profiles.mf(plan.profile, dataset, seed=seed, **mf_changes) if stage == 2 else None
    return stages.StageRun(config, mf)


def main_runs(profile: str, splits: Splits, seed: int = 2023, llm: LLMConfig | None = None,
              progress: bool = True) -> dict[str, Path]:
    """The folders of notebooks 02-04's runs of `splits` at the profile's defaults (pipeline.folders)."""
    return pipeline.folders(pipeline.RunContext(splits, profile, seed, llm or LLMConfig(), progress))


def finished_results(folder: Path, what: str, how: str = MAKES_ML) -> dict:
    """results.json of the finished run in `folder`, else FileNotFoundError naming it and `how` to make it."""
    runs.require_finished(folder, what, how)
    return read_json(folder / "results.json")


def two_stages(plan: SweepPlan, dataset: str, seed: int = 2023, llm: LLMConfig | None = None) -> stages.TwoStages:
    """Stage 1 then stage 2 of the plan's Figure 3 points on `dataset`, over the profile's MF (Figure 3(a))."""
    first, second = (stage_run(plan, k, dataset, seed, llm, sweep=True) for k in (1, 2))
    return stages.TwoStages(first.stage, second.stage, second.mf)


def sweep_frame(name: str, run: stages.StageRun | stages.TwoStages, grid: dict, splits: Splits, root: Path,
                stage1_dir: Path | None = None, progress: bool = True) -> pd.DataFrame:
    """sweep.run_sweep of stage runs (StageRun: one stage; TwoStages: both), stopping at the first error; one row per
    setting, its (stage 2's) run folder located."""
    fn, upstream = (pipeline.two_stage_fns(splits, progress) if isinstance(run, stages.TwoStages)
                    else pipeline.sweep_fns(splits, stage1_dir, progress=progress))
    frame = run_sweep(name, run, grid, fn, root, errors="raise", progress=progress, upstream=upstream)
    frame = frame.assign(run_dir=frame["run_dir"].map(runs.locate))  # records keep it relative to the work dir
    for folder in frame["run_dir"]:  # a setting found finished (or made by a --jobs worker) names its run only here
        runs.mark_used(folder)
    return frame
