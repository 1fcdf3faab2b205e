"""Datasets as processed splits: `load_dataset(name)` returns a Splits, built once and cached.

Each name maps to a raw folder under settings.data_dir() and a builder; processed frames are cached as
pickles (plus stats.csv and meta.json) under work_dir/processed/<name>/.
"""
from __future__ import annotations

import importlib
import os
import time
from dataclasses import dataclass
from pathlib import Path


from .. import settings
from .common import Splits, load_processed, save_processed, split_stats, validate_frame


@dataclass(frozen=True)
class DatasetInfo:
    folder: str  # sub-folder of the data dir holding the raw files
    builder: str  # "module:function" taking the folder and returning Splits
    description: str


DATASETS: dict[str, DatasetInfo] = {
    "ml-1m": DatasetInfo("ml-1m-collm", "movielens:load_collm",
                         "MovieLens-1M, CoLLM's released processed splits (docs/protocol.md §2.1)"),
    "ml-1m-raw": DatasetInfo("ml-1m-raw", "movielens:prepare_raw",
                             "MovieLens-1M, CoLLM's temporal protocol (docs/protocol.md §2.1) from raw ratings.dat"),
    "bookcrossing": DatasetInfo("bookcrossing-raw", "bookcrossing:prepare_single",
                                "BookCrossing, TALLRec's protocol (docs/protocol.md §2.3), one target per user"),
    "bookcrossing-multi": DatasetInfo("bookcrossing-raw", "bookcrossing:prepare_multi",
                                      "BookCrossing, several targets per user: UAUC defined (docs/protocol.md §2.3)"),
    "amazon-book": DatasetInfo("amazon-book", "amazon:prepare_amazon_book",
                               "Amazon-Book, CoLLM's protocol (docs/protocol.md §2.2) from the 2018 raw files"),
    "amazon-book-msl": DatasetInfo("amazon-book-msl", "amazon:prepare_msl",
                                   "SUBSTITUTE: MSL's Amazon Books windows (docs/protocol.md §2.4)"),
}


def _info(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {list(DATASETS)}")
    return DATASETS[name]


def prepare_dataset(name: str, data_dir: str | os.PathLike | None = None,
                    work_dir: str | os.PathLike | None = None) -> Splits:
    """Build `name` from its raw files and write the processed cache (atomically, meta.json last)."""
    info = _info(name)
    module_name, func_name = info.builder.split(":")
    builder = getattr(importlib.import_module(f"{__name__}.{module_name}"), func_name)
    start = time.perf_counter()
    splits = builder(settings.data_dir(data_dir) / info.folder)
    splits.meta["build_seconds"] = round(time.perf_counter() - start, 2)
    splits.meta["description"] = info.description
    save_processed(splits, processed_dir(name, work_dir))
    return splits


def processed_dir(name: str, work_dir: str | os.PathLike | None = None) -> Path:
    return settings.work_dir(work_dir) / "processed" / name


def load_dataset(name: str, data_dir: str | os.PathLike | None = None,
                 work_dir: str | os.PathLike | None = None, rebuild: bool = False) -> Splits:
    """The processed splits of `name`: from the cache when present and valid, else prepared now (a damaged
    cache is rebuilt, with a warning saying what was wrong)."""
    _info(name)
    if not rebuild:
        cached = load_processed(name, processed_dir(name, work_dir))
        if cached is not None:
            return cached
    return prepare_dataset(name, data_dir, work_dir)


def available(data_dir: str | os.PathLike | None = None) -> dict[str, bool]:
    """Which datasets have their raw folder under the data dir (files are checked when building)."""
    root = settings.data_dir(data_dir)
    return {name: (root / info.folder).is_dir() for name, info in DATASETS.items()}


__all__ = ["DATASETS", "DatasetInfo", "Splits", "available", "load_dataset", "prepare_dataset",
           "processed_dir", "split_stats", "validate_frame"]
