"""The notebooks' key numbers, read back (numbers.record writes figures/numbers_<NN>_<profile>.json).

- Committed (cpu profile, no execution): every number tied to rows recomputes from the per-row scores committed
  beside its table, every result table has those rows, and the committed notebooks are clean (figures inline,
  no stderr, no progress text, no author's paths, a footer with wall time and machine).
- This session's smoke run (after nbval executed the notebooks, `bash scripts/test.sh`): the same recomputation,
  and each number within a tolerance of tests/expected/numbers_smoke.json, so a number that drifts fails here.
  After an intended change: `COLLM_UPDATE_EXPECTED=1 bash scripts/test.sh`, review the diff of that file, commit.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from collm_lib import figure3, numbers, runner, settings

REPO = settings.REPO_ROOT
FIGURES = REPO / "figures"
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
EXPECTED = REPO / "tests" / "expected" / "numbers_smoke.json"
# Bit-identical on one machine; across CPUs float sums may order differently and swap close scores, so a metric
# may move by 0.03 or by two swapped pairs of its rows (numbers.resolution), whichever is more. Counts are exact.
TOLERANCE, PAIRS = 0.03, 2
# Tables that are measurements, not scores of rows (no rows file): dataset sizes, index speed and recall.
MEASUREMENTS = ("data_stats_", "faiss_sweep_")
ABSOLUTE_PATH = re.compile(r"(/work/|/home/|/Users/|/tmp/|[A-Z]:\\)")
FIGURES_PER_NOTEBOOK = {"02": 1, "03": 1, "04": 1, "05": 3, "07": 1, "09": 4}
# Committed without outputs (runner.NOT_COMMITTED_RUN): hours at cpu; the rest are the cpu run's.
RUN = [nb for nb in NOTEBOOKS if nb.name[:2] not in runner.NOT_COMMITTED_RUN]
NOT_RUN = [nb for nb in NOTEBOOKS if nb.name[:2] in runner.NOT_COMMITTED_RUN]


def _mismatches(recorded: dict, figures_dir: Path) -> list[str]:
    bad = []
    for name, entry in recorded["numbers"].items():
        if isinstance(entry, dict):
            again = numbers.recompute(entry, figures_dir)
            if (again is None) != (entry["value"] is None) or (again is not None and abs(again - entry["value"]) > 1e-9):
                bad.append(f"{recorded['notebook']} {name!r}: recorded {entry['value']}, rows give {again}")
    return bad


def _outputs(path: Path) -> list[dict]:
    return [o for c in json.loads(path.read_text())["cells"] for o in c.get("outputs", [])]


def _text(output: dict) -> str:
    """An output's text (not its images: base64 may spell anything)."""
    data = {k: v for k, v in output.get("data", {}).items() if not k.startswith("image/")}
    parts = [output.get("text", ""), *data.values()]
    return "".join("".join(p) if isinstance(p, list) else p for p in parts if isinstance(p, (str, list)))


# ---------------------------------------------------------------- committed (cpu) outputs

def test_committed_numbers_recompute_from_their_rows():
    files = sorted(FIGURES.glob("numbers_*_cpu.json"))
    expected = [f"numbers_{nb.name[:2]}_cpu.json" for nb in RUN]
    assert [f.name for f in files] == expected, f"expected one numbers file per run notebook, found {[f.name for f in files]}"
    bad = [m for f in files for m in _mismatches(json.loads(f.read_text()), FIGURES)]
    assert not bad, "numbers that do not recompute from their committed rows:\n" + "\n".join(bad)


def _rows_file(table: Path) -> Path:
    """A table's per-row scores: NAME.rows.csv.gz, or the rows file its config names (a table computed from another
    table's rows: Table 1's long form and its paired differences)."""
    own = table.with_name(table.name.removesuffix(".csv") + ".rows.csv.gz")
    named = json.loads(table.with_name(table.name.removesuffix(".csv") + ".config.json").read_text())["config"]
    return own if own.exists() or not isinstance(named, dict) or "rows" not in named else FIGURES / named["rows"]


def test_every_committed_result_table_has_its_rows():
    tables = [p for p in FIGURES.glob("*_cpu*.csv") if not p.name.startswith(MEASUREMENTS)]
    missing = [p.name for p in tables if not _rows_file(p).exists()]
    assert tables and not missing, f"result tables without their per-row scores (NAME.rows.csv.gz): {missing}"


@pytest.mark.parametrize("path", NOT_RUN, ids=lambda p: p.name[:2])
def test_notebook_committed_unrun_has_no_outputs_and_no_figures(path):
    """No stale half: none of its cells ran, and no cpu figure or numbers file claims to be its output."""
    code = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    ran = [i for i, c in enumerate(code) if c.get("outputs") or c.get("execution_count")]
    assert not ran, f"{path.name}: code cells {ran} carry outputs; run it whole (--only {path.name[:2]} --in-place)"
    assert not (FIGURES / f"numbers_{path.name[:2]}_cpu.json").exists()


