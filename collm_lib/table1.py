"""Table 1 (notebook 06) and the README's verdict: every method on each dataset's test rows, with every seed that
exists, and what can be read off them.

The rows: per dataset, the LLM stages' test sample (ML-1M: notebooks 03-04's, the whole split on cpu and gpu; the
others: the plan's size), drawn from the data alone (`test_rows`), so the other methods are scored on it whether or
not the LLM runs have finished. `collect` gathers the per-row scores of those rows for every (method, dataset,
seed): MF and CTRL(DIN) over plan.n_seeds seeds (their whole-split scores cut to the rows), the no-training
baselines (popularity, item and user positive rate: no seed), TALLRec (stage 1, the main seed's, on which every seed
of stage 2 stands) and CoLLM-FaissRet (stage 2) over the seeds of plan.n_llm_seeds whose runs have finished
(notebook 08 makes ML-1M's, notebook 09 the book datasets'; `make_seeds` makes them here, and the other seeds of MF
and CTRL(DIN)).

Everything shown is computed from those rows: a cell with several seeds reads as their mean, with an interval that
resamples users and seeds (metrics.bootstrap), and so do the paired differences. A trained cell that did not learn
(`learned`) is marked and kept out of every reading of who beats whom (`strongest`, `verdict`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from . import baselines, encoders, metrics, pipeline, rates, replicates, report, runs, stages
from . import paper as paper_numbers
from .data import Splits
from .llm import LLMConfig
from .plan_runs import Phases, stage_run
from .profiles import SweepPlan

OURS = "CoLLM-FaissRet"
TRAINED = ("MF", "CTRL (DIN)", "TALLRec")  # the trained baselines
UNTRAINED = ("Popularity", *rates.KINDS.values())  # the no-training baselines
METHODS = (*TRAINED, *UNTRAINED, OURS)
PAPER_BASELINES = TRAINED  # whom the paper's Table 1 says CoLLM-FaissRet beats
COLUMNS = {  # dataset -> (column title, the paper's dataset whose values apply, or None)
    "ml-1m": ("ML-1M", "ml-1m"), "amazon-book": ("Amazon-Book", "amazon-book"),
    "amazon-book-msl": ("Amazon-Book substitute", None), "bookcrossing": ("BookCrossing", "bookcrossing")}
NOT_LEARNED = "did not learn at this size"
LLM_NOT_RUN = "not run yet (notebook 09)"  # a dataset whose LLM stages have not run beside its other methods
LLM_STAGES = ("TALLRec", OURS)  # stage 1 and stage 2 of one run folder pair
MARK = "†"  # a cell that did not learn


def _stage2(plan: SweepPlan, name: str, seed: int, llm: LLMConfig) -> stages.StageConfig:
    return stage_run(plan, 2, name, seed, llm).stage


def test_rows(plan: SweepPlan, data: Splits, seed: int, llm: LLMConfig) -> pd.DataFrame:
    """The test rows of `data` that every method of Table 1 is scored on: the LLM stages' test sample at the plan's
    size (stages.sample_users; the whole split where the size is None)."""
    config = _stage2(plan, data.name, seed, llm)
    return stages.sample_users(data.test, config.test_rows, config.seed)


def llm_seeds(plan: SweepPlan, name: str, seed: int, llm: LLMConfig) -> tuple[int, ...]:
    """The seeds of the LLM stages on `name`: plan.n_llm_seeds where they score the whole test split; one elsewhere
    (a sampled test split is drawn per seed, and the seeds would not share their rows)."""
    whole = _stage2(plan, name, seed, llm).test_rows is None
    return replicates.seeds_from(seed, plan.n_llm_seeds if whole else 1)


def llm_runs(plan: SweepPlan, data: Splits, seed: int, llm: LLMConfig, make: bool = False, progress: bool = True,
             phases: Phases | None = None) -> dict[int, tuple[Path, Path]]:
    """{seed: (stage-1 folder, stage-2 folder)} of the LLM stages on `data`, each seed's stage 2 over the main seed's
    stage 1 and the MF of its own seed; those finished, or all of them with `make` (stage 1 first). ML-1M's main
    seed is notebooks 03-04's run."""
    phases = phases or Phases(progress)
    ctx = pipeline.RunContext(data, plan.profile, seed, llm, progress)
    first = stage_run(plan, 1, data.name, seed, llm).stage
    first_dir = stages.stage_dir(data, first)
    if make:
        with phases(f"{data.name} seed {seed}: stage 1"):
            pipeline.stage1(ctx, first, first_dir)
    found = {}
    for each in llm_seeds(plan, data.name, seed, llm):
        if runs.finished(first_dir) is None:
            break
        mf_config = ctx.encoder_config(seed=each)
        mf_dir = pipeline.encoder(ctx, mf_config) if make else encoders.default_dir(data, mf_config)
        if runs.finished(mf_dir) is None:
            continue
        second = stage_run(plan, 2, data.name, each, llm).stage
        second_dir = stages.stage_dir(data, second, first_dir, mf_dir)
        if make:
            with phases(f"{data.name} seed {each}: stage 2"):
                pipeline.stage2(ctx, first_dir, mf_dir, second, second_dir)
        if runs.finished(second_dir) is not None:
            found[each] = (first_dir, second_dir)
    return found


