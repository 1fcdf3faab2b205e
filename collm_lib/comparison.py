"""Notebook 07: CoLLM-FaissRet over each collaborative model, against that model alone, against CTRL(DIN) and against
the best no-training baseline, all scored on the same test rows (docs/protocol.md §4.1).

For every encoder of the plan (profiles.COMPARE): the model alone (pipeline.encoder) and, for those in
`plan.stage2`, stage 2 over it (on the main stage-1 run's LoRA, the encoder's run part of stage 2's identity). Every
seed that exists counts: MF alone over Table 1's seeds, CoLLM-FaissRet over MF over the seeds notebook 08 made
(table1.llm_runs), CTRL(DIN) over its seeds; the other encoders and stage 2 over them at the main seed. The
no-training baselines (popularity, item and user positive rate) are Table 1's. Differences are paired user-level
bootstraps that resample seeds too (report.paired_differences), on all rows and on the warm and cold ones.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from . import baselines, encoder_registry, pipeline, profiles, rates, replicates, report, table1
from .data import Splits
from .llm import LLMConfig
from .profiles import ComparePlan

CTRL = "CTRL (DIN)"
METHOD = "CoLLM-FaissRet over {}"


def alone(encoder: str) -> str:
    """The method name of `encoder` scored alone: its registry label."""
    return encoder_registry.info(encoder).label


def over(encoder: str) -> str:
    return METHOD.format(alone(encoder))


def encoder_runs(plan: ComparePlan, splits: Splits, seed: int, progress: bool = True) -> dict[str, Path]:
    """Each encoder of the plan alone, trained unless finished: name -> run folder."""
    ctx = pipeline.RunContext(splits, plan.profile, seed, progress=progress)
    return {name: pipeline.encoder(ctx, ctx.encoder_config(name)) for name in plan.encoders}


def stage2_runs(plan: ComparePlan, splits: Splits, runs: dict[str, Path], seed: int, llm: LLMConfig,
                progress: bool = True) -> tuple[Path, dict[str, dict]]:
    """(stage-1 run, name -> stage 2's results over that encoder, at the profile's stage 2 with the plan's changes
    for it), each run unless finished; stage 1 is notebook 03's run of these settings."""
    ctx = pipeline.RunContext(splits, plan.profile, seed, llm, progress)
    first = pipeline.stage1(ctx)["run_dir"]
    return Path(first), {name: pipeline.stage2(ctx, first, runs[name], ctx.stage_config(2, **plan.stage.get(name, {})))
                         for name in plan.stage2}


def score_files(plan: ComparePlan, splits: Splits, runs: dict[str, Path], stage2: dict[str, dict], seed: int,
                llm: LLMConfig, progress: bool = True) -> dict[tuple[str, int | None], Path]:
    """{(method, seed): its per-row test scores} of every method notebook 07 compares (seed None: none), made unless
    finished, except the seeds of stage 2 over MF beyond the main one, which are read where notebook 08 made them."""
    table = profiles.plan(plan.profile)
    cheap = replicates.cheap_replicates(plan.profile, {splits.name: splits},
                                        replicates.seeds_from(seed, table.n_seeds), table.ctrl, llm, progress)
    files: dict[tuple[str, int | None], Path] = {
        (r.method, None if pd.isna(r.seed) else int(r.seed)): Path(r.scores)
        for r in cheap.itertuples() if r.method in (CTRL, "Popularity") or (r.method == "MF" and "mf" in runs)}
    files |= {(alone(name), seed): folder / "test_scores.csv" for name, folder in runs.items()}
    files |= {(over(name), seed): Path(result["run_dir"]) / "scores_test.csv" for name, result in stage2.items()}
    if "mf" in stage2:
        for each, (_, folder) in table1.llm_runs(table, splits, seed, llm, progress=progress).items():
            if each != seed:  # the main seed's is stage2's own run (its rows are this notebook's)
                files[(over("mf"), each)] = folder / "scores_test.csv"
    for kind, method in rates.KINDS.items():
        files[(method, None)] = Path(rates.ensure_rates(splits, kind)["run_dir"]) / "test_scores.csv"
    return files


def same_rows(files: dict[tuple[str, int | None], Path], stage2: dict[str, dict], dataset: str) -> pd.DataFrame:
    """The per-row test scores of every method and seed of `files` (method, dataset, seed, uid, iid, label, score,
    not_cold), cut to stage 2's test rows (the whole split, or the profile's sample of users) and checked to be the
    same rows."""
    keys = baselines.scored_keys(next(iter(stage2.values()))["run_dir"])
    parts = [baselines.on_keys(pd.read_csv(path), keys, f"{method} seed {each}").assign(method=method, seed=each)
             for (method, each), path in files.items()]
    rows = pd.concat(parts, ignore_index=True).assign(dataset=dataset).astype({"seed": "Int64"})
    rows = rows[["method", "dataset", "seed", "uid", "iid", "label", "score", "not_cold"]]
    for _, one in rows.groupby("seed", dropna=False):
        baselines.check_same_keys(one)
    return rows


