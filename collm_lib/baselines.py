"""Every method scored on a finished stage's rows: the same-row baselines and the row checks.

A stage run's per-row scores (scores_<split>.csv) are the source of truth for which (uid, iid) rows a method was
scored on. `rows_of` recovers those rows with their histories, `baselines_on_same_rows` scores MF (and CTRL(DIN),
popularity) on exactly them as a run of its own, and `check_same_rows` / `check_same_keys` raise unless runs or a
table's cells scored the same rows. `stages` runs a stage; this module only reads finished ones.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from . import encoders, runs
from .data import Splits
from .io import read_json, write_frame, write_json


def scored_keys(stage_dir: str | Path, split: str = "test") -> pd.DataFrame:
    """The (uid, iid, label) rows a finished stage scored, in its order, read from its per-row scores: the source
    of truth for which rows other methods must be scored on."""
    return pd.read_csv(Path(stage_dir) / f"scores_{split}.csv", usecols=["uid", "iid", "label"])


def sample_counts(stage_dir: str | Path, split: str = "test") -> dict[str, int]:
    """How many rows and users a finished stage scored on `split`, and how many users have both labels (UAUC's)."""
    keys = scored_keys(stage_dir, split)
    both = keys.groupby("uid")["label"].nunique()
    return {"rows": len(keys), "users": int(keys["uid"].nunique()), "uauc_users": int((both == 2).sum())}


def _keyed(frame: pd.DataFrame) -> pd.DataFrame:
    """(uid, iid, n): n numbers the repeats of a pair in frame order, so repeated pairs match one to one."""
    return frame.assign(n=frame.groupby(["uid", "iid"]).cumcount())


def _same_keys(keyed: dict[str, pd.DataFrame], what: str) -> int:
    """Raise unless every frame of `keyed` ({name: rows with uid, iid}) holds the same (uid, iid) multiset; returns
    its size."""
    sets = {name: sorted(zip(f["uid"].tolist(), f["iid"].tolist())) for name, f in keyed.items()}
    first, expected = next(iter(sets.items()))
    for name, keys in sets.items():
        if keys != expected:
            raise ValueError(f"{name} scored other {what} than {first} ({len(keys)} vs {len(expected)} rows, "
                             "(uid, iid) pairs differ): the results are not comparable")
    return len(expected)


def check_same_rows(*stage_dirs: str | Path, split: str = "test") -> int:
    """Raise unless every stage scored the same (uid, iid) rows (as a multiset); returns their number."""
    return _same_keys({str(d): scored_keys(d, split) for d in stage_dirs}, f"{split} rows")


def check_same_keys(scores: pd.DataFrame) -> dict[str, int]:
    """Raise unless, within each dataset of a table's per-row scores (io.score_rows keyed by method and dataset),
    every method scored the same (uid, iid) rows (as a multiset); returns each dataset's number of rows."""
    return {dataset: _same_keys({f"{dataset}: {m}": f for m, f in part.groupby("method", sort=False)}, "rows")
            for dataset, part in scores.groupby("dataset", sort=False)}


def rows_of(splits: Splits, stage_dir: str | Path, split: str = "test") -> pd.DataFrame:
    """The full rows (with histories) of `split` that a finished stage scored, matched on (uid, iid) keys."""
    keys = _keyed(scored_keys(stage_dir, split))
    rows = keys[["uid", "iid", "n"]].merge(_keyed(splits.split(split)), on=["uid", "iid", "n"], how="left",
                                           validate="one_to_one", indicator=True)
    if (rows["_merge"] != "both").any() or (rows["label"].to_numpy() != keys["label"].to_numpy()).any():
        raise ValueError(f"{stage_dir}: its scored {split} rows are not all in {splits.name}/{split} with the same "
                         "labels; was it run on other data?")
    return rows.drop(columns=["_merge", "n"])


def on_keys(scores: pd.DataFrame, keys: pd.DataFrame, what: str) -> pd.DataFrame:
    """The rows of `scores` (a method's per-row scores of the whole split: uid, iid, label, score, ...) at the (uid,
    iid) `keys`, in their order; repeated pairs match one to one, in order. `what` names the keys in the error."""
    keyed = _keyed(keys[["uid", "iid"]])
    rows = keyed.merge(_keyed(scores), on=["uid", "iid", "n"], how="left", validate="one_to_one")
    if rows["score"].isna().any():
        raise ValueError(f"{what}: {int(rows['score'].isna().sum())} of its rows have no score in the given frame: "
                         "it scored other rows")
    return rows.drop(columns="n")


BASELINE_FILES = ("results.json", "scores_*.csv")


def baselines_on_same_rows(splits: Splits, stage_dir: str | Path, mf_dir: str | Path,
                           ctrl_dir: str | Path | None = None, split: str = "test",
                           popularity_dir: str | Path | None = None) -> dict[str, dict]:
    """MF (and CTRL(DIN), and popularity) scored on exactly the rows a finished LLM stage scored, as
    {method: {split: evaluate(...), "scores": the per-row score file}}.

    A run of its own (runs/<dataset>/same-rows-<identity>, its identity the fingerprints of the stage, MF and CTRL
    runs): per-row scores scores_<method>.csv and results.json, so the comparison is recomputable, and a replay
    (bundles without weights) reads it instead of rescoring."""
    how = "run it first (notebooks 02-04, 06)"
    upstream = {"stage": runs.upstream_fingerprint(stage_dir, "LLM stage run", how),
                "mf": runs.upstream_fingerprint(mf_dir, "MF run", how)}
    if ctrl_dir is not None:
        upstream["ctrl"] = runs.upstream_fingerprint(ctrl_dir, "CTRL(DIN) run", how)
    if popularity_dir is not None:
        upstream["popularity"] = runs.upstream_fingerprint(popularity_dir, "popularity run", how)
    ident = runs.identity("same-rows", {"split": split}, upstream)
    out = runs.run_dir("same-rows", splits.name, ident)
    with runs.claim(out, ident) as todo:
        if not todo:
            done = read_json(out / "results.json")
            return {name: m | {"scores": str(out / done["files"][name])} for name, m in done["methods"].items()}
        with runs.running(out, "same-rows", ident, {"split": split}, upstream, owned=BASELINE_FILES):
            methods, files = _score_same_rows(splits, out, upstream, stage_dir, mf_dir, ctrl_dir, split,
                                              popularity_dir)
            runs.finish(out, ident, ["results.json", *files.values()])
    return {name: m | {"scores": str(out / files[name])} for name, m in runs.plain(methods).items()}


def _score_same_rows(splits: Splits, out: Path, upstream: dict, stage_dir: str | Path, mf_dir: str | Path,
                     ctrl_dir: str | Path | None, split: str, popularity_dir: str | Path | None
                     ) -> tuple[dict[str, dict], dict[str, str]]:
    """baselines_on_same_rows' work: score files and results.json in `out`; returns (metrics, score file names)."""
    from . import ctrl, metrics, popularity

    rows = rows_of(splits, stage_dir, split)
    scored = {"MF": encoders.score(encoders.load(mf_dir), rows)}
    if ctrl_dir is not None:
        model, config = ctrl.load_ctrl(ctrl_dir)
        scored["CTRL (DIN)"] = ctrl.score_ctrl(model, rows, config)
    if popularity_dir is not None:
        scored["Popularity"] = popularity.score_popularity(popularity.load_counts(popularity_dir), rows)
    columns = [c for c in ("uid", "iid", "label", "not_cold") if c in rows]
    files = {name: f"scores_{name.split()[0]}.csv" for name in scored}
    for name, values in scored.items():
        write_frame(out / files[name], rows[columns].assign(score=values))
    methods = {name: {split: metrics.evaluate(rows.assign(score=s)) | {"rows": len(rows)}} for name, s in scored.items()}
    write_json(out / "results.json", {"methods": methods, "files": files, "stage_dir": runs.relative(stage_dir),
                                      "mf_dir": runs.relative(mf_dir), "upstream": upstream,
                                      "ctrl_dir": runs.relative(ctrl_dir) if ctrl_dir else None,
                                      "popularity_dir": runs.relative(popularity_dir) if popularity_dir else None})
    return methods, files
