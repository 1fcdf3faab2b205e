"""Shared fixtures: the real data folder (skipped when absent) and processed datasets built once."""
from __future__ import annotations

from pathlib import Path

import pytest

from collm_lib import settings


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
