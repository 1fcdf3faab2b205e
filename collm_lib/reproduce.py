"""The whole reproduction without Jupyter, in parts that a GPU box runs and bundles (see scripts/device/README.md):

    python -m collm_lib.reproduce --profile gpu --part all --out bundles/ [--deadline 540]

Parts, in dependency order: "mf" (notebook 02's MFs), "ml-1m" (notebooks 03-04), "table1" (Table 1's runs: notebook
06's MF and CTRL(DIN) seeds and no-training baselines, and notebooks 08-09's LLM runs beyond 03-04: stage 2's seeds and
the other datasets' stages; table1.collect), "figure3" (notebook 09's sweeps; figure3.py). Each part calls what its
notebooks call, with their default parameters, and leaves <out>/<part>.tar.gz (collm_lib.bundle: results and per-row
scores, no weights). A part stopped at its deadline keeps what finished (stage runs keep last.pt) and the same
command resumes it. `python -m collm_lib.runner --replay <out>/*.tar.gz` executes the notebooks over them. Every
run lives in its identity folder and is skipped once finished: an interrupted part resumes, and a setting equal to
another run is that run.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from pathlib import Path

import torch

from . import baselines, bundle, logs, pipeline, profiles, rules, runs, settings, table1
from .data import Splits, load_dataset
from .figure3 import figure3_sweeps
from .io import run_info
from .llm import LLMConfig, precision_of
from .plan_runs import SUBSTITUTE, DeadlineReached, Phases, deadline_alarm

PARTS = bundle.PARTS  # ("mf", "ml-1m", "table1", "figure3"), in dependency order
MF_DATASETS = ("ml-1m", "bookcrossing", "bookcrossing-multi", SUBSTITUTE)  # notebook 02's default `datasets`
TABLE1_DATASETS = ("ml-1m", "bookcrossing", SUBSTITUTE)  # notebook 06's default `datasets`
LOG = "reproduce.log"  # beside the bundles: the phases, warnings and timings of every part run into that folder
log = logging.getLogger(__name__)


def ml1m_stages(profile: str, splits: Splits, seed: int, llm: LLMConfig, progress: bool, phases: Phases,
                label: str = "ml-1m") -> dict[str, Path]:
    """Notebooks 03 and 04 at `seed`, made unless finished, in the order their identities need: stage 1, then the
    MF and stage 2's folder (named by stage 1's fingerprint), then stage 2. Returns pipeline.folders."""
    ctx = pipeline.RunContext(splits, profile, seed, llm, progress)
    with phases(f"{label}: stage 1"):
        pipeline.stage1(ctx)
    made = pipeline.folders(ctx)
    with phases(f"{label}: stage 2"):
        pipeline.stage2(ctx, made["stage1"], made["mf"], out_dir=made["stage2"])
    return made


PART_DATASETS = {"mf": MF_DATASETS, "ml-1m": ("ml-1m",), "table1": TABLE1_DATASETS, "figure3": TABLE1_DATASETS}


def _part_runs(part: str, profile: str, data: dict[str, Splits], seed: int, llm: LLMConfig, progress: bool,
               phases: Phases, jobs: int = 1, data_dir: str | None = None, deadline: float | None = None) -> None:
    """What notebooks 02-06, 08 and 09 run at their default parameters, without Jupyter."""
    if part == "mf":  # notebook 02
        for name, splits in data.items():
            with phases(f"{name}: MF"):
                pipeline.encoder(pipeline.RunContext(splits, profile, seed, llm, progress))
    elif part == "ml-1m":  # notebooks 03 and 04
        splits = data["ml-1m"]
        made = ml1m_stages(profile, splits, seed, llm, progress, phases)
        with phases("ml-1m: MF on the stages' rows"):
            for stage in ("stage1", "stage2"):
                baselines.baselines_on_same_rows(splits, made[stage], made["mf"])
    else:  # notebooks 06, 08 and 09
        plan = profiles.plan(profile)
        if part == "table1":  # 06's runs and 08-09's LLM runs beyond notebooks 03-04 (seeds, the other datasets)
            table1.collect(plan, data, seed, llm, make_seeds=True, progress=progress, phases=phases, data_dir=data_dir)
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
        rules.check_field("StageConfig", "seed", args.seed)  # every part's runs take it
    except rules.ConfigError as err:
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
