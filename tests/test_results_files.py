"""The committed result folders (results/ and benchmarks/results/) are clean artefacts: no absolute path of the
machine that made them (/work/, /tmp/, /root/, /home/: write it relative to the repository root, or as a
placeholder such as `<work_dir>/runs/...`), no captured stderr noise (progress bars, kernel and library warnings),
and a README.md in each folder directly under results/ saying which run it holds and what reads it."""
from __future__ import annotations

import gzip
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = ("results", "benchmarks/results")
BINARY_SUFFIXES = {".png", ".pdf", ".jpg", ".jpeg", ".svg.gz", ".npy", ".npz", ".pt", ".pkl", ".parquet"}

# An absolute path of a machine: the root folder must start the path (not a URL's or a relative path's segment).
ABSOLUTE = re.compile(r"(?<![\w.:/~-])/(?:work|tmp|root|home)/")
# What a notebook's or a script's stderr leaves behind: tqdm bars and their rates, kernel and library warnings.
NOISE = ("Kernel is running over TCP", "it/s]", "s/it]", "TqdmWarning", "warnings.warn(")
# A carriage return: a real one, or one escaped in a JSON string (an odd number of backslashes before the r).
CARRIAGE_RETURN = re.compile(r"\r|(?<!\\)(?:\\\\)*\\r")


def tracked_files() -> list[str]:
    """Files under FOLDERS that git tracks or would track (untracked, not ignored) and that are on disk."""
    try:
        out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z", "--", *FOLDERS],
                             cwd=ROOT, capture_output=True, check=True).stdout.decode()
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"git is unavailable or this is no git checkout ({exc})")
    return sorted({p for p in out.split("\0") if p and (ROOT / p).is_file()})


def text_of(rel: str) -> str | None:
    """The file's text (a .gz file's decompressed text), or None for a binary file."""
    path = ROOT / rel
    if any(rel.endswith(suffix) for suffix in BINARY_SUFFIXES):
        return None
    data = path.read_bytes()
    if rel.endswith(".gz"):
        data = gzip.decompress(data)
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def problems(rel: str, text: str) -> list[str]:
    """`file:line: what` for each absolute path and each line of stderr noise in `text`."""
    found = []
    for number, line in enumerate(text.split("\n"), start=1):
        excerpt = line.strip()[:120]
        if ABSOLUTE.search(line):
            found.append(f"{rel}:{number}: absolute path in {excerpt!r}")
        noise = [n for n in NOISE if n in line] + ["carriage return (progress bar)"] * bool(CARRIAGE_RETURN.search(line))
        if noise:
            found.append(f"{rel}:{number}: stderr noise ({', '.join(noise)}) in {excerpt!r}")
    return found


def test_result_files_hold_no_absolute_path_and_no_stderr_noise():
    files = tracked_files()
    assert files, f"no tracked file under {FOLDERS}"
    bad = []
    for rel in files:
        text = text_of(rel)
        if text is not None:
            bad += problems(rel, text)
    assert not bad, (f"{len(bad)} line(s) in the committed result files hold a machine's absolute path or stderr noise:"
                     "\n  " + "\n  ".join(bad[:60]) + ("\n  ..." if len(bad) > 60 else "")
                     + "\nFix: write paths relative to the repository root (or `<work_dir>/...` for a scratch work "
                     "dir), and drop progress bars and warnings from notebook outputs and logs.")


def test_each_results_folder_has_a_readme():
    folders = sorted({rel.split("/")[1] for rel in tracked_files() if rel.startswith("results/") and rel.count("/") > 1})
    missing = [f"results/{name}/README.md" for name in folders if not (ROOT / "results" / name / "README.md").is_file()]
    assert not missing, (f"result folder(s) without a README.md: {', '.join(missing)}; say which run it holds (machine, "
                         "profile, command) and which doc or notebook reads it")


@pytest.mark.parametrize("line, ok", [
    ('"stage_dir": "/work/fresh/data/runs/ml-1m/stage2_cpu",', False),
    ("profile=gpu  out_dir=/tmp/gpuwork/runs/ml-1m/stage1_gpu", False),
    ("PosixPath('/home/me/figures/a.png')", False),
    ('"stage_dir": "<work_dir>/runs/ml-1m/stage2_cpu",', True),
    ("see https://example.org/home/index.html or data/tmp/x", True),
    ('"\\rscore:  32%|###   | 8/25 [00:34<01:14,  4.37s/it]"', False),
    ("Loading weights: 100%|####| 272/272 [00:00<00:00, 764.51it/s]", False),
    ("[W] Kernel is running over TCP without encryption", False),
    ('"C:\\\\root\\\\x"', True),
    ("AUC 0.7164, 11.66 prompts/s", True),
])
def test_the_checks_catch_paths_and_noise_and_pass_clean_lines(line, ok):
    assert (problems("x.txt", line) == []) is ok
