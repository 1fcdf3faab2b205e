"""Datasets as processed splits: `load_dataset(name)` returns a Splits, built once and cached.

Each name maps to a raw folder under settings.data_dir() and a builder; processed frames are cached as gzip
JSON (plus stats.csv and meta.json; never pickles, which run code when read) under work_dir/processed/<name>/.
Besides the built-ins (DATASETS), a name can be your own dataset folder (docs/own_data.md):
<data_dir>/<name>/dataset.json, a folder listed in $COLLM_DATASETS, or a path to such a folder.
"""
from __future__ import annotations

import importlib
import os
import time
import warnings
from pathlib import Path

from .. import settings
from .common import Splits, load_processed, save_processed, split_stats, validate_frame
from ..dataset_registry import DATASETS, DatasetInfo
from . import custom
from .custom import InteractionSpec, from_interactions, save_dataset_folder


class UnknownDataset(ValueError):
    """A name that is neither built in nor one of your dataset folders."""


OWN_ENV = settings.DATASETS_ENV  # $COLLM_DATASETS: own dataset folders known by name; inherited by child processes
OWN_BUILDER = "custom:prepare_folder"


def _is_own_folder(path: Path) -> bool:
    return (path / "dataset.json").is_file()


def own_datasets(data_dir: str | os.PathLike | None = None) -> dict[str, Path]:
    """Your datasets known by name: the folders in $COLLM_DATASETS and every <data_dir>/<name>/ holding a
    dataset.json. A name given to two different folders, or a built-in's name, is an error naming the fix."""
    root = settings.data_dir(data_dir)
    listed = settings.dataset_folders()
    found = sorted(p.parent for p in root.glob("*/dataset.json")) if root.is_dir() else []
    own: dict[str, Path] = {}
    for folder in [p for p in listed if _is_own_folder(p)] + found:
        if folder.name in DATASETS:
            raise ValueError(f"dataset folder {folder} is named like the built-in dataset {folder.name!r}; rename it")
        if own.setdefault(folder.name, folder) != folder:
            raise ValueError(f"two dataset folders are named {folder.name!r}: {own[folder.name]} and {folder}; "
                             f"rename one (the name keys the processed cache and the runs)")
    return own


def _resolve(name: str | os.PathLike, data_dir: str | os.PathLike | None) -> tuple[str, DatasetInfo]:
    """(name, info) of a built-in name, an own dataset's name, or a path to an own dataset folder (registered in
    $COLLM_DATASETS, so its name works from then on, in this process and the ones it starts)."""
    name = os.fspath(name)
    if name in DATASETS:
        return name, DATASETS[name]
    own = own_datasets(data_dir)
    folder = own.get(name)
    if folder is None and _is_own_folder(Path(name).expanduser()):
        folder = Path(name).expanduser().resolve()
        custom.check_name(folder.name)  # plain characters, not a built-in's name
        if own.get(folder.name, folder) != folder:
            raise ValueError(f"dataset folder {folder}: its name {folder.name!r} is taken by {own[folder.name]}; "
                             "rename one of them (the name keys the processed cache and the runs)")
        if folder.name not in own:
            settings.add_dataset_folder(folder)
    if folder is None:
        raise UnknownDataset(f"unknown dataset {name!r}. Built-in: {list(DATASETS)}; yours (in "
                             f"{settings.data_dir(data_dir)} or ${OWN_ENV}): {sorted(own)}. To use your own data, "
                             "write a dataset folder with collm_lib.data.save_dataset_folder (or build Splits with "
                             "from_interactions) and give its name or path; see docs/own_data.md")
    return folder.name, DatasetInfo(str(folder), OWN_BUILDER, f"your dataset from {folder} (docs/own_data.md)")


def dataset_name(name: str | os.PathLike, data_dir: str | os.PathLike | None = None) -> str:
    """The name a dataset is known by: `name` itself, or an own dataset folder's name for a path to it."""
    return _resolve(name, data_dir)[0]


def prepare_dataset(name: str, data_dir: str | os.PathLike | None = None,
                    work_dir: str | os.PathLike | None = None) -> Splits:
    """Build `name` from its raw files and write the processed cache (atomically, meta.json last)."""
    name, info = _resolve(name, data_dir)
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
    cache, or one of an own dataset whose files changed since, is rebuilt with a warning saying why)."""
    name, info = _resolve(name, data_dir)
    if not rebuild:
        cached = load_processed(name, processed_dir(name, work_dir))
        own = cached is not None and info.builder == OWN_BUILDER
        stale = custom.stale_reason(cached.meta, Path(info.folder)) if own else None
        if stale:
            warnings.warn(f"processed cache {processed_dir(name, work_dir)}: {stale}; rebuilding it", stacklevel=2)
        elif cached is not None:
            return cached
    return prepare_dataset(name, data_dir, work_dir)


__all__ = ["DATASETS", "DatasetInfo", "InteractionSpec", "Splits", "UnknownDataset", "dataset_name",
           "from_interactions", "load_dataset", "own_datasets", "prepare_dataset", "processed_dir",
           "save_dataset_folder", "split_stats", "validate_frame"]
