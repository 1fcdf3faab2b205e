"""Table 1 / Figure 3 plumbing: per-profile plans, stage sweeps over StageRun, same-row baselines, Table 1."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from collm_lib import (baselines, collab, encoders, figure3, metrics, paper, pipeline, plan_runs, profiles, runs,
                       stages, sweep)
from collm_lib.llm import LLMConfig
from collm_lib.io import read_json
from collm_lib.train import StageConfig
from tiny_llm import movie_splits, save_tiny


def test_plans_use_the_papers_grid_and_share_the_default_lr():
    default_lr = StageConfig().lr
    for profile in ("smoke", "cpu", "gpu"):
        plan = profiles.plan(profile)
        assert set(plan.lrs) <= set(paper.FIGURE3_LRS) and default_lr in plan.lrs  # Table 1's run is a sweep point
    assert profiles.plan("gpu").lrs == paper.FIGURE3_LRS
    assert profiles.plan("gpu").stage == {}  # gpu: the profile's full-size runs
    assert profiles.plan("cpu").dims == (64, 128, 256)
    assert profiles.plan("cpu", lrs=(1e-3,)).lrs == (1e-3,)
    with pytest.raises(ValueError):
        profiles.plan("laptop")


def test_stage_run_overrides_reach_nested_configs():
    run = plan_runs.stage_run(profiles.plan("cpu"), 2, "bookcrossing", seed=7, patience=3)
    assert run.stage.test_rows == 1000 and run.stage.seed == 7 and run.mf.patience == 3 and run.mf.seed == 7
    main = profiles.stage("cpu", 2, dataset="ml-1m")
    point = plan_runs.stage_run(profiles.plan("cpu"), 2, "ml-1m", sweep=True).stage
    assert point == main, "ML-1M's Figure 3 points are notebook 04's size: the default setting is its run"
    assert plan_runs.stage_run(profiles.plan("cpu", sweep={"test_rows": 500}), 2, "ml-1m", sweep=True).stage.test_rows \
        == 500, "plan.sweep sizes the points"
    changed = sweep.with_overrides(run, {"stage.lr": 3e-4, "mf.dim": 64})
    assert (changed.stage.lr, changed.mf.dim) == (3e-4, 64) and run.mf.dim == 256
    assert plan_runs.stage_run(profiles.plan("cpu"), 1, "ml-1m").mf is None


def test_ensure_mf_retrains_only_when_settings_differ(tmp_path, monkeypatch):
    monkeypatch.setenv("COLLM_WORK_DIR", str(tmp_path / "work"))
    splits = movie_splits()
    config = collab.MFConfig(dim=4, max_epochs=1, patience=1)
    out = encoders.ensure(splits, config, tmp_path / "mf", progress=False)
    stamp = (out / "mf.pt").stat().st_mtime_ns
    encoders.ensure(splits, config, out, progress=False)
    assert (out / "mf.pt").stat().st_mtime_ns == stamp
    encoders.ensure(splits, dataclasses.replace(config, dim=6), out, progress=False)
    assert encoders.load(out).dim == 6
    # default folders are named by identity: other settings or other data never share one
    a = encoders.ensure(splits, config, progress=False)
    b = encoders.ensure(splits, dataclasses.replace(config, dim=6), progress=False)
    c = encoders.ensure(movie_splits(n_train=40), config, progress=False)
    assert len({a, b, c}) == 3 and all(p.parent == tmp_path / "work" / "runs" / "ml-synthetic" for p in (a, b, c))


def test_stage_sweep_over_mf_dim_and_same_row_baselines(tmp_path, monkeypatch):
    monkeypatch.setenv("COLLM_WORK_DIR", str(tmp_path / "work"))
    splits = movie_splits()
    common = dict(batch_size=4, max_steps=1, eval_every=1, warmup_steps=1, score_batch_size=8, test_rows=8,
                  llm=LLMConfig(model=str(save_tiny(tmp_path / "tiny-llm"))))
    stage1 = stages.run_stage(splits, StageConfig(stage=1, **common), tmp_path / "s1", progress=False)
    base = stages.StageRun(StageConfig(stage=2, **common), collab.MFConfig(max_epochs=1, patience=1))
    fn, upstream = pipeline.sweep_fns(splits, tmp_path / "s1", progress=False)
    frame = sweep.run_sweep("dim", base, {"mf.dim": [4, 8]}, fn, tmp_path / "sweeps", progress=False, upstream=upstream)
    assert list(frame["status"]) == ["ran", "ran"] and frame["test_auc"].between(0, 1).all()
    mf4 = encoders.ensure(splits, dataclasses.replace(base.mf, dim=4), progress=False)
    assert encoders.load(mf4).dim == 4
    again = sweep.run_sweep("dim", base, {"mf.dim": [4, 8]}, fn, tmp_path / "sweeps", progress=False, upstream=upstream)
    assert list(again["status"]) == ["cached", "cached"] and list(again["test_auc"]) == list(frame["test_auc"])

    assert not Path(frame["run_dir"].iloc[0]).is_absolute()  # records travel: relative to the work dir
    s2_dir = runs.locate(frame["run_dir"].iloc[0])
    assert not list(Path(frame["folder"].iloc[0]).glob("*.pt"))  # the sweep folder records; the run has its own
    same = baselines.baselines_on_same_rows(splits, s2_dir, mf4)
    rows = baselines.rows_of(splits, s2_dir)
    assert same["MF"]["test"]["rows"] == len(rows) == read_json(s2_dir / "results.json")["sample_sizes"]["test"]
    assert baselines.check_same_rows(stage1["run_dir"], s2_dir) == len(rows)
    expected = metrics.auc(rows["label"], encoders.score(encoders.load(mf4), rows))
    assert same["MF"]["test"]["all"]["auc"] == pytest.approx(expected)
    with pytest.raises(ValueError, match="needs its MF settings"):
        fn(dataclasses.replace(base, mf=None), tmp_path / "nomf")


def test_figure3_names_the_runs_it_needs_and_what_makes_them(tmp_path, monkeypatch):
    """figure3_sweeps runs no stage 1 itself: a missing one fails before any sweep, naming the part that makes it
    (ML-1M's: notebook 03 / part ml-1m; the substitute's: part table1), not by another function's side effect."""
    monkeypatch.setenv("COLLM_WORK_DIR", str(tmp_path / "work"))
    tiny = LLMConfig(model=str(save_tiny(tmp_path / "tiny-llm")))
    plan = profiles.plan("smoke")
    splits = {"ml-1m": movie_splits(), plan_runs.SUBSTITUTE: movie_splits()}
    ml_stage1 = tmp_path / "ml-stage1"
    monkeypatch.setattr(figure3, "main_runs", lambda *a, **k: {"stage1": ml_stage1})
    monkeypatch.setattr(figure3, "sweep_frame",
                        lambda *a, **k: pytest.fail("a sweep ran before its inputs were checked"))
    needs = figure3.figure3_needs(plan, splits, llm=tiny, progress=False)
    assert list(needs) == ["ML-1M stage 1", f"{plan_runs.SUBSTITUTE} stage 1"]
    assert needs[f"{plan_runs.SUBSTITUTE} stage 1"][0] == stages.stage_dir(
        splits[plan_runs.SUBSTITUTE], plan_runs.stage_run(plan, 1, plan_runs.SUBSTITUTE, llm=tiny).stage)
    with pytest.raises(FileNotFoundError, match="part ml-1m"):
        figure3.figure3_sweeps(plan, splits, llm=tiny, progress=False)
    ml_stage1.mkdir()
    (ml_stage1 / "results.json").write_text("{}")
    real = runs.finished
    monkeypatch.setattr(runs, "finished", lambda folder, ident=None: {} if Path(folder) == ml_stage1 else real(folder))
    with pytest.raises(FileNotFoundError, match="collm reproduce --part table1"):
        figure3.figure3_sweeps(plan, splits, llm=tiny, progress=False)


