"""The main job: execute the numbered notebooks in order through papermill for one profile.

Executed copies land in <work_dir>/notebook_runs/<profile>/ (or over the notebooks themselves with
--in-place, which is how the committed copies are made). A notebook whose executed copy finished
with the same parameters and the same code is skipped, so an interrupted job resumes where it stopped.

Each notebook runs into a dot-file beside its target that is renamed onto the target only on success,
so a failed or killed run leaves the target as it was; a failed run's copy is kept as
<work_dir>/notebook_runs/<profile>/NN_name.failed.ipynb for debugging.

    python -m collm_lib.runner --profile cpu
    python -m collm_lib.runner --profile gpu --only 03 04
    python -m collm_lib.runner --replay bundles/*.tar.gz     # notebooks 02-04, 06 over a GPU box's bundles

--replay checks bundles made by `python -m collm_lib.reproduce` (collm_lib.bundle) whole, unpacks them into a work
dir of their own (emptied first: one replay per work dir) and executes the notebooks over them with
$COLLM_REPLAY=1: every run they show comes from the bundles, and a run the bundles lack is an error instead of a
training on this machine. Executed copies go to
results/<profile>-<device>/ and figures to figures/ (named with the profile).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Iterator

from tqdm.auto import tqdm

from . import bundle, hashing, logs, runs, settings
from .data import load_dataset
from .io import atomic_path, write_json
from .llm import DEFAULT_MODEL

NOTEBOOK_DIR = settings.REPO_ROOT / "notebooks"
INJECTED = "injected-parameters"  # papermill's tag on the cell it adds after the "parameters" cell
ON_ITS_OWN = ("07", "08", "09")  # not in the main job's hour: `collm main --only 07` ... `--only 09` (docs/profiles.md)
# Committed without outputs until a cpu run of them lands (docs/profiles.md: 09 takes hours);
# `collm main --only 09 --in-place` fills it.
NOT_COMMITTED_RUN = ("09",)
MAIN_LOG = "main.log"  # in the profile's notebook_runs folder: what the main job did, with timings and warnings
log = logging.getLogger(__name__)


def notebooks(only: list[str] | None = None, notebook_dir: Path = NOTEBOOK_DIR) -> list[Path]:
    """The numbered notebooks (NN_name.ipynb) in order, optionally only those whose number is listed."""
    found = sorted(Path(notebook_dir).glob("[0-9][0-9]_*.ipynb"))
    unknown = sorted(set(only or ()) - {p.name[:2] for p in found})
    if found and unknown:  # a number with no notebook is a slip, never silently dropped
        raise ValueError(f"--only {' '.join(unknown)}: no such notebook in {notebook_dir}; the numbers are "
                         f"{' '.join(p.name[:2] for p in found)}")
    if only:
        found = [p for p in found if p.name[:2] in only]
    if not found:
        raise FileNotFoundError(f"no notebooks matching {only or 'NN_*.ipynb'} in {notebook_dir}")
    return found


def _injected(cell: dict) -> bool:
    return INJECTED in cell.get("metadata", {}).get("tags", [])


def prepare_for_commit(path: Path, committed_as: Path) -> None:
    """Make an executed copy fit to commit as `committed_as`: drop papermill's injected-parameters cell (a committed
    notebook must take its profile from the environment, as CI runs it with COLLM_PROFILE=smoke, not from a value
    frozen into it by the last run), and record papermill's input and output paths as a reader sees them."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    nb["cells"] = [c for c in nb["cells"] if not _injected(c)]
    _renumber(nb)
    meta = nb.get("metadata", {}).get("papermill")
    if meta is not None:
        meta["input_path"] = meta["output_path"] = settings.shown(committed_as)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def _renumber(nb: dict) -> None:
    """Execution counts 1, 2, 3 ... over the code cells left, as a reader expects after a clean run (the dropped
    injected cell held one of them)."""
    count = 0
    for cell in nb["cells"]:
        if cell.get("cell_type") != "code" or cell.get("execution_count") is None:
            continue
        count += 1
        cell["execution_count"] = count
        for output in cell.get("outputs", []):
            if "execution_count" in output:
                output["execution_count"] = count


