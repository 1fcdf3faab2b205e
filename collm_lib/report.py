"""Writing figures and tables to figures/ with the configuration that produced them.

Every artefact `NAME` is written as NAME.png + NAME.pdf (figures) or NAME.csv + NAME.md (tables),
with NAME.config.json beside it holding the settings, the seed and the run info.
This module reads result files and knows no model.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use(os.environ.get("MPLBACKEND", "Agg"))
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from . import settings  # noqa: E402
from .io import atomic_path, read_json, run_info, write_frame, write_json  # noqa: E402


def _write_config(out: Path, name: str, config: Any, seed: int | None) -> Path:
    return write_json(out / f"{name}.config.json", {"config": config, "run": run_info(seed)})


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
               out_dir: str | os.PathLike | None = None, latex: bool = False) -> list[Path]:
    """Save `frame` as CSV and Markdown (and LaTeX if asked) plus its config JSON."""
    out = settings.figures_dir(out_dir)
    paths = [write_frame(out / f"{name}.csv", frame), write_frame(out / f"{name}.md", frame)]
    if latex:
        path = out / f"{name}.tex"
        with atomic_path(path) as tmp:
            tmp.write_text(frame.to_latex(index=False, float_format="%.4f"))
        paths.append(path)
    paths.append(_write_config(out, name, config, seed))
    return paths


def load_results(paths: list[str | os.PathLike]) -> list[dict[str, Any]]:
    """Read result JSON files, skipping none silently: a missing file is an error."""
    missing = [str(p) for p in paths if not Path(p).exists()]
    if missing:
        raise FileNotFoundError(f"result files not found: {missing}")
    return [read_json(p) for p in paths]


# The paper's Table 1 (Vicuna-7B), AUC / UAUC: what every comparison is drawn against.
PAPER_TABLE1 = {
    ("MF", "ml-1m"): (0.6482, 0.6361), ("MF", "amazon-book"): (0.7134, 0.5565),
    ("MF", "bookcrossing"): (0.6173, 0.5478),
    ("CTRL (DIN)", "ml-1m"): (0.7159, 0.6492), ("CTRL (DIN)", "amazon-book"): (0.8202, 0.5996),
    ("CTRL (DIN)", "bookcrossing"): (0.7129, 0.5923),
    ("TALLRec", "ml-1m"): (0.7097, 0.6818), ("TALLRec", "amazon-book"): (0.7375, 0.5983),
    ("TALLRec", "bookcrossing"): (0.6347, 0.6017),
    ("CoLLM-FaissRet", "ml-1m"): (0.7295, 0.6875), ("CoLLM-FaissRet", "amazon-book"): (0.8109, 0.6225),
    ("CoLLM-FaissRet", "bookcrossing"): (0.6947, 0.6362),
}


TABLE1_COLUMNS = {  # dataset -> (column title, the paper's dataset whose values apply, or None)
    "ml-1m": ("ML-1M", "ml-1m"), "amazon-book": ("Amazon-Book", "amazon-book"),
    "amazon-book-msl": ("Amazon-Book substitute", None), "bookcrossing": ("BookCrossing", "bookcrossing")}
TABLE1_METHODS = ("MF", "CTRL (DIN)", "TALLRec", "CoLLM-FaissRet")


def _pair(auc: float | None, uauc: float | None, uauc_note: str | None = None) -> str:
    if auc is None or pd.isna(auc):
        return "-"
    return f"{auc:.4f} / " + (f"{uauc:.4f}" if uauc is not None and not pd.isna(uauc)
                              else "undef." if isinstance(uauc_note, str) else "-")


def table1(results: dict[tuple[str, str], dict], notes: dict[str, str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Table 1 from {(method, dataset): {"test": metrics.evaluate(...)}}: (long, wide).

    long: one row per method and dataset of TABLE1_COLUMNS, ours (all test rows of the sample) next to the
    paper's; a dataset with no results gets its `notes` entry (e.g. why it was not run).
    wide: methods x datasets, "AUC / UAUC" strings, ours and paper side by side ("undef." = UAUC undefined).
    """
    notes = notes or {}
    rows = []
    for dataset, (title, paper_dataset) in TABLE1_COLUMNS.items():
        for method in TABLE1_METHODS:
            m = results.get((method, dataset), {}).get("test", {}).get("all")
            paper = PAPER_TABLE1.get((method, paper_dataset), (None, None))
            rows.append({"method": method, "dataset": dataset, "column": title,
                         "AUC": m and m["auc"], "UAUC": m and m["uauc"], "rows": m and m["rows"],
                         "UAUC users": m and m["uauc_users"], "UAUC note": m and m["uauc_note"],
                         "paper AUC": paper[0], "paper UAUC": paper[1],
                         "note": None if m else notes.get(dataset, "not run")})
    long = pd.DataFrame(rows)
    wide = pd.DataFrame({"method": list(TABLE1_METHODS)})
    for dataset, (title, paper_dataset) in TABLE1_COLUMNS.items():
        part = long[long["dataset"] == dataset].set_index("method").reindex(TABLE1_METHODS)
        wide[f"{title} (ours)"] = [_pair(r["AUC"], r["UAUC"], r["UAUC note"]) if pd.isna(r["note"]) else "not run"
                                   for _, r in part.iterrows()]
        if paper_dataset:
            wide[f"{title} (paper)"] = [_pair(r["paper AUC"], r["paper UAUC"]) for _, r in part.iterrows()]
    return long, wide


def metrics_table(named: dict[str, dict], dataset: str, split: str = "test") -> pd.DataFrame:
    """One row per (method, subset) from result dicts {"test": metrics.evaluate(...)}, paper values beside."""
    rows = []
    for method, result in named.items():
        paper = PAPER_TABLE1.get((method, dataset), (None, None))
        for subset, m in result[split].items():
            if not isinstance(m, dict):
                continue
            rows.append({"method": method, "subset": subset, "rows": m["rows"], "AUC": m["auc"],
                         "UAUC": m["uauc"], "UAUC users": m["uauc_users"],
                         "paper AUC": paper[0] if subset == "all" else None,
                         "paper UAUC": paper[1] if subset == "all" else None})
    return pd.DataFrame(rows)


def training_curve(history: dict | pd.DataFrame, title: str) -> plt.Figure:
    """Validation AUC and training loss against the step."""
    hist = pd.DataFrame(history)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.2))
    ax1.plot(hist["step"], hist["valid_auc"], marker="o")
    ax1.set(xlabel="step", ylabel="valid_small AUC", title=title)
    ax2.plot(hist["step"], hist["loss"], marker=".", color="tab:red")
    ax2.set(xlabel="step", ylabel="training loss (last batch)")
    fig.tight_layout()
    return fig