def test_figure3a_points_are_the_model_after_stage_2(tmp_path, monkeypatch):
    """Each LoRA learning rate trains its stage 1, then stage 2 over it; every point reads the stage-2 run, and a
    sweep whose points were stage-1 runs fails instead of plotting the text-only model."""
    monkeypatch.setenv("COLLM_WORK_DIR", str(tmp_path / "work"))
    tiny = LLMConfig(model=str(save_tiny(tmp_path / "tiny-llm")))
    plan = profiles.plan("smoke")
    ml = dataclasses.replace(movie_splits(), name="ml-1m")
    run = plan_runs.two_stages(plan, "ml-1m", llm=tiny)
    frame = plan_runs.sweep_frame("ml-1m/lora_lr", run, {"stage1.lr": [1e-4, 1e-3]}, ml, runs.sweep_root("smoke"),
                                  progress=False)
    table = figure3.points(frame, "stage1.lr", "figure3a_smoke", seed=1)
    assert len(set(frame["stage1_run_dir"])) == 2, "each rate its own stage 1"
    for _, row in frame.iterrows():
        assert read_json(Path(row["run_dir"]) / "identity.json")["kind"] == "stage2"
        assert read_json(Path(row["run_dir"]) / "config.json")["stage1_dir"].endswith(row["stage1_run_dir"])
    results = {r["stage1.lr"]: read_json(Path(r["run_dir"]) / "results.json") for _, r in frame.iterrows()}
    assert table.set_index("stage1.lr")["test_auc"].to_dict() == {lr: r["test"]["all"]["auc"] for lr, r in
                                                                  results.items()}
    assert list(table["resolved from previous"]) == [False, table["change lo"].iloc[1] > 0 or
                                                     table["change hi"].iloc[1] < 0]
    stage1 = frame.assign(run_dir=frame["stage1_run_dir"].map(runs.locate))
    with pytest.raises(ValueError, match="not stage 2"):
        figure3.points(stage1, "stage1.lr", "figure3a_smoke", seed=1)
