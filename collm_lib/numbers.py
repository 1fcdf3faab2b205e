"""A notebook's key numbers: recorded beside its figures, AUC-type metrics tied to the per-row scores they come from.

The last cell of every notebook calls `record`, which writes figures/numbers_<NN>_<profile>.json (the numbers,
the notebook's wall time and machine) and shows them. A `paired` number is a difference between two methods on the
same rows (metrics.paired_difference), with its interval's bounds as numbers of their own. tests/test_notebook_numbers.py reads them back: every
number tied to rows (`from_rows`) must recompute from the rows saved beside its table (`recompute`), and the
smoke profile's numbers must stay close to tests/expected/numbers_smoke.json, so a number that drifts fails a
test. Numbers that rows cannot give (counts, Recall@K over ranked lists, index recall) are recorded as values.
"""
from __future__ import annotations

import functools
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from . import metrics, settings
from .io import plain, read_json, run_info, write_json

METRICS = ("auc", "uauc", "rows", "uauc_users")  # what `recompute` can recompute from rows


def _strict(value: Any) -> Any:
    """io.plain of a number, with NaN (pandas' "undefined") as None: strict JSON."""
    value = plain(value)
    return None if isinstance(value, float) and math.isnan(value) else value


def from_rows(value: float | int | None, table: str, metric: str, subset: str = "all", **where: Any) -> dict[str, Any]:
    """A number that recomputes from figures/<table>.rows.csv.gz: the rows whose columns equal `where`, then
    `metric` ("auc", "uauc", "rows", "uauc_users") of metrics.evaluate's `subset` ("all", "warm", "cold")."""
    if metric not in METRICS:
        raise ValueError(f"metric {metric!r}: choose one of {METRICS}")
    return {"value": _strict(value), "rows": table, "metric": metric, "subset": subset,
            "where": {k: _strict(v) for k, v in where.items()}}


def paired(diff: dict[str, Any], name: str, table: str, metric: str, where: dict[str, Any], minus: dict[str, Any],
           subset: str = "all") -> dict[str, dict[str, Any]]:
    """Three numbers of a metrics.paired_difference result `diff` (A minus B on the same rows): "<name>", its
    interval's "<name>, lo" and "<name>, hi". Each recomputes from figures/<table>.rows.csv.gz: A's rows are those
    matching `where`, B's those matching `minus`; the bounds by the same bootstrap (its n_boot, level and seed)."""
    if metric not in ("auc", "uauc"):
        raise ValueError(f"metric {metric!r}: a paired difference is of 'auc' or 'uauc'")
    boot = {k: diff[k] for k in ("n_boot", "level", "seed")}
    base = {"rows": table, "metric": metric, "subset": subset, "where": {k: _strict(v) for k, v in where.items()},
            "minus": {k: _strict(v) for k, v in minus.items()}}
    return {name: base | {"value": _strict(diff[metric])},
            f"{name}, lo": base | {"value": _strict(diff[f"{metric}_lo"]), "bound": "lo", "bootstrap": boot},
            f"{name}, hi": base | {"value": _strict(diff[f"{metric}_hi"]), "bound": "hi", "bootstrap": boot}}


def from_differences(frame: pd.DataFrame, table: str, by: Sequence[str] = ()) -> dict[str, dict[str, Any]]:
    """`paired` numbers for every row of a report.paired_differences frame whose rows file is figures/<table>.rows.
    csv.gz, named "<by values> <method> - <minus> <METRIC>" (plus ", lo" and ", hi"); a "subset" column (all, warm,
    cold) selects those rows of the file and prefixes the name ("warm rows: ...")."""
    boot = frame.attrs["bootstrap"]
    entries: dict[str, dict[str, Any]] = {}
    for _, row in frame.iterrows():
        where = {k: row[k] for k in by}
        metric = row["metric"].lower()
        diff = {metric: row["difference"], f"{metric}_lo": row["lo"], f"{metric}_hi": row["hi"],
                **{k: boot[k] for k in ("n_boot", "level", "seed")}}
        subset = row["subset"] if "subset" in frame else "all"
        name = " ".join([*(str(row[k]) for k in by), *([f"{subset} rows:"] if "subset" in frame else []),
                         f"{row['method']} - {row['minus']} {row['metric']}"])
        entries |= paired(diff, name, table, metric, where | {"method": row["method"]}, where | {"method": row["minus"]},
                          subset)
    return entries


