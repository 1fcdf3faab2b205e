"""Bad input is named, not crashed on: each config field's value checked as the config is built (the CLI's option
named, status 2, before any run folder is made), unwritable output folders, damaged model folders, and the
temporary files a killed atomic write leaves in a run folder."""
from __future__ import annotations

import dataclasses
import errno
import io
import json
import logging
import os
import re
import shutil
import tarfile
import typing
from pathlib import Path

import pytest

from collm_lib import (bundle, cli, embedded, encoder_registry, encoders, profiles, prompts, rules, runner, runs,
                       settings, stages)
from collm_lib import io as io_module
from collm_lib.collab import MFConfig
from collm_lib.ctrl import CTRLConfig
from collm_lib.data import InteractionSpec, common
from collm_lib.data.prepare import PrepareConfig
from collm_lib.lightgcn import LightGCNConfig
from collm_lib.sasrec import SASRecConfig
from collm_lib.llm import LLMConfig, load_llm
from collm_lib.profiles import SweepPlan
from collm_lib.rerank import RerankConfig
from collm_lib.retrieval import IndexConfig
from collm_lib.train import StageConfig
from tiny_llm import movie_splits

CONFIGS = (StageConfig, LLMConfig, MFConfig, LightGCNConfig, SASRecConfig, SweepPlan)


@pytest.fixture
def work(tmp_path, monkeypatch) -> Path:
    """An empty work dir that does not exist yet, the smoke profile, and no raw data."""
    monkeypatch.setenv("COLLM_WORK_DIR", str(tmp_path / "work"))
    monkeypatch.setenv("COLLM_DATA_DIR", str(tmp_path / "raw"))
    monkeypatch.setenv("COLLM_PROFILE", "smoke")
    return tmp_path / "work"


def _exit(argv: list[str], capsys) -> tuple[int, str]:
    """cli.main(argv)'s exit status and stderr, whether it returned or raised SystemExit (argparse's errors)."""
    try:
        code = cli.main(argv)
    except SystemExit as stop:
        code = stop.code
    return code, capsys.readouterr().err


# --- every field checked as its config is built -------------------------------------------------------------------

def _numbers(cls: type) -> list[str]:
    hints = typing.get_type_hints(cls)
    return [f.name for f in dataclasses.fields(cls)
            if any(t in (int, float) for t in (hints[f.name], *typing.get_args(hints[f.name])))]


def _build(cls: type, **changes) -> object:
    """An instance of `cls` (the smoke profile's), `changes` applied and checked (MFConfig does not check itself)."""
    base = {StageConfig: lambda: profiles.stage("smoke", 1), LLMConfig: LLMConfig,
            MFConfig: lambda: profiles.mf("smoke"), SweepPlan: lambda: profiles.plan("smoke"),
            LightGCNConfig: lambda: profiles.encoder("smoke", name="lightgcn"),
            SASRecConfig: lambda: profiles.encoder("smoke", name="sasrec")}[cls]()
    config = dataclasses.replace(base, **changes)
    rules.check_config(config)
    return config


@pytest.mark.parametrize("cls", CONFIGS)
def test_every_field_has_a_rule_the_profiles_pass(cls):
    names = {f.name for f in dataclasses.fields(cls)}
    assert [n for n in names if rules.rule_of(cls, n) is None] == []
    assert set(rules.CONFIG_RULES.get(cls.__name__, {})) <= names  # no rule left for a field that is gone
    for profile in settings.PROFILES:
        for config in (profiles.stage(profile, 1), profiles.stage(profile, 2), profiles.plan(profile),
                       *(profiles.encoder(profile, name=name) for name in encoder_registry.names())):
            rules.check_config(config)


@pytest.mark.parametrize("cls, name", [(c, n) for c in CONFIGS for n in _numbers(c)])
def test_every_numeric_field_refuses_a_negative_value_naming_itself(cls, name):
    with pytest.raises(rules.ConfigError, match=rf"^{cls.__name__}\.{name}: -3; it must be ") as err:
        _build(cls, **{name: -3})
    assert err.value.path == (name,)