def collect(plan: SweepPlan, splits: dict[str, Splits], seed: int = 2023, llm: LLMConfig | None = None,
            make_seeds: bool = False, progress: bool = True, phases: Phases | None = None,
            data_dir: str | None = None) -> tuple[pd.DataFrame, dict[str, dict]]:
    """(per-row scores, sources): the scores of every (method, dataset, seed) on the dataset's test_rows (columns
    method, dataset, seed, uid, iid, label, score, not_cold; seed blank for the no-training baselines), and per
    dataset the run folder or score file of each. The main seed's MF and CTRL(DIN) and the no-training baselines
    are made unless finished; the other seeds of MF and CTRL(DIN) and the LLM stages beyond notebooks 03-04 are read
    where finished (notebooks 08 and 09 make them), or made with `make_seeds`."""
    if not splits:
        raise ValueError("Table 1 over no datasets: pass at least one (the notebooks' `datasets` parameter)")
    llm, phases = llm or LLMConfig(), phases or Phases(progress)
    seeds = replicates.seeds_from(seed, plan.n_seeds)
    with phases(f"MF and CTRL(DIN): the main seed{' and ' + str(len(seeds) - 1) + ' more' if make_seeds else ''}"):
        cheap = pd.concat([
            replicates.cheap_replicates(plan.profile, splits, seeds[:1], plan.ctrl, llm, progress, 1, data_dir),
            replicates.cheap_replicates(plan.profile, splits, seeds[1:], plan.ctrl, llm, progress, plan.jobs, data_dir,
                                        make=make_seeds)], ignore_index=True).drop_duplicates(["method", "dataset",
                                                                                               "seed"])
    parts, sources = [], {}
    for name, data in splits.items():
        keys = test_rows(plan, data, seed, llm)
        files = {(r.method, None if pd.isna(r.seed) else int(r.seed)): Path(r.scores)
                 for r in cheap[cheap["dataset"] == name].itertuples()}
        with phases(f"{name}: item and user positive rates"):
            for kind, method in rates.KINDS.items():
                files[(method, None)] = Path(rates.ensure_rates(data, kind)["run_dir"]) / "test_scores.csv"
        for each, dirs in llm_runs(plan, data, seed, llm, make_seeds, progress, phases).items():
            if each == seed:
                files[("TALLRec", each)] = dirs[0] / "scores_test.csv"
            files[(OURS, each)] = dirs[1] / "scores_test.csv"
        for (method, each), path in files.items():
            scored = pd.read_csv(path)
            if method in LLM_STAGES and len(scored) != len(keys):  # an LLM stage scores exactly these rows
                raise ValueError(f"{path} scored {len(scored)} rows, Table 1's rows on {name} are {len(keys)}: a run "
                                 "of other sizes; rerun notebooks 03-04 (and 08-09) with this profile")
            rows = baselines.on_keys(scored, keys, f"{name} {method} seed {each}")
            parts.append(rows.assign(method=method, dataset=name, seed=each))
        sources[name] = {"rows": len(keys), "scores": {f"{m} seed {s}" if s is not None else m: runs.relative(p)
                                                       for (m, s), p in files.items()}}
    columns = ["method", "dataset", "seed", "uid", "iid", "label", "score", "not_cold"]
    scores = pd.concat(parts, ignore_index=True)[columns].astype({"seed": "Int64"})
    order = {m: i for i, m in enumerate(METHODS)}
    scores = scores.sort_values(["dataset", "method", "seed"], key=lambda c: c.map(order) if c.name == "method" else c,
                                kind="stable").reset_index(drop=True)
    return scores, sources


