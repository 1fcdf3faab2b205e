"""Table 1 and Figure 3: the runs notebook 06 executes, sized by profiles.plan; and the whole reproduction without
Jupyter, in parts that a GPU box runs and bundles (see scripts/device/README.md):

    python -m collm_lib.reproduce --profile gpu --part all --out bundles/ [--deadline 540]

Parts, in dependency order: "mf" (notebook 02's MFs), "ml-1m" (notebooks 03-04), "table1" (notebook 06's Table 1:
the other datasets' stages, CTRL(DIN), same-row baselines), "figure3" (notebook 06's sweeps). Each part calls what
its notebooks call, with their default parameters, and leaves <out>/<part>.tar.gz (collm_lib.bundle: results and
per-row scores, no weights). A part stopped at its deadline keeps what finished (stage runs keep last.pt) and the
same command resumes it. `python -m collm_lib.runner --replay <out>/*.tar.gz` executes the notebooks over them.

Table 1 (table1_results, table1_replicates): MF, popularity, CTRL(DIN), TALLRec (stage 1 alone) and CoLLM-FaissRet
(stage 2) on each dataset, scored on the same test rows, with seed replicates. Figure 3's sweeps are in `figure3`.
Every setting goes through sweep.run_sweep and its stage run lives in its identity folder, skipped once finished:
an interrupted notebook resumes, and a setting equal to another run is that run.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from . import (baselines, bundle, ctrl, encoders, logs, params, popularity, profiles, replicates, runs, settings,
               stages)
from .data import Splits, load_dataset
from .figure3 import figure3_sweeps
from .io import run_info
from .llm import LLMConfig, precision_of, text_encoder
from .plan_runs import (SUBSTITUTE, DeadlineReached, Phases, deadline_alarm, finished_results, main_runs, stage_run,
                        sweep_frame)
from .profiles import SweepPlan

PARTS = ("mf", "ml-1m", "table1", "figure3")
MF_DATASETS = ("ml-1m", "bookcrossing", "bookcrossing-multi", SUBSTITUTE)  # notebook 02's default `datasets`
TABLE1_DATASETS = ("ml-1m", "bookcrossing", SUBSTITUTE)  # notebook 06's default `datasets`
LOG = "reproduce.log"  # beside the bundles: the phases, warnings and timings of every part run into that folder
log = logging.getLogger(__name__)


def ml1m_stages(profile: str, splits: Splits, seed: int, llm: LLMConfig, progress: bool, phases: Phases,
                label: str = "ml-1m") -> dict[str, Path]:
    """Notebooks 03 and 04 at `seed`, made unless finished, in the order their identities need: stage 1, then the
    MF and stage 2's folder (named by stage 1's fingerprint), then stage 2. Returns main_runs' folders."""
    with phases(f"{label}: stage 1"):
        stages.run_stage(splits, profiles.stage(profile, 1, dataset=splits.name, seed=seed, llm=llm), progress=progress)
    made = main_runs(profile, splits, seed, llm, progress)
    with phases(f"{label}: stage 2"):
        stages.run_stage(splits, profiles.stage(profile, 2, dataset=splits.name, seed=seed, llm=llm),
                         made["stage2"], made["stage1"], made["mf"], progress)
    return made