def from_table(frame: pd.DataFrame, table: str, keys: Sequence[str], columns: dict[str, str],
               label: str = "") -> dict[str, dict[str, Any]]:
    """`from_rows` numbers for every row of a result `frame` whose rows file is figures/<table>.rows.csv.gz, named
    "<key values> <label><METRIC>": `keys` select the row's rows, `columns` map a metric to the frame's column."""
    return {" ".join(str(row[k]) for k in keys) + f" {label}{metric.upper()}":
            from_rows(row[column], table, metric, **{k: row[k] for k in keys})
            for _, row in frame.iterrows() for metric, column in columns.items()}


def path(notebook: str, profile: str, out_dir: str | os.PathLike | None = None) -> Path:
    """Where a notebook's key numbers are recorded: figures/numbers_<NN>_<profile>.json."""
    return settings.figures_dir(out_dir) / f"numbers_{notebook}_{profile}.json"


def record(notebook: str, profile: str, numbers: dict[str, Any], started: float, seed: int | None = None,
           out_dir: str | os.PathLike | None = None) -> pd.DataFrame:
    """Write the notebook's key numbers (plain values or `from_rows` entries) with its wall time (since the
    time.time() `started`) and machine; print that footer line and return the numbers as a table to show."""
    numbers = {name: entry if isinstance(entry, dict) else _strict(entry) for name, entry in numbers.items()}
    info = run_info(seed)
    wall = time.time() - started
    write_json(path(notebook, profile, out_dir), {"notebook": notebook, "profile": profile, "seed": seed,
                                                  "wall_seconds": round(wall, 1), "run": info, "numbers": numbers})
    print(f"notebook {notebook}, {profile} profile: {wall:.0f} s wall on {info['device']} "
          f"({info['cpu_threads']} CPU threads; torch {info['torch']}, transformers {info['transformers']}); "
          "runs finished before were loaded, not redone (each run's results.json has its own timings)")
    return pd.DataFrame([{"number": name, "value": value(entry),
                          "recomputes from": (f"{entry['rows']}.rows.csv.gz" if isinstance(entry, dict) else "")}
                         for name, entry in numbers.items()])


def value(entry: Any) -> Any:
    """The value of a recorded number, whether plain or a `from_rows` entry."""
    return entry["value"] if isinstance(entry, dict) else entry


