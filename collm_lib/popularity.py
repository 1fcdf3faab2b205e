"""The most-popular-item baseline (docs/protocol.md §6.3): an item scores its number of positive rows among the
rows the collaborative models learn from (`Splits.collab_rows`); unseen items score 0, and ties count half in AUC.

A sanity row of Table 1: it knows nothing of the user, so a collaborative model below it on a dataset is a bug
until shown otherwise. It has no seed and no training; a run folder holds its counts and per-row test scores so
that Table 1's cells recompute like any other.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import io, metrics, runs
from .data import Splits

FILES = ("counts.csv", "test_scores.csv", "results.json")
SCORE = "positive rows of the item in the collaborative training rows"


def positive_counts(splits: Splits) -> pd.Series:
    """Positive rows per item id in `splits.collab_rows` (items without one are absent)."""
    rows = splits.collab_rows
    return rows.loc[rows["label"] == 1, "iid"].value_counts().sort_index().rename("positives")


def score_popularity(counts: pd.Series, frame: pd.DataFrame) -> np.ndarray:
    """Each row's item count, as float64 (0 for items absent from `counts`)."""
    if "iid" not in frame:
        raise ValueError("score_popularity: the frame lacks column 'iid'")
    return frame["iid"].map(counts).fillna(0).to_numpy(dtype=np.float64)


def load_counts(run_dir: str | os.PathLike) -> pd.Series:
    """The counts a finished popularity run used."""
    folder = Path(run_dir)
    runs.require_finished(folder, "popularity run", "make it with popularity.ensure_popularity(splits)")
    return pd.read_csv(folder / "counts.csv", index_col="iid")["positives"]


def ensure_popularity(splits: Splits, work_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """results.json of the popularity baseline on `splits` (valid and test metrics), made unless its folder
    (runs.run_dir("popularity", dataset, identity)) holds it intact; adds "run_dir"."""
    upstream = {"data": runs.data_fingerprint(splits)}
    config = {"score": SCORE}
    ident = runs.identity("popularity", config, upstream)
    out = runs.run_dir("popularity", splits.name, ident, work_dir=work_dir)
    with runs.claim(out, ident) as todo:
        if todo:
            with runs.running(out, "popularity", ident, config, upstream, owned=FILES):
                counts = positive_counts(splits)
                io.write_frame(out / "counts.csv", counts.rename_axis("iid").reset_index())
                scored = {name: frame.assign(score=score_popularity(counts, frame))
                          for name, frame in (("valid", splits.valid), ("test", splits.test))}
                columns = [c for c in ("uid", "iid", "label", "not_cold", "score") if c in scored["test"]]
                io.write_frame(out / "test_scores.csv", scored["test"][columns])
                io.write_json(out / "results.json", {
                    "dataset": splits.name, "model": "Popularity", "config": config, "upstream": upstream,
                    "metrics": {name: metrics.evaluate(frame, train_frame=splits.collab_rows)
                                for name, frame in scored.items()},
                    "run": io.run_info(None)})
                runs.finish(out, ident, list(FILES))
    return io.read_json(out / "results.json") | {"run_dir": str(out)}
