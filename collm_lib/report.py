"""Writing figures and tables to figures/ with the configuration that produced them.

Every artefact `NAME` is written as NAME.png + NAME.pdf (figures) or NAME.csv + NAME.md (tables),
with NAME.config.json beside it holding the settings, the seed and the run info.
This module reads result files and knows no model.
"""
from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Any, Sequence

import matplotlib.pyplot as plt
import pandas as pd

from . import metrics, settings
from . import paper as paper_numbers
from .io import atomic_path, plain, run_info, write_frame, write_json


def rounded(frame: pd.DataFrame, digits: int = 4) -> pd.DataFrame:
    """`frame` for reading: whole numbers without decimals (a whole column, or a count of 2 or more in a mixed one),
    fractions to `digits` decimals (1 decimal from 100 up and for durations), rate columns (`RATE_WORDS`) in
    scientific notation when tiny, undefined values (None, NaN) blank. Scores keep their decimals even when whole
    (an AUC of 1.0 is a score). Text, so for showing only."""
    def text(value: Any, column: str, whole: bool) -> str:
        if value is None or (not isinstance(value, (list, tuple, dict)) and pd.isna(value)):
            return ""
        if not isinstance(value, float):
            return str(value)
        if "auc" not in column and value.is_integer() and (whole or abs(value) >= 2):
            return f"{value:.0f}"
        if abs(value) >= 100 or any(w in column for w in SECONDS_WORDS):
            return f"{value:.1f}"
        if value != 0 and abs(value) < 10 ** -digits and any(w in column for w in RATE_WORDS):
            return f"{value:.2g}"
        return f"{value:.{digits}f}"

    out = pd.DataFrame(index=frame.index)
    for i, column in enumerate(frame.columns):
        values = [v.item() if hasattr(v, "item") else v for v in frame.iloc[:, i]]
        whole = all(v.is_integer() for v in values if isinstance(v, float) and not math.isnan(v))
        out[column] = [text(v, str(column).lower(), whole) for v in values]
    return out


RATE_WORDS = ("lr", "learning rate", "decay")  # column names whose tiny values read best as 1e-05
SECONDS_WORDS = ("second", "(s)")  # column names of durations: tenths of a second are enough


def config_table(config: Any) -> pd.DataFrame:
    """A dataclass config as a compact table: the fields (nested ones dotted, e.g. llm.lora_r) whose value differs
    from the field's default, with the default beside it; fields without a default are always shown. A dict of
    configs (e.g. one per dataset) gives one value column per key: the fields where any of them differs."""
    if isinstance(config, dict):
        tables = {name: config_table(c) for name, c in config.items()}
        fields = list(dict.fromkeys(f for t in tables.values() for f in t.index))
        out = pd.DataFrame({name: [_cell(_field(config[name], f)) for f in fields] for name in config}, index=fields)
        defaults = pd.concat(t["default"] for t in tables.values())
        defaults = defaults[~defaults.index.duplicated()]
        out["default"] = [defaults.get(f, "") for f in fields]
        return out.rename_axis("field")
    rows = []

    def walk(obj: Any, prefix: str) -> None:
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value) and not isinstance(value, type):
                walk(value, f"{prefix}{f.name}.")
                continue
            if f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            else:
                rows.append({"field": prefix + f.name, "value": _cell(value), "default": "(required)"})
                continue
            if value != default:
                rows.append({"field": prefix + f.name, "value": _cell(value), "default": _cell(default)})

    walk(config, "")
    return pd.DataFrame(rows, columns=["field", "value", "default"]).set_index("field")


def _field(config: Any, dotted: str) -> Any:
    for name in dotted.split("."):
        config = getattr(config, name)
    return config


def _cell(value: Any) -> str:
    """A config value as short text: floats without trailing noise (1e-05, 0.001), sequences comma-joined."""
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_cell(v) for v in value) or "()"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_cell(v)}" for k, v in value.items()) or "{}"
    return str(settings.shown(value) if isinstance(value, Path) else value)


