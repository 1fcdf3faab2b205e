"""Fault injection on runs: a run never returns another run's results, resumes bit-identically after kill -9,
and names or rebuilds a damaged file. Each silent case here failed on the code before collm_lib.runs."""
from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from collm_lib import collab, encoders, pipeline, runs, stages, sweep
from collm_lib.llm import LLMConfig
from collm_lib.train import StageConfig
from tiny_llm import movie_splits

HERE = Path(__file__).parent


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread, a private work dir


def _config(tiny: Path, stage: int = 1, **changes) -> StageConfig:
    base = dict(stage=stage, batch_size=4, max_steps=4, eval_every=2, warmup_steps=1, score_batch_size=8,
                patience=10, llm=LLMConfig(model=str(tiny)))
    return StageConfig(**base | changes)


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return torch.load(folder / "best.pt", weights_only=True)


def _equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _mf(splits, folder: Path, seed: int) -> Path:
    return encoders.save(encoders.train(splits, collab.MFConfig(dim=8, max_epochs=2, patience=2, seed=seed),
                                          progress=False), folder)


def test_rerun_with_another_lr_trains_instead_of_returning_the_old_weights(tiny, tmp_path):
    splits = movie_splits()
    first = stages.run_stage(splits, _config(tiny), tmp_path / "s1", progress=False)
    second = stages.run_stage(splits, _config(tiny, lr=5e-4), tmp_path / "s1", progress=False)
    assert second["config"]["lr"] == 5e-4 and second["fit"]["steps"] == 4
    assert second["fit"]["history"]["loss"] != first["fit"]["history"]["loss"]  # it trained, from step 0
    assert runs.finished(tmp_path / "s1")["identity"] == second["identity"] != first["identity"]
    # default folders: one per identity, so both runs stay intact side by side
    a = stages.run_stage(splits, _config(tiny), progress=False)["run_dir"]
    b = stages.run_stage(splits, _config(tiny, lr=5e-4), progress=False)["run_dir"]
    assert a != b and not _equal(_weights(Path(a)), _weights(Path(b)))


def test_stage2_over_another_mf_or_stage1_is_not_served_from_cache(tiny, tmp_path):
    splits = movie_splits()
    stages.run_stage(splits, _config(tiny), tmp_path / "s1", progress=False)
    stages.run_stage(splits, _config(tiny, seed=5), tmp_path / "s1b", progress=False)
    mf_a, mf_b = _mf(splits, tmp_path / "mf_a", 1), _mf(splits, tmp_path / "mf_b", 2)
    config = _config(tiny, stage=2)
    base = pd.read_csv(stages.run_stage(splits, config, tmp_path / "s2", tmp_path / "s1", mf_a,
                                        progress=False)["run_dir"] + "/scores_test.csv")
    other_mf = stages.run_stage(splits, config, tmp_path / "s2", tmp_path / "s1", mf_b, progress=False)
    assert not pd.read_csv(tmp_path / "s2" / "scores_test.csv")["score"].equals(base["score"])
    assert other_mf["upstream"]["mf"] == runs.finished(mf_b)["fingerprint"]
    other_s1 = stages.run_stage(splits, config, tmp_path / "s2", tmp_path / "s1b", mf_b, progress=False)
    assert other_s1["upstream"]["stage1"] == runs.finished(tmp_path / "s1b")["fingerprint"]
    assert other_s1["identity"] != other_mf["identity"]


_CHILD = """
import sys, torch
sys.path.insert(0, {tests!r})
torch.set_num_threads(1)
from collm_lib import stages
from collm_lib.llm import LLMConfig
from collm_lib.train import StageConfig
from tiny_llm import movie_splits
config = StageConfig(**{config!r}, llm=LLMConfig(model={model!r}))
stages.run_stage(movie_splits(), config, {out!r}, progress=False)
"""


def test_kill_9_then_resume_ends_bit_identical(tiny, tmp_path):
    splits = movie_splits()
    config = _config(tiny, max_steps=40, eval_every=2)
    plain = {k: v for k, v in dataclasses.asdict(config).items() if k != "llm"}
    script = _CHILD.format(tests=str(HERE), config=plain, model=str(tiny), out=str(tmp_path / "killed"))
    child = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 300
    while not (tmp_path / "killed" / "last.pt").exists() and child.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL, "the child finished before it could be killed"
    assert runs.finished(tmp_path / "killed") is None  # interrupted mid-training
    resumed = stages.run_stage(splits, config, tmp_path / "killed", progress=False)
    whole = stages.run_stage(splits, config, tmp_path / "whole", progress=False)
    assert _equal(_weights(tmp_path / "killed"), _weights(tmp_path / "whole"))
    final = [torch.load(tmp_path / d / "last.pt", weights_only=True)["adapter"] for d in ("killed", "whole")]
    assert _equal(*final)  # the last step's weights too, not only the best evaluation's
    for key in ("loss", "valid_auc", "step"):
        assert resumed["fit"]["history"][key] == whole["fit"]["history"][key]
    seconds = resumed["fit"]["history"]["seconds"]  # the clock goes on across the kill, never restarts at 0
    assert seconds == sorted(seconds) and resumed["fit"]["train_seconds"] >= round(seconds[-1], 1)  # kept to 0.1 s
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "killed" / "scores_test.csv"),
                                  pd.read_csv(tmp_path / "whole" / "scores_test.csv"))