def _code(nb: dict) -> list[str]:
    """The code cells' sources without papermill's injected cell: what an executed copy was made from."""
    return ["".join(c.get("source", "")) for c in nb.get("cells", [])
            if c.get("cell_type") == "code" and not _injected(c)]


def _finished(path: Path, parameters: dict, source: Path) -> bool:
    """Whether `path` is a finished run of the current code of `source` with `parameters`.

    Says why when an existing copy cannot be trusted (cut off mid-write, or made from older code)."""
    if not path.exists():
        return False
    try:
        executed = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:  # JSONDecodeError, or UnicodeDecodeError when cut mid-character
        logs.say(f"re-run {source.name}: {path} is not a whole notebook ({exc}); the run will replace it")
        return False
    if _code(executed) != _code(json.loads(source.read_text(encoding="utf-8"))):
        logs.say(f"re-run {source.name}: its code changed since {path} was executed")
        return False
    meta = executed.get("metadata", {}).get("papermill", {})
    # papermill leaves exception None on success (True on failure) and end_time None while running or killed
    return not meta.get("exception") and meta.get("parameters") == parameters and meta.get("end_time") is not None


def _execute(source: Path, target: Path, failed: Path, parameters: dict, in_place: bool) -> None:
    """Execute `source` into a dot-file beside `target`, renamed onto `target` only once it succeeded.

    papermill rewrites its output after every cell (and once more, marked as ended, even when interrupted),
    so executing into `target` itself would leave a half-executed notebook wherever the run stops. A failed
    or interrupted run's copy is moved to `failed`; one killed outright (SIGKILL) leaves the dot-file,
    which the next run overwrites."""
    import papermill

    running = target.with_name(f".{target.stem}.running.ipynb")
    try:
        papermill.execute_notebook(str(source), str(running), parameters=parameters, cwd=str(source.parent),
                                   progress_bar=False, extra_arguments=KERNEL_ARGUMENTS)
    except BaseException as exc:  # KeyboardInterrupt and SystemExit (SIGTERM, see main) too
        if running.exists():
            failed.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(running, failed)
            note = (f"{target} is unchanged; this run's executed copy is kept at {failed} "
                    f"(if it failed: fix {source}, then run again)")
            exc.add_note(note)
            if isinstance(exc, SystemExit):  # an exit prints no traceback, so neither would the note
                tqdm.write(note, file=sys.stderr)
        raise
    if in_place:  # before the rename: the target must never hold the injected cell, even briefly
        prepare_for_commit(running, target)
    os.replace(running, target)


# The kernel's own log lines are noise to a reader of the main job: "running over TCP without encryption" (it
# listens on localhost, each message signed with the connection file's key) before every notebook, and "ERROR |
# KeyboardInterrupt caught in kernel" when jupyter_client's shutdown interrupt meets a message. A failing cell
# still fails the notebook with its traceback (papermill), so only the kernel's log is quieted.
KERNEL_ARGUMENTS = ["--IPKernelApp.log_level=CRITICAL"]

# The executed notebooks are what a reader opens: results and figures, not progress text. The kernels inherit
# this process's environment; figures show inline only when no MPLBACKEND (e.g. Agg) overrides ipykernel's.
KERNEL_ENV = {"COLLM_PROGRESS": "0", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "MPLBACKEND": None}


def _set_env(values: dict[str, str | None]) -> None:
    for key, value in values.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@contextlib.contextmanager
def kernel_env(values: dict[str, str | None] | None = None) -> Iterator[None]:
    """Set `values` (default KERNEL_ENV; None: unset) while notebooks execute, which their kernels inherit; restore
    the caller's environment afterwards."""
    values = KERNEL_ENV if values is None else values
    saved = {k: os.environ.get(k) for k in values}
    try:
        _set_env(values)
        yield
    finally:
        _set_env(saved)