def _shown(obj: Any) -> Any:
    """Paths in a config as a reader sees them (settings.shown): the committed files hold no author's paths."""
    if isinstance(obj, dict):
        return {k: _shown(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_shown(v) for v in obj]
    if isinstance(obj, Path) or (isinstance(obj, str) and obj.startswith("/")):
        return settings.shown(obj)
    return obj


def _write_config(out: Path, name: str, config: Any, seed: int | None) -> Path:
    return write_json(out / f"{name}.config.json", {"config": _shown(plain(config)), "run": run_info(seed)})


def save_figure(fig: plt.Figure, name: str, config: Any, seed: int | None = None,
                out_dir: str | os.PathLike | None = None) -> list[Path]:
    """Save `fig` as PNG and PDF plus its config JSON; returns the written paths."""
    out = settings.figures_dir(out_dir)
    paths = []
    for ext in ("png", "pdf"):
        path = out / f"{name}.{ext}"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=ext, dpi=150, bbox_inches="tight")
        paths.append(path)
    paths.append(_write_config(out, name, config, seed))
    return paths


def save_table(frame: pd.DataFrame, name: str, config: Any, seed: int | None = None,
               out_dir: str | os.PathLike | None = None, latex: bool = False,
               rows: pd.DataFrame | None = None) -> list[Path]:
    """Save `frame` as CSV and Markdown (and LaTeX if asked) plus its config JSON, and the per-row scores it was
    computed from (`rows`, see io.score_rows) as NAME.rows.csv.gz, so anyone can recompute it."""
    out = settings.figures_dir(out_dir)
    paths = [write_frame(out / f"{name}.csv", frame), write_frame(out / f"{name}.md", rounded(frame))]
    if rows is not None:
        paths.append(write_frame(out / f"{name}.rows.csv.gz", rows))
    if latex:
        path = out / f"{name}.tex"
        with atomic_path(path) as tmp:
            tmp.write_text(frame.to_latex(index=False, float_format="%.4f"))
        paths.append(path)
    paths.append(_write_config(out, name, config, seed))
    return paths


def value_text(value: float | None, note: str | None = None) -> str:
    """A metric for a table cell: 4 decimals, "undef." when its note says why it has none, "-" when missing."""
    if value is not None and not pd.isna(value):
        return f"{value:.4f}"
    return "undef." if isinstance(note, str) else "-"


def pair(auc: float | None, uauc: float | None, uauc_note: str | None = None) -> str:
    """'AUC / UAUC' for a cell; "-" without an AUC."""
    if auc is None or pd.isna(auc):
        return "-"
    return f"{auc:.4f} / {value_text(uauc, uauc_note)}"


def with_interval(value: float | None, lo: float | None, hi: float | None, note: str | None = None) -> str:
    """'value [lo, hi]' for a cell; the value alone without an interval."""
    text = value_text(value, note)
    return text if lo is None or pd.isna(lo) else f"{text} [{lo:.3f}, {hi:.3f}]"


def metrics_table(named: dict[str, dict], dataset: str, split: str = "test") -> pd.DataFrame:
    """One row per (method, subset) from result dicts {"test": metrics.evaluate(...)}, paper values beside."""
    rows = []
    for method, result in named.items():
        paper = paper_numbers.table1(method, dataset)
        for subset, m in result[split].items():
            if not isinstance(m, dict):
                continue
            rows.append({"method": method, "subset": subset, "rows": m["rows"], "AUC": m["auc"],
                         "UAUC": m["uauc"], "UAUC users": m["uauc_users"],
                         "paper AUC": paper[0] if subset == "all" else None,
                         "paper UAUC": paper[1] if subset == "all" else None})
    return pd.DataFrame(rows)


FEWEST_USERS = 20  # a user-level bootstrap over fewer users says little: their reading says so


