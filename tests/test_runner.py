"""The main-job runner: notebook order, selection and the resume rule."""
from __future__ import annotations

import json

import pytest

from collm_lib import runner


def test_notebooks_in_order_and_selection():
    names = [p.name for p in runner.notebooks()]
    assert names == sorted(names) and names[0].startswith("01_")
    assert [p.name[:2] for p in runner.notebooks(["03", "01"])] == ["01", "03"]
    with pytest.raises(FileNotFoundError, match="no notebooks"):
        runner.notebooks(["99"])


def _executed(path, exception, parameters, end="2026-01-01"):
    path.write_text(json.dumps({"metadata": {"papermill": {"exception": exception, "parameters": parameters,
                                                           "end_time": end}}}))
    return path


def test_resume_only_skips_finished_runs_with_the_same_parameters(tmp_path):
    params = {"profile": "cpu"}
    assert runner._finished(_executed(tmp_path / "a.ipynb", False, params), params)
    assert not runner._finished(_executed(tmp_path / "b.ipynb", True, params), params)  # it failed
    assert not runner._finished(_executed(tmp_path / "c.ipynb", False, {"profile": "gpu"}), params)
    assert not runner._finished(_executed(tmp_path / "d.ipynb", False, params, end=None), params)  # interrupted
    assert not runner._finished(tmp_path / "missing.ipynb", params)
