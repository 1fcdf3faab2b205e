"""Table 1 and Figure 3: the runs notebook 06 executes, sized per profile.

Table 1 sets MF, CTRL(DIN), TALLRec (stage 1 alone) and CoLLM-FaissRet (stage 2) side by side on each dataset,
all four scored on the same test rows (the LLM stages' seeded user sample). ML-1M's LLM entries are
notebooks 03 / 04's runs at the profile's size; the other datasets' stage runs are made here at the plan's
size. Figure 3: (a) the LoRA learning rate on ML-1M (stage 1), (b) the FECE learning rate on the Amazon-Book
substitute (stage 2); and the technical report's FECE learning rate on ML-1M and MF embedding size d (both
stage 2 over notebook 03's LoRA). Every run goes through sweep.run_sweep: its own folder with its config
and result, skipped once finished, so an interrupted notebook resumes.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pandas as pd

from . import collab, ctrl, runs, settings, stages, train
from .data import Splits
from .io import read_json
from .llm import LLMConfig
from .sweep import FIGURE3_LRS, run_sweep

SUBSTITUTE = "amazon-book-msl"  # stands in for Amazon-Book (Figure 3b) where its raw files are absent


@dataclasses.dataclass
class SweepPlan:
    """The grids of Figure 3 and the other sweeps, and the size of every run in them and of the extra
    datasets' runs of Table 1 (ML-1M's Table 1 entries come from notebooks 02-04 at the profile's size)."""

    profile: str
    lrs: tuple[float, ...]  # LoRA (Figure 3a) and FECE (3b, ML-1M) learning rates
    dims: tuple[int, ...]  # MF embedding sizes d
    stage: dict[str, Any]  # StageConfig overrides over train.config_for_profile(profile, ...)
    mf: dict[str, Any]  # MFConfig overrides for the MFs of the embedding-size sweep
    ctrl: dict[str, Any]  # CTRLConfig overrides over ctrl.config_for_profile(profile)


def plan_for_profile(profile: str | None = None, **overrides: Any) -> SweepPlan:
    """smoke: plumbing only; cpu: the two ends of the paper's lr grid and runs of 16 training prompts (2 steps),
    so the whole cpu main job stays under an hour on 2 cores: a pipeline run, its curves are noise at this size
    (an ML-1M run costs ~50 s, mostly scoring its test users); gpu: the paper's grids at the gpu profile's size."""
    profile = settings.profile_name(profile)
    plans = {
        "smoke": SweepPlan("smoke", (1e-3,), (32,),
                           dict(train_rows=8, eval_rows=8, test_rows=16, batch_size=4, max_steps=2, eval_every=2,
                                warmup_steps=1, patience=1, score_batch_size=16),
                           dict(max_epochs=2, patience=1), dict(align_rows=32)),
        "cpu": SweepPlan("cpu", (1e-4, 1e-3), (64, 128, 256),
                         dict(train_rows=16, eval_rows=8, test_rows=32, batch_size=8, max_steps=2, eval_every=2,
                              warmup_steps=1, patience=1, score_batch_size=16),
                         dict(max_epochs=40, patience=10), dict(align_rows=48)),
        "gpu": SweepPlan("gpu", FIGURE3_LRS, (64, 128, 256), {}, {}, {}),
    }
    return dataclasses.replace(plans[profile], **overrides)


def stage_run(plan: SweepPlan, stage: int, dataset: str, seed: int = 2023, llm: LLMConfig | None = None,
              **mf_changes: Any) -> stages.StageRun:
    """A stage run of the plan's size; stage 2 sits on the profile's MF for the dataset, changed by `mf_changes`."""
    config = train.config_for_profile(plan.profile, stage, dataset=dataset, seed=seed, llm=llm or LLMConfig(),
                                      **plan.stage)
    mf = collab.config_for_profile(plan.profile, dataset=dataset, seed=seed, **mf_changes) if stage == 2 else None
    return stages.StageRun(config, mf)


def main_runs(profile: str, splits: Splits, seed: int = 2023, llm: LLMConfig | None = None,
              progress: bool = True) -> dict[str, Path]:
    """The folders of notebooks 02-04's runs of `splits` at the profile's defaults: {"mf", "stage1", "stage2"}.
    The MF is trained if missing; the stage folders are named whether or not they ran (stage 2's needs a
    finished stage 1, whose fingerprint is part of its identity)."""
    llm = llm or LLMConfig()
    mf = collab.ensure_mf(splits, collab.config_for_profile(profile, dataset=splits.name, seed=seed), progress=progress)
    first = stages.stage_dir(splits, train.config_for_profile(profile, 1, dataset=splits.name, seed=seed, llm=llm))
    second = stages.stage_dir(splits, train.config_for_profile(profile, 2, dataset=splits.name, seed=seed, llm=llm),
                              first, mf)
    return {"mf": mf, "stage1": first, "stage2": second}


def _finished(folder: Path, what: str) -> dict:
    runs.require_finished(folder, what, "run notebooks 02-04 with this profile first")
    return read_json(folder / "results.json")


