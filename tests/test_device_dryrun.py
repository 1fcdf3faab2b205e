"""The GPU reproduction's dry run on the CPU (issue #11): the entry point with the smoke profile and a tiny model,
stopped at a deadline and resumed (figure3's settings two processes at a time), bundled, then replayed into
notebooks 02-04 and 06, which must show the bundles' numbers without training anything (a replay that would
train fails: runs.NotInBundles)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pandas as pd
import pytest

from collm_lib import bundle
from collm_lib.hashing import sha256_file
from tiny_llm import save_tiny

REPO = Path(__file__).resolve().parent.parent


def _member(path: Path, pattern: str) -> dict:
    """The one JSON file of a bundle whose name matches `pattern` (fnmatch)."""
    import fnmatch

    with tarfile.open(path) as tar:
        names = [n for n in tar.getnames() if fnmatch.fnmatch(n, pattern)]
        assert len(names) == 1, (pattern, names)
        return json.loads(tar.extractfile(names[0]).read())


def test_reproduce_bundle_replay(tmp_path, shared_data):
    tiny = save_tiny(tmp_path / "tiny-llm")
    env = dict(os.environ, COLLM_DATA_DIR=str(shared_data), COLLM_WORK_DIR=str(tmp_path / "gpu-box"),
               COLLM_FIGURES_DIR=str(tmp_path / "figures"), COLLM_PROFILE="smoke", TQDM_DISABLE="1",
               MPLBACKEND="Agg", PYTHONUNBUFFERED="1")
    env.pop("COLLM_REPLAY", None)
    out = tmp_path / "bundles"
    command = [sys.executable, "-m", "collm_lib.reproduce", "--profile", "smoke", "--model", str(tiny), "--out",
               str(out), "--no-progress"]

    stopped = subprocess.run(command + ["--deadline", "2"], env=env, cwd=REPO, capture_output=True, text=True)
    assert stopped.returncode == 75, stopped.stderr[-2000:]
    assert "run the same command again to resume" in stopped.stderr
    assert bundle.read_manifest(out / "mf.tar.gz")["complete"] is False  # what finished is bundled, and says so

    done = subprocess.run(command + ["--jobs", "2"], env=env, cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    bundles = sorted(out.glob("*.tar.gz"))
    assert [b.name for b in bundles] == ["figure3.tar.gz", "mf.tar.gz", "ml-1m.tar.gz", "table1.tar.gz"]
    for path in bundles:
        manifest = bundle.read_manifest(path)
        assert manifest["complete"] and manifest["phases"] and manifest["device"] == "cpu", path.name
        with tarfile.open(path) as tar:
            assert not [n for n in tar.getnames() if n.endswith(".pt")], path.name
    assert any("2 at a time" in p["phase"] for p in bundle.read_manifest(out / "figure3.tar.gz")["phases"])

    # --jobs changes no result: a setting made in a worker process, made again in the main process, is the same
    point = next((tmp_path / "gpu-box" / "runs" / "sweeps" / "smoke" / "ml-1m" / "lora_lr").glob("*/result.json"))
    first = json.loads(point.read_text())["result"]
    assert not Path(first["run_dir"]).is_absolute()  # so the replay below finds it in its own work dir
    shutil.rmtree(tmp_path / "gpu-box" / first["run_dir"])
    point.unlink()
    serial = subprocess.run(command[:-2] + [str(tmp_path / "serial"), "--no-progress", "--part", "figure3"], env=env,
                            cwd=REPO, capture_output=True, text=True)
    assert serial.returncode == 0, serial.stderr[-3000:]
    again = json.loads(point.read_text())["result"]
    assert (again["test_auc"], again["valid_auc"]) == (first["test_auc"], first["valid_auc"])

    replay_env = dict(env, COLLM_WORK_DIR=str(tmp_path / "laptop"))
    replayed = subprocess.run([sys.executable, "-m", "collm_lib.runner", "--replay", *map(str, bundles),
                               "--out-dir", str(tmp_path / "replayed")], env=replay_env, cwd=REPO,
                              capture_output=True, text=True)
    assert replayed.returncode == 0, replayed.stdout[-3000:] + replayed.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "replayed").glob("*.ipynb")) == [
        "02_collaborative_model.ipynb", "03_stage1_lora.ipynb", "04_stage2_fece.ipynb", "06_table1.ipynb",
        "08_seeds.ipynb", "09_figure3.ipynb"]
    assert not list((tmp_path / "laptop").rglob("*.pt"))  # nothing was trained on the replaying side
    shown = (tmp_path / "replayed" / "02_collaborative_model.ipynb").read_text()  # where its numbers came from
    mf_bundle = out / "mf.tar.gz"  # named by its path and sha256
    assert f"replayed bundle {mf_bundle.resolve()} (sha256 {sha256_file(mf_bundle)}): part mf, cpu, commit" in shown
    assert "sha256 verified" in shown

    figures = tmp_path / "figures"
    mf = _member(out / "mf.tar.gz", "runs/ml-1m/mf-*/config.json")["metrics"]["test"]["all"]["auc"]
    shown = pd.read_csv(figures / "mf_results_smoke.csv").set_index("dataset").loc["ml-1m", "test_auc"]
    assert shown == pytest.approx(mf, abs=1e-12)
    stage2 = _member(out / "ml-1m.tar.gz", "runs/ml-1m/stage2-*/results.json")["test"]["all"]["auc"]
    table1 = pd.read_csv(figures / "table1_smoke_long.csv").set_index(["method", "dataset"])
    assert table1.loc[("CoLLM-FaissRet", "ml-1m"), "AUC"] == pytest.approx(stage2, abs=1e-12)
    sweep = _member(out / "figure3.tar.gz", "runs/sweeps/smoke/ml-1m/lora_lr/*/result.json")["result"]["test_auc"]
    assert pd.read_csv(figures / "figure3a_smoke.csv")["test_auc"].iloc[0] == pytest.approx(sweep, abs=1e-12)
