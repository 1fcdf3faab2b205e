"""Table 1 and the verdict (table1.py): cells with every seed, marks for cells that did not learn, the strongest
trained and no-training baselines, the readings; and `collect` end to end on a tiny model."""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from collm_lib import metrics, numbers, profiles, rates, runs, table1
from collm_lib.io import write_frame
from collm_lib.llm import LLMConfig
from tiny_llm import movie_splits, save_tiny


def _base(n_users: int = 60, per_user: int = 6, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    uid = np.repeat(np.arange(1, n_users + 1), per_user)
    return pd.DataFrame({"uid": uid, "iid": np.arange(len(uid)), "label": rng.integers(0, 2, len(uid)), "not_cold": 1})


def _scores(strengths: dict[str, list[float]], dataset: str = "ml-1m", seed: int = 0) -> pd.DataFrame:
    """Per-row scores of methods whose seeds have the given signal strengths (0: noise); no-training baselines get
    no seed."""
    base, rng = _base(seed=seed), np.random.default_rng(seed + 1)
    parts = []
    for method, levels in strengths.items():
        for k, level in enumerate(levels):
            score = level * base["label"] + rng.normal(size=len(base))
            parts.append(base.assign(method=method, dataset=dataset, score=score,
                                     seed=None if method in table1.UNTRAINED else 2023 + k))
    return pd.concat(parts, ignore_index=True).astype({"seed": "Int64"})


NO_VALID = pd.DataFrame(columns=["method", "dataset"])


def test_a_cell_with_seeds_reads_their_mean_and_a_cell_at_chance_is_marked():
    scores = _scores({"MF": [1.0, 1.2, 1.4], "TALLRec": [0.0], "Item positive rate": [0.0], table1.OURS: [1.5]})
    long = table1.cells(scores, NO_VALID, seed=1).set_index("method")
    mf = [metrics.auc(p["label"], p["score"]) for _, p in scores[scores["method"] == "MF"].groupby("seed")]
    assert long.loc["MF", "seeds"] == 3 and long.loc["MF", "AUC"] == pytest.approx(np.mean(mf))
    assert long.loc["MF", "learned"] and long.loc[table1.OURS, "learned"]
    assert not long.loc["TALLRec", "learned"] and long.loc["TALLRec", "note"].startswith(table1.NOT_LEARNED)
    assert long.loc["Item positive rate", "learned"], "a no-training baseline is never marked"
    assert long.loc[table1.OURS, "paper AUC"] == 0.7295 and pd.isna(long.loc["Item positive rate", "paper AUC"])
    wide = table1.wide(long.reset_index(), {"amazon-book": "not run: no raw files"}).set_index("method")
    assert wide.loc["MF", "ML-1M (ours)"].endswith("(3 seeds)") and wide.loc["TALLRec", "ML-1M (ours)"].endswith("†")
    assert wide.loc["MF", "Amazon-Book (ours)"] == "not run: no raw files"
    assert wide.loc["CTRL (DIN)", "ML-1M (ours)"] == "-" and wide.loc["MF", "ML-1M (paper)"] == "0.6482 / 0.6361"
    books = table1.wide(table1.cells(_scores({"MF": [1.0]}, dataset="bookcrossing"), NO_VALID, seed=1))
    assert books.set_index("method").loc[table1.OURS, "BookCrossing (ours)"] == table1.LLM_NOT_RUN
    panels = table1.panels(wide.reset_index())
    assert list(panels) == [title for title, _ in table1.COLUMNS.values()]
    assert sum(p.shape[1] for p in panels.values()) == wide.shape[1]


def test_an_llm_cell_whose_kept_step_holds_chance_on_valid_is_marked():
    scores = _scores({table1.OURS: [1.5]})
    valid = _base(seed=5).assign(method=table1.OURS, dataset="ml-1m", score=np.random.default_rng(6).normal(size=360))
    row = table1.cells(scores, valid, seed=1).iloc[0]
    assert not row["learned"] and "valid AUC" in row["note"] and row["valid AUC lo"] <= 0.5 <= row["valid AUC hi"]


def test_the_strongest_baselines_are_those_that_learned_and_the_reading_tests_the_papers_claim():
    scores = _scores({"MF": [0.6], "CTRL (DIN)": [2.5, 2.4], "TALLRec": [0.0], "Popularity": [0.3],
                      "Item positive rate": [1.0], "User positive rate": [0.2], table1.OURS: [1.4, 1.5, 1.6]})
    long = table1.cells(scores, NO_VALID, seed=1)
    diffs = table1.differences(scores, seed=1)
    assert set(diffs[diffs["metric"] == "AUC"]["minus"]) == set(table1.METHODS) - {table1.OURS}
    assert diffs.loc[diffs["minus"] == "CTRL (DIN)", "seeds"].iloc[0] == "3 vs 2", "every seed of both"
    best = table1.strongest(long, diffs).iloc[0]
    assert best["trained"] == "CTRL (DIN)" and best["untrained"] == "Item positive rate"
    assert best["trained AUC reading"] == "trails" and best["ours seeds"] == 3
    line = table1.reading(long, diffs, "ml-1m")
    assert "vs MF: reproduces (leads" in line and "vs CTRL (DIN): does not reproduce (trails" in line
    assert f"vs TALLRec: cannot test ({table1.NOT_LEARNED})" in line
    assert "best no-training baseline, Item positive rate" in line
    verdict = table1.verdict(long, diffs, table1.strongest(long, diffs), "cpu").iloc[0]
    assert verdict["strongest trained baseline"].startswith("CTRL (DIN): ") and "(2 seeds)" in verdict[
        "strongest trained baseline"]
    assert verdict["ours, cpu"].endswith("(3 seeds)") and verdict["reading"] == line
    assert "**ML-1M**" in table1.summary_markdown(long, diffs) and "Marked † (did not learn at this size): TALLRec" \
        in table1.summary_markdown(long, diffs)


def test_when_ours_did_not_learn_nothing_is_read_against_it():
    scores = _scores({"MF": [1.0], table1.OURS: [0.0]}, dataset="bookcrossing")
    long = table1.cells(scores, NO_VALID, seed=1)
    diffs = table1.differences(scores, seed=1)
    assert "nothing here tests the paper's claim" in table1.reading(long, diffs, "bookcrossing")
    row = table1.verdict(long, diffs, table1.strongest(long, diffs), "cpu").iloc[0]
    assert row["ours minus it (trained)"].startswith("not read") and row["ours, cpu"].endswith("†")
    best = table1.strongest(long, diffs).iloc[0]
    assert not best["ours learned"] and best["trained AUC reading"] == "" and best["trained"] == "MF"


def test_a_trained_cell_with_an_undefined_test_auc_is_marked_and_a_rate_never():
    undefined = {"auc": None, "auc_lo": None, "auc_hi": None}
    ok, why = table1.learned("MF", undefined)
    assert not ok and why.startswith(table1.NOT_LEARNED) and "undefined" in why
    assert table1.learned("Item positive rate", undefined) == (True, "")
    below = {"auc": 0.40, "auc_lo": 0.35, "auc_hi": 0.45}
    ok, why = table1.learned(table1.OURS, {"auc": 0.7, "auc_lo": 0.6, "auc_hi": 0.8}, below)
    assert not ok and "valid AUC 0.4000" in why


def test_collect_over_no_dataset_names_the_parameter():
    with pytest.raises(ValueError, match="datasets"):
        table1.collect(profiles.plan("smoke"), {})


def test_numbers_of_a_seeded_cell_recompute_as_the_seed_mean(tmp_path):
    scores = _scores({"MF": [1.0, 1.5], table1.OURS: [1.2]})
    write_frame(tmp_path / "t.rows.csv.gz", scores)
    long = table1.cells(scores, NO_VALID, seed=1)
    entries = numbers.from_table(long, "t", ["method", "dataset"], {"auc": "AUC", "uauc": "UAUC"})
    entries |= numbers.from_differences(table1.differences(scores, seed=1), "t", by=["dataset"])
    for name, entry in entries.items():
        assert numbers.recompute(entry, tmp_path) == pytest.approx(entry["value"], abs=1e-12), name


@pytest.mark.integration  # the tiny LLM
def test_collect_scores_every_method_and_seed_on_one_set_of_rows(tmp_path, monkeypatch):
    """A tiny model through the real path: MF and CTRL over two seeds, the no-training baselines once, stage 2 over
    two seeds on one stage 1 (made with make_seeds; found, not made, without it)."""
    monkeypatch.setenv("COLLM_WORK_DIR", str(tmp_path / "work"))
    tiny = LLMConfig(model=str(save_tiny(tmp_path / "tiny-llm")))
    plan = profiles.plan("smoke", n_seeds=2, n_llm_seeds=2, jobs=1,
                         stage=dict(train_rows=8, eval_rows=None, test_rows=None, batch_size=4, max_steps=1,
                                    eval_every=1, warmup_steps=1, patience=1, score_batch_size=8),
                         ctrl=dict(align_rows=16))
    data = {"ml-synthetic": movie_splits()}
    before, _ = table1.collect(plan, data, seed=7, llm=tiny, progress=False)
    assert not before["method"].isin(["TALLRec", table1.OURS]).any(), "LLM runs are read, not made, by default"
    scores, sources = table1.collect(plan, data, seed=7, llm=tiny, make_seeds=True, progress=False)
    seeds = scores.groupby("method")["seed"].apply(lambda s: sorted(s.dropna().unique().tolist())).to_dict()
    assert seeds == {"CTRL (DIN)": [7, 8], table1.OURS: [7, 8], "MF": [7, 8], "Popularity": [], "TALLRec": [7],
                     **{name: [] for name in rates.KINDS.values()}}
    sizes = scores.groupby(["method", "seed"], dropna=False).size()
    assert (sizes == len(data["ml-synthetic"].test)).all(), "every method and seed on the same rows"
    runs_made = table1.llm_runs(plan, data["ml-synthetic"], 7, tiny, progress=False)
    assert runs_made[7][0] == runs_made[8][0], "the seeds of stage 2 share stage 1"
    assert runs.finished(runs_made[8][1]) and sources["ml-synthetic"]["rows"] == len(data["ml-synthetic"].test)
    ours = scores[(scores["method"] == table1.OURS) & (scores["seed"] == 8)]
    assert ours["score"].tolist() == pd.read_csv(runs_made[8][1] / "scores_test.csv")["score"].tolist()


def test_a_sampled_test_split_gets_one_llm_seed():
    """Seeds share their rows only where the whole split is scored: a sample is drawn per seed."""
    plan = profiles.plan("cpu")
    assert len(table1.llm_seeds(plan, "ml-1m", 2023, LLMConfig())) == plan.n_llm_seeds >= 2
    assert table1.llm_seeds(plan, "bookcrossing", 2023, LLMConfig()) == (2023,)
    rows = table1.test_rows(plan, dataclasses.replace(movie_splits(), name="ml-1m"), 2023, LLMConfig())
    assert len(rows) == len(movie_splits().test)