def test_no_cpu_figure_of_a_notebook_committed_unrun():
    """Figure 3 and the BookCrossing table are notebook 09's: at cpu, files by those names would be another run's."""
    names = [*figure3.figure3_panels("cpu"), "bookcrossing_liked_cpu"]
    stale = sorted(p.name for name in names for p in FIGURES.glob(f"{name}.*"))
    assert "09" not in runner.NOT_COMMITTED_RUN or not stale, f"cpu outputs of a notebook committed unrun: {stale}"


@pytest.mark.parametrize("path", RUN, ids=lambda p: p.name[:2])
def test_committed_notebook_is_clean(path):
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(c.get("execution_count") for c in code), f"{path.name}: not fully executed; run the main job"
    counts = [c["execution_count"] for c in code]
    assert counts == list(range(1, len(code) + 1)), f"{path.name}: execution counts {counts}, not 1, 2, 3 ..."
    outputs = _outputs(path)
    stderr = [_text(o)[:120] for o in outputs if o.get("name") == "stderr"]
    assert not stderr, f"{path.name}: stderr in the committed outputs (warnings, progress bars): {stderr[:3]}"
    meta = json.dumps(nb["metadata"])  # papermill records its input and output paths there
    paths = sorted({m.group(0) for text in [meta, *map(_text, outputs)] for m in ABSOLUTE_PATH.finditer(text)})
    assert not paths, f"{path.name}: absolute paths {paths} in the outputs or metadata; use settings.shown(path)"
    images = sum("image/png" in o.get("data", {}) for o in outputs)
    assert images >= FIGURES_PER_NOTEBOOK.get(path.name[:2], 0), f"{path.name}: {images} inline figures"
    assert any("s wall on" in _text(o) for o in outputs), f"{path.name}: no footer (numbers.record) at the end"


# ---------------------------------------------------------------- this session's smoke run

@pytest.fixture
def smoke_figures(request) -> Path:
    ran = {item.nodeid.split("::")[0] for item in request.session.items if item.nodeid.startswith("notebooks/")}
    if ran != {f"notebooks/{nb.name}" for nb in NOTEBOOKS}:
        pytest.skip("the notebooks were not all executed in this session: run `bash scripts/test.sh`")
    if request.session.testsfailed:
        pytest.skip("an earlier test (a notebook, perhaps) failed: its numbers are not worth reading back")
    if settings.profile_name() != "smoke":
        pytest.skip("the read-back expectations are for the smoke profile (COLLM_PROFILE=smoke)")
    return settings.figures_dir()


@pytest.mark.after_notebooks
def test_smoke_numbers_recompute_and_match_expected(smoke_figures):
    recorded = {nb.name[:2]: numbers.load(nb.name[:2], "smoke", smoke_figures) for nb in NOTEBOOKS}
    bad = [m for r in recorded.values() for m in _mismatches(r, smoke_figures)]
    assert not bad, "numbers that do not recompute from their rows:\n" + "\n".join(bad)
    values = {nb: {k: numbers.value(e) for k, e in r["numbers"].items()} for nb, r in recorded.items()}
    if os.environ.get("COLLM_UPDATE_EXPECTED") == "1":
        EXPECTED.write_text(json.dumps(values, indent=1, sort_keys=True) + "\n")
        pytest.skip(f"wrote {EXPECTED}: review its diff and commit it")
    expected = json.loads(EXPECTED.read_text())
    drift = [f"{nb} {name!r}: expected {want}, got {values.get(nb, {}).get(name, '(missing)')}"
             for nb, wanted in expected.items() for name, want in wanted.items()
             if not _close(want, values.get(nb, {}).get(name, "(missing)"), _tolerance(recorded, nb, name, smoke_figures))]
    extra = [f"{nb} {name!r}" for nb, got in values.items() for name in got if name not in expected.get(nb, {})]
    assert not drift and not extra, ("smoke numbers drifted from tests/expected/numbers_smoke.json (if intended: "
                                     "COLLM_UPDATE_EXPECTED=1 bash scripts/test.sh):\n" + "\n".join(drift + extra))


def _tolerance(recorded: dict, nb: str, name: str, figures_dir: Path) -> float:
    entry = recorded.get(nb, {}).get("numbers", {}).get(name)
    return max(TOLERANCE, PAIRS * numbers.resolution(entry, figures_dir)) if isinstance(entry, dict) else TOLERANCE


def _close(want, got, tolerance: float) -> bool:
    if want is None or got is None or isinstance(want, str) or isinstance(got, str):
        return want == got
    if isinstance(want, int) and isinstance(got, int):
        return want == got  # counts and steps are exact
    return abs(want - got) <= tolerance
