"""Log files: every run keeps run.log (config, device, versions, timings, warnings) without it becoming an output,
nothing stays attached after a run (also one that raised), and the main job and reproduction parts log too."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import transformers

from collm_lib import collab, encoders, io, logs, reproduce, runner, runs
from tiny_llm import movie_splits

CONFIG = collab.MFConfig(dim=4, max_epochs=2, patience=1)
REPO = Path(__file__).resolve().parents[1]


def _state() -> tuple:
    """What a log file attaches while open: handlers, the package logger's level, warnings.showwarning."""
    package = logging.getLogger(logs.PACKAGE)
    return list(package.handlers), package.level, warnings.showwarning, list(logs._FILES)


@pytest.fixture
def work(tmp_path, monkeypatch):
    monkeypatch.setenv("COLLM_WORK_DIR", str(tmp_path / "work"))
    return tmp_path / "work"


def test_an_mf_run_keeps_its_log_and_a_rerun_does_not_need_it(work):
    before = _state()
    out = encoders.ensure(movie_splits(), CONFIG, progress=False)
    assert _state() == before
    text = (out / logs.RUN_LOG).read_text()
    info = io.run_info()
    for expected in ('"dim": 4', '"max_epochs": 2', f'"device": "{info["device"]}"', f'"torch": "{torch.__version__}"',
                     f'"transformers": "{transformers.__version__}"', "MF ml-synthetic epoch 1: train loss",
                     "MF ml-synthetic trained ", "finished in "):
        assert expected in text, expected
    record = runs.finished(out)
    assert record is not None and logs.RUN_LOG not in record["outputs"]  # a record, never a hashed output
    (out / logs.RUN_LOG).unlink()
    stamp = (out / "mf.pt").stat().st_mtime_ns
    assert encoders.ensure(movie_splits(), CONFIG, progress=False) == out  # found finished without its log
    assert (out / "mf.pt").stat().st_mtime_ns == stamp and not (out / logs.RUN_LOG).exists()


def test_a_warning_inside_a_run_is_logged_and_still_shown(work, monkeypatch):
    train_mf = encoders.train

    def warns(*args, **kwargs):
        warnings.warn("an odd thing happened in training", UserWarning)
        return train_mf(*args, **kwargs)

    monkeypatch.setattr(encoders, "train", warns)
    with pytest.warns(UserWarning, match="an odd thing"):  # recorders still get it
        out = encoders.ensure(movie_splits(), CONFIG, progress=False)
    assert "UserWarning: an odd thing happened in training" in (out / logs.RUN_LOG).read_text()


def test_a_failed_run_logs_why_and_leaves_nothing_attached(work, monkeypatch):
    before, train_mf = _state(), encoders.train

    def fails(*args, **kwargs):
        raise RuntimeError("out of memory, say")

    monkeypatch.setattr(encoders, "train", fails)
    with pytest.raises(RuntimeError, match="out of memory"):
        encoders.ensure(movie_splits(), CONFIG, progress=False)
    assert _state() == before
    out = runs.run_dir("mf", "ml-synthetic", encoders.identity(movie_splits(), CONFIG), "d4")
    text = (out / logs.RUN_LOG).read_text()
    assert "stopped after" in text and "RuntimeError: out of memory, say" in text and "Traceback" in text
    monkeypatch.setattr(encoders, "train", train_mf)
    encoders.ensure(movie_splits(), CONFIG, progress=False)  # the rerun appends to the same log
    text = (out / logs.RUN_LOG).read_text()
    assert text.count("run info: ") == 2 and "finished in" in text.splitlines()[-1]


def test_a_folder_cleared_for_another_run_loses_the_old_log(work, caplog):
    folder = work / "runs" / "x" / "kind-abc"
    with runs.running(folder, "kind", "a" * 64, {"n": 1}):
        pass
    assert "kind aaaaaaaaaa" in (folder / logs.RUN_LOG).read_text()
    runs.begin(folder, "kind", "b" * 64, {"n": 2})
    assert not (folder / logs.RUN_LOG).exists() and "its files are cleared" in caplog.text


def test_say_prints_and_logs_and_the_runner_and_reproduce_keep_their_logs(tmp_path, work, monkeypatch, capsys):
    with logs.log_file(tmp_path / "job.log"):
        logs.say("[phase] something: 1.0 s (done)")
        logging.getLogger("collm_lib.anything").info("an info line")
    assert capsys.readouterr().out == "[phase] something: 1.0 s (done)\n"
    text = (tmp_path / "job.log").read_text()
    assert "[phase] something" in text and "an info line" in text

    notebooks = tmp_path / "nb"
    notebooks.mkdir()
    (notebooks / "01_a.ipynb").write_text(json.dumps({"cells": [], "metadata": {}}))
    monkeypatch.setattr(runner, "_execute", lambda nb, target, *rest: target.write_text("{}"))
    runner.run_main("smoke", notebook_dir=notebooks, resume=False)
    main_log = runs.notebook_runs_dir("smoke") / runner.MAIN_LOG
    assert "ran 01_a.ipynb in" in main_log.read_text()

    def part(name, out, *args):
        logs.say(f"[phase] {name}: 0.0 s (done)")
        warnings.warn("a part's warning")

    monkeypatch.setattr(reproduce, "run_part", part)
    with pytest.warns(UserWarning):
        assert reproduce.main(["--out", str(tmp_path / "bundles"), "--part", "mf"]) == 0
    text = (tmp_path / "bundles" / reproduce.LOG).read_text()
    assert "[phase] mf: 0.0 s (done)" in text and "UserWarning: a part's warning" in text


def test_notes_reach_stderr_without_any_logging_configured(tmp_path):
    """As in a notebook: no handler anywhere, so a note inside a run must still be printed (and logged)."""
    code = ("import logging; from collm_lib import runs\n"
            f"with runs.running({str(tmp_path / 'run')!r}, 'kind', 'c' * 64, {{}}):\n"
            "    logging.getLogger('collm_lib.x').warning('a note for the reader')\n"
            "    logging.getLogger('collm_lib.x').info('progress for the log only')\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          env=dict(os.environ, COLLM_WORK_DIR=str(tmp_path)))
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "a note for the reader"
    text = (tmp_path / "run" / logs.RUN_LOG).read_text()
    assert "a note for the reader" in text and "progress for the log only" in text
