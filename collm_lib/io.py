"""Atomic file writing and run-record helpers: nothing half-written is ever left behind."""
from __future__ import annotations

import contextlib
import dataclasses
import gzip
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import pandas as pd


TEMP_SUFFIX = ".tmp"
TEMP_GLOB = f".?*.*{TEMP_SUFFIX}"  # atomic_path's temporary files, .<name>.<random>.tmp, of any name


def remove_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files (or folders) atomic_path left in `folder` when its process was killed mid-write;
    returns them. Only for a folder no other process is writing into: theirs would go too."""
    found = sorted(Path(folder).glob(TEMP_GLOB))
    for path in found:
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    return found


@contextlib.contextmanager
def sole_writer(folder: Path, name: str) -> Iterator[list[Path]]:
    """Hold <folder>/.<name>.lock while writing <folder>/<name> (a cache a second process may build at once), and
    first remove what a killed writer left: atomic_path's temporaries of <name> beside it and inside it. Under the
    lock no other process writes them, so they are a killed process's. Yields what was removed."""
    from filelock import FileLock

    from .settings import lock_file

    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(lock_file(folder / f".{name}.lock")):
        stale = sorted(folder.glob(f".{name}.*{TEMP_SUFFIX}"))
        for path in stale:
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        if (folder / name).is_dir():
            stale += remove_temp_files(folder / name)
        yield stale


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    The block may replace the temporary file by a folder (e.g. a saved model); either is cleaned up on error.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)  # TEMP_GLOB's form
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; results are meant to be read by others
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.is_dir():
            shutil.rmtree(tmp_path)
        else:
            tmp_path.unlink(missing_ok=True)


def _jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):  # numpy / torch arrays and scalars
        return obj.tolist()
    return str(obj)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write JSON atomically (dataclasses, paths and numpy values are converted)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=_jsonable, ensure_ascii=False), encoding="utf-8")
    return Path(path)


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def plain(obj: Any) -> Any:
    """The JSON round trip of `obj` (dataclasses to dicts, tuples to lists, paths to str, numpy values to Python
    ones): what a later read_json of write_json(obj) returns."""
    return json.loads(json.dumps(obj, default=_jsonable))


def write_frame(path: str | os.PathLike, frame: pd.DataFrame) -> Path:
    """Write a frame atomically; the format follows the suffix (.csv, .csv.gz, .md)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        if path.name.endswith(".csv.gz"):  # no name, mtime 0: the same rows give the same bytes on every rerun
            tmp.write_bytes(gzip.compress(frame.to_csv(index=False).encode(), mtime=0))
        elif path.suffix == ".csv":
            frame.to_csv(tmp, index=False)
        elif path.suffix == ".md":
            tmp.write_text(frame.to_markdown(index=False, disable_numparse=True))  # as given: 0.5140 stays 0.5140
        else:
            raise ValueError(f"write_frame: unsupported suffix {path.suffix!r} for {path}")
    return path


def score_rows(files: dict[Any, str | os.PathLike], keys: tuple[str, ...] = ("method",)) -> pd.DataFrame:
    """The per-row scores behind a table, one frame: each file (a run's uid, iid, label, score CSV) with its key
    columns in front, e.g. score_rows({("MF", "ml-1m"): path, ...}, keys=("method", "dataset"))."""
    if not files:
        raise ValueError("score_rows: no score files given")
    frames = []
    for key, path in files.items():
        key = key if isinstance(key, tuple) else (key,)
        if len(key) != len(keys):
            raise ValueError(f"score_rows: key {key} does not match the key columns {keys}")
        frame = pd.read_csv(path)
        missing = [c for c in ("uid", "iid", "label", "score") if c not in frame]
        if missing:
            raise ValueError(f"{path}: no column(s) {missing}; expected a per-row score file (uid, iid, label, score)")
        frames.append(frame.assign(**dict(zip(keys, key)))[[*keys, *frame.columns]])
    return pd.concat(frames, ignore_index=True)


def cpu_name() -> str:
    """The processor's model name (Linux: /proc/cpuinfo), else what platform reports."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def run_info(seed: int | None = None) -> dict[str, Any]:
    """What every result file records about the run that produced it."""
    import torch
    import transformers

    info = {
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else cpu_name(),
        "cpu_threads": torch.get_num_threads(),
    }
    if seed is not None:
        info["seed"] = seed
    return info