SUBSETS = ("all", "warm", "cold")  # warm: user and item seen in training (not_cold == 1), as metrics.evaluate


def subsets(rows: pd.DataFrame) -> pd.DataFrame:
    """The per-row frame once per subset (SUBSETS), with a "subset" column."""
    return pd.concat([rows.assign(subset="all"), rows[rows["not_cold"] == 1].assign(subset="warm"),
                      rows[rows["not_cold"] == 0].assign(subset="cold")], ignore_index=True)


def table(rows: pd.DataFrame, seed: int) -> pd.DataFrame:
    """One row per method: its seeds, rows and users, AUC and UAUC (the seed mean) with 95 % intervals that resample
    users and seeds, whether it learned (table1.learned: here on the test interval only; Table 1 also reads the kept
    step's valid interval, so a stage run near chance may be marked there and not here), and warm and cold AUC with
    their row and user counts."""
    no_valid = pd.DataFrame(columns=["method", "dataset"])
    parts = {name: table1.cells(part.drop(columns="subset"), no_valid, seed).set_index("method")
             for name, part in subsets(rows).groupby("subset", sort=False) if part["label"].nunique() == 2}
    out = parts["all"][["seeds", "rows", "users", "AUC", "AUC lo", "AUC hi", "UAUC", "UAUC lo", "UAUC hi", "learned",
                        "note"]].copy()
    for name in ("warm", "cold"):
        part = parts.get(name)
        out[f"{name} AUC"] = None if part is None else part["AUC"]
        out[f"{name} rows"] = None if part is None else part["rows"]
        out[f"{name} users"] = None if part is None else part["users"]
    return out.reset_index()


def counts(rows: pd.DataFrame) -> dict[str, tuple[int, int]]:
    """subset -> (rows, users) of one method's rows of one seed (every method and seed has the same)."""
    first = rows[(rows["method"] == rows["method"].iloc[0])]
    one = first[first["seed"].isna()] if first["seed"].isna().all() else first[first["seed"] == first["seed"].min()]
    return {name: (len(part), int(part["uid"].nunique())) for name, part in subsets(one).groupby("subset", sort=False)}


def baselines_of(rows: pd.DataFrame, encoder: str) -> list[str]:
    """Whom CoLLM-FaissRet over `encoder` is compared with: that encoder alone, CTRL(DIN), and every no-training
    baseline."""
    return [alone(encoder), CTRL, *[m for m in table1.UNTRAINED if m in set(rows["method"])]]


def differences(rows: pd.DataFrame, plan: ComparePlan, seed: int) -> pd.DataFrame:
    """CoLLM-FaissRet over each encoder minus each of baselines_of, AUC and UAUC, on all, warm and cold rows: paired
    user-level intervals, seeds resampled where a method has them (report.paired_differences)."""
    split = subsets(rows)
    parts = [report.paired_differences(split, over(name), baselines_of(rows, name), seed, by=("subset",))
             for name in plan.stage2]
    frame = pd.concat(parts, ignore_index=True)
    frame.attrs = parts[0].attrs
    return frame


def verdict(diffs: pd.DataFrame, methods: pd.DataFrame) -> pd.DataFrame:
    """On all rows, each CoLLM-FaissRet against the strongest baseline that learned, trained (the encoder alone or
    CTRL(DIN)) and no-training, by AUC (`methods`: table's frame): the difference, interval and reading."""
    learned = methods[methods["learned"]].set_index("method")["AUC"]
    out = []
    for method, part in diffs[diffs["subset"] == "all"].groupby("method", sort=False):
        for kind, pool in (("trained", [m for m in part["minus"].unique() if m not in table1.UNTRAINED]),
                           ("no-training", [m for m in part["minus"].unique() if m in table1.UNTRAINED])):
            pool = [m for m in pool if m in learned.index]
            if not pool:
                continue
            best = max(pool, key=lambda m: learned[m])
            rows = part[part["minus"] == best][["minus", "metric", "difference", "lo", "hi", "seeds", "users", "reading"]]
            if method not in learned.index:  # not read as a result (docs/protocol.md §7.5)
                rows = rows.assign(reading=table1.NOT_LEARNED)
            out += [{"method": method, "strongest": kind, **r} for r in rows.to_dict("records")]
    return pd.DataFrame(out)