def load(notebook: str, profile: str, out_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """A recorded numbers file; a clear error when the notebook has not recorded any with this profile."""
    file = path(notebook, profile, out_dir)
    if not file.exists():
        raise FileNotFoundError(f"{file} does not exist: execute notebook {notebook} with profile {profile!r} "
                                f"(python -m collm_lib.runner --profile {profile} --only {notebook})")
    return read_json(file)


def _selected(entry: dict[str, Any], out_dir: str | os.PathLike | None) -> pd.DataFrame:
    """The rows a `from_rows` number stands on: its table's rows matching `where`, then its subset's rows (warm:
    not_cold == 1, cold: the rest, as metrics.evaluate splits them)."""
    file = _rows_file(entry, out_dir)
    if not file.exists():
        raise FileNotFoundError(f"{file} does not exist: the table's rows are written by report.save_table(rows=...) "
                                "in the notebook that records this number; execute it again")
    stat = file.stat()
    rows = _read_rows(str(file), stat.st_mtime_ns, stat.st_size)
    for column, wanted in entry["where"].items():
        if column not in rows:
            raise ValueError(f"{file}: no column {column!r} to select {wanted!r} on")
        rows = rows[rows[column] == wanted]
    part = entry.get("subset", "all")
    if part == "all":
        return rows.copy()  # never the cached frame itself
    return rows[(rows["not_cold"] == 1) == (part == "warm")] if "not_cold" in rows else rows.iloc[:0]


def _rows_file(entry: dict[str, Any], out_dir: str | os.PathLike | None) -> Path:
    """The per-row scores file a number stands on."""
    return settings.figures_dir(out_dir) / f"{entry['rows']}.rows.csv.gz"


@functools.lru_cache(maxsize=8)
def _read_rows(file: str, mtime_ns: int, size: int) -> pd.DataFrame:
    """A rows file, read once per version (a test reads one table's rows for hundreds of numbers)."""
    return pd.read_csv(file)


@functools.lru_cache(maxsize=32)
def _paired(key: str, out_dir: str | None, stamps: tuple) -> dict[str, Any]:
    """metrics.paired_difference of a `paired` number's rows, once for its point and both bounds (`key`: the entry
    without its metric and bound; `stamps`: its rows file's version)."""
    entry = json.loads(key)
    rows, other = (_selected(entry | {"where": w}, out_dir) for w in (entry["where"], entry["minus"]))
    return metrics.paired_difference(rows, other, **entry["bootstrap"])


def _point(rows: pd.DataFrame, metric: str) -> float | int | None:
    """`metric` of one method's rows; with several seeds (a "seed" column), the mean over the seeds, as the tables
    report it (a count: one seed's)."""
    values = [metrics.evaluate(part)["all"][metric] for part in metrics.by_seed(rows)]
    if metric in ("rows", "uauc_users") or len(values) == 1:
        return values[0]
    return None if any(v is None for v in values) else sum(values) / len(values)


def recompute(entry: dict[str, Any], out_dir: str | os.PathLike | None = None) -> float | int | None:
    """Recompute a `from_rows` or `paired` number from the per-row scores saved beside its table."""
    if "minus" in entry and "bound" in entry:
        key = json.dumps({k: v for k, v in entry.items() if k not in ("value", "metric", "bound")}, sort_keys=True)
        file = _rows_file(entry, out_dir)
        stat = file.stat() if file.exists() else None
        stamps = (stat.st_mtime_ns, stat.st_size) if stat else ()
        found = _paired(key, None if out_dir is None else str(out_dir), stamps)
        return found[f"{entry['metric']}_{entry['bound']}"]
    rows = _selected(entry, out_dir)
    if "minus" in entry:
        other = _selected(entry | {"where": entry["minus"]}, out_dir)
        a, b = (_point(r, entry["metric"]) if len(r) else None for r in (rows, other))
        return None if a is None or b is None else a - b
    if rows.empty:  # e.g. no cold rows in a small sample: a count of nothing is 0, a metric of nothing undefined
        return 0 if entry["metric"] in ("rows", "uauc_users") else None
    return _point(rows, entry["metric"])


def resolution(entry: dict[str, Any], out_dir: str | os.PathLike | None = None) -> float:
    """How far one swapped pair of scores moves a `from_rows` AUC (1 / pairs) or UAUC (the most a single pair of
    one user moves the mean); 0 for counts. A tolerance below it would demand bit-identical scores."""
    if entry["metric"] not in ("auc", "uauc"):
        return 0.0
    rows = _selected(entry, out_dir)
    if entry["metric"] == "auc":
        pos = int(rows["label"].sum())
        return 1.0 / (pos * (len(rows) - pos)) if 0 < pos < len(rows) else 0.0
    pos = rows.groupby("uid")["label"].sum()
    pairs = (pos * (rows.groupby("uid")["label"].count() - pos)).loc[lambda p: p > 0]
    return float((1.0 / pairs).max() / len(pairs)) if len(pairs) else 0.0
