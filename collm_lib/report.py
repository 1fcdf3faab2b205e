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
