"""sweep: resumes without rerunning, reruns on a changed config, isolates failures, dotted fields, tidy frame."""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
import pytest

from collm_lib import io, paper, sweep


@dataclass
class Inner:
    lora_r: int = 8
    targets: tuple[str, ...] = ("q_proj", "v_proj")


@dataclass
class Config:
    lr: float = 1e-3
    dim: int = 16
    seed: int = 7
    llm: Inner = field(default_factory=Inner)


class CountingRun:
    """A fake training run: its 'AUC' is a function of the config; counts calls; can fail on chosen lrs."""

    def __init__(self, fail_lr: float | None = None) -> None:
        self.calls: list[Config] = []
        self.fail_lr = fail_lr

    def __call__(self, config: Config, out_dir) -> dict:
        self.calls.append(config)
        (out_dir / "model.txt").write_text("weights")
        if config.lr == self.fail_lr:
            raise RuntimeError("diverged")
        return {"test": {"auc": 0.5 + config.lr * 100 + config.llm.lora_r / 1000, "uauc": 0.6}, "dim": config.dim}


GRID = {"lr": [1e-4, 3e-4, 1e-3]}


def test_second_sweep_runs_nothing(tmp_path):
    run = CountingRun()
    first = sweep.run_sweep("lr", Config(), GRID, run, tmp_path, progress=False)
    assert len(run.calls) == 3 and (first["status"] == "ran").all()
    second = sweep.run_sweep("lr", Config(), GRID, run, tmp_path, progress=False)
    assert len(run.calls) == 3 and (second["status"] == "cached").all()
    cols = ["lr", "test.auc", "test.uauc", "dim"]
    pd.testing.assert_frame_equal(first[cols], second[cols])
    folder = tmp_path / "lr" / "lr=3e-4"
    saved = io.read_json(folder / "config.json")
    assert saved["changes"] == {"lr": 3e-4} and saved["config"]["lr"] == 3e-4 and saved["config"]["llm"]["lora_r"] == 8
    assert io.read_json(folder / "result.json")["run"]["seed"] == 7


def test_changed_base_config_reruns(tmp_path):
    run = CountingRun()
    sweep.run_sweep("lr", Config(), GRID, run, tmp_path, progress=False)
    again = sweep.run_sweep("lr", Config(dim=32), GRID, run, tmp_path, progress=False)
    assert len(run.calls) == 6 and (again["status"] == "ran").all() and (again["dim"] == 32).all()
    assert {c.dim for c in run.calls[3:]} == {32}


def test_failure_is_isolated_and_leaves_no_result(tmp_path):
    run = CountingRun(fail_lr=3e-4)
    frame = sweep.run_sweep("lr", Config(), GRID, run, tmp_path, progress=False)
    assert frame.set_index("lr")["status"].to_dict() == {1e-4: "ran", 3e-4: "failed", 1e-3: "ran"}
    failed = tmp_path / "lr" / "lr=3e-4"
    assert not (failed / "result.json").exists()
    assert "diverged" in (failed / "error.txt").read_text()
    assert "diverged" in frame.set_index("lr").loc[3e-4, "error"]
    # a rerun retries only the failed setting; once it succeeds the error file is gone
    fixed = CountingRun()
    frame = sweep.run_sweep("lr", Config(), GRID, fixed, tmp_path, progress=False)
    assert [c.lr for c in fixed.calls] == [3e-4] and (frame["status"] != "failed").all()
    assert (failed / "result.json").exists() and not (failed / "error.txt").exists()


def test_failure_raises_when_asked(tmp_path):
    with pytest.raises(RuntimeError, match="diverged"):
        sweep.run_sweep("lr", Config(), GRID, CountingRun(fail_lr=1e-4), tmp_path, errors="raise", progress=False)
    assert (tmp_path / "lr" / "lr=1e-4" / "error.txt").exists()
    assert not (tmp_path / "lr" / "lr=1e-4" / "result.json").exists()


def test_stale_result_removed_when_rerun_fails(tmp_path):
    sweep.run_sweep("lr", Config(), {"lr": [1e-4]}, CountingRun(), tmp_path, progress=False)
    frame = sweep.run_sweep("lr", Config(dim=3), {"lr": [1e-4]}, CountingRun(fail_lr=1e-4), tmp_path, progress=False)
    assert frame["status"].tolist() == ["failed"]
    assert not (tmp_path / "lr" / "lr=1e-4" / "result.json").exists()


def test_dotted_nested_fields_and_grid_product(tmp_path):
    run = CountingRun()
    frame = sweep.run_sweep("two", Config(), {"lr": [1e-4, 1e-3], "llm.lora_r": [4, 16]}, run, tmp_path,
                            progress=False)
    assert len(frame) == 4 and sorted(zip(frame["lr"], frame["llm.lora_r"])) == [
        (1e-4, 4), (1e-4, 16), (1e-3, 4), (1e-3, 16)]
    assert sorted((c.lr, c.llm.lora_r) for c in run.calls) == sorted(zip(frame["lr"], frame["llm.lora_r"]))
    assert all(c.llm.targets == ("q_proj", "v_proj") for c in run.calls)  # untouched nested fields kept
    assert (tmp_path / "two" / "lr=1e-4,llm.lora_r=16" / "result.json").exists()
    # tuples inside the config survive the JSON comparison: nothing reruns
    sweep.run_sweep("two", Config(), {"lr": [1e-4, 1e-3], "llm.lora_r": [4, 16]}, run, tmp_path, progress=False)
    assert len(run.calls) == 4
    with pytest.raises(KeyError, match="no field 'lora_alpha'"):
        sweep.run_sweep("bad", Config(), {"llm.lora_alpha": [1]}, run, tmp_path, progress=False)


def test_value_names():
    assert [sweep.format_value(v) for v in (3e-4, 1e-3, 2.5e-5, 0.05, 128, True, None)] == [
        "3e-4", "1e-3", "2.5e-5", "0.05", "128", "True", "None"]
    assert sweep.setting_name({}) == "base"


def test_paper_figure3():
    figure3 = paper.figure3()
    assert len(figure3) == 10 and set(figure3["panel"]) == {"a", "b"}
    best = figure3.loc[figure3.query("panel == 'a'")["auc"].idxmax()]
    assert best["lr"] == 3e-4 and best["auc"] == pytest.approx(0.7479)
    assert paper.table1("MF", "ml-1m") == (0.6482, 0.6361) and paper.table1("MF", None) == (None, None)
