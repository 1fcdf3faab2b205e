"""Table 1 / Figure 3 plumbing: per-profile plans, stage sweeps over StageRun, same-row baselines, Table 1."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from unittest.mock import ANY

import numpy as np
import pandas as pd
import pytest

from collm_lib import (baselines, collab, encoders, figure3, metrics, paper, plan_runs, profiles, replicates, report,
                       reproduce, runs, stages, sweep)
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
    run = plan_runs.stage_run(profiles.plan("cpu"), 2, "ml-1m", seed=7, patience=3)
    assert run.stage.train_rows == 160 and run.stage.seed == 7 and run.mf.patience == 3 and run.mf.seed == 7
    point = plan_runs.stage_run(profiles.plan("cpu"), 2, "ml-1m", sweep=True).stage
    assert (point.test_rows, point.train_rows, run.stage.test_rows) == (300, 160, 1000), "Figure 3's points: plan.sweep"
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
    fn, upstream = stages.sweep_fns(splits, tmp_path / "s1", progress=False)
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


def _result(n_users: int, per_user: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"uid": np.repeat(np.arange(n_users), per_user), "label": rng.integers(0, 2, n_users * per_user),
                          "score": rng.random(n_users * per_user)})
    return {"test": metrics.evaluate(frame) | {"rows": len(frame)}}


def test_table1_long_and_wide():
    results = {(m, "ml-1m"): _result(20, 6, i) for i, m in enumerate(report.TABLE1_METHODS)}
    results |= {(m, "bookcrossing"): _result(30, 1, i) for i, m in enumerate(report.TABLE1_METHODS)}
    long, wide = report.table1(results, {"amazon-book": "not run: no raw files"})
    assert len(long) == len(report.TABLE1_COLUMNS) * len(report.TABLE1_METHODS)
    ml = long.query("dataset == 'ml-1m' and method == 'CoLLM-FaissRet'").iloc[0]
    assert ml["AUC"] == results[("CoLLM-FaissRet", "ml-1m")]["test"]["all"]["auc"] and ml["rows"] == 120
    assert (ml["paper AUC"], ml["paper UAUC"]) == paper.TABLE1[("CoLLM-FaissRet", "ml-1m")]
    assert long.query("dataset == 'amazon-book'")["note"].eq("not run: no raw files").all()
    assert long.query("dataset == 'amazon-book-msl'")["note"].eq("not run").all()
    assert long.query("dataset == 'amazon-book-msl'")["paper AUC"].isna().all()  # different data: no paper value
    wide = wide.set_index("method")
    auc, uauc = ml["AUC"], ml["UAUC"]
    assert wide.loc["CoLLM-FaissRet", "ML-1M (ours)"] == f"{auc:.4f} / {uauc:.4f}"
    assert wide.loc["CoLLM-FaissRet", "ML-1M (paper)"] == "0.7295 / 0.6875"
    assert wide.loc["MF", "BookCrossing (ours)"].endswith(" / undef.")  # one row per user
    assert wide.loc["TALLRec", "Amazon-Book (ours)"] == "not run"
    assert "Amazon-Book substitute (paper)" not in wide.columns


def test_table1_replicates_cover_cheap_models_and_llm_seeds(tmp_path, monkeypatch):
    """The gpu plan's path on a tiny model: MF and CTRL over two seeds, popularity once, both LLM stages over two
    seeds, each replicate its own run whose per-row scores give its metrics."""
    monkeypatch.setenv("COLLM_WORK_DIR", str(tmp_path / "work"))
    tiny = LLMConfig(model=str(save_tiny(tmp_path / "tiny-llm")))
    plan = profiles.plan("smoke", n_seeds=2, n_llm_seeds=2, jobs=1,
                         stage=dict(train_rows=8, eval_rows=None, test_rows=None, batch_size=4, max_steps=1,
                                    eval_every=1, warmup_steps=1, patience=1, score_batch_size=8),
                         ctrl=dict(align_rows=16))
    frame = reproduce.table1_replicates(plan, {"ml-synthetic": movie_splits()}, seed=7, llm=tiny, progress=False)
    counts = frame.groupby("method")["seed"].apply(lambda s: sorted(s.dropna().tolist())).to_dict()
    assert counts == {"CTRL (DIN)": [7, 8], "CoLLM-FaissRet": [7, 8], "MF": [7, 8], "Popularity": [], "TALLRec": [7, 8]}
    assert len(set(frame["scores"])) == len(frame)  # every replicate is a run of its own
    for row in frame.itertuples():
        rows = pd.read_csv(row.scores)
        assert metrics.auc(rows["label"], rows["score"]) == pytest.approx(row.AUC)
    spread = replicates.spread(frame).set_index("method")
    assert spread.loc["MF", "replicates"] == 2 and spread.loc["Popularity", "replicates"] == 1


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


def test_an_ml1m_seed_replicate_makes_stage_1_before_stage_2(tmp_path, monkeypatch):
    """The gpu plan's extra ML-1M seeds (n_llm_seeds > 1) make notebooks 03 / 04's runs at that seed, stage 1 first:
    stage 2's folder is named by stage 1's fingerprint."""
    monkeypatch.setenv("COLLM_WORK_DIR", str(tmp_path / "work"))
    tiny = LLMConfig(model=str(save_tiny(tmp_path / "tiny-llm")))
    ml = dataclasses.replace(movie_splits(), name="ml-1m")
    first, second = reproduce._llm_stages(profiles.plan("smoke"), "ml-1m", ml, 8, tiny, False, plan_runs.Phases(False),
                                          make_ml=True)
    assert runs.finished(first) and runs.finished(second)
    assert plan_runs.main_runs("smoke", ml, 8, tiny, progress=False) == {"mf": ANY, "stage1": first, "stage2": second}
