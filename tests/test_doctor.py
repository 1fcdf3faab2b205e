"""`collm doctor` says what this machine will do with a profile before anyone waits for it, as text or JSON, and
exits 1 naming why when the profile cannot run here."""
from __future__ import annotations

import json

import pytest
import torch

from collm_lib import cli, doctor


def _doctor(argv: list[str], capsys) -> tuple[int, str]:
    code = cli.main(["doctor", *argv])
    return code, capsys.readouterr().out


def test_the_json_report_names_device_faiss_model_data_and_an_estimate(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("COLLM_WORK_DIR", str(tmp_path / "work"))
    monkeypatch.setattr(doctor, "matmul_gflops", lambda dtype: 50.0)  # a slow machine, the same on every run
    code, out = _doctor(["--json", "--profile", "cpu", "--data-dir", str(tmp_path / "no-data")], capsys)
    found = json.loads(out)
    assert code == 1 and found["problems"] == [
        f"no raw data for ml-1m in {tmp_path / 'no-data' / 'ml-1m-collm'}: see docs/protocol.md (data) or set "
        "$COLLM_DATA_DIR"]
    assert found["profile"] == "cpu" and found["device"] == "cpu" and found["cuda"]["available"] is False
    assert found["precision"] in ("bf16", "fp32") and found["faiss"] == {
        "installed": True, "version": found["faiss"]["version"], "build": "CPU", "gpus": 0}
    assert found["embedded_model"].endswith(".gguf") and found["data"]["ml-1m"] is False
    estimate, rate = found["estimate"], doctor.REFERENCE["gflops"][found["precision"]]
    factor = doctor.FP32_FACTOR if found["precision"] == "fp32" else 1.0
    assert estimate["seconds"] == round(doctor.REFERENCE["main_job_seconds"]["cpu"] * factor * rate / 50.0)
    assert estimate["matmul_gflops"] == 50.0 and not (tmp_path / "work").exists()  # it writes nothing


def test_the_text_report_and_a_profile_this_machine_cannot_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("COLLM_WORK_DIR", str(tmp_path / "work"))
    (tmp_path / "data" / "ml-1m-collm").mkdir(parents=True)
    code, out = _doctor(["--profile", "smoke", "--data-dir", str(tmp_path / "data")], capsys)
    assert code == 0 and out.splitlines()[-1] == "ready: the profile can run here"
    assert "main job estimate: none (no measured smoke main job on a CPU to scale from)" in out
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the gpu profile can run")
    code, out = _doctor(["--profile", "gpu", "--data-dir", str(tmp_path / "data")], capsys)
    assert code == 1 and "CANNOT RUN: the gpu profile needs a CUDA GPU, and torch sees none" in out


def test_the_matmul_rate_is_a_rate():
    assert 0.1 < doctor.matmul_gflops(torch.float32, size=128, seconds=0.05) < 1e5
