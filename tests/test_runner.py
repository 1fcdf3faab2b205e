"""The main-job runner: notebook order, selection and the resume rule."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from collm_lib import runner


def test_notebooks_in_order_and_selection():
    names = [p.name for p in runner.notebooks()]
    assert names == sorted(names) and names[0].startswith("01_")
    assert [p.name[:2] for p in runner.notebooks(["03", "01"])] == ["01", "03"]
    with pytest.raises(ValueError, match="--only 99: no such notebook in .*; the numbers are 01 02"):
        runner.notebooks(["01", "99"])  # never silently dropped
    with pytest.raises(FileNotFoundError, match="no notebooks"):
        runner.notebooks(["01"], Path("/nonexistent"))


def _executed(path, exception, parameters, end="2026-01-01"):
    path.write_text(json.dumps({"metadata": {"papermill": {"exception": exception, "parameters": parameters,
                                                           "end_time": end}}}))
    return path


def test_resume_only_skips_finished_runs_with_the_same_parameters(tmp_path):
    params = {"profile": "cpu"}
    src = tmp_path / "source.ipynb"  # no code cells, like the executed copies above
    src.write_text(json.dumps({"cells": []}))
    assert runner._finished(_executed(tmp_path / "a.ipynb", None, params), params, src)  # papermill's "no exception"
    assert not runner._finished(_executed(tmp_path / "b.ipynb", True, params), params, src)  # it failed
    assert not runner._finished(_executed(tmp_path / "c.ipynb", None, {"profile": "gpu"}), params, src)
    assert not runner._finished(_executed(tmp_path / "d.ipynb", None, params, end=None), params, src)  # interrupted
    assert not runner._finished(tmp_path / "missing.ipynb", params, src)


def test_resume_recognises_real_papermill_runs(tmp_path):
    import nbformat
    import papermill

    for name, body in (("ok", "y = x + 1"), ("bad", "raise RuntimeError('boom')")):
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]}),
                                             nbformat.v4.new_code_cell(body)])
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, tmp_path / f"{name}.ipynb")
    papermill.execute_notebook(str(tmp_path / "ok.ipynb"), str(tmp_path / "ok_out.ipynb"), parameters={"x": 2},
                               progress_bar=False)
    with pytest.raises(papermill.PapermillExecutionError):
        papermill.execute_notebook(str(tmp_path / "bad.ipynb"), str(tmp_path / "bad_out.ipynb"), parameters={"x": 2},
                                   progress_bar=False)
    assert runner._finished(tmp_path / "ok_out.ipynb", {"x": 2}, tmp_path / "ok.ipynb")
    assert not runner._finished(tmp_path / "ok_out.ipynb", {"x": 3}, tmp_path / "ok.ipynb")
    assert not runner._finished(tmp_path / "ok_out.ipynb", {"x": 2}, tmp_path / "bad.ipynb")  # other code
    assert not runner._finished(tmp_path / "bad_out.ipynb", {"x": 2}, tmp_path / "bad.ipynb")


def test_committed_notebooks_take_their_profile_from_the_environment():
    """An injected `profile = "cpu"` cell would make CI's nbval run the cpu profile instead of smoke."""
    for path in runner.notebooks():
        cells = json.loads(path.read_text())["cells"]
        tags = [c.get("metadata", {}).get("tags", []) for c in cells]
        assert not any("injected-parameters" in t for t in tags), f"{path.name}: strip papermill's injected cell"
        params = [c for c, t in zip(cells, tags) if "parameters" in t]
        assert len(params) == 1 and "profile = None" in "".join(params[0]["source"]), path.name


def test_prepare_for_commit(tmp_path):
    nb = tmp_path / "n.ipynb"
    nb.write_text(json.dumps({"cells": [{"metadata": {"tags": ["parameters"]}, "source": "profile = None"},
                                        {"metadata": {"tags": ["injected-parameters"]}, "source": "profile = 'cpu'"},
                                        {"metadata": {}, "source": "x = 1"}],
                              "metadata": {"papermill": {"input_path": str(nb), "output_path": str(nb) + ".running"}}}))
    target = runner.NOTEBOOK_DIR / "01_prepare_data.ipynb"
    runner.prepare_for_commit(nb, target)
    done = json.loads(nb.read_text())
    assert [c["source"] for c in done["cells"]] == ["profile = None", "x = 1"]
    assert done["metadata"]["papermill"]["input_path"] == done["metadata"]["papermill"]["output_path"] == \
        "notebooks/01_prepare_data.ipynb"


def test_prepare_for_commit_numbers_the_cells_left_contiguously(tmp_path):
    def code(n, tags=(), out=True):
        outputs = [{"output_type": "execute_result", "execution_count": n, "data": {}, "metadata": {}}] if out else []
        return {"cell_type": "code", "execution_count": n, "metadata": {"tags": list(tags)}, "source": "", "outputs": outputs}
    nb = tmp_path / "n.ipynb"
    nb.write_text(json.dumps({"cells": [code(1, ["parameters"], out=False), code(2, ["injected-parameters"]),
                                        {"cell_type": "markdown", "metadata": {}, "source": "#"}, code(3), code(4)],
                              "metadata": {}}))
    runner.prepare_for_commit(nb, runner.NOTEBOOK_DIR / "01_prepare_data.ipynb")
    cells = [c for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code"]
    assert [c["execution_count"] for c in cells] == [1, 2, 3]
    assert [o["execution_count"] for c in cells for o in c["outputs"]] == [2, 3]


def test_a_kernel_that_worked_prints_no_warning_or_error(tmp_path, capfd):
    """Before: "[IPKernelApp] WARNING | Kernel is running over TCP without encryption" before every notebook and
    "ERROR | KeyboardInterrupt caught in kernel." when the shutdown's interrupt met a message; a failing cell still
    fails with its traceback."""
    import nbformat
    import papermill

    for name, body in (("ok", "import time; time.sleep(0.5); y = x + 1"), ("bad", "raise RuntimeError('boom')")):
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]}),
                                             nbformat.v4.new_code_cell(body)])
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, tmp_path / f"{name}.ipynb")
    (tmp_path / "out").mkdir()
    runner._execute(tmp_path / "ok.ipynb", tmp_path / "out" / "ok.ipynb", tmp_path / "failed.ipynb", {"x": 2}, False)
    said = capfd.readouterr()
    assert "WARNING" not in said.err + said.out and "ERROR" not in said.err + said.out
    with pytest.raises(papermill.PapermillExecutionError, match="boom"):
        runner._execute(tmp_path / "bad.ipynb", tmp_path / "out" / "bad.ipynb", tmp_path / "failed.ipynb", {"x": 2},
                        False)
