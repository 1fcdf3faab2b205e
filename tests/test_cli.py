"""The `collm` command: options generated from the config dataclasses (every field, reaching the config, bad values
named), and one in-process end-to-end `collm stages` / `collm stage` / `collm mf` on ML-1M with a tiny model."""
from __future__ import annotations

import dataclasses
import json
import re
import typing
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
                                                      (["mf"], (MFConfig,), "--")])
def test_help_lists_every_field_with_its_comment_and_profile_defaults(command, classes, prefix, capsys):
    text = " ".join(_help(command, capsys).split())  # unwrapped
    if len(classes) == 2:
        flags = {o.path: o.flag for o in cli.stage_options()}
        for path in _leaf_paths(StageConfig) - ({("stage",)} if command == ["stages"] else set()):
            assert _has_flag(flags[path], text), flags[path]
        assert "--min-lr FLOAT cosine floor [profile default: 8e-05]" in text  # StageConfig.min_lr's comment
        assert ("--max-steps INT the authors' 200 \"epochs\" of 50 steps [profile default: smoke 4, cpu 150 / 400, "
                "gpu 2400 / 800]") in text  # stage 1 / stage 2
        assert "--precision auto|bf16|fp32" in text and "$COLLM_PRECISION" in text
    for path in _leaf_paths(MFConfig):
        assert _has_flag(f"{prefix}{path[-1].replace('_', '-')}", text), path


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

    args = parser.parse_args(["mf", "--profile", "cpu", "--dataset", "bookcrossing", "--dim", "8", "--no-bias"])
    assert cli.mf_config(args, args.dataset) == dataclasses.replace(
        profiles.mf("cpu", dataset="bookcrossing"), dim=8, bias=False)  # over profiles.MF_MODEL's bias
    args = parser.parse_args(["stages", "--profile", "cpu", "--seed", "7", "--mf-lr", "0.1"])
    assert (cli.mf_config(args, "ml-1m", 7).seed, cli.mf_config(args, "ml-1m", 7).lr) == (7, 0.1)
    args = parser.parse_args(["stages", "--seed", "7", "--mf-seed", "9"])
    assert cli.mf_config(args, "ml-1m", 7).seed == 9
    # --encoder names the collaborative model under stage 2 (or trained by `collm mf`); --mf-* apply to MF only
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
    (["mf", "--cpu-threads", "2.5"], "--cpu-threads"),
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
    stage --stage 2` with the same options is that same run, and `collm mf` finds the MF it stood on."""
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
    assert cli.main(["mf", "--max-epochs", "1", "--no-progress"]) == 0
    mf = json.loads(capsys.readouterr().out)
    assert mf["run_dir"] == config["mf_dir"] and set(mf) == {"run_dir", "valid", "test"}


def test_bad_input_ends_with_the_librarys_message_and_no_traceback(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("COLLM_WORK_DIR", str(tmp_path))
    assert cli.main(["mf", "--profile", "smoke", "--dataset", "no-such-data", "--data-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("collm mf: error: unknown dataset 'no-such-data'") and "docs/own_data.md" in err
    assert "Traceback" not in err