@pytest.mark.parametrize("changes, words", [
    (dict(batch_size=0), "StageConfig.batch_size: 0; it must be a whole number >= 1 and <= 16777216"),
    (dict(max_steps=0), "StageConfig.max_steps: 0; it must be a whole number >= 1 and <= 100000000"),
    (dict(eval_every=0), "StageConfig.eval_every: 0; it must be a whole number >= 1 and <= 100000000"),
    (dict(lr=0.0), "StageConfig.lr: 0.0; it must be a number > 0 and < 10"),
    (dict(lr=float("nan")), "StageConfig.lr: nan; it must be a number > 0 and < 10"),
    (dict(max_history=0), "StageConfig.max_history: 0; it must be a whole number >= 1"),
    (dict(train_rows=0), "StageConfig.train_rows: 0; it must be None (all of them) or a whole number >= 1"),
    (dict(batch_size=True), "StageConfig.batch_size: True; it must be a whole number >= 1 and <= 16777216"),
    (dict(batch_size=16.0), "StageConfig.batch_size: 16.0; it must be a whole number >= 1 and <= 16777216"),
    (dict(stage=3), "StageConfig.stage: 3; it must be one of 1, 2"),
    (dict(seed=2**32), "StageConfig.seed: 4294967296; it must be a whole number >= 0 and <= 4294967295"),
])
def test_stage_config_names_the_field_the_value_and_what_it_accepts(changes, words):
    with pytest.raises(ValueError) as err:
        dataclasses.replace(profiles.stage("smoke", 1), **changes)  # as the notebooks and sweeps build them
    assert str(err.value) == words


def test_template_names_the_known_templates():
    with pytest.raises(ValueError, match="template: 'nope'; it must be None .* or one of 'movie_text'") as err:
        StageConfig(template="nope")
    assert all(repr(name) in str(err.value) for name in prompts.TEMPLATES)


def test_llm_config_fields_are_checked_too():
    with pytest.raises(ValueError, match=r"^LLMConfig.lora_dropout: 1.0; it must be a number >= 0 and < 1$"):
        LLMConfig(lora_dropout=1.0)
    with pytest.raises(ValueError, match="LLMConfig.lora_targets: \\(\\); it must be a tuple of module names"):
        LLMConfig(lora_targets=())
    with pytest.raises(ValueError, match="LLMConfig.device: 'nope'; it must be None .* or a torch device"):
        LLMConfig(device="nope")


@pytest.mark.parametrize("argv, flag, value", [
    (["stage", "--stage", "1", "--batch-size", "0"], "--batch-size", "0"),
    (["stage", "--stage", "1", "--batch-size", "-3"], "--batch-size", "-3"),
    (["stages", "--max-steps", "0"], "--max-steps", "0"),
    (["stages", "--eval-every", "0"], "--eval-every", "0"),
    (["stage", "--stage", "2", "--template", "nope"], "--template", "'nope'"),
    (["stages", "--lora-r", "0"], "--lora-r", "0"),  # LLMConfig's, nested in StageConfig
    (["stages", "--lr", "-0.001"], "--lr", "-0.001"),
    (["stages", "--mf-batch-size", "0"], "--mf-batch-size", "0"),  # MFConfig's under stage 2
    (["encoder", "--batch-size", "0"], "--batch-size", "0"),
    (["encoder", "--max-epochs", "0"], "--max-epochs", "0"),
])
def test_bad_option_values_are_argparse_errors_naming_the_option(work, capsys, argv, flag, value):
    code, err = _exit(argv, capsys)
    assert code == 2 and f"error: argument {flag}: {value}; it must be " in err and "Traceback" not in err
    assert not work.exists()


@pytest.mark.parametrize("argv", [["stages", "--eval-every", "0"], ["stage", "--stage", "1", "--template", "nope"],
                                  ["encoder", "--batch-size", "0", "--max-epochs", "1"]])
