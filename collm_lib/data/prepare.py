"""Preparing every available dataset for a run profile, and comparing the sizes with docs/protocol.md §2.5."""
from __future__ import annotations

import os
import time
import pandas as pd

from .. import settings
from ..configs import PrepareConfig
from . import DATASETS, load_dataset, split_stats

# docs/protocol.md §2.5 (and SOURCE.md for BookCrossing / the MSL substitute): rows and positive rate per split.
EXPECTED: dict[str, dict[str, tuple[int | None, float | None]]] = {
    "ml-1m": {"train": (33891, 0.537), "valid": (10401, 0.528), "valid_small": (5200, 0.531),
              "test": (7331, 0.545)},
    "ml-1m-raw": {"train": (33891, 0.537), "valid": (10401, 0.528), "valid_small": (5200, 0.531),
                  "test": (7331, 0.545)},
    "bookcrossing": {"train": (19414, None), "valid": (2427, None), "valid_small": (None, None),
                     "test": (2427, None)},
    "amazon-book": {"train": (727463, 0.63), "valid": (25747, 0.63), "valid_small": (6437, 0.63),
                    "test": (25747, 0.63)},
    "amazon-book-msl": {"train": (70120, 0.5), "valid": (4382, 0.5), "valid_small": (1096, 0.5),
                        "test": (4384, 0.5)},
}
EXPECTED_NOTES = {
    "ml-1m-raw": "docs/protocol.md §2.5 sizes hold for the complete ratings.dat; the shared copy is partial "
                 "(users 1..2999).",
    "bookcrossing": "24,268 users split 8:1:1 (TALLRec); positive rates depend on the user split.",
    "bookcrossing-multi": "Our multi-target variant: no published sizes.",
    "amazon-book-msl": "Substitute: 2 rows (target + sampled negative) per MSL window.",
}


def prepare_all(config: PrepareConfig, data_dir: str | os.PathLike | None = None,
                work_dir: str | os.PathLike | None = None) -> tuple[dict, pd.DataFrame]:
    """Load or build each configured dataset; a dataset whose raw files are missing is skipped, with why.

    Returns ({name: Splits}, a table of name / status / seconds / reason)."""
    done, log = {}, []
    for name in DATASETS:
        if name not in config.datasets:
            log.append({"dataset": name, "status": "skipped (profile)", "seconds": 0.0,
                        "reason": "not in this profile's dataset list"})
            continue
        start = time.perf_counter()
        try:
            done[name] = load_dataset(name, data_dir, work_dir, rebuild=config.rebuild)
        except FileNotFoundError as err:
            raw = settings.data_dir(data_dir)  # the log is shown in notebooks: the data dir as a reader sees it
            log.append({"dataset": name, "status": "skipped (no raw files)",
                        "seconds": round(time.perf_counter() - start, 1),
                        "reason": str(err).replace(str(raw), settings.shown(raw))})
            continue
        log.append({"dataset": name, "status": "ready", "seconds": round(time.perf_counter() - start, 1),
                    "reason": ""})
    return done, pd.DataFrame(log)


def expected_vs_measured(done: dict) -> pd.DataFrame:
    """One row per (dataset, split): measured rows / users / items / positive rate beside the expected
    values of docs/protocol.md §2.5."""
    rows = []
    for name, splits in done.items():
        stats = split_stats(splits)
        for _, s in stats.iterrows():
            exp_rows, exp_pos = EXPECTED.get(name, {}).get(s["split"], (None, None))
            rows.append({"dataset": name, "split": s["split"], "rows": s["rows"], "expected rows": exp_rows,
                         "rows match": None if exp_rows is None else bool(s["rows"] == exp_rows),
                         "users": s["users"], "items": s["items"], "positive rate": s["positive_rate"],
                         "expected positive rate": exp_pos, "cold share": s["cold_share"],
                         "note": EXPECTED_NOTES.get(name, "")})
    return pd.DataFrame(rows)
