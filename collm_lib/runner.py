"""The main job: execute the numbered notebooks in order through papermill for one profile.

Executed copies land in <work_dir>/notebook_runs/<profile>/ (or over the notebooks themselves with
--in-place, which is how the committed copies are made). A notebook whose executed copy finished
with the same parameters and the same code is skipped, so an interrupted job resumes where it stopped.

Each notebook runs into a dot-file beside its target that is renamed onto the target only on success,
so a failed or killed run leaves the target as it was; a failed run's copy is kept as
<work_dir>/notebook_runs/<profile>/NN_name.failed.ipynb for debugging.

    python -m collm_lib.runner --profile cpu
    python -m collm_lib.runner --profile gpu --only 03 04
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

from tqdm.auto import tqdm

from . import runs, settings
from .io import atomic_path

NOTEBOOK_DIR = settings.REPO_ROOT / "notebooks"
INJECTED = "injected-parameters"  # papermill's tag on the cell it adds after the "parameters" cell


def notebooks(only: list[str] | None = None, notebook_dir: Path = NOTEBOOK_DIR) -> list[Path]:
    """The numbered notebooks (NN_name.ipynb) in order, optionally only those whose number is listed."""
    found = sorted(Path(notebook_dir).glob("[0-9][0-9]_*.ipynb"))
    if only:
        found = [p for p in found if p.name[:2] in only]
    if not found:
        raise FileNotFoundError(f"no notebooks matching {only or 'NN_*.ipynb'} in {notebook_dir}")
    return found


def _injected(cell: dict) -> bool:
    return INJECTED in cell.get("metadata", {}).get("tags", [])


def strip_injected_parameters(path: Path) -> None:
    """Drop papermill's injected-parameters cell: a committed notebook must take its profile from the
    environment (CI runs it with COLLM_PROFILE=smoke), not from a value frozen into it by the last run."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    nb["cells"] = [c for c in nb["cells"] if not _injected(c)]
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


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
        tqdm.write(f"re-run {source.name}: {path} is not a whole notebook ({exc}); the run will replace it")
        return False
    if _code(executed) != _code(json.loads(source.read_text(encoding="utf-8"))):
        tqdm.write(f"re-run {source.name}: its code changed since {path} was executed")
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
                                   progress_bar=False)
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
        strip_injected_parameters(running)
    os.replace(running, target)


def run_main(profile: str | None = None, data_dir: str | None = None, only: list[str] | None = None,
             in_place: bool = False, resume: bool = True, notebook_dir: Path = NOTEBOOK_DIR) -> list[Path]:
    """Execute the notebooks in order; returns the executed copies. Stops at the first failure."""
    profile = settings.profile_name(profile)
    parameters = {"profile": profile, **({"data_dir": str(settings.data_dir(data_dir))} if data_dir else {})}
    runs_dir = runs.notebook_runs_dir(profile)
    out_dir = Path(notebook_dir) if in_place else runs_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    done = []
    bar = tqdm(notebooks(only, notebook_dir), desc=f"main job ({profile})", unit="notebook")
    for nb in bar:
        target = out_dir / nb.name
        bar.set_postfix_str(nb.name)
        if resume and not in_place and _finished(target, parameters, nb):
            tqdm.write(f"skip {nb.name}: finished with the same parameters and code ({target})")
        else:
            start = time.perf_counter()
            # failed copies go to runs_dir even with --in-place: in notebooks/ they would match NN_*.ipynb
            _execute(nb, target, runs_dir / f"{nb.stem}.failed.ipynb", parameters, in_place)
            tqdm.write(f"ran {nb.name} in {time.perf_counter() - start:.0f} s -> {target}")
        done.append(target)
    return done


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the companion's notebooks in order for one profile.")
    parser.add_argument("--profile", default=None, help='"smoke" | "cpu" | "gpu" (default: $COLLM_PROFILE or cpu)')
    parser.add_argument("--data-dir", default=None, help="raw data folder (default: $COLLM_DATA_DIR or data/raw)")
    parser.add_argument("--only", nargs="*", default=None, help="notebook numbers to run, e.g. 01 02")
    parser.add_argument("--in-place", action="store_true", help="write outputs into notebooks/ (for committing)")
    parser.add_argument("--no-resume", action="store_true", help="re-run notebooks that already finished")
    parser.add_argument("--notebook-dir", type=Path, default=NOTEBOOK_DIR,
                        help="folder of the NN_*.ipynb notebooks (default: notebooks/)")
    args = parser.parse_args()
    # SIGTERM (kill, CI cancellation) unwinds like Ctrl-C: the kernel is shut down and the partial copy moved aside
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    run_main(args.profile, args.data_dir, args.only, args.in_place, not args.no_resume, args.notebook_dir)


if __name__ == "__main__":
    main()
