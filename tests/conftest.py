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


def pytest_collection_modifyitems(session, config, items):
    """Items marked `after_notebooks` run last, after nbval has executed the notebooks (`pytest tests notebooks`)."""
    items.sort(key=lambda item: item.get_closest_marker("after_notebooks") is not None)


def pytest_deselected(items):
    """Count the items -k, -m or --deselect dropped: README's test count is checked only when none was."""
    if items:
        stash = items[0].config.stash
        stash[_DESELECTED] = stash.get(_DESELECTED, 0) + len(items)


@pytest.fixture
def deselected_count(request) -> int:
    """How many collected items this session deselected (tests/test_readme.py)."""
    return request.config.stash.get(_DESELECTED, 0)