def _llm_stages(plan: SweepPlan, name: str, data: Splits, seed: int, llm: LLMConfig, progress: bool,
                phases: Phases, make_ml: bool = False) -> tuple[Path, Path]:
    """Stage 1 and stage 2 folders of a dataset at `seed`: ML-1M's are notebooks 03 / 04's (made here only with
    `make_ml`: seed replicates), the others' are made here at the plan's size (stage 2 at the default FECE lr; where
    Figure 3's points are sized alike, plan.sweep empty as on gpu, it is the very run of that point)."""
    if name == "ml-1m":
        made = (ml1m_stages(plan.profile, data, seed, llm, progress, phases, f"ml-1m seed {seed}") if make_ml
                else main_runs(plan.profile, data, seed, llm, progress))
        return made["stage1"], made["stage2"]
    root = runs.sweep_root(plan.profile)
    with phases(f"{name} seed {seed}: stage 1"):
        first = sweep_frame(f"{name}/stage1", stage_run(plan, 1, name, seed, llm), {}, data, root, progress=progress)
    second_run = stage_run(plan, 2, name, seed, llm)
    with phases(f"{name} seed {seed}: stage 2"):
        second = sweep_frame(f"{name}/stage2", second_run, {"stage.lr": [second_run.stage.lr]}, data, root,
                        Path(first["run_dir"].iloc[0]), progress=progress)
    return Path(first["run_dir"].iloc[0]), Path(second["run_dir"].iloc[0])


def table1_results(plan: SweepPlan, splits: dict[str, Splits], seed: int = 2023, llm: LLMConfig | None = None,
                   progress: bool = True, phases: Phases | None = None
                   ) -> tuple[dict[tuple[str, str], dict], dict[str, dict]]:
    """Every Table 1 entry, {(method, dataset): {"test": metrics}}, and per dataset where each came from (run
    folders, and "scores": each method's per-row score file).

    Per dataset: the profile's MF (notebook 02's checkpoint, trained here if missing), popularity, CTRL(DIN)
    trained here, and the two LLM stages (_llm_stages). MF, popularity and CTRL are scored on the LLM stages' test
    rows, so the five methods share their rows (checked on (uid, iid) keys by baselines.check_same_rows and
    baselines_on_same_rows).
    """
    llm, phases = llm or LLMConfig(), phases or Phases(progress)
    encoder = text_encoder(llm, progress=progress)
    results, sources = {}, {}
    for name, data in splits.items():
        with phases(f"{name}: MF and popularity"):
            mf_dir = encoders.ensure(data, profiles.mf(plan.profile, name, seed=seed), progress=progress)
            popular = popularity.ensure_popularity(data)
        with phases(f"{name}: CTRL(DIN)"):
            ctrl_record = ctrl.run_ctrl(data, profiles.ctrl(plan.profile, seed=seed, **plan.ctrl), encoder,
                                        progress=progress)
        stage_dirs = _llm_stages(plan, name, data, seed, llm, progress, phases)
        s1, s2 = (finished_results(d, f"stage {k}") for k, d in zip((1, 2), stage_dirs))
        rows = baselines.check_same_rows(*stage_dirs)
        with phases(f"{name}: MF, popularity and CTRL(DIN) on the stages' rows"):
            same = baselines.baselines_on_same_rows(data, stage_dirs[1], mf_dir, ctrl_record["run_dir"],
                                                    popularity_dir=popular["run_dir"])
        results |= {("TALLRec", name): s1, ("CoLLM-FaissRet", name): s2}
        results |= {(method, name): r for method, r in same.items()}
        sources[name] = {"stage1": str(stage_dirs[0]), "stage2": str(stage_dirs[1]), "mf": str(mf_dir),
                         "ctrl": ctrl_record["run_dir"], "popularity": popular["run_dir"], "test_rows": rows,
                         "train_rows": {"stage1": s1["sample_sizes"]["train"], "stage2": s2["sample_sizes"]["train"]},
                         "scores": {"TALLRec": str(stage_dirs[0] / "scores_test.csv"),
                                    "CoLLM-FaissRet": str(stage_dirs[1] / "scores_test.csv"),
                                    **{method: r["scores"] for method, r in same.items()}}}
    return results, sources


