"""Log files of runs and jobs, and the console logging of the `collm` command.

Library modules log through `logging.getLogger(__name__)`: notes (a folder cleared, a checkpoint ignored) at
WARNING, so with no logging configured they still reach stderr (logging's last-resort handler: a notebook shows
them under the cell), and progress (evaluations, timings) at INFO, which goes to the log files below and, under
the `collm` command, to the console.

`run_log(folder, ...)` writes <folder>/run.log while a run executes (runs.running uses it for every run kind):
a header with the run, its config and io.run_info (device, versions), the block's INFO records and warnings, and
a closing line with the seconds it took (or the error that stopped it). `log_file(path)` is the same without
header; the main job and reproduction parts keep theirs in their output folder (main.log, reproduce.log).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Iterator

from tqdm.auto import tqdm

from . import distributed
from .io import run_info

RUN_LOG = "run.log"
PACKAGE = "collm_lib"
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_FILES: list[logging.Handler] = []  # the log files open now, innermost last
log = logging.getLogger(__name__)


def _to_files(message: str, level: int = logging.INFO, handlers: list[logging.Handler] | None = None,
              exc_info: Any = None) -> None:
    """Write `message` to the open log files only (or to `handlers`): for lines the console already shows or
    should not show (headers, printed progress, warnings displayed by the warnings module)."""
    record = log.makeRecord(log.name, level, __file__, 0, message, (), exc_info)
    for handler in _FILES if handlers is None else handlers:
        handler.handle(record)


def say(text: str) -> None:
    """Print a progress line on stdout (as the job always did: scripts and tests read it there) and record it in
    the open log files."""
    tqdm.write(text)
    sys.stdout.flush()
    _to_files(text)


@contextlib.contextmanager
def log_file(path: str | os.PathLike) -> Iterator[Path]:
    """Append the package's INFO and higher records, and every warning shown, to `path` while the block runs.

    Undone on exit, also when the block raises: the handler is detached and closed, the package logger's level and
    warnings.showwarning restored. Only rank 0 of a torchrun job writes (the others share its folders)."""
    with _attached(Path(path)):
        yield Path(path)


@contextlib.contextmanager
def _attached(path: Path) -> Iterator[logging.Handler | None]:
    """log_file's work; yields the file's handler (None on ranks other than 0)."""
    if not distributed.is_main():
        yield None
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.setLevel(logging.INFO)
    package = logging.getLogger(PACKAGE)
    # no handler anywhere: logging's last resort prints warnings to stderr, but not once ours is attached
    console = [logging.lastResort] if not package.hasHandlers() and logging.lastResort is not None else []
    level = package.level
    if package.getEffectiveLevel() > logging.INFO:
        package.setLevel(logging.INFO)
    shown = warnings.showwarning

    def showwarning(message, category, filename, lineno, file=None, line=None) -> None:
        # recorded, then shown as before: logging.captureWarnings would instead take warnings away from the
        # console and from catch_warnings(record=True) recorders (pytest.warns)
        _to_files(warnings.formatwarning(message, category, filename, lineno, line).rstrip(), logging.WARNING,
                  [handler])
        shown(message, category, filename, lineno, file, line)

    warnings.showwarning = showwarning
    for added in (handler, *console):
        package.addHandler(added)
    _FILES.append(handler)
    try:
        yield handler
    finally:
        _FILES.remove(handler)
        for added in (handler, *console):
            package.removeHandler(added)
        package.setLevel(level)
        if warnings.showwarning is showwarning:
            warnings.showwarning = shown
        handler.close()


@contextlib.contextmanager
def run_log(folder: str | os.PathLike, **header: Any) -> Iterator[Path]:
    """log_file(<folder>/run.log) with a header (each `header` item as JSON, then io.run_info: device, versions)
    and a closing line with the seconds the block took, or the error that stopped it (with its traceback)."""
    path = Path(folder) / RUN_LOG
    with _attached(path) as handler:
        own = [handler] if handler else []
        for key, value in {**header, "run info": run_info()}.items():
            _to_files(f"{key}: {json.dumps(value, default=str)}", handlers=own)
        start = time.perf_counter()
        try:
            yield path
        except BaseException as exc:
            _to_files(f"stopped after {time.perf_counter() - start:.1f} s by {type(exc).__name__}: {exc}",
                      logging.ERROR, own, exc_info=(type(exc), exc, exc.__traceback__))
            raise
        _to_files(f"finished in {time.perf_counter() - start:.1f} s", handlers=own)


class _ConsoleHandler(logging.Handler):
    """Log lines on stderr through tqdm.write, so they do not break a progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001 - logging's contract: a failing handler reports, never raises
            self.handleError(record)


@contextlib.contextmanager
def console(level: int = logging.INFO) -> Iterator[logging.Handler]:
    """The `collm` command's logging while the block runs: the package's records at `level`, and other libraries'
    warnings, on stderr (other libraries' INFO records stay off: the root logger keeps its level)."""
    handler = _ConsoleHandler(level)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root, package = logging.getLogger(), logging.getLogger(PACKAGE)
    before = package.level
    root.addHandler(handler)
    package.setLevel(level)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        package.setLevel(before)
