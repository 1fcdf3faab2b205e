"""Figure 3's data: the sweeps notebook 06 plots (and part "figure3" of reproduce runs) and their panels.

figure3_sweeps: the LoRA lr on ML-1M, the FECE lr on the Amazon-Book substitute, and the technical report's FECE lr
on ML-1M and MF size d, each through sweep.run_sweep at the size of the plan's sweep points (profiles.SweepPlan:
plan.sweep over plan.stage). The stage-2 sweeps
stand on stage-1 runs made elsewhere, named by figure3_needs with what makes each (notebook 03; the table1 part),
and checked before anything runs. figure3_panels says which sweep each figure of notebook 06 draws.
"""
from __future__ import annotations

import signal
import time
from pathlib import Path

import pandas as pd

from . import runs, stages
from .data import Splits, load_dataset
from .llm import LLMConfig
from .plan_runs import (MAKES_TABLE1, SUBSTITUTE, Phases, deadline_alarm, finished_results, main_runs, stage_run,
                        sweep_frame)
from .profiles import SweepPlan
from .sweep import with_overrides


def figure3_panels(profile: str) -> dict[str, tuple[str, str, str, str | None, str]]:
    """Notebook 06's sweep figures: {figure name: (sweep of figure3_sweeps, swept setting, x-axis label, the paper's
    Figure 3 panel or None, title)}."""
    return {
        f"figure3a_{profile}": ("lora_lr_ml-1m", "stage.lr", "LoRA learning rate", "a",
                                "(a) ML-1M: LoRA learning rate (stage 1)"),
        f"figure3b_{profile}": (f"fece_lr_{SUBSTITUTE}", "stage.lr", "FECE learning rate", "b",
                                "(b) Amazon-Book substitute: FECE learning rate (paper: Amazon-Book)"),
        f"fece_lr_ml-1m_{profile}": ("fece_lr_ml-1m", "stage.lr", "FECE learning rate", None,
                                     "ML-1M: FECE learning rate (stage 2)"),
        f"mf_dim_ml-1m_{profile}": ("mf_dim_ml-1m", "mf.dim", "MF embedding size d", None,
                                    "ML-1M: MF embedding size (stage 2)"),
    }


def figure3_needs(plan: SweepPlan, splits: dict[str, Splits], seed: int = 2023, llm: LLMConfig | None = None,
                  progress: bool = True) -> dict[str, tuple[Path, str]]:
    """The runs figure3_sweeps stands on and does not make: {what: (run folder, how to make it)}."""
    llm = llm or LLMConfig()
    ml_stage1 = main_runs(plan.profile, splits["ml-1m"], seed, llm, progress)["stage1"]
    sub_stage1 = stages.stage_dir(splits[SUBSTITUTE], stage_run(plan, 1, SUBSTITUTE, seed, llm).stage)
    return {"ML-1M stage 1": (ml_stage1, "run notebook 03 with this profile first (or: collm reproduce --part ml-1m)"),
            f"{SUBSTITUTE} stage 1": (sub_stage1, MAKES_TABLE1)}


def figure3_sweeps(plan: SweepPlan, splits: dict[str, Splits], seed: int = 2023, llm: LLMConfig | None = None,
                   progress: bool = True, phases: Phases | None = None, jobs: int = 1,
                   data_dir: str | None = None, deadline: float | None = None) -> dict[str, pd.DataFrame]:
    """Figure 3 (a) and (b) and the technical report's sweeps; one frame per sweep, one row per setting.

    Stage-2 sweeps stand on finished stage-1 runs made elsewhere (figure3_needs): ML-1M's is notebook 03's, the
    substitute's is the one Table 1 made; each missing one fails here, naming what makes it. The embedding-size
    sweep trains its own MFs (the plan's MF settings), each in its own run folder.
    """
    llm, phases = llm or LLMConfig(), phases or Phases(progress)
    root = runs.sweep_root(plan.profile)
    ml, sub = splits["ml-1m"], splits[SUBSTITUTE]
    needs = figure3_needs(plan, splits, seed, llm, progress)
    for what, (folder, how) in needs.items():
        finished_results(folder, what, how)
    ml_stage1, sub_stage1 = needs["ML-1M stage 1"][0], needs[f"{SUBSTITUTE} stage 1"][0]
    lrs = {"stage.lr": list(plan.lrs)}
    sweeps = {  # name: (sweep folder, base run, grid, data, stage 1 it stands on)
        "lora_lr_ml-1m": ("ml-1m/lora_lr", stage_run(plan, 1, "ml-1m", seed, llm, sweep=True), lrs, ml, None),
        f"fece_lr_{SUBSTITUTE}": (f"{SUBSTITUTE}/fece_lr", stage_run(plan, 2, SUBSTITUTE, seed, llm, sweep=True), lrs,
                                  sub, sub_stage1),
        "fece_lr_ml-1m": ("ml-1m/fece_lr", stage_run(plan, 2, "ml-1m", seed, llm, sweep=True), lrs, ml, ml_stage1),
        "mf_dim_ml-1m": ("ml-1m/mf_dim", stage_run(plan, 2, "ml-1m", seed, llm, sweep=True, **plan.mf),
                         {"mf.dim": list(plan.dims)}, ml, ml_stage1),
    }
    if jobs > 1:  # every setting in its own process, `jobs` at a time; the loop below then finds them finished
        tasks, seen = [], set()
        for folder, run, grid, data, stage1_dir in sweeps.values():
            for name, values in grid.items():
                for value in values:
                    same = runs.fingerprint([with_overrides(run, {name: value}), str(stage1_dir), data.name])
                    if same not in seen:  # one process per distinct run: equal settings share a folder
                        seen.add(same)
                        tasks.append((folder, run, {name: [value]}, data.name, stage1_dir, root, data_dir, deadline))
        with phases(f"sweeps: {len(tasks)} settings, {jobs} at a time"):
            runs.in_processes(_sweep_setting, tasks, jobs)
    frames = {}
    for key, (folder, run, grid, data, stage1_dir) in sweeps.items():
        with phases(f"sweep {key}"):
            frames[key] = sweep_frame(folder, run, grid, data, root, stage1_dir, progress)
    return frames


def _sweep_setting(task: tuple) -> None:
    """One sweep setting in a worker process (--jobs), stopped at the part's deadline like the parent."""
    folder, run, grid, dataset, stage1_dir, root, data_dir, deadline = task
    if deadline is not None:
        signal.signal(signal.SIGALRM, deadline_alarm)
        signal.alarm(max(1, int(deadline - time.time())))
    sweep_frame(folder, run, grid, load_dataset(dataset, data_dir), root, stage1_dir, progress=False)
