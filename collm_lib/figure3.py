"""Figure 3's data: the sweeps notebook 09 plots (and part "figure3" of reproduce runs), each point CoLLM-FaissRet
after both stages, with its interval.

figure3_sweeps, through sweep.run_sweep at the size of the plan's sweep points (profiles.SweepPlan):
- (a) the LoRA learning rate on ML-1M: each rate's stage 1, then stage 2 over it (stages.TwoStages), judged by the
  model after stage 2 as the paper's Figure 3 is ("Impact of learning rate on CoLLM-FaissRet performance");
- (b) the FECE learning rate of stage 2 on the Amazon-Book substitute, over its stage 1;
- the technical report's FECE learning rate on ML-1M and MF size d, stage 2 over notebook 03's stage 1.
ML-1M's points are notebooks 03-04's size, on the whole test split: the setting equal to the main run is that run.
`points` reads every point's per-row test scores (AUC and UAUC with their intervals) and the paired difference to
the next setting, which says whether a line may join them (plots.sweep_curve draws none where it is not resolved).
Every point must be a stage-2 run (`check_stage2`): a sweep that read stage 1's metric would plot another quantity.
"""
from __future__ import annotations

import signal
import time
from pathlib import Path

import pandas as pd

from . import metrics, runs, stages
from .data import Splits, load_dataset
from .io import read_json
from .llm import LLMConfig
from .plan_runs import (MAKES_TABLE1, SUBSTITUTE, Phases, deadline_alarm, finished_results, main_runs, stage_run,
                        sweep_frame, two_stages)
from .profiles import SweepPlan
from .sweep import with_overrides


