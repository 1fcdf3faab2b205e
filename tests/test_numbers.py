"""The pieces behind the notebooks' read-back: rounding for display, per-row score files, recomputed numbers,
paths as shown, run folders that travel, and the notebook kernels' environment."""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from collm_lib import io, metrics, numbers, report, runner, runs, settings


def test_rounded_formats_per_column():
    frame = pd.DataFrame({"AUC": [1.0, 0.51234], "rows": [455.0, np.nan], "lr": [1e-4, 3e-5], "recall": [0.0, 0.125],
                          "name": ["x", None], "na": [pd.NA, 2]})
    shown = report.rounded(frame)
    assert list(shown["AUC"]) == ["1.0000", "0.5123"]  # a score column keeps its decimals even at 1.0
    assert list(shown["rows"]) == ["455", ""] and list(shown["name"]) == ["x", ""] and list(shown["na"]) == ["", "2"]
    assert list(shown["lr"]) == ["0.0001", "3e-05"] and list(shown["recall"]) == ["0.0000", "0.1250"]


def test_rounded_reads_counts_as_integers_and_differences_in_decimals():
    frame = pd.DataFrame({"value": [455.0, 0.7205, 1.0], "seconds": [3625.1, 12.25, 7.0],
                          "AUC difference": [-7.1e-05, 0.0123, 0.0]})
    shown = report.rounded(frame)
    assert list(shown["value"]) == ["455", "0.7205", "1.0000"]  # a count in a mixed column; 1.0 may be a share
    assert list(shown["seconds"]) == ["3625.1", "12.2", "7"]
    assert list(shown["AUC difference"]) == ["-0.0001", "0.0123", "0.0000"]  # no 1e-05 outside rate columns


def test_config_table_shows_what_differs_from_the_defaults():
    from collm_lib.stages import StageConfig

    config = StageConfig(stage=2, dataset="ml-1m", lr=3e-4)
    config.llm.lora_r = 16
    table = report.config_table(config)
    assert table.loc["lr", "value"] == "0.0003" and table.loc["lr", "default"] == "0.001"
    assert table.loc["llm.lora_r", "value"] == "16" and "max_history" not in table.index
    both = report.config_table({"a": config, "b": StageConfig(stage=2, dataset="ml-1m", lr=1e-2)})
    assert list(both.loc["lr"]) == ["0.0003", "0.01", "0.001"] and list(both.loc["llm.lora_r"]) == ["16", "8", "8"]


def test_markdown_keeps_the_rounded_digits(tmp_path):
    io.write_frame(tmp_path / "t.md", report.rounded(pd.DataFrame({"auc": [0.514]})))
    assert "0.5140" in (tmp_path / "t.md").read_text()


def _scores(path, seed, n=40):
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"uid": rng.integers(1, 6, n), "iid": np.arange(n), "label": rng.integers(0, 2, n),
                          "score": rng.normal(size=n), "not_cold": rng.integers(0, 2, n)})
    io.write_frame(path, frame)
    return frame


def test_score_rows_recompute_and_resolution(tmp_path):
    a, b = _scores(tmp_path / "a.csv", 0), _scores(tmp_path / "b.csv", 1)
    rows = io.score_rows({("MF", "x"): tmp_path / "a.csv", ("LLM", "x"): tmp_path / "b.csv"}, keys=("method", "dataset"))
    assert list(rows.columns[:2]) == ["method", "dataset"] and len(rows) == len(a) + len(b)
    io.write_frame(tmp_path / "t.rows.csv.gz", rows)
    auc = metrics.auc(b["label"], b["score"])
    entry = numbers.from_rows(np.float64(auc), "t", "auc", method="LLM")
    assert numbers.recompute(entry, tmp_path) == pytest.approx(auc) and isinstance(entry["value"], float)
    cold = b[b["not_cold"] == 0]
    assert numbers.recompute(numbers.from_rows(None, "t", "auc", "cold", method="LLM"), tmp_path) == pytest.approx(
        metrics.auc(cold["label"], cold["score"]))
    assert numbers.resolution(entry, tmp_path) == pytest.approx(1 / (b["label"].sum() * (1 - b["label"]).sum()))
    assert numbers.recompute(numbers.from_rows(0, "t", "rows", method="nobody"), tmp_path) == 0