def test_a_bad_parameter_leaves_no_run_folder(work, tiny, monkeypatch, capsys, argv):
    """With data at hand (a synthetic ML-1M), a bad option stops the command before any folder is made."""
    monkeypatch.setattr(cli, "load_dataset", lambda name, data_dir=None: movie_splits())
    code, _ = _exit([*argv, "--model", str(tiny), "--no-progress"] if argv[0] != "mf" else argv, capsys)
    assert code == 2 and not work.exists()


def test_the_python_api_stops_before_the_run_folder_too(work, tiny):
    config = profiles.stage("smoke", 1, llm=LLMConfig(model=str(tiny), device="cpu"))
    with pytest.raises(ValueError, match="StageConfig.max_steps: 0"):
        stages.run_stage(movie_splits(), dataclasses.replace(config, max_steps=0), progress=False)
    assert not work.exists()


# --- folders the library must write to ----------------------------------------------------------------------------

def test_reproduce_out_an_existing_file_names_it_and_the_fix(work, tmp_path, capsys):
    target = tmp_path / "bundles.tar.gz"
    target.write_text("keep me")
    code, err = _exit(["reproduce", "--part", "mf", "--out", str(target)], capsys)
    assert code == 2 and f"--out {target}: it is a file, not a folder; give --out a folder" in err
    assert target.read_text() == "keep me" and not work.exists()


def _read_only(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o555)
    if os.access(folder, os.W_OK):  # root writes anyway
        folder.chmod(0o755)
        pytest.skip("this user can write to a 0o555 folder (root)")
    return folder


def test_a_read_only_work_dir_is_one_clear_error(tmp_path, monkeypatch, capsys):
    work = _read_only(tmp_path / "ro")
    monkeypatch.setenv("COLLM_WORK_DIR", str(work / "work"))
    try:
        code, err = _exit(["encoder", "--profile", "smoke", "--data-dir", str(tmp_path)], capsys)
    finally:
        work.chmod(0o755)
    assert code == 1 and err.strip() == (f"collm encoder: error: the work dir {work / 'work'}: its parent {work} is not "
                                         f"writable by this user; {settings.WORK_DIR_FIX}")


def test_reproduce_out_a_read_only_folder_names_it(tmp_path, monkeypatch, capsys):
    out = _read_only(tmp_path / "ro")
    monkeypatch.setenv("COLLM_WORK_DIR", str(tmp_path / "work"))
    try:
        code, err = _exit(["reproduce", "--part", "mf", "--out", str(out)], capsys)
    finally:
        out.chmod(0o755)
    assert code == 2 and f"--out {out}: it is not writable by this user; give --out a folder" in err


def test_a_work_dir_on_a_read_only_file_system_is_one_clear_error(work, monkeypatch, capsys):
    """EROFS, which root meets too: the file system's read-only flag, as os.statvfs reports it."""
    work.mkdir()
    real = os.statvfs

    def statvfs(path):
        found = real(path)
        return os.statvfs_result((*found[:8], found.f_flag | os.ST_RDONLY, found.f_namemax)) \
            if Path(path) == work else found

    monkeypatch.setattr(os, "statvfs", statvfs)
    code, err = _exit(["encoder"], capsys)
    assert code == 1 and err.strip() == (f"collm encoder: error: the work dir {work}: it is on a read-only file system; "
                                         "set $COLLM_WORK_DIR to a folder you can write to")
    assert list(work.iterdir()) == []


# --- damaged model folders ----------------------------------------------------------------------------------------