def table1_replicates(plan: SweepPlan, splits: dict[str, Splits], seed: int = 2023, llm: LLMConfig | None = None,
                      progress: bool = True, phases: Phases | None = None, data_dir: str | None = None) -> pd.DataFrame:
    """Table 1's seed replicates, one row per (method, dataset, seed) with its test metrics and score file: MF,
    popularity and CTRL(DIN) over plan.n_seeds seeds on the full test splits; with plan.n_llm_seeds > 1, the LLM
    stages over that many (on their test rows: the full split in the gpu profile; a sampled `test_rows` would be
    drawn per seed). Needs table1_results first for the main seed's LLM runs of ML-1M (notebooks 03 / 04)."""
    llm, phases = llm or LLMConfig(), phases or Phases(progress)
    with phases(f"seed replicates of MF, popularity and CTRL(DIN): {plan.n_seeds} seeds"):
        frame = replicates.cheap_replicates(plan.profile, splits, replicates.seeds_from(seed, plan.n_seeds), plan.ctrl,
                                            llm, progress, plan.jobs, data_dir)
    rows = []
    for name, data in splits.items() if plan.n_llm_seeds > 1 else ():
        for each in replicates.seeds_from(seed, plan.n_llm_seeds):
            dirs = _llm_stages(plan, name, data, each, llm, progress, phases, make_ml=each != seed)
            for method, folder in zip(("TALLRec", "CoLLM-FaissRet"), dirs):
                test = finished_results(folder, f"{method} seed {each}")["test"]
                rows.append(replicates.replicate_row(method, name, each, test, folder / "scores_test.csv"))
    return replicates.frame_of(frame.to_dict("records") + rows)


PART_DATASETS = {"mf": MF_DATASETS, "ml-1m": ("ml-1m",), "table1": TABLE1_DATASETS, "figure3": TABLE1_DATASETS}


def _part_runs(part: str, profile: str, data: dict[str, Splits], seed: int, llm: LLMConfig, progress: bool,
               phases: Phases, jobs: int = 1, data_dir: str | None = None, deadline: float | None = None) -> None:
    """What notebooks 02-06 run at their default parameters, without Jupyter."""
    if part == "mf":  # notebook 02
        for name, splits in data.items():
            with phases(f"{name}: MF"):
                encoders.ensure(splits, profiles.mf(profile, name, seed=seed), progress=progress)
    elif part == "ml-1m":  # notebooks 03 and 04
        splits = data["ml-1m"]
        made = ml1m_stages(profile, splits, seed, llm, progress, phases)
        with phases("ml-1m: MF on the stages' rows"):
            for stage in ("stage1", "stage2"):
                baselines.baselines_on_same_rows(splits, made[stage], made["mf"])
    else:  # notebook 06
        plan = profiles.plan(profile)
        if part == "table1":
            table1_results(plan, data, seed, llm, progress, phases)
            table1_replicates(plan, data, seed, llm, progress, phases, data_dir)
        else:
            figure3_sweeps(plan, data, seed, llm, progress, phases, jobs, data_dir, deadline)


def run_part(part: str, out: str | Path, profile: str | None = None, data_dir: str | None = None, seed: int = 2023,
             llm: LLMConfig | None = None, progress: bool = True, jobs: int = 1, deadline: float | None = None) -> Path:
    """Run one part (what its runs need and have not finished) and write <out>/<part>.tar.gz of every run it used.
    Returns the bundle; on DeadlineReached (or any error) the bundle of what finished is written first.
    jobs > 1: the figure3 part's settings run that many at a time, each in its own process (one GPU holds several
    135M-model runs); `deadline` (time.time() at which to stop) reaches those processes too."""
    if part not in PARTS:
        raise ValueError(f"unknown part {part!r}; choose from {PARTS} (or 'all' on the command line)")
    profile, llm = settings.profile_name(profile), llm or LLMConfig()
    phases = Phases(progress, deadline)
    device = settings.device(llm.device)
    info = {"part": part, "profile": profile, "seed": seed, "model": llm.model, "phases": phases.rows, "jobs": jobs,
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "run": run_info(seed), "llm": runs.model_fingerprint(llm.model),
            "precision": precision_of(llm)}  # replay runs the notebooks in it: it is part of every stage's identity
    start = time.perf_counter()
    with runs.track() as used:
        try:
            with phases("load the data"):
                data = {name: load_dataset(name, data_dir) for name in PART_DATASETS[part]}
            info["data"] = {name: runs.data_fingerprint(splits) for name, splits in data.items()}
            _part_runs(part, profile, data, seed, llm, progress, phases, jobs, data_dir, deadline)
            info["complete"] = True
        except BaseException:
            info["complete"] = False
            raise
        finally:
            info["seconds"] = round(time.perf_counter() - start, 2)
            target = bundle.pack(Path(out) / f"{part}.tar.gz", settings.work_dir(), sorted(used), info)
            logs.say(f"[bundle] {target}: {len(used)} runs, {target.stat().st_size / 2**20:.2f} MiB, part "
                     f"{'complete' if info['complete'] else 'INCOMPLETE'} after {info['seconds']:.0f} s")
    return target


