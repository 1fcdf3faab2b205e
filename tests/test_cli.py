"""The `collm` command: options generated from the config dataclasses (every field, reaching the config, bad values
named), and one in-process end-to-end `collm stages` / `collm stage` / `collm encoder` on ML-1M with a tiny model."""
from __future__ import annotations

import argparse
import dataclasses
import json
import re
import typing
from pathlib import Path
from dataclasses import dataclass, field

import pytest

from collm_lib import cli, options, profiles, runs
from collm_lib.collab import MFConfig
from collm_lib.train import StageConfig


def _leaf_paths(cls: type, path: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    """Every field of `cls`, nested dataclasses' fields as (parent, field)."""
    hints, found = typing.get_type_hints(cls), set()
    for f in dataclasses.fields(cls):
        nested = dataclasses.is_dataclass(hints[f.name])
        found |= _leaf_paths(hints[f.name], path + (f.name,)) if nested else {path + (f.name,)}
    return found


def _has_flag(flag: str, text: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text) is not None


def _help(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as stop:
        cli.main([*argv, "--help"])
    assert stop.value.code == 0
    return capsys.readouterr().out


def test_the_flag_mapping_is_explicit_and_covers_every_field():
    stage = {o.flag: o.path for o in cli.stage_options()}
    assert set(stage.values()) == _leaf_paths(StageConfig) and len(stage) == len(_leaf_paths(StageConfig))
    assert {f: stage[f] for f in ("--seed", "--model", "--lora-r", "--lora-targets", "--device", "--max-steps")} == {
        "--seed": ("seed",), "--model": ("llm", "model"), "--lora-r": ("llm", "lora_r"),
        "--lora-targets": ("llm", "lora_targets"), "--device": ("llm", "device"), "--max-steps": ("max_steps",)}
    mf = {o.flag: o.path for o in cli.mf_options("mf-")}
    assert set(mf.values()) == _leaf_paths(MFConfig) and mf["--mf-seed"] == ("seed",) and mf["--mf-dim"] == ("dim",)


@pytest.mark.parametrize("command, classes, prefix", [(["stage"], (StageConfig, MFConfig), "--mf-"),
                                                      (["stages"], (StageConfig, MFConfig), "--mf-"),
                                                      (["encoder"], (MFConfig,), "--")])
def test_help_lists_every_field_with_its_comment_and_profile_defaults(command, classes, prefix, capsys):
    text = " ".join(_help(command, capsys).split())  # unwrapped
    if len(classes) == 2:
        flags = {o.path: o.flag for o in cli.stage_options()}
        for path in _leaf_paths(StageConfig) - ({("stage",)} if command == ["stages"] else set()):
            assert _has_flag(flags[path], text), flags[path]
        assert "--min-lr FLOAT cosine floor [profile default: 8e-05]" in text  # StageConfig.min_lr's comment
        # what the option does, and each profile's stage 1 / stage 2 values, as profiles.py sets them
        steps = {p: " / ".join(dict.fromkeys(str(profiles.stage(p, s).max_steps) for s in (1, 2)))
                 for p in ("smoke", "cpu", "gpu")}
        assert steps == {"smoke": "4", "cpu": "100 / 120", "gpu": "2400 / 800"}
        assert ("--max-steps INT optimizer steps to train for, each of batch_size x grad_accum prompts per process; "
                "the lr decays to min_lr over them, and patience may stop sooner") in text
        assert "[profile default: smoke 4, cpu 100 / 120, gpu 2400 / 800]" in text
        assert "the authors' 200" not in text
        # row counts: train by rows; valid and test by whole users, so a sample can hold more rows than asked
        assert "--train-rows INT|none seeded sample of this many train rows, row by row (None: all)" in text
        assert "--eval-rows INT|none seeded sample of valid_small, taken as whole users until it holds at least" in text
        assert "--test-rows INT|none seeded sample of test, taken as whole users (UAUC needs them) until it" in text
        assert "--precision auto|bf16|fp32" in text and "$COLLM_PRECISION" in text
    for path in _leaf_paths(MFConfig):
        assert _has_flag(f"{prefix}{path[-1].replace('_', '-')}", text), path


def _help_sections(argv: list[str], capsys, monkeypatch) -> dict[str, tuple[str, list[str]]]:
    """{section title: (its description, the flags it lists)} of a command's --help, printed unwrapped."""
    monkeypatch.setenv("COLUMNS", "1000")  # argparse wraps to the terminal: one line per entry
    sections: dict[str, tuple[str, list[str]]] = {}
    title = None
    for line in _help(argv, capsys).splitlines():
        if re.fullmatch(r"\S.*:", line) and not line.startswith("usage:"):
            title = line[:-1]
            sections[title] = ("", [])
        elif title is not None and (entry := re.match(r"  (-[\w-]+)((?:, -[\w-]+)*)", line)):
            sections[title][1].extend([entry.group(1), *entry.group(2).split(", ")[1:]])
        elif title is not None and line.startswith("  ") and not line.startswith("   ") and not sections[title][1]:
            sections[title] = (line.strip(), [])  # the description, before the entries
    return sections


# the sections of `collm stages --help`, in order, and flags each must hold
STAGES_SECTIONS = {
    "run": ["--help", "--profile", "--data-dir", "--no-progress", "--dataset", "--seed"],
    "stage training": ["--lr", "--min-lr", "--warmup-steps", "--batch-size", "--grad-accum", "--max-steps",
                       "--eval-every", "--patience", "--score-batch-size", "--unfreeze-mf", "--prefix-no-grad"],
    "stage data": ["--template", "--max-history", "--train-rows", "--eval-rows", "--test-rows"],
    "LLM": ["--model", "--lora-r", "--lora-alpha", "--lora-dropout", "--lora-targets", "--device", "--precision"],
    "MF / collaborative model": ["--encoder", "--mf-lr", "--mf-dim", "--mf-seed", "--mf-bias", "--no-mf-bias"],
}


def test_stages_help_shows_each_option_in_its_section(capsys, monkeypatch):
    sections = _help_sections(["stages"], capsys, monkeypatch)
    assert list(sections) == list(STAGES_SECTIONS)  # titles, in this order; no flat "options" list
    for title, (description, flags) in sections.items():
        assert description and len(description) <= 76, title  # one line at argparse's 80 columns
        assert set(STAGES_SECTIONS[title]) <= set(flags), title
    placed = [flag for _, flags in sections.values() for flag in flags]
    assert len(placed) == len(set(placed))  # each option in one section only
    generated = {o.flag for o in cli.stage_options(exclude=("stage",))} | {o.flag for o in cli.mf_options("mf-")}
    assert generated <= set(placed)  # every field's option, in a section

    def switched_on(title: str) -> set[str]:  # a section's flags, --no-x left out
        return {f for f in sections[title][1] if not f.startswith("--no-")}

    assert switched_on("LLM") == {o.flag for o in cli.stage_options() if o.path[0] == "llm"}  # all LLMConfig's
    assert switched_on("MF / collaborative model") == {"--encoder"} | {o.flag for o in cli.mf_options("mf-")}


def test_stage_and_mf_help_have_sections_too(capsys, monkeypatch):
    stage = _help_sections(["stage"], capsys, monkeypatch)
    assert list(stage) == [*STAGES_SECTIONS][:4] + ["MF / collaborative model (--stage 2 only)"]
    assert {"--stage", "--stage1-dir", "--encoder-dir"} <= set(stage["run"][1])
    text = _help(["stage"], capsys)
    assert "--stage 1|2" in text and "profile default: 1 / 2" not in text  # required: no default to show
    mf = _help_sections(["encoder"], capsys, monkeypatch)
    assert list(mf) == ["run", "MF / collaborative model"]
    assert "--dataset" in mf["run"][1]
    assert {"--encoder", "--lr", "--dim", "--seed"} <= set(mf["MF / collaborative model"][1])


def test_sections_name_real_fields_and_are_made():
    with pytest.raises(ValueError, match="no field"):
        options.config_options(StageConfig, sections={"lora_rank": "llm"})
    parser = argparse.ArgumentParser()
    groups = options.add_sections(parser, {"run": options.Section("run", "where")})
    with pytest.raises(ValueError, match="no --help section"):
        options.add_config_arguments(groups, cli.stage_options(), cli.STAGE, cli._stage_variants)


def test_given_options_reach_the_config_and_the_rest_is_the_profiles():
    parser = cli.build_parser()
    args = parser.parse_args(["stage", "--stage", "1", "--profile", "smoke", "--lr", "0.01", "--lora-r", "4",
                              "--lora-targets", "all-linear", "--max-steps", "3", "--train-rows", "none",
                              "--no-prefix-no-grad"])
    base = profiles.stage("smoke", 1)
    assert cli.stage_config(args, 1) == dataclasses.replace(
        base, lr=0.01, max_steps=3, train_rows=None, prefix_no_grad=False,
        llm=dataclasses.replace(base.llm, lora_r=4, lora_targets=("all-linear",)))
    # stage 2's config takes the same options over stage 2's profile values (what `collm stages` runs)
    assert cli.stage_config(args, 2).eval_every == profiles.stage("smoke", 2).eval_every
    assert cli.stage_config(args, 2).stage == 2 and cli.stage_config(args, 2).lr == 0.01

    args = parser.parse_args(["encoder", "--profile", "cpu", "--dataset", "bookcrossing", "--dim", "8", "--no-bias"])
    assert cli.mf_config(args, args.dataset) == dataclasses.replace(
        profiles.mf("cpu", dataset="bookcrossing"), dim=8, bias=False)  # over profiles.MF_MODEL's bias
    args = parser.parse_args(["stages", "--profile", "cpu", "--seed", "7", "--mf-lr", "0.1"])
    assert (cli.mf_config(args, "ml-1m", 7).seed, cli.mf_config(args, "ml-1m", 7).lr) == (7, 0.1)
    args = parser.parse_args(["stages", "--seed", "7", "--mf-seed", "9"])
    assert cli.mf_config(args, "ml-1m", 7).seed == 9
    # --encoder names the collaborative model under stage 2 (or trained by `collm encoder`); --mf-* apply to MF only
    args = parser.parse_args(["stages", "--profile", "cpu", "--encoder", "sasrec"])
    assert cli.mf_config(args, "ml-1m", 7) == profiles.encoder("cpu", "ml-1m", "sasrec", seed=7)
    args = parser.parse_args(["stages", "--encoder", "mf-bias", "--mf-dim", "8"])
    assert cli.mf_config(args, "ml-1m").bias and cli.mf_config(args, "ml-1m").dim == 8
    args = parser.parse_args(["stages", "--encoder", "lightgcn", "--mf-dim", "8"])
    with pytest.raises(SystemExit):
        cli.mf_config(args, "ml-1m")


@pytest.mark.parametrize("argv, named", [
    (["stage", "--stage", "3"], "--stage"),
    (["stage"], "--stage"),
    (["stage", "--stage", "1", "--lr", "abc"], "--lr"),
    (["stage", "--stage", "1", "--train-rows", "many"], "--train-rows"),
    (["stages", "--lora-targets"], "--lora-targets"),
    (["encoder", "--cpu-threads", "2.5"], "--cpu-threads"),
    (["stages", "--lora", "4"], "--lora"),  # no abbreviations: --lora could be any of the --lora-* settings
    (["stage", "--stage", "1", "--mf-dim", "4"], "--mf-"),  # MF settings belong to stage 2
])
def test_bad_values_are_argparse_errors_naming_the_option(argv, named, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(argv)
    assert stop.value.code == 2 and named in capsys.readouterr().err


@dataclass
class _Inner:
    seed: int = 1  # inner seed
    names: tuple[str, ...] = ("a",)


@dataclass
class _Outer:
    # said above,
    # over two lines
    rate: float = 0.5
    inner: _Inner = field(default_factory=_Inner)
    odd: dict | None = None
    seed: int = 2  # outer seed,
    # continued below (a comment right above a field would be that field's)


def test_clashing_nested_names_take_their_parents_and_comments_are_read():
    with pytest.raises(TypeError, match="no command-line form"):
        options.config_options(_Outer)  # a dict field has no option: an error at once, not a silent gap
    flags = {o.flag: (o.path, o.comment) for o in options.config_options(_Outer, exclude=("odd",))}
    assert flags == {"--rate": (("rate",), "said above, over two lines"),
                     "--inner-seed": (("inner", "seed"), "inner seed"), "--names": (("inner", "names"), ""),
                     "--seed": (("seed",), "outer seed, continued below (a comment right above a field would be "
                                           "that field's)")}


@pytest.fixture
def work(tmp_path, monkeypatch, shared_data):
    monkeypatch.setenv("COLLM_WORK_DIR", str(tmp_path / "work"))
    monkeypatch.setenv("COLLM_PROFILE", "smoke")
    return tmp_path / "work"


def test_stages_stage_and_mf_end_to_end(work, tiny, capsys):
    """`collm stages` on ML-1M (smoke profile, tiny model): both stages and the MF, each with its run.log; `collm
    stage --stage 2` with the same options is that same run, and `collm encoder` finds the MF it stood on."""
    given = ["--model", str(tiny), "--no-progress", "--max-steps", "2", "--mf-max-epochs", "1"]
    assert cli.main(["stages", *given]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert set(summary) == {"stage1", "stage2", "mf_same_rows"}
    assert summary["stage2"]["fit"]["steps"] == 2 and 0 <= summary["mf_same_rows"]["all"]["auc"] <= 1
    for key in ("stage1", "stage2"):
        log = (runs.locate(summary[key]["run_dir"]) / "run.log").read_text()
        assert '"max_steps": 2' in log and f"stage {key[-1]} step 2/2: train loss" in log and "finished in" in log

    assert cli.main(["stage", "--stage", "2", *given]) == 0  # found finished: same options, same run
    assert json.loads(capsys.readouterr().out) == {"stage2": summary["stage2"]}
    config = json.loads((runs.locate(summary["stage2"]["run_dir"]) / "config.json").read_text())
    assert cli.main(["encoder", "--max-epochs", "1", "--no-progress"]) == 0
    mf = json.loads(capsys.readouterr().out)
    assert mf["run_dir"] == config["mf_dir"] and set(mf) == {"run_dir", "valid", "test"}


def test_bad_input_ends_with_the_librarys_message_and_no_traceback(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("COLLM_WORK_DIR", str(tmp_path))
    assert cli.main(["encoder", "--profile", "smoke", "--dataset", "no-such-data", "--data-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("collm encoder: error: unknown dataset 'no-such-data'") and "docs/own_data.md" in err
    assert "Traceback" not in err


def test_the_older_spellings_still_work_saying_so(tmp_path, monkeypatch, capsys):
    """`collm mf` and --mf-dir (before the encoder registry): the same command and option, with a DEPRECATED line."""
    monkeypatch.setenv("COLLM_WORK_DIR", str(tmp_path))
    assert cli.main(["mf", "--profile", "smoke", "--dataset", "no-such-data", "--data-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "collm: DEPRECATED: `collm mf` is now `collm encoder` (same options)"
    assert err[1].startswith("collm mf: error: unknown dataset 'no-such-data'")
    parser = cli.build_parser()
    assert parser.parse_args(["stage", "--stage", "2", "--mf-dir", "d"]).encoder_dir == Path("d")
    with pytest.raises(SystemExit):
        cli.main(["stage", "--stage", "1", "--mf-dir=d"])
    err = capsys.readouterr().err
    assert "DEPRECATED: --mf-dir is now --encoder-dir" in err and "--encoder-dir, --encoder and the --mf-*" in err
    assert cli.main(["encoder", "--profile", "smoke", "--dataset", "no-such-data", "--data-dir", str(tmp_path)]) == 1
    assert "DEPRECATED" not in capsys.readouterr().err