def valid_rows(plan: SweepPlan, splits: dict[str, Splits], seed: int = 2023,
               llm: LLMConfig | None = None) -> pd.DataFrame:
    """The kept step's per-row valid scores of each LLM stage's main-seed run (method, dataset, uid, iid, label,
    score), where finished: what `learned` reads besides the test rows."""
    llm, parts = llm or LLMConfig(), []
    for name, data in splits.items():
        dirs = llm_runs(plan, data, seed, llm, progress=False).get(seed)
        for method, folder in zip(LLM_STAGES, dirs or ()):
            parts.append(pd.read_csv(folder / "scores_valid.csv").assign(method=method, dataset=name))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["method", "dataset"])


def learned(method: str, test: dict[str, Any], valid: dict[str, Any] | None = None) -> tuple[bool, str]:
    """Whether a trained cell learned, and if not why: its test AUC is undefined or its interval (metrics.bootstrap)
    reaches 0.5 or below, or its kept step's valid AUC interval does. The no-training baselines learn nothing and are
    never marked."""
    if method in UNTRAINED:
        return True, ""
    if test["auc"] is None:
        return False, f"{NOT_LEARNED}: its test AUC is undefined (one class in its rows)"
    if valid is not None and valid["auc_lo"] is not None and valid["auc_lo"] <= 0.5:
        return False, (f"{NOT_LEARNED}: its kept step's valid AUC {valid['auc']:.4f} [{valid['auc_lo']:.3f}, "
                       f"{valid['auc_hi']:.3f}] reaches chance or below")
    if test["auc_lo"] is not None and test["auc_lo"] <= 0.5:
        return False, (f"{NOT_LEARNED}: its test AUC interval [{test['auc_lo']:.3f}, {test['auc_hi']:.3f}] reaches "
                       "chance")
    return True, ""


def stage_learned(out_dir: str | Path, method: str, seed: int) -> tuple[bool, str]:
    """`learned` of one finished stage run (notebooks 03-04): its per-row test scores and its kept step's valid
    ones."""
    boot = {split: metrics.bootstrap(pd.read_csv(runs.output(out_dir, f"scores_{split}.csv", "stage run")), seed=seed,
                                     **metrics.BOOTSTRAP) for split in ("test", "valid")}
    return learned(method, boot["test"], boot["valid"])