DESCRIPTION = ("Reproduce the paper without Jupyter, part by part, each part bundled for replay into the notebooks "
               "(collm_lib.runner --replay).")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of a reproduction (python -m collm_lib.reproduce, collm reproduce)."""
    parser.add_argument("--profile", default=None, choices=settings.PROFILES, metavar="|".join(settings.PROFILES),
                        help="the run profile (default: $COLLM_PROFILE or cpu)")
    parser.add_argument("--part", nargs="+", default=["all"], choices=[*PARTS, "all"],
                        help="parts to run, in this order: mf, ml-1m, table1, figure3 (default: all)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the bundles <part>.tar.gz")
    parser.add_argument("--data-dir", default=None, help="raw data folder (default: $COLLM_DATA_DIR or data/raw)")
    parser.add_argument("--seed", type=int, default=2023)
    parser.add_argument("--model", default=LLMConfig().model, help="the LLM (default: the embedded SmolLM2-135M)")
    parser.add_argument("--deadline", type=int, default=None,
                        help="stop after this many seconds, bundle what finished; the same command resumes")
    parser.add_argument("--jobs", type=int, default=1,
                        help="figure3: run this many settings at once, each in its own process (default 1)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (logs only)")


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Run the parts `args` name (add_arguments' options), logged to <out>/reproduce.log; returns the exit status
    (75: the deadline stopped it)."""
    if args.deadline is not None and args.deadline <= 0 or args.jobs < 1:
        parser.error("--deadline takes a positive number of seconds and --jobs a positive count")
    # every input checked before the bundle folder, its log or any run is made
    try:
        llm = LLMConfig(model=args.model)
        params.check_field("StageConfig", "seed", args.seed)  # every part's runs take it
    except params.ConfigError as err:
        parser.error(f"argument --{err.path[-1]}: {err.problem}")
    try:
        settings.require_writable(args.out, "argument --out", "give --out a folder you can write to (it is made "
                                  "when missing)")
        settings.require_writable(settings.work_dir(), "the work dir", settings.WORK_DIR_FIX)
    except settings.NotWritable as err:
        parser.error(str(err))
    parts = list(PARTS) if "all" in args.part else [p for p in PARTS if p in args.part]
    deadline = time.time() + args.deadline if args.deadline else None
    with logs.log_file(Path(args.out) / LOG):
        log.info("reproduce parts %s: profile %s, seed %s, model %s", parts, settings.profile_name(args.profile),
                 args.seed, args.model)
        try:
            if deadline is not None:
                signal.signal(signal.SIGALRM, deadline_alarm)
                signal.alarm(args.deadline)
            for part in parts:
                run_part(part, args.out, args.profile, args.data_dir, args.seed, llm, not args.no_progress, args.jobs,
                         deadline)
        except DeadlineReached:
            log.warning("deadline of %s s reached: finished runs are bundled; run the same command again to resume",
                        args.deadline)
            return 75
        finally:
            signal.alarm(0)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    add_arguments(parser)
    return run(parser.parse_args(argv), parser)


if __name__ == "__main__":
    sys.exit(main())
