"""The main job: execute the numbered notebooks in order through papermill for one profile.

Executed copies land in <work_dir>/notebook_runs/<profile>/ (or over the notebooks themselves with
--in-place, which is how the committed copies are made). A notebook whose executed copy finished
with the same parameters is skipped, so an interrupted job resumes where it stopped.

    python -m collm_lib.runner --profile cpu
    python -m collm_lib.runner --profile gpu --only 03 04
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from tqdm.auto import tqdm

from . import settings
from .io import atomic_path

NOTEBOOK_DIR = settings.REPO_ROOT / "notebooks"


def notebooks(only: list[str] | None = None) -> list[Path]:
    """The numbered notebooks (NN_name.ipynb) in order, optionally only those whose number is listed."""
    found = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
    if only:
        found = [p for p in found if p.name[:2] in only]
    if not found:
        raise FileNotFoundError(f"no notebooks matching {only or 'NN_*.ipynb'} in {NOTEBOOK_DIR}")
    return found


def strip_injected_parameters(path: Path) -> None:
    """Drop papermill's injected-parameters cell: a committed notebook must take its profile from the
    environment (CI runs it with COLLM_PROFILE=smoke), not from a value frozen into it by the last run."""
    nb = json.loads(path.read_text())
    nb["cells"] = [c for c in nb["cells"] if "injected-parameters" not in c.get("metadata", {}).get("tags", [])]
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


def _finished(path: Path, parameters: dict) -> bool:
    if not path.exists():
        return False
    meta = json.loads(path.read_text()).get("metadata", {}).get("papermill", {})
    # papermill leaves exception None on success (True on failure) and end_time None while running or killed
    return not meta.get("exception") and meta.get("parameters") == parameters and meta.get("end_time") is not None


def run_main(profile: str | None = None, data_dir: str | None = None, only: list[str] | None = None,
             in_place: bool = False, resume: bool = True) -> list[Path]:
    """Execute the notebooks in order; returns the executed copies. Stops at the first failure."""
    import papermill

    profile = settings.profile_name(profile)
    parameters = {"profile": profile, **({"data_dir": str(settings.data_dir(data_dir))} if data_dir else {})}
    out_dir = NOTEBOOK_DIR if in_place else settings.work_dir() / "notebook_runs" / profile
    out_dir.mkdir(parents=True, exist_ok=True)
    done = []
    bar = tqdm(notebooks(only), desc=f"main job ({profile})", unit="notebook")
    for nb in bar:
        target = out_dir / nb.name
        bar.set_postfix_str(nb.name)
        if resume and not in_place and _finished(target, parameters):
            tqdm.write(f"skip {nb.name}: finished with the same parameters ({target})")
        else:
            start = time.perf_counter()
            papermill.execute_notebook(str(nb), str(target), parameters=parameters, cwd=str(NOTEBOOK_DIR),
                                       progress_bar=False)
            if in_place:
                strip_injected_parameters(target)
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
    args = parser.parse_args()
    run_main(args.profile, args.data_dir, args.only, args.in_place, not args.no_resume)


if __name__ == "__main__":
    main()