def test_paired_numbers_recompute_from_the_two_methods_rows(tmp_path):
    a = _scores(tmp_path / "a.csv", 0, n=80)
    b = a.assign(score=a["score"] + np.random.default_rng(1).normal(size=len(a)))
    io.write_frame(tmp_path / "b.csv", b)
    io.write_frame(tmp_path / "t.rows.csv.gz", io.score_rows({"LLM": tmp_path / "b.csv", "MF": tmp_path / "a.csv"}))
    diff = metrics.paired_difference(b, a, n_boot=200, seed=4)
    entries = numbers.paired(diff, "LLM - MF AUC", "t", "auc", {"method": "LLM"}, {"method": "MF"})
    assert list(entries) == ["LLM - MF AUC", "LLM - MF AUC, lo", "LLM - MF AUC, hi"]
    for name, entry in entries.items():
        assert numbers.recompute(entry, tmp_path) == pytest.approx(entry["value"], abs=1e-12), name
    assert entries["LLM - MF AUC, lo"]["value"] <= entries["LLM - MF AUC"]["value"] <= entries["LLM - MF AUC, hi"]["value"]
    flipped = numbers.paired(metrics.paired_difference(a, b, n_boot=200, seed=4), "x", "t", "auc", {"method": "MF"},
                             {"method": "LLM"})
    assert numbers.recompute(flipped["x"], tmp_path) == pytest.approx(-entries["LLM - MF AUC"]["value"])
    with pytest.raises(ValueError, match="'rows'"):
        numbers.paired(diff, "n", "t", "rows", {"method": "LLM"}, {"method": "MF"})
    assert numbers.from_rows(float("nan"), "t", "uauc")["value"] is None
    with pytest.raises(ValueError, match="no column 'model'"):
        numbers.recompute(numbers.from_rows(1.0, "t", "auc", model="LLM"), tmp_path)
    with pytest.raises(FileNotFoundError, match="execute it again"):
        numbers.recompute(numbers.from_rows(1.0, "missing", "auc"), tmp_path)
    with pytest.raises(ValueError, match="uid, iid, label, score"):
        io.write_frame(tmp_path / "bad.csv", pd.DataFrame({"uid": [1]}))
        io.score_rows({"x": tmp_path / "bad.csv"})
    with pytest.raises(ValueError, match="no score files"):
        io.score_rows({})


def test_recompute_reads_a_rewritten_rows_file_again(tmp_path):
    """Rows files are read once per version (a notebook's numbers share them): a rewrite must be seen, by the
    numbers and by a paired difference's bounds."""
    a = _scores(tmp_path / "a.csv", 0, n=80)
    io.write_frame(tmp_path / "b.csv", a.assign(score=a["score"] + 1))
    io.write_frame(tmp_path / "t.rows.csv.gz", io.score_rows({"LLM": tmp_path / "b.csv", "MF": tmp_path / "a.csv"}))
    entries = numbers.paired(metrics.paired_difference(a, a, n_boot=50, seed=4), "d", "t", "auc", {"method": "LLM"},
                             {"method": "MF"})
    auc = numbers.from_rows(None, "t", "auc", method="LLM")
    assert numbers.recompute(entries["d, hi"], tmp_path) == pytest.approx(0.0)  # same ranking: no difference
    flipped = a.assign(score=-a["score"])
    io.write_frame(tmp_path / "b.csv", flipped)
    io.write_frame(tmp_path / "t.rows.csv.gz", io.score_rows({"LLM": tmp_path / "b.csv", "MF": tmp_path / "a.csv"}))
    assert numbers.recompute(auc, tmp_path) == pytest.approx(metrics.auc(flipped["label"], flipped["score"]))
    again = metrics.paired_difference(flipped, a, n_boot=50, seed=4)["auc_hi"]
    assert again != pytest.approx(0.0) and numbers.recompute(entries["d, hi"], tmp_path) == pytest.approx(again)


def test_from_table_names_and_ties_each_cell(tmp_path):
    frame = pd.DataFrame({"dataset": ["a", "b"], "test_auc": [0.6, math.nan]})
    key = numbers.from_table(frame, "t", ["dataset"], {"auc": "test_auc"}, "MF test ")
    assert set(key) == {"a MF test AUC", "b MF test AUC"} and key["b MF test AUC"]["value"] is None
    assert key["a MF test AUC"]["where"] == {"dataset": "a"}