def run_main(profile: str | None = None, data_dir: str | None = None, only: list[str] | None = None,
             in_place: bool = False, resume: bool = True, notebook_dir: Path = NOTEBOOK_DIR,
             out_dir: Path | None = None, extra: dict | None = None) -> list[Path]:
    """Execute the notebooks in order into `out_dir` (default: the profile's notebook_runs folder; notebooks/ with
    `in_place`), with `extra` notebook parameters; returns the executed copies. Stops at the first failure. Without
    `only`, every notebook but those that run on their own (ON_ITS_OWN).
    What it did goes to MAIN_LOG in the profile's notebook_runs folder too."""
    profile = settings.profile_name(profile)
    chosen = [nb for nb in notebooks(only, notebook_dir) if only or nb.name[:2] not in ON_ITS_OWN]
    # every folder the notebooks write, checked before the first one starts, not found read-only after an hour
    for folder, what, env in ((settings.figures_dir(), "the figures folder", "COLLM_FIGURES_DIR"),
                              (settings.cache_dir(), "the model cache", "COLLM_CACHE_DIR")):
        settings.require_writable(folder, what, f"set ${env} to a folder you can write to")
    parameters = {"profile": profile, **({"data_dir": str(settings.data_dir(data_dir))} if data_dir else {}),
                  **(extra or {})}
    runs_dir = runs.notebook_runs_dir(profile)
    out_dir = Path(notebook_dir) if in_place else Path(out_dir or runs_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    done = []
    bar = tqdm(chosen, desc=f"main job ({profile})", unit="notebook")
    with logs.log_file(runs_dir / MAIN_LOG), kernel_env():
        log.info("main job: profile %s, parameters %s, into %s", profile, parameters, out_dir)
        for nb in bar:
            done.append(_run_one(nb, out_dir / nb.name, bar, parameters, runs_dir, resume, in_place))
    return done


def _run_one(nb: Path, target: Path, bar: tqdm, parameters: dict, runs_dir: Path, resume: bool,
             in_place: bool) -> Path:
    """Execute one notebook into `target` unless a finished copy of the same parameters and code is there."""
    bar.set_postfix_str(nb.name)
    if resume and not in_place and _finished(target, parameters, nb):
        logs.say(f"skip {nb.name}: finished with the same parameters and code ({target})")
        return target
    start = time.perf_counter()
    # failed copies go to runs_dir even with --in-place: in notebooks/ they would match NN_*.ipynb
    try:
        _execute(nb, target, runs_dir / f"{nb.stem}.failed.ipynb", parameters, in_place)
    except BaseException as exc:
        log.error("%s stopped after %.0f s: %s: %s", nb.name, time.perf_counter() - start, type(exc).__name__,
                  str(exc)[-2000:])
        raise
    logs.say(f"ran {nb.name} in {time.perf_counter() - start:.0f} s -> {target}")
    return target


# 01 makes no runs; 05 needs weights (Faiss over MF, LLM reranking)
REPLAYED_NOTEBOOKS = ["02", "03", "04", "06", "08", "09"]


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")


def replay(bundles: list[Path], data_dir: str | None = None, out_dir: Path | None = None,
           work_dir: Path | None = None, only: list[str] | None = None, allow_unsigned: bool = False) -> list[Path]:
    """Check `bundles` whole (bundle.check), unpack them into a work dir of their own, emptied first, and execute the
    notebooks over them with $COLLM_REPLAY=1.

    The bundles must agree on profile, seed and model (those become the notebooks' parameters) and their data
    must be this machine's data (same content fingerprints), and a run folder two bundles carry must hold the same
    files in both; executed copies go to `out_dir` (default results/<profile>-<device>/) beside replay.json, which
    lists the bundles (path, sha256), their provenance and phase timings. One replay at a time per work dir
    (`replay_lock`). With $COLLM_BUNDLE_KEY set, unsigned bundles are refused unless `allow_unsigned`."""
    # every bundle whole, before anything is written
    checked = {Path(b): bundle.verify(b, allow_unsigned) for b in bundles}
    manifests = [bundle.read_manifest(b) for b in bundles]
    bundle.conflicts(dict(zip(map(Path, bundles), manifests)))
    keys = {(m["profile"], m["seed"], m["model"]) for m in manifests}
    if len(keys) != 1:
        raise ValueError(f"the bundles were made with different (profile, seed, model): {sorted(keys)}; replay "
                         "the bundles of one reproduction together")
    profile, seed, model = keys.pop()
    precisions = {m.get("precision") for m in manifests} - {None}  # bundles before precision was recorded: none
    if len(precisions) > 1:
        raise ValueError(f"the bundles were made in different precisions {sorted(precisions)}; replay the bundles "
                         "of one reproduction together")
    devices = sorted({str(m.get("device")) for m in manifests})
    for name in sorted({n for m in manifests for n in m.get("data", {})}):
        here = runs.data_fingerprint(load_dataset(name, data_dir))
        there = {m["data"][name] for m in manifests if name in m.get("data", {})}
        if there != {here}:
            raise ValueError(f"{name}: the bundles' data fingerprint {sorted(there)} differs from this machine's "
                             f"{here}: other raw files or other processing code; their runs would not be found")
    if not all(v["same_code"] for v in checked.values()):
        log.warning("some bundles were made by other library code than this checkout's; runs are found by "
                    "identity (config + inputs), so results of a changed code path may be shown")
    slug = _slug("-".join(devices)).removeprefix("nvidia-")  # "NVIDIA H200" -> results/gpu-h200
    work_dir = Path(work_dir or settings.work_dir() / "replay" / f"{profile}-{slug}")
    out_dir = Path(out_dir or settings.REPO_ROOT / "results" / f"{profile}-{slug}")
    with replay_lock(work_dir):  # held from emptying to the last notebook: a second replay waits for none of it
        start_clean(work_dir)
        for path in bundles:
            bundle.unpack(path, work_dir, allow_unsigned)
        extra = {"seed": seed, **({"model": model} if model != DEFAULT_MODEL else {})}
        # the kernels inherit these, for the replay only; the bundles' precision, part of every stage run's
        # identity, not this machine's
        with kernel_env({"COLLM_WORK_DIR": str(work_dir), "COLLM_REPLAY": "1",
                         **{settings.PRECISION_ENV: p for p in precisions}}):
            done = run_main(profile, data_dir, only or REPLAYED_NOTEBOOKS, resume=False, out_dir=out_dir,
                            extra=extra)
    write_json(out_dir / "replay.json", {"bundles": [{"file": Path(b).name, "path": str(Path(b).resolve()), **{
        k: m.get(k) for k in ("part", "device", "seconds", "phases", "complete", "code", "commit", "data", "llm",
                              "precision", "packed_at")}, "verification": checked[Path(b)]}
        for b, m in zip(bundles, manifests)], "profile": profile, "seed": seed, "model": model})
    return done


@contextlib.contextmanager
def replay_lock(work_dir: Path) -> Iterator[None]:
    """Hold <parent>/.<work dir>.replay.lock (beside the folder, which a replay empties) for a whole replay; a second
    replay into the same work dir is refused at once, naming the folder, instead of emptying it mid-run."""
    from filelock import FileLock, Timeout

    work_dir.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(settings.lock_file(work_dir.parent / f".{work_dir.name}.replay.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise ValueError(f"another replay is running into {work_dir}; wait for it to finish, or replay into "
                         "another folder ($COLLM_WORK_DIR)") from None
    try:
        yield
    finally:
        lock.release()


def start_clean(work_dir: Path) -> None:
    """Empty a replay work dir so it holds one replay: a run an earlier replay left must not stand in for one these
    bundles lack. Only a folder an earlier replay made (it has bundles/) is emptied; the processed data (built on
    this machine from the raw files, never from a bundle) is kept."""
    if not work_dir.exists() or not any(work_dir.iterdir()):
        return
    if not (work_dir / "bundles").is_dir():
        raise ValueError(f"{work_dir} holds files that no replay made; a replay empties its work dir first, so "
                         "give it an empty or new folder")
    logs.say(f"replay: emptying {work_dir} (an earlier replay's runs; its processed data is kept)")
    for child in work_dir.iterdir():
        if child.name != "processed":
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()


def show_verification(bundles: list[Path], allow_unsigned: bool = False) -> bool:
    """`collm replay --verify`: each bundle's provenance and whether it verified; True when all did."""
    ok = True
    for path in bundles:
        try:
            report = bundle.verify(path, allow_unsigned)
        except (ValueError, OSError) as err:
            print(bundle.shown(f"REFUSED {path}: {err}", 2000))
            ok = False
            continue
        # every value through bundle.shown: a manifest field cannot rewrite or add a line of this report
        print(f"OK {path}: " + ", ".join(f"{k} {bundle.shown(v)}" for k, v in report.items() if k != "bundle"))
    return ok


def add_main_arguments(parser: argparse.ArgumentParser) -> None:
    """The main job's options (python -m collm_lib.runner, collm main)."""
    parser.add_argument("--profile", default=None, help='"smoke" | "cpu" | "gpu" (default: $COLLM_PROFILE or cpu)')
    add_shared_arguments(parser)
    parser.add_argument("--in-place", action="store_true", help="write outputs into notebooks/ (for committing)")
    parser.add_argument("--no-resume", action="store_true", help="re-run notebooks that already finished")
    parser.add_argument("--notebook-dir", type=Path, default=NOTEBOOK_DIR,
                        help="folder of the NN_*.ipynb notebooks (default: notebooks/)")


def add_shared_arguments(parser: argparse.ArgumentParser) -> None:
    """The options the main job and a replay share."""
    parser.add_argument("--data-dir", default=None, help="raw data folder (default: $COLLM_DATA_DIR or data/raw)")
    parser.add_argument("--only", nargs="*", default=None,
                        help="notebook numbers to run, e.g. 01 02 (default: all but 07-09, which run on their own: "
                             "--only 07, --only 08, --only 09)")
    parser.add_argument("--rehash", action="store_true", help=REHASH_HELP)


REHASH_HELP = ("hash the LLM's files again on first use, trusting no cached sha256 (the cache is keyed by size, mtime "
               "and ctime; docs/runs.md says what it cannot see)")
ALLOW_UNSIGNED_HELP = ("accept unsigned bundles although $COLLM_BUNDLE_KEY is set (by default a key means: only "
                       "bundles signed with it)")
OUT_DIR_HELP = "with --replay: where the executed notebooks go (default: results/<profile>-<device>/)"


def stop_on_sigterm() -> None:
    """SIGTERM (kill, CI cancellation) unwinds like Ctrl-C: the kernel is shut down and the partial copy moved
    aside."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the companion's notebooks in order for one profile.")
    add_main_arguments(parser)
    parser.add_argument("--replay", nargs="+", type=Path, default=None, metavar="BUNDLE",
                        help="execute notebooks 02-04 and 06 over these bundles (collm_lib.reproduce) instead of "
                             "training; profile, seed and model come from the bundles")
    parser.add_argument("--out-dir", type=Path, default=None, help=OUT_DIR_HELP)
    parser.add_argument("--allow-unsigned", action="store_true", help=f"with --replay: {ALLOW_UNSIGNED_HELP}")
    args = parser.parse_args()
    if args.rehash:
        os.environ[hashing.REHASH_ENV] = "1"  # the notebooks' kernels inherit it
    settings.require_writable(settings.work_dir(), "the work dir", settings.WORK_DIR_FIX)
    stop_on_sigterm()
    if args.replay:
        replay(args.replay, args.data_dir, args.out_dir, only=args.only, allow_unsigned=args.allow_unsigned)
    else:
        run_main(args.profile, args.data_dir, args.only, args.in_place, not args.no_resume, args.notebook_dir)


if __name__ == "__main__":
    main()
