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


TABLE1_COLUMNS = {  # dataset -> (column title, the paper's dataset whose values apply, or None)
    "ml-1m": ("ML-1M", "ml-1m"), "amazon-book": ("Amazon-Book", "amazon-book"),
    "amazon-book-msl": ("Amazon-Book substitute", None), "bookcrossing": ("BookCrossing", "bookcrossing")}
TABLE1_METHODS = ("MF", "Popularity", "CTRL (DIN)", "TALLRec", "CoLLM-FaissRet")
INTERVAL_COLUMNS = ("AUC lo", "AUC hi", "UAUC lo", "UAUC hi")
SPREAD_COLUMNS = ("replicates", "replicate rows", "replicate AUC mean", "replicate AUC std", "replicate UAUC mean",
                  "replicate UAUC std")


def _value(value: float | None, note: str | None = None) -> str:
    """A metric for a table cell: 4 decimals, "undef." when its note says why it has none, "-" when missing."""
    if value is not None and not pd.isna(value):
        return f"{value:.4f}"
    return "undef." if isinstance(note, str) else "-"


def _pair(auc: float | None, uauc: float | None, uauc_note: str | None = None) -> str:
    if auc is None or pd.isna(auc):
        return "-"
    return f"{auc:.4f} / {_value(uauc, uauc_note)}"


def _with_interval(value: float | None, lo: float | None, hi: float | None, note: str | None = None) -> str:
    text = _value(value, note)
    return text if lo is None or pd.isna(lo) else f"{text} [{lo:.3f}, {hi:.3f}]"


def _with_std(mean: float | None, std: float | None) -> str:
    text = _value(mean, "")
    return text if std is None or pd.isna(std) or text == "undef." else f"{text} ± {std:.4f}"


