"""Notebook 07: CoLLM-FaissRet over each collaborative model, against that model alone and against CTRL(DIN), all
scored on the same test rows (docs/protocol.md §4.1).

For every encoder of the plan (profiles.COMPARE): the model alone (encoders.ensure) and, for those in
`plan.stage2`, stage 2 over it (on the main stage-1 run's LoRA, the encoder's run part of stage 2's identity). The
per-row scores of all of them and of CTRL(DIN) (the main seed's run of Table 1's replicates) are checked to be the
same rows; differences are paired user-level bootstraps (report.paired_differences), on all rows and on the warm
and cold ones.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from . import baselines, encoders, metrics, profiles, replicates, report, stages
from .data import Splits
from .io import score_rows
from .llm import LLMConfig
from .profiles import ComparePlan

NAMES = {"mf": "MF", "mf-bias": "MF with biases", "lightgcn": "LightGCN", "sasrec": "SASRec"}
CTRL = "CTRL (DIN)"
METHOD = "CoLLM-FaissRet over {}"


def alone(encoder: str) -> str:
    return NAMES[encoder]


def over(encoder: str) -> str:
    return METHOD.format(NAMES[encoder])


def encoder_runs(plan: ComparePlan, splits: Splits, seed: int, progress: bool = True) -> dict[str, Path]:
    """Each encoder of the plan alone, trained unless finished: name -> run folder."""
    return {name: encoders.ensure(splits, profiles.encoder(plan.profile, splits.name, name, seed=seed),
                                  progress=progress) for name in plan.encoders}


def stage2_config(plan: ComparePlan, dataset: str, encoder: str, seed: int, llm: LLMConfig):
    """Stage 2's config over `encoder`: the profile's, with the plan's changes for that encoder."""
    return profiles.stage(plan.profile, 2, dataset=dataset, seed=seed, llm=llm, **plan.stage.get(encoder, {}))


def stage2_runs(plan: ComparePlan, splits: Splits, runs: dict[str, Path], seed: int, llm: LLMConfig,
                progress: bool = True) -> tuple[Path, dict[str, dict]]:
    """(stage-1 run, name -> stage 2's results over that encoder), each run unless finished; stage 1 is notebook
    03's run of these settings."""
    first = stages.run_stage(splits, profiles.stage(plan.profile, 1, dataset=splits.name, seed=seed, llm=llm),
                             progress=progress)
    return Path(first["run_dir"]), {
        name: stages.run_stage(splits, stage2_config(plan, splits.name, name, seed, llm), stage1_dir=first["run_dir"],
                               mf_dir=runs[name], progress=progress) for name in plan.stage2}


def ctrl_runs(plan: ComparePlan, splits: Splits, seed: int, llm: LLMConfig, n_seeds: int,
              progress: bool = True) -> pd.DataFrame:
    """CTRL(DIN)'s seed replicates as Table 1 makes them (notebook 06: the same runs, found finished)."""
    table = profiles.plan(plan.profile)
    frame = replicates.cheap_replicates(plan.profile, {splits.name: splits}, replicates.seeds_from(seed, n_seeds),
                                        table.ctrl, llm, progress)
    return frame[frame["method"] == CTRL].reset_index(drop=True)


def same_rows(runs: dict[str, Path], stage2: dict[str, dict], ctrl: pd.DataFrame, seed: int,
              dataset: str) -> pd.DataFrame:
    """The per-row test scores of every method (method, dataset, uid, iid, label, score, not_cold) on stage 2's test
    rows (the whole split, or the profile's sample of users), checked to be the same rows: each encoder alone and
    CTRL(DIN) at `seed` (their whole-split scores, cut to those rows), and stage 2 over each encoder."""
    scored = Path(next(iter(stage2.values()))["run_dir"])
    files = {over(name): Path(result["run_dir"]) / "scores_test.csv" for name, result in stage2.items()}
    whole = {alone(name): folder / "test_scores.csv" for name, folder in runs.items()}
    whole[CTRL] = ctrl.loc[ctrl["seed"] == seed, "scores"].iloc[0]
    parts = [baselines.on_scored_rows(pd.read_csv(path), scored).assign(method=method, dataset=dataset)
             for method, path in whole.items()]
    rows = pd.concat([*parts[:-1], score_rows(files).assign(dataset=dataset), parts[-1]], ignore_index=True)
    rows = rows[["method", "dataset", "uid", "iid", "label", "score", "not_cold"]]
    baselines.check_same_keys(rows)
    return rows


def table(rows: pd.DataFrame, ctrl: pd.DataFrame) -> pd.DataFrame:
    """One row per method: rows and users scored, AUC, UAUC, warm and cold AUC with their row and user counts; for
    CTRL(DIN), the mean and spread of its seed replicates beside the main seed's numbers."""
    out = []
    for method, part in rows.groupby("method", sort=False):
        test = metrics.evaluate(part)
        row = {"method": method, "rows": test["all"]["rows"], "users": int(part["uid"].nunique()),
               "AUC": test["all"]["auc"], "UAUC": test["all"]["uauc"]}
        for subset, flag in (("warm", 1), ("cold", 0)):
            sub = part[part["not_cold"] == flag]
            row |= {f"{subset} AUC": test.get(subset, {}).get("auc"), f"{subset} rows": len(sub),
                    f"{subset} users": int(sub["uid"].nunique())}
        if method == CTRL:
            row |= {"seeds": len(ctrl), "AUC seed mean": ctrl["AUC"].mean(), "AUC seed std": ctrl["AUC"].std()}
        out.append(row)
    return pd.DataFrame(out).astype({c: "Int64" for c in ("rows", "users", "warm rows", "warm users", "cold rows",
                                                          "cold users")})


SUBSETS = ("all", "warm", "cold")  # warm: user and item seen in training (not_cold == 1), as metrics.evaluate


def subsets(rows: pd.DataFrame) -> pd.DataFrame:
    """The per-row frame once per subset (SUBSETS), with a "subset" column."""
    return pd.concat([rows.assign(subset="all"), rows[rows["not_cold"] == 1].assign(subset="warm"),
                      rows[rows["not_cold"] == 0].assign(subset="cold")], ignore_index=True)


def counts(rows: pd.DataFrame) -> dict[str, tuple[int, int]]:
    """subset -> (rows, users) of one method's rows (every method has the same)."""
    one = rows[rows["method"] == rows["method"].iloc[0]]
    return {name: (len(part), int(part["uid"].nunique())) for name, part in subsets(one).groupby("subset", sort=False)}


def differences(rows: pd.DataFrame, plan: ComparePlan, seed: int) -> pd.DataFrame:
    """CoLLM-FaissRet over each encoder minus that encoder alone and minus CTRL(DIN), AUC and UAUC, on all, warm and
    cold rows: paired user-level bootstrap intervals (report.paired_differences)."""
    split = subsets(rows)
    parts = [report.paired_differences(split, over(name), [alone(name), CTRL], seed, by=("subset",))
             for name in plan.stage2]
    frame = pd.concat(parts, ignore_index=True)
    frame.attrs = parts[0].attrs
    return frame


def verdict(diffs: pd.DataFrame) -> pd.DataFrame:
    """Against CTRL(DIN) only: one row per (method, rows, metric), the difference, interval and reading."""
    return diffs[diffs["minus"] == CTRL][["method", "subset", "metric", "difference", "lo", "hi", "users", "reading"]]