def _reading(lo: float, hi: float, level: float, users: int) -> str:
    if users < FEWEST_USERS:
        return f"too few users ({users}) to resample: no reading"
    if lo > 0:
        return f"higher: the {level:.0%} interval is above 0"
    if hi < 0:
        return f"lower: the {level:.0%} interval is below 0"
    return f"not resolved: the {level:.0%} interval holds 0"


def paired_differences(rows: pd.DataFrame, method: str, others: Sequence[str], seed: int,
                       by: Sequence[str] = ()) -> pd.DataFrame:
    """`method` minus each of `others` on the same rows (metrics.paired_difference: the same users resampled for
    both), AUC and UAUC, per group of the `by` columns (e.g. dataset) of a per-row frame with a "method" column
    (io.score_rows). One row per comparison and metric: the difference, its interval, the share of resamples below
    0 and what the interval says; a metric undefined on those rows (BookCrossing's UAUC) is left out. With a "seed"
    column every seed of both counts (metrics.paired_difference: the seed means, users and seeds resampled), and
    "seeds" says how many each had. The bootstrap settings are in .attrs["bootstrap"] (numbers.from_differences
    records them)."""
    out = []
    for keys, part in (rows.groupby(list(by), sort=False) if by else [((), rows)]):
        keys = dict(zip(by, keys if isinstance(keys, tuple) else (keys,)))
        mine = part[part["method"] == method]
        for other in others:
            theirs = part[part["method"] == other]
            if mine.empty or theirs.empty:
                continue
            diff = metrics.paired_difference(mine, theirs, seed=seed, **metrics.BOOTSTRAP)
            out += [keys | {"method": method, "minus": other, "metric": metric.upper(), "difference": diff[metric],
                            "lo": diff[f"{metric}_lo"], "hi": diff[f"{metric}_hi"],
                            "resamples below 0": diff[f"{metric}_share_below_0"], "users": diff["users"],
                            "seeds": " vs ".join(map(str, diff["seeds"])),
                            "reading": _reading(diff[f"{metric}_lo"], diff[f"{metric}_hi"], diff["level"], diff["users"])}
                    for metric in ("auc", "uauc") if diff[metric] is not None]
    frame = pd.DataFrame(out)
    frame.attrs["bootstrap"] = metrics.BOOTSTRAP | {"seed": seed, "kind": "paired user-level bootstrap, percentile "
                                                                         "(users and seeds where a method has seeds)"}
    return frame


def saved_table(name: str, out_dir: str | os.PathLike | None = None) -> pd.DataFrame | None:
    """The table `name` that save_table wrote to the figures folder (its CSV), or None when there is none."""
    path = settings.figures_dir(out_dir) / f"{name}.csv"
    return pd.read_csv(path) if path.is_file() else None


def rerank_reading(table: pd.DataFrame, method: str = "Faiss top-K + LLM re-rank",
                   reference: str = "Faiss top-K (MF order)") -> str:
    """What the LLM's re-ranking did to the ranking quality in a rerank table (method / K / NDCG@K rows): per K,
    `method`'s NDCG@K against `reference`, the same candidates in MF order. Said plainly, whichever way it went."""
    by_k = table.pivot_table(index="K", columns="method", values="NDCG@K")
    if method not in by_k or reference not in by_k:
        return ""
    diff = (by_k[method] - by_k[reference]).dropna()
    parts = ", ".join(f"K={k}: {d:+.4f}" for k, d in diff.items())
    users = int(table.loc[table["method"] == method, "users"].max()) if "users" in table else None
    side, then = (("lowers", "the MF order ranks these candidates better than the LLM") if (diff < 0).all() else
                  ("raises", "the LLM ranks these candidates better than MF") if (diff > 0).all() else
                  ("moves both ways", "no consistent effect"))
    return (f"The LLM's re-ranking {side} NDCG@K against the same candidates in MF order ({parts}"
            + (f"; {users} users" if users else "") + f"): {then}.")
