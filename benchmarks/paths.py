"""Paths as the committed benchmark results may carry them (benchmarks/results/*.json, tests/test_results_files.py)."""
from __future__ import annotations

import os
from pathlib import Path

from collm_lib import settings


def portable(path: str | os.PathLike) -> str:
    """`path` as the result JSON may carry it (it is committed): `<work_dir>/...` inside the work dir
    (settings.work_dir), else relative to the repository root, else `<scratch>/<name>`; never this machine's
    absolute path."""
    path = Path(path).resolve()
    for base, label in ((settings.work_dir(), "<work_dir>/"), (settings.REPO_ROOT, "")):
        if path.is_relative_to(base):
            return label + path.relative_to(base).as_posix()
    return f"<scratch>/{path.name}"
