"""The no-training baselines beside popularity (docs/protocol.md §6.3): a row scores a positive rate read off the
training rows, shrunk toward the global rate g with a pseudo-count k, (positives + k g) / (rows + k), with k chosen
on valid (never on test) from PSEUDO_COUNTS.

- "item": the target item's share of positive rows among the rows the collaborative models learn from
  (`Splits.collab_rows`); an item without rows scores g.
- "user": the user's share among those rows; where a dataset's rows carry their history's labels (BookCrossing,
  TALLRec's protocol, split by user: a test user has no rows of its own), the share of liked books in the history
  the row itself shows (`his_label`: the liked and disliked books of its prompt). A user without rows scores g.

They learn nothing: a trained model that does not beat them on the same rows adds nothing they do not know. No seed;
a run folder holds the rates, the valid choice of k and per-row scores, so Table 1's cells recompute like any other.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import io, metrics, runs
from .data import Splits

KINDS = {"item": "Item positive rate", "user": "User positive rate"}  # kind -> its name in the tables
PSEUDO_COUNTS = (0, 1, 2, 5, 10, 20, 50, 100)  # k = 0: the raw share
FILES = ("counts.csv", "choice.csv", "test_scores.csv", "results.json")


def reads_history(frame: pd.DataFrame) -> bool:
    """Whether a user's rate comes from the history each row shows (rows carrying `his_label`)."""
    return "his_label" in frame


def counts(splits: Splits, kind: str) -> pd.DataFrame:
    """Positive rows and rows per item ("item") or user ("user") among splits.collab_rows: columns key, positives,
    rows."""
    if kind not in KINDS:
        raise ValueError(f"rate kind {kind!r}: choose one of {', '.join(KINDS)}")
    key = "iid" if kind == "item" else "uid"
    grouped = splits.collab_rows.groupby(key)["label"].agg(positives="sum", rows="size")
    return grouped.rename_axis("key").reset_index()


def score_rates(frame: pd.DataFrame, table: pd.DataFrame, kind: str, k: float, rate: float,
                history: bool = False) -> np.ndarray:
    """Each row's shrunk positive rate: from `table` (counts) by its item or user, or with `history` (kind "user")
    from its own `his_label`; rows without any: `rate`, the global rate."""
    if history:
        positives = frame["his_label"].map(lambda labels: float(np.sum(labels))).to_numpy(np.float64)
        rows = frame["his_label"].map(len).to_numpy(np.float64)
    else:
        column = "iid" if kind == "item" else "uid"
        if column not in frame:
            raise ValueError(f"score_rates: the frame lacks column {column!r}")
        indexed = table.set_index("key")
        positives = frame[column].map(indexed["positives"]).fillna(0).to_numpy(np.float64)
        rows = frame[column].map(indexed["rows"]).fillna(0).to_numpy(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        shrunk = (positives + k * rate) / (rows + k)
    return np.where(rows + k > 0, shrunk, rate)


def _choose(splits: Splits, table: pd.DataFrame, kind: str, rate: float, history: bool) -> pd.DataFrame:
    """Valid AUC of every pseudo-count; the chosen one (the best, the smallest on a tie) marked."""
    aucs = [metrics.auc(splits.valid["label"], score_rates(splits.valid, table, kind, k, rate, history))
            for k in PSEUDO_COUNTS]
    choice = pd.DataFrame({"pseudo_count": PSEUDO_COUNTS, "valid_auc": aucs})
    return choice.assign(chosen=np.arange(len(choice)) == int(np.argmax(aucs)))


def ensure_rates(splits: Splits, kind: str, work_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """results.json of the `kind` rate baseline on `splits` (valid and test metrics, the chosen pseudo-count), made
    unless its folder (runs.run_dir("rates", dataset, identity, kind)) holds it intact; adds "run_dir"."""
    table = counts(splits, kind)
    history = kind == "user" and reads_history(splits.test)
    config = {"kind": kind, "score": KINDS[kind], "pseudo_counts": PSEUDO_COUNTS, "from_history": history}
    upstream = {"data": runs.data_fingerprint(splits)}
    ident = runs.identity("rates", config, upstream)
    out = runs.run_dir("rates", splits.name, ident, kind, work_dir=work_dir)
    with runs.claim(out, ident) as todo:
        if todo:
            with runs.running(out, "rates", ident, config, upstream, owned=FILES):
                rate = float(splits.collab_rows["label"].mean())
                choice = _choose(splits, table, kind, rate, history)
                k = float(choice.loc[choice["chosen"], "pseudo_count"].iloc[0])
                io.write_frame(out / "counts.csv", table)
                io.write_frame(out / "choice.csv", choice)
                scored = {name: frame.assign(score=score_rates(frame, table, kind, k, rate, history))
                          for name, frame in (("valid", splits.valid), ("test", splits.test))}
                columns = [c for c in ("uid", "iid", "label", "not_cold", "score") if c in scored["test"]]
                io.write_frame(out / "test_scores.csv", scored["test"][columns])
                io.write_json(out / "results.json", {
                    "dataset": splits.name, "model": KINDS[kind], "config": config, "upstream": upstream,
                    "pseudo_count": k, "global_rate": rate,
                    "metrics": {name: metrics.evaluate(frame, train_frame=splits.collab_rows)
                                for name, frame in scored.items()},
                    "run": io.run_info(None)})
                runs.finish(out, ident, list(FILES))
    return io.read_json(out / "results.json") | {"run_dir": str(out)}


def score_with(run_dir: str | os.PathLike, frame: pd.DataFrame) -> np.ndarray:
    """`frame` scored by the finished rate run in `run_dir`, with the pseudo-count it chose on valid."""
    folder = Path(run_dir)
    runs.require_finished(folder, "rate baseline run", "make it with rates.ensure_rates(splits, kind)")
    record = io.read_json(folder / "results.json")
    table = pd.read_csv(folder / "counts.csv")
    config = record["config"]
    return score_rates(frame, table, config["kind"], record["pseudo_count"], record["global_rate"],
                       config["from_history"])