def figure3_panels(profile: str) -> dict[str, tuple[str, str, str, str | None, str]]:
    """Notebook 09's sweep figures: {figure name: (sweep of figure3_sweeps, swept setting, x-axis label, the paper's
    Figure 3 panel or None, title)}."""
    return {
        f"figure3a_{profile}": ("lora_lr_ml-1m", "stage1.lr", "LoRA learning rate (stage 1)", "a",
                                "(a) ML-1M: LoRA learning rate, CoLLM-FaissRet after stage 2"),
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
    missing = [name for name in ("ml-1m", SUBSTITUTE) if name not in splits]
    if missing:
        raise ValueError(f"Figure 3 needs the datasets {missing} (its panels are on ML-1M and {SUBSTITUTE}): add them "
                         "to `datasets` (notebook 09's parameter)")
    ml_stage1 = main_runs(plan.profile, splits["ml-1m"], seed, llm, progress)["stage1"]
    sub_stage1 = stages.stage_dir(splits[SUBSTITUTE], stage_run(plan, 1, SUBSTITUTE, seed, llm).stage)
    return {"ML-1M stage 1": (ml_stage1, "run notebook 03 with this profile first (or: collm reproduce --part ml-1m)"),
            f"{SUBSTITUTE} stage 1": (sub_stage1, MAKES_TABLE1)}


def figure3_sweeps(plan: SweepPlan, splits: dict[str, Splits], seed: int = 2023, llm: LLMConfig | None = None,
                   progress: bool = True, phases: Phases | None = None, jobs: int = 1,
                   data_dir: str | None = None, deadline: float | None = None) -> dict[str, pd.DataFrame]:
    """Figure 3 (a) and (b) and the technical report's sweeps; one frame per sweep, one row per setting, "run_dir"
    its stage-2 run.

    The stage-2 sweeps stand on finished stage-1 runs made elsewhere (figure3_needs): ML-1M's is notebook 03's, the
    substitute's is Table 1's (notebook 09); each missing one fails here, naming what makes it. Sweep (a) makes its
    own stage-1 runs; the embedding-size sweep trains its own MFs, each in its own run folder.
    """
    llm, phases = llm or LLMConfig(), phases or Phases(progress)
    root = runs.sweep_root(plan.profile)
    ml, sub = splits["ml-1m"], splits[SUBSTITUTE]
    needs = figure3_needs(plan, splits, seed, llm, progress)
    for what, (folder, how) in needs.items():
        finished_results(folder, what, how)
    ml_stage1, sub_stage1 = needs["ML-1M stage 1"][0], needs[f"{SUBSTITUTE} stage 1"][0]
    lrs = list(plan.lrs)
    sweeps = {  # name: (sweep folder, base run, grid, data, stage 1 it stands on)
        "lora_lr_ml-1m": ("ml-1m/lora_lr", two_stages(plan, "ml-1m", seed, llm), {"stage1.lr": lrs}, ml, None),
        f"fece_lr_{SUBSTITUTE}": (f"{SUBSTITUTE}/fece_lr", stage_run(plan, 2, SUBSTITUTE, seed, llm, sweep=True),
                                  {"stage.lr": lrs}, sub, sub_stage1),
        "fece_lr_ml-1m": ("ml-1m/fece_lr", stage_run(plan, 2, "ml-1m", seed, llm, sweep=True), {"stage.lr": lrs}, ml,
                          ml_stage1),
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


def check_stage2(frame: pd.DataFrame, name: str) -> None:
    """Raise unless every point of a Figure 3 sweep is a stage-2 run: the figure plots CoLLM-FaissRet after both
    stages, never the text-only stage 1."""
    kinds = {str(folder): read_json(Path(folder) / "identity.json").get("kind") for folder in frame["run_dir"]}
    wrong = {folder: kind for folder, kind in kinds.items() if kind != "stage2"}
    if wrong:
        raise ValueError(f"{name}: points of {sorted(set(wrong.values()))} runs, not stage 2: {sorted(wrong)[:2]}; "
                         "Figure 3 plots CoLLM-FaissRet after both stages")


def scores(frame: pd.DataFrame, x: str) -> pd.DataFrame:
    """The per-row test scores of every point of a sweep (x: the swept setting, e.g. "stage1.lr"), with a column
    of its value: what the figure's table recomputes from."""
    return stages.sweep_scores(frame).merge(frame[["setting", x]], on="setting")


def points(frame: pd.DataFrame, x: str, name: str, seed: int) -> pd.DataFrame:
    """One row per setting of a sweep, in the order of x: test AUC and UAUC with their 95 % user-level intervals,
    rows and users, stage 2's kept step and valid AUC, and the paired difference to the next setting (AUC, on the
    same rows) with whether it is resolved: a line joins two points only then."""
    check_stage2(frame, name)
    per_row = scores(frame, x)
    out = []
    for _, r in frame.sort_values(x).iterrows():
        rows = per_row[per_row["setting"] == r["setting"]]
        boot = metrics.bootstrap(rows, seed=seed, **metrics.BOOTSTRAP)
        out.append({x: r[x], "setting": r["setting"], "test_auc": boot["auc"], "test_auc_lo": boot["auc_lo"],
                    "test_auc_hi": boot["auc_hi"], "test_uauc": boot["uauc"], "test_uauc_lo": boot["uauc_lo"],
                    "test_uauc_hi": boot["uauc_hi"], "test_rows": boot["rows"], "users": boot["users"],
                    "uauc_users": metrics.uauc(rows["uid"], rows["label"], rows["score"]).n_users,
                    "valid_auc": r["valid_auc"], "best_step": r["best_step"],
                    **({"stage1_valid_auc": r["stage1_valid_auc"]} if "stage1_valid_auc" in r else {})})
    table = pd.DataFrame(out)
    steps = [None]
    for before, after in zip(table["setting"], table["setting"].iloc[1:]):
        diff = metrics.paired_difference(per_row[per_row["setting"] == after], per_row[per_row["setting"] == before],
                                         seed=seed, **metrics.BOOTSTRAP)
        steps.append(diff)
    table["AUC change from previous"] = [d and d["auc"] for d in steps]
    table["change lo"] = [d and d["auc_lo"] for d in steps]
    table["change hi"] = [d and d["auc_hi"] for d in steps]
    table["resolved from previous"] = [bool(d and (d["auc_lo"] > 0 or d["auc_hi"] < 0)) for d in steps]
    return table