def cells(scores: pd.DataFrame, valid: pd.DataFrame, seed: int) -> pd.DataFrame:
    """One row per (method, dataset) of `scores` (collect's): seeds, rows, users, AUC and UAUC (the seed mean) with
    their 95 % interval (users and seeds resampled), and whether it learned (with why not); the paper's values
    beside."""
    out = []
    for (dataset, method), part in scores.groupby(["dataset", "method"], sort=False):
        boot = metrics.bootstrap(part, seed=seed, **metrics.BOOTSTRAP)
        mine = valid[(valid["method"] == method) & (valid["dataset"] == dataset)]
        check = metrics.bootstrap(mine, seed=seed, **metrics.BOOTSTRAP) if len(mine) else None
        ok, note = learned(method, boot, check)
        one = metrics.by_seed(part)[0]
        paper = paper_numbers.table1(method, COLUMNS.get(dataset, (None, None))[1])
        out.append({"method": method, "dataset": dataset, "seeds": boot["seeds"], "rows": boot["rows"],
                    "users": boot["users"], "UAUC users": metrics.uauc(one["uid"], one["label"], one["score"]).n_users,
                    "AUC": boot["auc"], "AUC lo": boot["auc_lo"], "AUC hi": boot["auc_hi"], "UAUC": boot["uauc"],
                    "UAUC lo": boot["uauc_lo"], "UAUC hi": boot["uauc_hi"],
                    "valid AUC": check and check["auc"], "valid AUC lo": check and check["auc_lo"],
                    "valid AUC hi": check and check["auc_hi"], "learned": ok, "note": note,
                    "paper AUC": paper[0], "paper UAUC": paper[1]})
    return pd.DataFrame(out)


def per_seed(scores: pd.DataFrame) -> pd.DataFrame:
    """AUC and UAUC of every (method, dataset, seed) on Table 1's rows: the seeds behind each cell."""
    out = []
    for (dataset, method, each), part in scores.groupby(["dataset", "method", "seed"], sort=False, dropna=False):
        test = metrics.evaluate(part)
        out.append({"method": method, "dataset": dataset, "seed": each, "AUC": test["all"]["auc"],
                    "UAUC": test["all"]["uauc"], "warm AUC": test["warm"]["auc"], "cold AUC": test["cold"]["auc"],
                    "rows": test["all"]["rows"]})
    return pd.DataFrame(out).astype({"seed": "Int64"})


def differences(scores: pd.DataFrame, seed: int) -> pd.DataFrame:
    """CoLLM-FaissRet minus every other method per dataset, AUC and UAUC on the same rows, with every seed of both
    (report.paired_differences over metrics.paired_difference)."""
    return report.paired_differences(scores, OURS, [m for m in METHODS if m != OURS], seed, by=["dataset"])


def _cell(r: pd.Series) -> str:
    """'AUC [lo, hi] / UAUC [lo, hi]', the number of seeds when more than one, the mark when it did not learn."""
    auc = report.with_interval(r["AUC"], r["AUC lo"], r["AUC hi"])
    uauc = report.with_interval(r["UAUC"], r["UAUC lo"], r["UAUC hi"], "undefined" if pd.isna(r["UAUC"]) else None)
    return (f"{auc} / {uauc}" + (f" ({int(r['seeds'])} seeds)" if r["seeds"] > 1 else "")
            + ("" if r["learned"] else f" {MARK}"))


def wide(long: pd.DataFrame, notes: dict[str, str] | None = None) -> pd.DataFrame:
    """Methods x datasets of COLUMNS: our cell (_cell) and the paper's; a dataset without runs gets its `notes` entry
    (e.g. why it was not run), a missing LLM cell says which notebook makes it."""
    notes = notes or {}
    out = pd.DataFrame({"method": list(METHODS)})
    for dataset, (title, paper_dataset) in COLUMNS.items():
        part = long[long["dataset"] == dataset].set_index("method").reindex(METHODS)
        ran = part["AUC"].notna()
        if not ran.any():
            out[f"{title} (ours)"] = notes.get(dataset, "not run")
        else:
            out[f"{title} (ours)"] = [_cell(r) if ok else LLM_NOT_RUN if method in LLM_STAGES else "-"
                                      for ok, (method, r) in zip(ran, part.iterrows())]
        if paper_dataset:
            out[f"{title} (paper)"] = [report.pair(*paper_numbers.table1(m, paper_dataset)) for m in METHODS]
    return out


