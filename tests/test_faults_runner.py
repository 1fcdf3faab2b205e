"""The main-job runner under faults: killed, failing, truncated and edited notebooks must not lie."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

import nbformat
import papermill
import pytest

from collm_lib import runner

REPO = Path(__file__).resolve().parent.parent


def _notebook(folder: Path, name: str, body: str) -> Path:
    """A tiny notebook shaped like the real ones: a parameters cell (profile = None), then `body`."""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("profile = None", metadata={"tags": ["parameters"]}),
                                         nbformat.v4.new_code_cell(body)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, folder / name)
    return folder / name


@pytest.fixture
def work(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("COLLM_WORK_DIR", str(tmp_path / "work"))
    return tmp_path / "work"


def _run(nb_dir: Path, **kwargs) -> list[Path]:
    return runner.run_main("smoke", notebook_dir=nb_dir, **kwargs)


SAFETY_NET = 900  # seconds: only a hung runner reaches it; a slow or busy machine just takes longer


def _wait_for(event, proc: subprocess.Popen, log: Path, alive: bool = True) -> None:
    """Poll until `event()` holds; fail if the runner exits first (with `alive`) or after SAFETY_NET seconds. How long
    it takes is not part of what the tests assert."""
    give_up = time.monotonic() + SAFETY_NET
    while not event():
        assert not alive or proc.poll() is None, f"the runner exited first: {log.read_text()[-2000:]}"
        assert time.monotonic() < give_up, f"nothing after {SAFETY_NET} s: {log.read_text()[-2000:]}"
        time.sleep(0.1)


@pytest.mark.parametrize(("sig", "in_place"), [(signal.SIGTERM, True), (signal.SIGKILL, True), (signal.SIGINT, False)],
                         ids=["SIGTERM-in-place", "SIGKILL-in-place", "SIGINT-resumable"])
def test_killed_run_leaves_the_target_untouched(tmp_path, work, sig, in_place):
    """SIGTERM (kill, CI cancel) and SIGKILL (OOM killer) mid-notebook: the committed notebook stays byte-identical;
    Ctrl-C on a resumable run must not leave a copy that the next run skips as finished."""
    nb_dir = tmp_path / "notebooks"
    started = tmp_path / "started"
    source = _notebook(nb_dir, "01_sleep.ipynb", f"import pathlib, time\npathlib.Path({str(started)!r}).touch()\n"
                                                 "time.sleep(3600)")  # only the signal ends it
    target = source if in_place else work / "notebook_runs" / "smoke" / source.name
    before = source.read_bytes()
    cmd = [sys.executable, "-m", "collm_lib.runner", "--profile", "smoke", "--notebook-dir", str(nb_dir),
           *(["--in-place"] if in_place else [])]
    log = (tmp_path / "runner.log").open("w")
    # SIGINT at its default in the runner: a test session started in the background (nohup ... &) passes SIGINT on
    # as ignored, and the runner would never see the Ctrl-C this test sends
    proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, "COLLM_WORK_DIR": str(work)}, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        _wait_for(started.exists, proc, tmp_path / "runner.log")  # the kernel reached the cell
        # the whole process group for SIGKILL (the kernel would outlive its runner); the runner alone otherwise
        os.killpg(proc.pid, sig) if sig == signal.SIGKILL else proc.send_signal(sig)
        _wait_for(lambda: proc.poll() is not None, proc, tmp_path / "runner.log", alive=False)  # it unwound, exited
        assert proc.returncode != 0
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        log.close()
    assert source.read_bytes() == before
    if not in_place:
        assert not target.exists(), f"an interrupted run left {target}, which resume would skip as finished"
    if sig != signal.SIGKILL:  # an interrupt unwinds: no temporary left beside the notebooks, the copy kept aside
        assert sorted(p.name for p in nb_dir.iterdir()) == [source.name]
        failed = work / "notebook_runs" / "smoke" / "01_sleep.failed.ipynb"
        assert failed.exists() and str(failed) in (tmp_path / "runner.log").read_text(), "and says where it is"


def test_failing_notebook_leaves_the_target_untouched_and_the_failure_beside(tmp_path, work):
    nb_dir = tmp_path / "notebooks"
    source = _notebook(nb_dir, "01_boom.ipynb", "raise RuntimeError('boom')")
    before = source.read_bytes()
    with pytest.raises(papermill.PapermillExecutionError, match="boom") as err:
        _run(nb_dir, in_place=True)
    assert source.read_bytes() == before
    assert sorted(p.name for p in nb_dir.iterdir()) == ["01_boom.ipynb"]
    failed = work / "notebook_runs" / "smoke" / "01_boom.failed.ipynb"
    assert "RuntimeError" in failed.read_text()
    assert str(failed) in "".join(traceback.format_exception(err.value)), "the error says where the failed copy is"


def test_truncated_executed_copy_is_rerun(tmp_path, work, capsys):
    nb_dir = tmp_path / "notebooks"
    source = _notebook(nb_dir, "01_ok.ipynb", "y = 1")
    target = work / "notebook_runs" / "smoke" / source.name
    target.parent.mkdir(parents=True)
    text = source.read_text()
    target.write_text(text[: len(text) // 2])  # cut mid-JSON, as a full disk or a crash mid-write leaves it
    assert _run(nb_dir) == [target]
    assert json.loads(target.read_text())["metadata"]["papermill"]["end_time"]
    said = [line for line in capsys.readouterr().out.splitlines() if line.startswith("re-run 01_ok.ipynb")]
    assert said and str(target) in said[0], "the message names the damaged file"


def test_edited_source_notebook_is_rerun(tmp_path, work, capsys):
    nb_dir = tmp_path / "notebooks"
    source = _notebook(nb_dir, "01_ok.ipynb", "y = 1")
    target = work / "notebook_runs" / "smoke" / source.name
    _run(nb_dir)
    _run(nb_dir)
    assert "skip 01_ok.ipynb" in capsys.readouterr().out  # unchanged: resumed, not re-run
    _notebook(nb_dir, "01_ok.ipynb", "y = 2")
    _run(nb_dir)
    out = capsys.readouterr().out
    assert "skip" not in out and "re-run 01_ok.ipynb: its code changed" in out
    assert "y = 2" in [c["source"] for c in nbformat.read(target, as_version=4).cells]


def test_in_place_success_replaces_the_target_stripped(tmp_path, work):
    """The success path of the rename: outputs in, papermill's injected cell out, no temporary left."""
    nb_dir = tmp_path / "notebooks"
    source = _notebook(nb_dir, "01_ok.ipynb", "print(profile)")
    assert _run(nb_dir, in_place=True) == [source]
    cells = nbformat.read(source, as_version=4).cells
    assert [c.metadata.get("tags", []) for c in cells] == [["parameters"], []]
    assert cells[1].outputs[0]["text"] == "smoke\n"
    assert sorted(p.name for p in nb_dir.iterdir()) == [source.name]