def _truncate(path: Path, keep: int) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def _bad_header(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[8:16] = b"garbage!"  # the header's JSON starts after its 8-byte length
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("name, damage, words", [
    ("model.safetensors", _bad_header, "its header is not valid safetensors JSON"),
    ("model.safetensors", lambda p: _truncate(p, p.stat().st_size // 2), "where its header says"),
    ("model.safetensors", lambda p: _truncate(p, 100), "more than the file's 100"),
    ("tokenizer.json", lambda p: _truncate(p, 1000), "not valid JSON: Expecting value"),
    ("tokenizer_config.json", lambda p: _truncate(p, 50), "not valid JSON"),
])
def test_a_damaged_model_file_is_named_with_the_fix(tiny, tmp_path, name, damage, words):
    folder = Path(shutil.copytree(tiny, tmp_path / "model"))
    damage(folder / name)
    with pytest.raises(ValueError) as err:
        load_llm(LLMConfig(model=str(folder), device="cpu"))
    message = str(err.value)
    assert f"the folder {folder} holds damaged or incomplete files ({name}: " in message and words in message
    assert "save_pretrained" in message and err.value.__cause__ is not None  # the original error stays chained


# --- temporary files of a killed atomic write ---------------------------------------------------------------------

def test_a_restarted_run_removes_the_temporary_files_of_a_killed_write(tmp_path, caplog):
    from collm_lib import runs

    stale = [tmp_path / ".last.pt.k1ll3d.tmp", tmp_path / ".results.json.x7y8z9.tmp"]
    for path in stale:
        path.write_bytes(b"half a checkpoint")
    (tmp_path / ".hidden").write_text("not ours")
    with caplog.at_level(logging.INFO, logger="collm_lib"):
        runs.begin(tmp_path, "stage1", "x" * 64, {"lr": 1e-3})
    assert not any(p.exists() for p in stale) and (tmp_path / ".hidden").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hidden", runs.IDENTITY]
    assert "removed 2 temporary file(s) an interrupted write left in" in caplog.text


# --- options that do not apply, values out of range, devices this machine lacks ----------------------------------

@pytest.mark.parametrize("argv, words", [
    (["stage", "--stage", "1", "--encoder", "lightgcn"], "--encoder and the --mf-* settings belong to --stage 2"),
    (["encoder", "--encoder", "mf-bias", "--no-bias"], "--encoder mf-bias is MF with biases"),
    (["stages", "--encoder", "mf-bias", "--no-mf-bias"], "--encoder mf-bias is MF with biases"),
    (["encoder", "--device", "meta"], "argument --device: 'meta'; it must be None"),
    (["encoder", "--device", "xpu"], "argument --device: 'xpu'; it must be None"),
    (["encoder", "--lr", "1e300"], "argument --lr: 1e+300; it must be a number > 0 and < 10"),
    (["stages", "--lr", "1e300"], "argument --lr: 1e+300; it must be a number > 0 and < 10"),
    (["encoder", "--dim", "100000000"], "argument --dim: 100000000; it must be a whole number >= 1 and <= 16384"),
    (["encoder", "--max-epochs", "100000000000"], "argument --max-epochs: 100000000000; it must be"),
])
def test_options_that_do_not_apply_or_exceed_their_range_are_refused(work, capsys, argv, words):
    """Before: ignored (stage 1's --encoder), silently plain MF (mf-bias --no-bias), accepted then a traceback
    (devices), "scores contain NaN" (lr), allocator tracebacks (dim, epochs)."""
    code, err = _exit(argv, capsys)
    assert code == 2 and words in err and "Traceback" not in err
    assert not work.exists()


def test_a_device_in_the_environment_this_machine_lacks_is_named(work, monkeypatch, capsys):
    monkeypatch.setenv("COLLM_DEVICE", "bogus")
    code, err = _exit(["encoder"], capsys)
    assert code == 1 and "$COLLM_DEVICE 'bogus' is not a torch device" in err and not work.exists()


def test_a_diverged_training_names_the_learning_rate():
    from collm_lib import metrics

    metrics.require_finite_loss(0.69, 1e-3, "MF")
    with pytest.raises(ValueError, match=r"^MF epoch 1: training diverged \(train loss nan\) at learning rate 5; "
                                         "lower the learning rate"):
        metrics.require_finite_loss(float("nan"), 5, "MF epoch 1")


def test_sasrec_on_rows_without_histories_is_named_before_a_run_folder(work):
    """BookCrossing's collaborative rows (every rating) hold no histories: before, KeyError: 'his'."""
    splits = movie_splits()
    splits.collab_train = splits.train[["uid", "iid", "label"]].copy()
    with pytest.raises(ValueError, match="ml-synthetic: SASRec trains on each row's history .* use --encoder mf"):
        encoders.ensure(splits, profiles.encoder("smoke", name="sasrec"), progress=False)
    assert not work.exists()


def test_a_notebook_number_that_does_not_exist_is_refused(work, capsys):
    code, err = _exit(["main", "--only", "07", "99"], capsys)
    assert code == 1 and "--only 99: no such notebook" in err and "07" in err


@pytest.mark.parametrize("config", [lambda: IndexConfig(nprobe=0), lambda: RerankConfig(ks=(10, -1)),
                                    lambda: CTRLConfig(temperature=float("inf")), lambda: PrepareConfig(datasets=()),
                                    lambda: InteractionSpec(rating="r", valid_small_frac="half").check(),
                                    lambda: InteractionSpec(rating="r", threshold=float("nan")).check()])
def test_configs_that_had_no_rules_check_every_field(config):
    with pytest.raises(rules.ConfigError, match=r"^(IndexConfig|RerankConfig|CTRLConfig|PrepareConfig|"
                                                r"InteractionSpec)\.\w+: .*; it must be "):
        config()


# --- bundles and replays: truncated, out of range, not a name -----------------------------------------------------

@pytest.fixture
def genuine(tmp_path, work) -> Path:
    with runs.track() as used:
        encoders.ensure(movie_splits(), MFConfig(dim=4, max_epochs=1, batch_size=16), progress=False)
    return bundle.pack(tmp_path / "mf.tar.gz", work, sorted(used),
                       {"part": "mf", "device": "cpu", "profile": "smoke", "seed": 2023, "model": "smollm2-135m"})


def test_a_truncated_bundle_is_named_not_a_traceback(genuine, tmp_path, capsys):
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(genuine.read_bytes()[:genuine.stat().st_size // 2])
    with pytest.raises(ValueError, match="is not a bundle .*: truncated or damaged"):
        bundle.verify(cut)
    code, _ = _exit(["replay", "--verify", str(cut)], capsys)
    assert code == 1
    code, err = _exit(["replay", str(cut)], capsys)
    assert code == 1 and "truncated or damaged" in err and "Traceback" not in err


@pytest.mark.parametrize("field, value, words", [
    ("seed", 10**30, "has seed '1000000000000000000000000000000', not a whole number from 0 to 4294967295"),
    ("data", {"/tmp/elsewhere": "0" * 64}, "has data"),  # a local path: before, that dataset was built first
    ("device", "x" * 5000, "has device"),
])
def test_manifest_fields_out_of_range_are_refused_before_the_work_dir_is_emptied(genuine, tmp_path, field, value,
                                                                                 words):
    with tarfile.open(genuine) as tar:
        manifest = json.loads(tar.extractfile(bundle.MANIFEST).read())
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers() if m.name != bundle.MANIFEST]
    manifest[field] = value
    crafted = tmp_path / "crafted.tar.gz"
    with tarfile.open(crafted, "w:gz") as tar:
        for name, data in [(bundle.MANIFEST, json.dumps(manifest).encode()), *((m.name, c) for m, c in members)]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    target = tmp_path / "replay"
    bundle.unpack(genuine, target)  # an earlier replay's folder: a refused bundle must not empty it
    before = sorted(target.rglob("*"))
    with pytest.raises(bundle.UnsafeBundle, match=words):
        runner.replay([crafted], work_dir=target)
    assert sorted(target.rglob("*")) == before


def test_a_lock_file_that_is_a_folder_or_a_link_is_named(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / runs.LOCK).mkdir()
    with pytest.raises(settings.NotWritable, match=r"lock file .*\.lock is a folder, not a file: remove it"):
        with runs.claim(folder, "x" * 64):
            pass
    (folder / runs.LOCK).rmdir()
    (folder / runs.LOCK).symlink_to(tmp_path / "elsewhere")
    with pytest.raises(settings.NotWritable, match="is a link, not a file"):
        with runs.claim(folder, "x" * 64):
            pass


# --- disks and folders --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("error", [OSError(errno.ENOSPC, "No space left on device", "/w/runs/x/last.pt"),
                                   RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 64")])
def test_a_full_disk_is_named_with_the_fix(work, monkeypatch, capsys, error):
    """Before: OSError 28 or torch's "unexpected pos" tracebacks."""
    def full(args):
        raise error
    monkeypatch.setattr(cli, "_run", full)
    code, err = _exit(["encoder"], capsys)
    assert code == 1 and "error: the disk is full" in err and "run the same command again" in err
    assert ("writing /w/runs/x/last.pt" in err) == isinstance(error, OSError) and "Traceback" not in err
    monkeypatch.setattr(cli, "_run", lambda args: (_ for _ in ()).throw(RuntimeError("another error")))
    with pytest.raises(RuntimeError, match="another error"):
        cli.main(["encoder"])


def test_too_little_free_space_is_found_before_a_long_write(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10 * 2**30, 10 * 2**30, 2**20))
    with pytest.raises(settings.NotWritable, match=r"the safetensors copy of .* needs 600 MiB in .*, and its disk "
                                                   r"has 1 MiB free; free some space"):
        settings.require_space(tmp_path / "cache", embedded.CONVERTED_BYTES, "the safetensors copy of the model")


def test_a_read_only_figures_folder_is_found_before_the_first_notebook(work, tmp_path, monkeypatch, capsys):
    figures = tmp_path / "figures"
    figures.mkdir()
    monkeypatch.setenv("COLLM_FIGURES_DIR", str(figures))
    real = os.statvfs
    monkeypatch.setattr(os, "statvfs", lambda path: os.statvfs_result(
        (*real(path)[:8], real(path).f_flag | os.ST_RDONLY, real(path).f_namemax)) if Path(path) == figures
        else real(path))
    monkeypatch.setattr(runner, "_run_one", lambda *a: pytest.fail("a notebook started"))
    code, err = _exit(["main", "--only", "01"], capsys)
    assert code == 1 and f"the figures folder {figures}: it is on a read-only file system; set " \
                          "$COLLM_FIGURES_DIR" in err


def test_a_killed_conversion_or_build_leaves_nothing_for_long(tmp_path):
    """A kill during the first model conversion left a 517 MB temporary folder forever, a kill during a processed
    build a temporary file: the next writer of the same cache removes them first (under its lock)."""
    cache = tmp_path / "cache"
    killed = cache / ".smollm2-135m-instruct.x1y2z3.tmp"
    (killed / "inner").mkdir(parents=True)
    (killed / "inner" / "model.safetensors").write_bytes(b"half")
    with io_module.sole_writer(cache, "smollm2-135m-instruct") as removed:
        assert removed == [killed] and not killed.exists()
    processed = tmp_path / "processed" / "ml-synthetic"
    processed.mkdir(parents=True)
    half = processed / ".train.json.gz.k1ll3d.tmp"
    half.write_bytes(b"half a frame")
    common.save_processed(movie_splits(), processed)
    assert not half.exists() and common.load_processed("ml-synthetic", processed) is not None


@pytest.mark.parametrize("name, damage, words", [
    ("tokenizer_config.json", lambda p: p.write_text('"a string"'), "valid JSON, but not an object (a JSON str)"),
    ("generation_config.json", lambda p: p.write_text("[1, 2]"), "valid JSON, but not an object (a JSON list)"),
    ("model.safetensors", lambda p: (p.unlink(), p.mkdir()), "a folder where a file belongs"),
])
def test_model_files_of_the_wrong_kind_are_named_and_leave_no_run_folder(tiny, tmp_path, work, name, damage, words):
    folder = Path(shutil.copytree(tiny, tmp_path / "model"))
    damage(folder / name)
    config = profiles.stage("smoke", 1, llm=LLMConfig(model=str(folder), device="cpu"))
    with pytest.raises(ValueError, match=f"holds damaged or incomplete files \\({name}: {re.escape(words)}"):
        stages.run_stage(movie_splits(), config, progress=False)
    assert not (work / "runs").exists()  # before: every failed model load left a run folder


def test_a_config_json_that_is_no_object_is_named(tiny, tmp_path):
    folder = Path(shutil.copytree(tiny, tmp_path / "model"))
    (folder / "config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="config.json holds a list, not an object; the folder is damaged"):
        load_llm(LLMConfig(model=str(folder), device="cpu"))