def panels(table: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The wide table cut into one narrow table per dataset (methods x ours / paper), for reading on a screen."""
    out = {}
    for title, _ in COLUMNS.values():
        columns = [c for c in table.columns if c.startswith(f"{title} (")]
        out[title] = table.set_index("method")[columns].rename(columns={
            f"{title} (ours)": "ours: AUC [95 % CI] / UAUC [95 % CI]", f"{title} (paper)": "paper (Vicuna-7B)"})
    return out


def _side(lo: float, hi: float) -> str:
    return "leads" if lo > 0 else "trails" if hi < 0 else "not resolved"


def _against(diffs: pd.DataFrame, dataset: str, other: str, metric: str) -> dict[str, Any] | None:
    hit = diffs[(diffs["dataset"] == dataset) & (diffs["minus"] == other) & (diffs["metric"] == metric)]
    return None if hit.empty else hit.iloc[0].to_dict()


def _difference(d: dict[str, Any] | None) -> str:
    return "undefined" if d is None else f"{d['difference']:+.4f} [{d['lo']:+.3f}, {d['hi']:+.3f}]"


def strongest(long: pd.DataFrame, diffs: pd.DataFrame) -> pd.DataFrame:
    """Per dataset, CoLLM-FaissRet against the strongest trained baseline that learned and the strongest no-training
    baseline (highest AUC on the same rows, every seed), with the paired differences (`diffs`, differences')."""
    out = []
    for dataset, part in long.dropna(subset=["AUC"]).groupby("dataset", sort=False):
        mine = part[part["method"] == OURS]
        if mine.empty:
            continue
        row = {"dataset": dataset, "ours": OURS, "ours AUC": mine["AUC"].iloc[0], "ours UAUC": mine["UAUC"].iloc[0],
               "ours seeds": int(mine["seeds"].iloc[0]), "ours learned": bool(mine["learned"].iloc[0]),
               "ours note": mine["note"].iloc[0]}
        for kind, names in (("trained", TRAINED), ("untrained", UNTRAINED)):
            pool = part[part["method"].isin(names) & part["learned"]]
            if pool.empty:
                continue
            best = pool.loc[pool["AUC"].idxmax()]
            row |= {f"{kind}": best["method"], f"{kind} AUC": best["AUC"], f"{kind} UAUC": best["UAUC"],
                    f"{kind} seeds": int(best["seeds"])}
            for metric in ("AUC", "UAUC"):
                d = _against(diffs, dataset, best["method"], metric)
                row[f"{kind} {metric} difference"] = _difference(d)
                row[f"{kind} {metric} reading"] = ("" if d is None or not row["ours learned"]  # not read: see its note
                                                   else _side(d["lo"], d["hi"]))
        out.append(row)
    return pd.DataFrame(out)


def reading(long: pd.DataFrame, diffs: pd.DataFrame, dataset: str) -> str:
    """One line on a dataset: the paper's claim (CoLLM-FaissRet beats MF, CTRL(DIN) and TALLRec) tested against each
    of them on AUC, and against the best no-training baseline; a method that did not learn cannot test it."""
    part = long[long["dataset"] == dataset].set_index("method")
    if OURS not in part.index or pd.isna(part.loc[OURS, "AUC"]):
        return "not run"
    if not part.loc[OURS, "learned"]:
        return f"{OURS} {part.loc[OURS, 'note']}: nothing here tests the paper's claim"
    said = []
    for other in PAPER_BASELINES:
        if other not in part.index or pd.isna(part.loc[other, "AUC"]):
            continue
        if not part.loc[other, "learned"]:
            said.append(f"vs {other}: cannot test ({NOT_LEARNED})")
            continue
        d = _against(diffs, dataset, other, "AUC")
        if d is not None:
            said.append(f"vs {other}: {'reproduces' if d['lo'] > 0 else 'does not reproduce'} "
                        f"({_side(d['lo'], d['hi'])}, {_difference(d)})")
    untrained = part[part.index.isin(UNTRAINED)].dropna(subset=["AUC"])
    d = _against(diffs, dataset, untrained["AUC"].idxmax(), "AUC") if len(untrained) else None
    if d is not None:
        said.append(f"vs the best no-training baseline, {d['minus']}: {_side(d['lo'], d['hi'])} ({_difference(d)})")
    return "; ".join(said)


def verdict(long: pd.DataFrame, diffs: pd.DataFrame, best: pd.DataFrame, profile: str,
            gpu: pd.DataFrame | None = None) -> pd.DataFrame:
    """The README's first table: per dataset of COLUMNS that ran, CoLLM-FaissRet's AUC / UAUC in the paper, ours on
    gpu (`gpu`: a stage2_results table of ML-1M, when one exists), ours at `profile` (seed mean, interval, seeds,
    mark), the strongest trained and no-training baselines of ours on the same rows with the paired difference to
    each, and the reading (`reading`)."""
    out = []
    for key, (title, paper_dataset) in COLUMNS.items():
        part = long[(long["dataset"] == key) & (long["method"] == OURS)]
        if part.empty:
            continue
        r = part.iloc[0]
        row = {"dataset": title, f"paper ({OURS}, Vicuna-7B)": report.pair(r["paper AUC"], r["paper UAUC"])}
        if gpu is not None:
            g = gpu[(gpu["method"] == OURS) & (gpu["subset"] == "all")] if key == "ml-1m" else gpu.iloc[:0]
            row["ours, gpu"] = report.pair(g["AUC"].iloc[0], g["UAUC"].iloc[0]) if len(g) else "-"
        row[f"ours, {profile}"] = _cell(r)
        b = best[best["dataset"] == key]
        for kind, title_kind in (("trained", "strongest trained baseline"), ("untrained", "strongest no-training "
                                                                                          "baseline")):
            b_row = b.iloc[0] if len(b) else None
            if b_row is None or pd.isna(b_row.get(kind)):
                row[title_kind] = row[f"ours minus it ({kind})"] = "-"
                continue
            theirs = long[(long["dataset"] == key) & (long["method"] == b_row[kind])].iloc[0]
            row[title_kind] = f"{b_row[kind]}: {_cell(theirs)}"
            row[f"ours minus it ({kind})"] = ("not read: ours " + NOT_LEARNED if not r["learned"] else
                                               f"AUC {b_row[f'{kind} AUC difference']} {b_row[f'{kind} AUC reading']}")
        row["reading"] = reading(long, diffs, key)
        out.append(row)
    return pd.DataFrame(out)


def summary_markdown(long: pd.DataFrame, diffs: pd.DataFrame) -> str:
    """One plain sentence per dataset that ran: `reading`, with the cells that did not learn named."""
    lines = []
    for dataset in long.dropna(subset=["AUC"])["dataset"].unique():
        marked = long[(long["dataset"] == dataset) & ~long["learned"]]["method"].tolist()
        lines.append(f"- **{COLUMNS.get(dataset, (dataset,))[0]}**: {reading(long, diffs, dataset)}."
                     + (f" Marked {MARK} ({NOT_LEARNED}): {', '.join(marked)}." if marked else ""))
    return "\n".join(lines)


def liked_history(data: Splits, stages_dirs: dict[str, Path]) -> pd.DataFrame:
    """Per-row test scores of finished LLM stages on a dataset whose rows carry their history's labels (BookCrossing),
    with "liked history": whether the row's history holds a liked book (its prompt's liked list is not empty). TALLRec's
    prompts leave that list empty, as ours do (docs/protocol.md §5.1); the rows without one are a block of their own
    (on BookCrossing's test rows few are positive), which a model can score from the template alone."""
    parts = []
    for method, folder in stages_dirs.items():
        rows = baselines.rows_of(data, folder)
        scored = pd.read_csv(runs.output(folder, "scores_test.csv", "stage run"))
        liked = rows["his_label"].map(lambda labels: "some" if sum(labels) > 0 else "none")
        parts.append(scored.assign(method=method, **{"liked history": liked.to_numpy()}))
    return pd.concat(parts, ignore_index=True)
