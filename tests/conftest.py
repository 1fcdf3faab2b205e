"""Shared fixtures: the real data folder (skipped when absent) and processed datasets built once."""
from __future__ import annotations

from pathlib import Path

import pytest

from collm_lib import settings

_DESELECTED = pytest.StashKey[int]()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """settings.data_dir() (set COLLM_DATA_DIR=/work/shared/data); skip when it is not there."""
    root = settings.data_dir()
    if not root.is_dir() or not any(root.iterdir()):
        pytest.skip(f"data folder {root} is absent; set COLLM_DATA_DIR to the shared data folder")
    return root


def require_dataset_folder(root: Path, folder: str) -> Path:
    path = root / folder
    if not path.is_dir():
        pytest.skip(f"{path} is absent; see its SOURCE.md for how to obtain it")
    return path


@pytest.fixture(scope="session")
def data_work_dir(tmp_path_factory) -> Path:
    """One processed-data cache for the whole session, so each dataset is built once."""
    return tmp_path_factory.mktemp("collm_work")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A tiny random Llama with the real tokenizer, saved as a Hugging Face folder (tests/tiny_llm.py)."""
    from tiny_llm import save_tiny

    return save_tiny(tmp_path_factory.mktemp("tiny") / "tiny-llm")


@pytest.fixture
def one_thread(monkeypatch, tmp_path):
    """One torch thread (bit-identical floats across processes) and a private work dir."""
    from collm_lib import collab

    monkeypatch.setenv("COLLM_WORK_DIR", str(tmp_path / "work"))
    with collab.torch_threads(1):
        yield


# Test tiers (pyproject's markers; CONTRIBUTING.md): every item gets one. `pytest -m unit` is the contributor's loop
# (no LLM, no whole real dataset: about a minute on a 2-core CPU); scripts/test.sh runs all.
TIERS = ("unit", "integration", "notebooks", "meta")
# Modules of one tier; a module not named here is unit, except its items that use the tiny LLM (`tiny`: integration)
# and items that carry a tier marker of their own.
MODULE_TIERS = {
    "meta": ("test_readme", "test_docs", "test_install", "test_results_files", "test_imports"),
    "notebooks": ("test_notebook_numbers",),
    "integration": (  # a real or tiny LLM, subprocesses and kernels, several processes, or whole real datasets
        "test_precision", "test_distributed", "test_device_dryrun", "test_faults_runner", "test_faults_runs",
        "test_faults_files", "test_cli", "test_runner", "test_llm_sources", "test_stages", "test_levers",
        "test_identity", "test_logs", "test_reproduce", "test_data_bookcrossing", "test_data_movielens",
        "test_data_amazon"),
}


def tier_of(item) -> str:
    """The tier an item runs in (see TIERS)."""
    own = [t for t in TIERS if item.get_closest_marker(t) is not None]
    if own:
        return own[0]
    path = Path(str(item.fspath))
    if path.suffix == ".ipynb":
        return "notebooks"
    for tier, modules in MODULE_TIERS.items():
        if path.stem in modules:
            return tier
    return "integration" if "tiny" in getattr(item, "fixturenames", ()) else "unit"


def pytest_collection_modifyitems(session, config, items):
    """Each item gets its tier's marker; items marked `after_notebooks` run last, after nbval has executed the
    notebooks (`pytest tests notebooks`)."""
    for item in items:
        tier = tier_of(item)
        if item.get_closest_marker(tier) is None:
            item.add_marker(getattr(pytest.mark, tier))
    items.sort(key=lambda item: item.get_closest_marker("after_notebooks") is not None)


@pytest.fixture(autouse=True)
def _unit_loads_no_llm(request, monkeypatch):
    """A unit test that loads a causal LM fails, naming the fix: the unit tier stays fast on any machine."""
    if request.node.get_closest_marker("unit") is None:
        return

    def refuse(*args, **kwargs):
        raise RuntimeError(f"{request.node.nodeid} is in the unit tier and loads an LLM: mark it "
                           "@pytest.mark.integration (or name its module in tests/conftest.py's MODULE_TIERS)")

    monkeypatch.setattr("transformers.AutoModelForCausalLM.from_pretrained", refuse)


def pytest_deselected(items):
    """Count the items -k, -m or --deselect dropped: README's test count is checked only when none was."""
    if items:
        stash = items[0].config.stash
        stash[_DESELECTED] = stash.get(_DESELECTED, 0) + len(items)


@pytest.fixture
def deselected_count(request) -> int:
    """How many collected items this session deselected (tests/test_readme.py)."""
    return request.config.stash.get(_DESELECTED, 0)