def _sweep(name: str, run: stages.StageRun, grid: dict, splits: Splits, root: Path,
           stage1_dir: Path | None = None, progress: bool = True) -> pd.DataFrame:
    fn, upstream = stages.sweep_fns(splits, stage1_dir, progress=progress)
    return run_sweep(name, run, grid, fn, root, errors="raise", progress=progress, upstream=upstream)


def table1_results(plan: SweepPlan, splits: dict[str, Splits], seed: int = 2023, llm: LLMConfig | None = None,
                   progress: bool = True) -> tuple[dict[tuple[str, str], dict], dict[str, dict]]:
    """Every Table 1 entry, {(method, dataset): {"test": metrics}}, and per dataset where each came from.

    Per dataset: the profile's MF (notebook 02's checkpoint, trained here if missing), CTRL(DIN) trained here,
    and the two LLM stages (ML-1M: notebooks 03 / 04; others: run here at the plan's size, stage 2 at the
    default FECE lr, which is also a point of that dataset's FECE lr sweep). MF and CTRL are scored on the
    LLM stages' test rows, so the four methods share their rows.
    """
    llm = llm or LLMConfig()
    root = runs.sweep_root(plan.profile)
    encoder = ctrl.llm_text_encoder(llm, progress=progress)
    results, sources = {}, {}
    for name, data in splits.items():
        mf_dir = collab.ensure_mf(data, collab.config_for_profile(plan.profile, dataset=name, seed=seed),
                                  progress=progress)
        ctrl_record = ctrl.run_ctrl(data, ctrl.config_for_profile(plan.profile, seed=seed, **plan.ctrl), encoder,
                                    progress=progress)
        if name == "ml-1m":
            made = main_runs(plan.profile, data, seed, llm, progress)
            stage_dirs = [made["stage1"], made["stage2"]]
        else:
            first = _sweep(f"{name}/stage1", stage_run(plan, 1, name, seed, llm), {}, data, root, progress=progress)
            second_run = stage_run(plan, 2, name, seed, llm)
            second = _sweep(f"{name}/fece_lr", second_run, {"stage.lr": [second_run.stage.lr]}, data, root,
                            Path(first["folder"].iloc[0]), progress=progress)
            stage_dirs = [Path(first["folder"].iloc[0]), Path(second["folder"].iloc[0])]
        s1, s2 = (_finished(d, f"stage {k}") for k, d in zip((1, 2), stage_dirs))
        rows = stages.check_same_rows(*stage_dirs)
        baselines = stages.baselines_on_same_rows(data, stage_dirs[1], mf_dir, ctrl_record["run_dir"])
        results |= {("TALLRec", name): s1, ("CoLLM-FaissRet", name): s2}
        results |= {(method, name): r for method, r in baselines.items()}
        sources[name] = {"stage1": str(stage_dirs[0]), "stage2": str(stage_dirs[1]), "mf": str(mf_dir),
                         "ctrl": ctrl_record["run_dir"], "test_rows": rows,
                         "train_rows": {"stage1": s1["sample_sizes"]["train"], "stage2": s2["sample_sizes"]["train"]},
                         "ctrl_full_test": ctrl_record["metrics"]["test"]["all"]}
    return results, sources


def figure3_sweeps(plan: SweepPlan, splits: dict[str, Splits], seed: int = 2023, llm: LLMConfig | None = None,
                   progress: bool = True) -> dict[str, pd.DataFrame]:
    """Figure 3 (a) and (b) and the technical report's sweeps; one frame per sweep, one row per setting.

    Stage-2 sweeps on ML-1M stand on notebook 03's LoRA; the substitute's on the stage 1 table1_results made.
    The embedding-size sweep trains its own MFs (the plan's MF settings), each in its own run folder.
    """
    llm = llm or LLMConfig()
    root = runs.sweep_root(plan.profile)
    ml, sub = splits["ml-1m"], splits[SUBSTITUTE]
    ml_stage1 = main_runs(plan.profile, ml, seed, llm, progress)["stage1"]
    _finished(ml_stage1, "ML-1M stage 1")
    sub_stage1 = root / SUBSTITUTE / "stage1" / "base"
    _finished(sub_stage1, f"{SUBSTITUTE} stage 1 (made by table1_results)")
    lrs = {"stage.lr": list(plan.lrs)}
    return {
        "lora_lr_ml-1m": _sweep("ml-1m/lora_lr", stage_run(plan, 1, "ml-1m", seed, llm), lrs, ml, root,
                                progress=progress),
        f"fece_lr_{SUBSTITUTE}": _sweep(f"{SUBSTITUTE}/fece_lr", stage_run(plan, 2, SUBSTITUTE, seed, llm), lrs,
                                        sub, root, sub_stage1, progress=progress),
        "fece_lr_ml-1m": _sweep("ml-1m/fece_lr", stage_run(plan, 2, "ml-1m", seed, llm), lrs, ml, root,
                                ml_stage1, progress=progress),
        "mf_dim_ml-1m": _sweep("ml-1m/mf_dim", stage_run(plan, 2, "ml-1m", seed, llm, **plan.mf),
                               {"mf.dim": list(plan.dims)}, ml, root, ml_stage1, progress),
    }
