"""The `collm` command: the main job, replays, reproduction parts, and single runs, every setting an option.

    collm main --profile cpu [--only 03 04] [--in-place]       # the notebooks through papermill (collm_lib.runner)
    collm replay bundles/*.tar.gz                              # the notebooks over a GPU box's bundles
    collm replay --verify bundles/*.tar.gz                     # check bundles, show where they come from
    collm reproduce --profile gpu --part mf ml-1m --out bundles/   # without Jupyter (collm_lib.reproduce)
    collm doctor [--profile gpu] [--json]                      # what this machine will do, before the hour
    collm config --profile cpu --step stage2 [--json]          # a step's settings and where each comes from
    collm stages --profile gpu --dataset ml-1m [--lr 3e-4 --lora-r 16 ...]   # stage 1, stage 2, MF on its rows
    collm stage --stage 2 --profile cpu [--stage1-dir DIR --encoder-dir DIR] # one stage
    collm encoder --dataset bookcrossing --dim 64              # an MF (or --encoder) run: its folder and metrics

`collm mf` and `--mf-dir` are the older spellings of `collm encoder` and `--encoder-dir`: they still work, saying so
(DEPRECATED). stage, stages and encoder take every field of StageConfig (with LLMConfig's), and MFConfig (--mf-* under
stage 2) as options, generated from the dataclasses (collm_lib.options); each option given overrides the profile's value.
`stages` also runs under torchrun (`torchrun --nproc_per_node 4 -m collm_lib.cli stages ...`); rank 0 prints.
Log lines go to stderr; every run also keeps <run folder>/run.log (collm_lib.logs).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, TypeVar

from . import (baselines, config_sources, distributed, doctor, encoder_registry, hashing, logs, options, pipeline,
               profiles, reproduce, rules, runner, settings)
from .configs import MFConfig, StageConfig, TrainSettings
from .data import dataset_name, load_dataset
from .io import read_json

STAGE, MF = "stage", "mf"  # the namespace groups of the generated options (options.overrides)
# older spellings that still work: {what was typed: what it is now}
DEPRECATED_COMMANDS = {"mf": "encoder"}
DEPRECATED_OPTIONS = ("--mf-dir",)
COMMON_HELP = "Options not given take the profile's value (collm_lib/profiles.py), shown as 'profile default'."
STAGES_HELP = "A default 'A / B' is stage 1's / stage 2's."
Config = TypeVar("Config")

# --help's sections (argparse argument groups), in the order shown
RUN, TRAINING, DATA, LLM = "run", "training", "data", "llm"
SECTIONS = {
    RUN: options.Section("run", "profile, dataset, seed; folders (runs: $COLLM_WORK_DIR, default data/)"),
    TRAINING: options.Section("stage training", "how each stage trains, is evaluated on valid and stops (StageConfig)"),
    DATA: options.Section("stage data", "the rows each stage trains, validates and tests on; prompts (StageConfig)"),
    LLM: options.Section("LLM", "the language model, its LoRA adapter, device and precision (LLMConfig)"),
    MF: options.Section("MF / collaborative model", "stage 2's model (--encoder), MF's settings (MFConfig); defaults "
                                                    "ML-1M's"),
}
MF_SECTIONS = {  # `collm encoder`'s
    RUN: options.Section("run", "profile, dataset; folders (runs: $COLLM_WORK_DIR, default data/)"),
    MF: options.Section(SECTIONS[MF].title, "the model trained (--encoder), MF's settings (MFConfig); defaults "
                                            "ML-1M's"),
}
# StageConfig's fields outside the TRAINING section (an LLMConfig field under its parent's name, "llm")
STAGE_SECTIONS = {"stage": RUN, "dataset": RUN, "seed": RUN, "template": DATA, "max_history": DATA,
                  "train_rows": DATA, "eval_rows": DATA, "test_rows": DATA, "llm": LLM}


def stage_options(exclude: tuple[str, ...] = ()) -> list[options.Option]:
    """The options of StageConfig and its nested LLMConfig, in their --help sections (STAGE_SECTIONS)."""
    return options.config_options(StageConfig, exclude=exclude, sections=STAGE_SECTIONS, section=TRAINING)


def mf_options(prefix: str = "") -> list[options.Option]:
    """The options of MFConfig (prefixed "mf-" beside a stage's: both have lr, seed, batch_size, ...)."""
    return options.config_options(MFConfig, prefix=prefix, section=MF)


def _stage_variants(profile: str) -> list[StageConfig]:
    return [profiles.stage(profile, 1), profiles.stage(profile, 2)]


def _mf_variants(profile: str) -> list[MFConfig]:
    return [profiles.mf(profile, "ml-1m")]


def _mf_names() -> list[str]:
    """The encoders that are MF runs (mf, mf-bias): the ones the MF settings apply to."""
    return [n for n in encoder_registry.names() if encoder_registry.kind(n) == "mf"]


def _add_encoder_argument(group: Any, settings_named: str = "--mf-*") -> None:
    names = encoder_registry.names()
    group.add_argument("--encoder", default=None, choices=names, metavar="|".join(names),
                       help=f"the collaborative model (collm_lib/encoder_registry.py; docs/protocol.md §4), default "
                            f"mf: {encoder_registry.help_text()}. The {settings_named} settings apply to "
                            f"{' and '.join(_mf_names())}")


def _sectioned(parser: argparse.ArgumentParser, sections: dict[str, options.Section]) -> dict[str, Any]:
    """options.add_sections(parser, sections), --help heading the first (the parser made with add_help=False)."""
    groups = options.add_sections(parser, sections)
    next(iter(groups.values())).add_argument("-h", "--help", action="help", help="show this help message and exit")
    return groups


def _add_run_arguments(group: Any) -> None:
    group.add_argument("--profile", default=None, choices=settings.PROFILES, metavar="|".join(settings.PROFILES),
                       help="the run profile (default: $COLLM_PROFILE or cpu)")
    group.add_argument("--data-dir", default=None, help="raw data folder (default: $COLLM_DATA_DIR or data/raw)")
    group.add_argument("--no-progress", action="store_true", help="no progress bars (log lines only)")
    group.add_argument("--rehash", action="store_true", help=runner.REHASH_HELP)


def _add_stage_arguments(groups: dict[str, Any], exclude: tuple[str, ...] = (),
                         custom: dict[str, dict[str, Any]] | None = None) -> None:
    options.add_config_arguments(groups, stage_options(exclude), STAGE, _stage_variants,
                                 {"precision": {"choices": settings.PRECISIONS, "metavar": "|".join(settings.PRECISIONS)}}
                                 | (custom or {}))
    _add_encoder_argument(groups[MF])
    # the MF under stage 2 takes the stage's seed unless given (run_stages)
    options.add_config_arguments(groups, mf_options("mf-"), MF, _mf_variants,
                                 {"seed": {"help": "default: the stage's --seed"}})


def build_parser() -> argparse.ArgumentParser:
    """The `collm` parser and its subcommands."""
    parser = argparse.ArgumentParser(prog="collm", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, text: str, *more: str, usage: str | None = None,
                aliases: tuple[str, ...] = ()) -> argparse.ArgumentParser:
        # `usage`: a one-line usage for a command of many options (--help lists them, by section), no -h of its own
        made = sub.add_parser(name, help=text, description=" ".join((text, *more)), allow_abbrev=False, usage=usage,
                              add_help=usage is None, aliases=list(aliases))
        made.set_defaults(command_parser=made)  # for errors found after parsing, named after the subcommand
        return made

    main = command("main", "Execute the numbered notebooks in order for one profile (papermill).")
    runner.add_main_arguments(main)
    replay = command("replay", "Execute notebooks 02-04 and 06 over bundles made by `collm reproduce`.")
    replay.add_argument("bundles", nargs="+", type=Path, metavar="BUNDLE")
    runner.add_shared_arguments(replay)
    replay.add_argument("--out-dir", type=Path, default=None, help=runner.OUT_DIR_HELP.removeprefix("with --replay: "))
    replay.add_argument("--verify", action="store_true", help="only check the bundles (files, sha256s, signature "
                        "with $COLLM_BUNDLE_KEY) and show their provenance; unpack and run nothing (exit 1: refused)")
    replay.add_argument("--allow-unsigned", action="store_true", help=runner.ALLOW_UNSIGNED_HELP)
    reproduce.add_arguments(command("reproduce", reproduce.DESCRIPTION))
    doctor_parser = command("doctor", "What this machine will do with a profile: device, precision, faiss (and its "
                                      "GPU probe), memory, disk, model, data and the main job's estimated time; "
                                      "exit 1 when the profile cannot run here.")
    _add_run_arguments(doctor_parser)
    doctor_parser.add_argument("--json", action="store_true", help="the report as JSON (for scripts)")

    config_parser = command("config", "A step's settings at a profile and where each comes from (defaults < "
                                      "profile tables < notebook parameter / CLI option < keyword argument).")
    config_parser.add_argument("--profile", default=None, choices=settings.PROFILES,
                               metavar="|".join(settings.PROFILES),
                               help="the run profile (default: $COLLM_PROFILE or cpu)")
    config_parser.add_argument("--step", choices=profiles.steps(), required=True)
    config_parser.add_argument("--dataset", default="ml-1m", help="a built-in dataset or your own (its name or folder; "
                                                                  "stages, MF and encoders; default ml-1m)")
    config_parser.add_argument("--data-dir", default=None, help="raw data folder, where your own datasets are found "
                                                                "(default: $COLLM_DATA_DIR or data/raw)")
    config_parser.add_argument("--json", action="store_true", help="the fields as JSON (for scripts)")

    stages_parser = command("stages", "Stage 1, then stage 2 on its LoRA and the MF, then the MF on stage 2's rows; "
                                      "prints a JSON summary. Given settings apply to both stages.",
                            COMMON_HELP, STAGES_HELP, usage="%(prog)s [-h] [OPTION ...]")
    groups = _sectioned(stages_parser, SECTIONS)
    _add_run_arguments(groups[RUN])
    _add_stage_arguments(groups, exclude=("stage",))
    stage = command("stage", "One stage; stage 2 stands on the stage-1 run and MF that `collm stages` with the same "
                             "options makes (made here when missing), or on --stage1-dir and --encoder-dir.",
                    COMMON_HELP, STAGES_HELP, usage="%(prog)s [-h] --stage 1|2 [OPTION ...]")
    only_stage2 = replace(SECTIONS[MF], title=f"{SECTIONS[MF].title} (--stage 2 only)")
    groups = _sectioned(stage, SECTIONS | {MF: only_stage2})
    _add_run_arguments(groups[RUN])
    _add_stage_arguments(groups, custom={"stage": {"required": True, "choices": (1, 2), "metavar": "1|2"}})
    groups[RUN].add_argument("--stage1-dir", type=Path, default=None,
                             help="stage 2: the finished stage-1 run to stand on")
    groups[RUN].add_argument("--encoder-dir", *DEPRECATED_OPTIONS, type=Path, default=None,
                             help="stage 2: the finished collaborative model's run (collm encoder) to stand on")

    encoder = command("encoder", "Train (or find finished) the MF (or --encoder) of a dataset; prints its run "
                                 "folder and metrics (`collm mf`: the same).", COMMON_HELP,
                      usage="%(prog)s [-h] [OPTION ...]", aliases=tuple(DEPRECATED_COMMANDS))
    groups = _sectioned(encoder, MF_SECTIONS)
    _add_run_arguments(groups[RUN])
    groups[RUN].add_argument("--dataset", default="ml-1m", help="a dataset name or folder (default: ml-1m)")
    _add_encoder_argument(groups[MF], "MF")
    options.add_config_arguments(groups, mf_options(), MF, _mf_variants)
    return parser


def _checked(args: argparse.Namespace, group: str, build: Callable[[], Config]) -> Config:
    """build(): a config from the options of `group`; a value it refuses (rules.ConfigError) ends as an argparse
    error naming the option and what it accepts (status 2), before anything loads or any run folder is made."""
    try:
        return build()
    except rules.ConfigError as err:
        own = args.command in ("encoder", *DEPRECATED_COMMANDS)  # its MF options carry no mf- prefix
        generated = stage_options() if group == STAGE else mf_options("" if own else "mf-")
        flag = next((o.flag for o in generated if o.path == err.path), None)
        args.command_parser.error(f"argument {flag}: {err.problem}" if flag else str(err))


def stage_config(args: argparse.Namespace, stage: int) -> StageConfig:
    """The StageConfig of `stage` the options ask for: the profile's, with the given options replaced."""
    given = {path: value for path, value in options.overrides(args, STAGE).items() if path != ("stage",)}
    config = _checked(args, STAGE, lambda: options.apply(profiles.stage(args.profile, stage), given))
    # a dataset folder's path becomes its name: the name, not where the folder happens to be, keys runs
    return replace(config, dataset=dataset_name(config.dataset, args.data_dir))


def mf_config(args: argparse.Namespace, dataset: str, seed: int | None = None) -> TrainSettings:
    """The collaborative model's config the options ask for (--encoder, default MF): the profile's for `dataset`
    (seed: `seed` unless given), the --mf-* options replacing MF's fields."""
    name, given = getattr(args, "encoder", None) or "mf", options.overrides(args, MF)
    if given and encoder_registry.kind(name) != "mf":
        args.command_parser.error(f"the MF settings ({', '.join('/'.join(p) for p in given)}) apply to --encoder "
                                  f"{' or '.join(_mf_names())}, not {name}")
    entry = encoder_registry.info(name)
    for field, value in entry.fixed.items():
        if given.get((field,), value) != value:
            args.command_parser.error(f"--encoder {name} is {entry.label} ({field}={value}), which the {field} "
                                      f"setting changes: give --encoder {encoder_registry.kind(name)} for that")
    config = profiles.encoder(args.profile, dataset, name, **({} if seed is None else {"seed": seed}))
    return _checked(args, MF, lambda: options.apply(config, given))


def require_work_dir() -> Path:
    """The work dir, checked writable before a command reads data or starts a run (settings.require_writable)."""
    return settings.require_writable(settings.work_dir(), "the work dir", settings.WORK_DIR_FIX)


def _ensure_encoder(ctx: pipeline.RunContext, config: TrainSettings) -> Path:
    """pipeline.encoder; under torchrun rank 0 trains while the others wait, then find it finished (all ranks
    training one folder at once would race on its files)."""
    return distributed.rank0_first(lambda: pipeline.encoder(ctx, config))


def _summary(result: dict) -> dict:
    test = result["test"]
    return {"run_dir": result["run_dir"], "test": test["all"], "warm": test.get("warm"), "cold": test.get("cold"),
            "fit": {k: v for k, v in result["fit"].items() if k != "history"}}


def _print(summary: dict) -> None:
    if distributed.is_main():
        print(json.dumps(summary, indent=1, default=str), flush=True)


def run_stages(args: argparse.Namespace, only: int | None = None) -> dict:
    """Stage 1 and stage 2 (or `only` one of them, on --stage1-dir / --encoder-dir where given) as the options say;
    returns the summary printed (rank 0): each stage's run folder, test metrics and fit, and for both stages the
    MF scored on stage 2's rows."""
    progress = not args.no_progress
    stage1_dir, mf_dir = getattr(args, "stage1_dir", None), getattr(args, "encoder_dir", None)
    # every config first: a bad option stops the command before the data loads or a run folder is made
    configs = {s: stage_config(args, s) for s in (1, 2)}
    mf = mf_config(args, configs[2].dataset, configs[2].seed) if only != 1 and mf_dir is None else None
    require_work_dir()
    splits = load_dataset(configs[1].dataset, args.data_dir)
    ctx = pipeline.RunContext(splits, args.profile, configs[2].seed, configs[2].llm, progress)
    summary: dict[str, Any] = {}
    if mf is not None:
        mf_dir = _ensure_encoder(ctx, mf)
    if only != 2 or stage1_dir is None:
        first = pipeline.stage1(ctx, configs[1])
        stage1_dir = first["run_dir"]
        if only != 2:
            summary["stage1"] = _summary(first)
    if only != 1:
        second = pipeline.stage2(ctx, stage1_dir, mf_dir, configs[2])
        summary["stage2"] = _summary(second)
        if only is None and distributed.is_main():  # a run of its own: one rank makes it
            same = baselines.baselines_on_same_rows(splits, second["run_dir"], mf_dir)
            summary["mf_same_rows"] = same["MF"]["test"]
    _print(summary)
    return summary


def _stage(args: argparse.Namespace) -> dict:
    stage = options.overrides(args, STAGE)[("stage",)]
    if stage == 1 and (args.stage1_dir or args.encoder_dir or options.overrides(args, MF) or args.encoder):
        args.command_parser.error("--stage1-dir, --encoder-dir, --encoder and the --mf-* settings belong to --stage 2 "
                                  "(stage 1 trains LoRA on text prompts: no collaborative model)")
    return run_stages(args, only=stage)


def run_mf(args: argparse.Namespace) -> dict:
    """The MF the options ask for, trained unless finished; returns (and prints) its folder and metrics."""
    config = mf_config(args, dataset_name(args.dataset, args.data_dir))
    require_work_dir()
    splits = load_dataset(args.dataset, args.data_dir)
    out = pipeline.encoder(pipeline.RunContext(splits, args.profile, progress=not args.no_progress), config)
    metrics = read_json(out / "config.json")["metrics"]
    summary = {"run_dir": str(out), "valid": metrics["valid"]["all"], "test": metrics["test"]["all"]}
    _print(summary)
    return summary


def quiet_progress() -> None:
    """--no-progress: no bar at all, also the library's inner ones (prompt tokenising: settings.quiet reads
    $COLLM_PROGRESS) and transformers' weight loading."""
    from transformers.utils import logging as transformers_logging

    os.environ["COLLM_PROGRESS"] = "0"
    transformers_logging.disable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    """Entry point of `collm`; returns the exit status. A bad option ends as argparse's error, status 2; bad input
    the library names with its fix (a ValueError, FileNotFoundError or settings.NotWritable: unknown dataset, model
    not downloaded, read-only work dir, ...) ends with that message and status 1, no traceback; anything else
    raises as usual."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _say_deprecated(args, sys.argv[1:] if argv is None else argv)
    if getattr(args, "no_progress", False):
        quiet_progress()
    if getattr(args, "rehash", False):
        os.environ[hashing.REHASH_ENV] = "1"  # the notebooks' kernels inherit it
    try:
        with logs.console():
            return _run(args)
    except (ValueError, FileNotFoundError, settings.NotWritable) as err:
        print(f"collm {args.command}: error: {err}", file=sys.stderr)
        return 1
    except (OSError, RuntimeError) as err:  # a full disk found mid-write (torch: "unexpected pos"), with the fix
        full = settings.no_space(err)
        if full is None:
            raise
        print(f"collm {args.command}: error: {full}", file=sys.stderr)
        return 1


def _say_deprecated(args: argparse.Namespace, argv: list[str]) -> None:
    """A line on stderr for each older spelling used (`collm mf`, `--mf-dir`)."""
    if args.command in DEPRECATED_COMMANDS:
        print(f"collm: DEPRECATED: `collm {args.command}` is now `collm {DEPRECATED_COMMANDS[args.command]}` (same "
              "options)", file=sys.stderr)
    for old in DEPRECATED_OPTIONS:
        if any(a == old or a.startswith(f"{old}=") for a in argv):
            print(f"collm: DEPRECATED: {old} is now --encoder-dir", file=sys.stderr)


def _run(args: argparse.Namespace) -> int:
    if not (args.command == "replay" and args.verify):
        settings.device()  # $COLLM_DEVICE checked before any work: a device this machine lacks is named up front
    if args.command == "main":
        require_work_dir()
        runner.stop_on_sigterm()
        runner.run_main(args.profile, args.data_dir, args.only, args.in_place, not args.no_resume, args.notebook_dir)
    elif args.command == "replay" and args.verify:
        sys.exit(0 if runner.show_verification(args.bundles, args.allow_unsigned) else 1)
    elif args.command == "replay":
        require_work_dir()
        if args.out_dir is not None:
            settings.require_writable(args.out_dir, "--out-dir", "give --out-dir a folder you can write to")
        runner.stop_on_sigterm()
        runner.replay(args.bundles, args.data_dir, args.out_dir, only=args.only, allow_unsigned=args.allow_unsigned)
    elif args.command == "reproduce":
        return reproduce.run(args, args.command_parser)
    elif args.command == "doctor":
        found = doctor.report(args.profile, args.data_dir)
        print(json.dumps(found, indent=1) if args.json else "\n".join(doctor.lines(found)))
        return 1 if found["problems"] else 0
    elif args.command == "config":
        rows = config_sources.sources(args.step, args.profile, dataset_name(args.dataset, args.data_dir))
        print(json.dumps(rows, indent=1, default=str) if args.json
              else "\n".join(config_sources.lines(args.step, rows, args.profile)))
    elif args.command == "stages":
        run_stages(args)
    elif args.command == "stage":
        _stage(args)
    else:
        run_mf(args)
    return 0

if __name__ == "__main__":
    sys.exit(main())