def table1(results: dict[tuple[str, str], dict], notes: dict[str, str] | None = None,
           intervals: pd.DataFrame | None = None, spread: pd.DataFrame | None = None
           ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Table 1 from {(method, dataset): {"test": metrics.evaluate(...)}} on the LLM stages' rows: (long, wide).

    `intervals` (replicates.intervals) adds each cell's bootstrap interval, `spread` (replicates.spread) each
    method's mean and std over seed replicates (MF, popularity, CTRL(DIN): on the full test split).
    long: one row per method and dataset of TABLE1_COLUMNS, ours next to the paper's; a dataset with no results
    gets its `notes` entry (e.g. why it was not run).
    wide: methods x datasets, "AUC [interval] / UAUC [interval]" on the stages' rows, "mean ± std" over seeds,
    and the paper's values ("undef." = UAUC undefined).
    """
    notes = notes or {}
    extra = {key: frame.set_index(["method", "dataset"]) for key, frame in (("ci", intervals), ("seeds", spread))
             if frame is not None}
    rows = []
    for dataset, (title, paper_dataset) in TABLE1_COLUMNS.items():
        for method in TABLE1_METHODS:
            m = results.get((method, dataset), {}).get("test", {}).get("all")
            paper = paper_numbers.table1(method, paper_dataset)
            row = {"method": method, "dataset": dataset, "column": title,
                   "AUC": m and m["auc"], "UAUC": m and m["uauc"], "rows": m and m["rows"],
                   "UAUC users": m and m["uauc_users"], "UAUC note": m and m["uauc_note"]}
            for key, columns in (("ci", INTERVAL_COLUMNS), ("seeds", SPREAD_COLUMNS)):
                found = key in extra and (method, dataset) in extra[key].index and m
                row |= {c: extra[key].loc[(method, dataset), c] if found else None for c in columns}
            rows.append(row | {"paper AUC": paper[0], "paper UAUC": paper[1],
                               "note": None if m else notes.get(dataset, "not run")})
    long = pd.DataFrame(rows)
    wide = pd.DataFrame({"method": list(TABLE1_METHODS)})
    for dataset, (title, paper_dataset) in TABLE1_COLUMNS.items():
        part = long[long["dataset"] == dataset].set_index("method").reindex(TABLE1_METHODS)
        ran = part["note"].isna()
        wide[f"{title} (ours)"] = [
            "not run" if not ok else f"{_with_interval(r['AUC'], r['AUC lo'], r['AUC hi'])} / "
                                     f"{_with_interval(r['UAUC'], r['UAUC lo'], r['UAUC hi'], r['UAUC note'])}"
            for ok, (_, r) in zip(ran, part.iterrows())]
        if spread is not None and ran.any():
            wide[f"{title} (ours, seeds)"] = [
                f"{_with_std(r['replicate AUC mean'], r['replicate AUC std'])} / "
                f"{_with_std(r['replicate UAUC mean'], r['replicate UAUC std'])}" if ok and r["replicates"] > 0 else ""
                for ok, (_, r) in zip(ran, part.iterrows())]
        if paper_dataset:
            wide[f"{title} (paper)"] = [_pair(r["paper AUC"], r["paper UAUC"]) for _, r in part.iterrows()]
    return long, wide


def table1_panels(wide: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The wide Table 1 cut into one narrow table per dataset (methods x ours / ours, seeds / paper), for reading on
    a screen: all datasets side by side wrap every cell."""
    panels = {}
    for title, _ in TABLE1_COLUMNS.values():
        columns = [c for c in wide.columns if c.startswith(f"{title} (")]
        named = {c: c[len(title) + 2:-1] for c in columns}
        panels[title] = wide.set_index("method")[columns].rename(columns=named).rename(columns={
            "ours": "ours, same rows: AUC [95 % CI] / UAUC [95 % CI]",
            "ours, seeds": "ours, full test: mean ± std over seeds"})
    return panels


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
    0 and what the interval says; a metric undefined on those rows (BookCrossing's UAUC) is left out. The bootstrap
    settings are in .attrs["bootstrap"] (numbers.from_differences records them)."""
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
                            "reading": _reading(diff[f"{metric}_lo"], diff[f"{metric}_hi"], diff["level"], diff["users"])}
                    for metric in ("auc", "uauc") if diff[metric] is not None]
    frame = pd.DataFrame(out)
    frame.attrs["bootstrap"] = metrics.BOOTSTRAP | {"seed": seed, "kind": "paired user-level bootstrap, percentile"}
    return frame


def strongest_baseline(long: pd.DataFrame, diffs: pd.DataFrame, method: str = "CoLLM-FaissRet") -> pd.DataFrame:
    """Per dataset, `method` against the strongest other method on the same rows (the highest AUC in `long`, a
    table1-style frame with method / dataset / AUC / UAUC), with the paired differences from `diffs`
    (paired_differences): one row per dataset, what a reader needs to say where the method wins and where not."""
    out = []
    for dataset, part in long.dropna(subset=["AUC"]).groupby("dataset", sort=False):
        mine = part[part["method"] == method]
        others = part[part["method"] != method]
        if mine.empty or others.empty:
            continue
        best = others.loc[others["AUC"].idxmax()]
        row = {"dataset": dataset, "strongest baseline": best["method"], "its AUC": best["AUC"],
               "its UAUC": best.get("UAUC"), f"{method} AUC": mine["AUC"].iloc[0],
               f"{method} UAUC": mine["UAUC"].iloc[0]}
        pair = diffs[(diffs["dataset"] == dataset) & (diffs["minus"] == best["method"])]
        for metric in ("AUC", "UAUC"):
            hit = pair[pair["metric"] == metric]
            row[f"{metric} difference [95 %]"] = ("undef." if hit.empty else
                                                  f"{hit['difference'].iloc[0]:+.4f} [{hit['lo'].iloc[0]:+.3f}, "
                                                  f"{hit['hi'].iloc[0]:+.3f}]")
            row[f"{metric} reading"] = "" if hit.empty else _side(hit["lo"].iloc[0], hit["hi"].iloc[0])
        out.append(row)
    return pd.DataFrame(out)


def _side(lo: float, hi: float) -> str:
    return "leads" if lo > 0 else "trails" if hi < 0 else "not resolved"


def summary_markdown(table: pd.DataFrame, method: str = "CoLLM-FaissRet") -> str:
    """strongest_baseline's table as one plain sentence per dataset."""
    lines = []
    for _, r in table.iterrows():
        auc, uauc = r["AUC reading"], r["UAUC reading"]
        line = (f"- **{r['dataset']}**: the strongest baseline is **{r['strongest baseline']}** (AUC "
                f"{r['its AUC']:.4f}); {method} scores {r[f'{method} AUC']:.4f}. Paired on the same rows, AUC "
                f"{r['AUC difference [95 %]']}: {auc}")
        line += f"; UAUC {r['UAUC difference [95 %]']}: {uauc}." if uauc else " (UAUC undefined)."
        lines.append(line)
    return "\n".join(lines)


def verdict(long: pd.DataFrame, strongest: pd.DataFrame, profile: str, gpu: pd.DataFrame | None = None,
            method: str = "CoLLM-FaissRet") -> pd.DataFrame:
    """The README's first table: per dataset of Table 1 (`long`, made at `profile`), `method`'s AUC / UAUC in the
    paper, ours on gpu (`gpu`: a stage2_results table of ML-1M, rows method / subset / AUC / UAUC, when one exists),
    ours at `profile` with intervals, the strongest baseline of ours on the same rows (`strongest`) and the paired
    difference to it."""
    here, theirs_col = f"ours, {profile}", f"strongest baseline of ours, {profile}"
    out = []
    for key, (title, _) in TABLE1_COLUMNS.items():
        part = long[(long["dataset"] == key) & (long["method"] == method)]
        if part.empty:
            continue
        r = part.iloc[0]
        row = {"dataset": title, f"paper ({method}, Vicuna-7B)": _pair(r.get("paper AUC"), r.get("paper UAUC")),
               **({"ours, gpu": "-"} if gpu is not None else {}), here: "-", theirs_col: "-",
               "ours minus it (paired 95 %)": "-"}
        if key == "ml-1m" and gpu is not None:
            g = gpu[(gpu["method"] == method) & (gpu["subset"] == "all")]
            row["ours, gpu"] = _pair(g["AUC"].iloc[0], g["UAUC"].iloc[0]) if len(g) else "-"
        if not pd.isna(r["AUC"]):
            row[here] = (f"{_with_interval(r['AUC'], r['AUC lo'], r['AUC hi'])} / "
                         f"{_with_interval(r['UAUC'], r['UAUC lo'], r['UAUC hi'], r.get('UAUC note'))}")
        best = strongest[strongest["dataset"] == key]
        if len(best):
            b = best.iloc[0]
            theirs = long[(long["dataset"] == key) & (long["method"] == b["strongest baseline"])].iloc[0]
            row[theirs_col] = (
                f"{b['strongest baseline']}: {_with_interval(theirs['AUC'], theirs['AUC lo'], theirs['AUC hi'])} / "
                f"{_with_interval(theirs['UAUC'], theirs['UAUC lo'], theirs['UAUC hi'], theirs.get('UAUC note'))}")
            row["ours minus it (paired 95 %)"] = (f"AUC {b['AUC difference [95 %]']} {b['AUC reading']}"
                                                  + (f"; UAUC {b['UAUC difference [95 %]']} {b['UAUC reading']}"
                                                     if b["UAUC reading"] else ""))
        elif not pd.isna(r.get("note")) and r.get("note"):
            row[here] = str(r["note"]).split(":")[0]
        out.append(row)
    return pd.DataFrame(out)


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