def test_truncated_or_foreign_last_pt_starts_fresh(tiny, tmp_path, caplog):
    splits = movie_splits()
    config = _config(tiny)
    whole = stages.run_stage(splits, config, tmp_path / "whole", progress=False)
    folder = tmp_path / "cut"
    stages.run_stage(splits, config, folder, progress=False)
    last = (folder / "last.pt").read_bytes()
    (folder / "run.json").unlink()  # as if killed after the checkpoint
    (folder / "last.pt").write_bytes(last[: len(last) // 3])
    again = stages.run_stage(splits, config, folder, progress=False)
    assert "unreadable" in caplog.text and "unreadable" in (folder / "run.log").read_text()
    assert again["fit"]["history"]["loss"] == whole["fit"]["history"]["loss"]
    # a last.pt of another identity (a copied folder) is never resumed from
    (folder / "run.json").unlink()
    torch.save(torch.load(tmp_path / "whole" / "last.pt", weights_only=True) | {"identity": "someone-else"},
               folder / "last.pt")
    stages.run_stage(splits, config, folder, progress=False)
    assert "belongs to another run" in caplog.text


class _Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {_Exploit.marker}",))


def test_last_pt_is_loaded_as_weights_only(tiny, tmp_path, caplog):
    splits = movie_splits()
    folder = tmp_path / "s1"
    stages.run_stage(splits, _config(tiny), folder, progress=False)
    (folder / "run.json").unlink()
    _Exploit.marker = tmp_path / "pwned"
    torch.save({"identity": runs.read_record(folder / "identity.json")["identity"], "payload": _Exploit()},
               folder / "last.pt")
    stages.run_stage(splits, _config(tiny), folder, progress=False)
    assert not _Exploit.marker.exists() and "unreadable" in caplog.text


def test_truncated_mf_is_named_and_rebuilt(tmp_path):
    splits = movie_splits()
    config = collab.MFConfig(dim=8, max_epochs=2, patience=2)
    folder = encoders.ensure(splits, config, progress=False)
    good = encoders.score(encoders.load(folder), splits.test)
    data = (folder / "mf.pt").read_bytes()
    (folder / "mf.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(FileNotFoundError, match=f"no finished collaborative model in {folder}.*encoders.ensure"):
        encoders.load(folder)
    assert encoders.ensure(splits, config, progress=False) == folder  # rebuilt in place
    assert (encoders.score(encoders.load(folder), splits.test) == good).all()


def test_one_class_validation_sample_is_named_before_the_model_loads(tmp_path):
    splits = movie_splits()
    splits.valid_small = splits.valid_small.assign(label=1)
    config = _config(Path(tmp_path / "no-such-model"))  # never loaded: the check comes first
    with pytest.raises(ValueError, match="valid sample .* holds only label 1.*eval_rows"):
        stages.run_stage(splits, config, tmp_path / "s1", progress=False)


def test_sweep_point_reruns_when_its_stage1_changes(tiny, tmp_path):
    splits = movie_splits()
    base = stages.StageRun(_config(tiny, stage=2, max_steps=2), collab.MFConfig(dim=8, max_epochs=1, patience=1))
    frames = []
    for seed in (1, 2):  # two different stage-1 runs in the same folder
        stages.run_stage(splits, _config(tiny, seed=seed), tmp_path / "s1", progress=False)
        fn, upstream = pipeline.sweep_fns(splits, tmp_path / "s1", progress=False)
        frames.append(sweep.run_sweep("lr", base, {"stage.lr": [1e-3]}, fn, tmp_path / "sweeps", progress=False,
                                      upstream=upstream))
    assert [f["status"].item() for f in frames] == ["ran", "ran"]
    assert frames[0]["test_auc"].item() != frames[1]["test_auc"].item() or \
        frames[0]["valid_auc"].item() != frames[1]["valid_auc"].item()