def test_record_writes_plain_json_and_a_table(tmp_path, capsys):
    table = numbers.record("07", "smoke", {"n": np.int64(3), "auc": numbers.from_rows(0.5, "t", "auc")}, 0.0,
                           2023, tmp_path)
    assert "s wall on" in capsys.readouterr().out and list(table["value"]) == [3, 0.5]
    assert numbers.load("07", "smoke", tmp_path)["numbers"]["n"] == 3
    with pytest.raises(FileNotFoundError, match="--only 08"):
        numbers.load("08", "smoke", tmp_path)


def test_shown_paths(monkeypatch, tmp_path):
    monkeypatch.setenv("COLLM_WORK_DIR", str(tmp_path / "work"))
    assert settings.shown(settings.REPO_ROOT / "figures" / "x.png") == "figures/x.png"
    assert settings.shown(tmp_path / "work" / "runs" / "a") == "<work dir>/runs/a"
    assert settings.shown(os.path.expanduser("~/elsewhere/x")) == "~/elsewhere/x"


def test_run_folders_travel_relative_to_the_work_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("COLLM_WORK_DIR", str(tmp_path / "a"))
    stored = runs.relative(tmp_path / "a" / "runs" / "ml-1m" / "stage1-x")
    assert stored == "runs/ml-1m/stage1-x"
    monkeypatch.setenv("COLLM_WORK_DIR", str(tmp_path / "b"))  # unpacked on another machine
    assert runs.locate(stored) == tmp_path / "b" / "runs" / "ml-1m" / "stage1-x"
    assert runs.locate("/old/absolute/record") == Path("/old/absolute/record")


def test_kernel_env_is_set_then_restored(monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.delenv("COLLM_PROGRESS", raising=False)
    with runner.kernel_env():
        assert "MPLBACKEND" not in os.environ and os.environ["COLLM_PROGRESS"] == "0" and settings.quiet()
    assert os.environ["MPLBACKEND"] == "Agg" and "COLLM_PROGRESS" not in os.environ and not settings.quiet()


def test_paired_differences_per_dataset_become_numbers_that_recompute(tmp_path):
    rng = np.random.default_rng(3)
    frames = {}
    for dataset in ("d1", "d2"):
        base = pd.DataFrame({"uid": rng.integers(1, 30, 300), "iid": np.arange(300), "label": rng.integers(0, 2, 300),
                             "not_cold": 1})
        frames[("MF", dataset)] = base.assign(score=rng.normal(size=300))
        frames[("LLM", dataset)] = base.assign(score=base["label"] * 2.0 + rng.normal(size=300))  # clearly better
    for (method, dataset), frame in frames.items():
        io.write_frame(tmp_path / f"{method}_{dataset}.csv", frame)
    rows = io.score_rows({k: tmp_path / f"{k[0]}_{k[1]}.csv" for k in frames}, keys=("method", "dataset"))
    io.write_frame(tmp_path / "t.rows.csv.gz", rows)
    diffs = report.paired_differences(rows, "LLM", ["MF", "nobody"], seed=1, by=["dataset"])
    assert len(diffs) == 4 and set(diffs["metric"]) == {"AUC", "UAUC"}, "no row for a method without rows"
    assert (diffs["lo"] > 0).all() and diffs["reading"].str.startswith("higher").all()
    entries = numbers.from_differences(diffs, "t", by=["dataset"])
    assert "d2 LLM - MF UAUC, hi" in entries and len(entries) == 12
    for name, entry in entries.items():
        assert numbers.recompute(entry, tmp_path) == pytest.approx(entry["value"], abs=1e-12), name


def test_rerank_reading_says_which_way_the_llm_moved_ndcg():
    def table(rerank_ndcg):
        return pd.DataFrame({"method": ["Faiss top-K (MF order)"] * 2 + ["Faiss top-K + LLM re-rank"] * 2,
                             "K": [10, 50, 10, 50], "NDCG@K": [0.04, 0.06, *rerank_ndcg], "users": 20})
    assert report.rerank_reading(table([0.03, 0.05])).startswith("The LLM's re-ranking lowers NDCG@K")
    assert "K=10: -0.0100" in report.rerank_reading(table([0.03, 0.05])) and "20 users" in report.rerank_reading(table([0.03, 0.05]))
    assert "raises" in report.rerank_reading(table([0.05, 0.07]))
    assert "moves both ways" in report.rerank_reading(table([0.05, 0.05]))
