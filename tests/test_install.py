"""The install paths agree: environment.yml asks for what pyproject.toml declares, with the same bounds; nothing
declared goes unused; the faiss-missing error names the extras that install it."""
from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# pyproject names -> conda-forge names where they differ
CONDA_NAMES = {"torch": "pytorch", "huggingface-hub": "huggingface_hub", "faiss-gpu-cu12": "faiss-gpu"}
# import names where they differ from the distribution's
IMPORT_NAMES = {"scikit-learn": "sklearn", "huggingface-hub": "huggingface_hub"}
REQUIREMENT = re.compile(r"^([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?\s*(.*)$")


def _requirements(lines: list[str]) -> dict[str, str]:
    """{name: version spec} of requirement strings such as "torch>=2.11,<2.14"."""
    out = {}
    for line in lines:
        match = REQUIREMENT.match(line.strip())
        if match and not line.startswith("collm-faissret"):
            out[match.group(1).lower()] = match.group(2).replace(" ", "")
    return out


def _environment() -> dict[str, str]:
    """{name: version spec} of environment.yml's conda and pip entries (a conda match spec's version='...' read)."""
    out = {}
    for raw in (ROOT / "environment.yml").read_text().split("dependencies:")[1].splitlines():
        line = raw.split("#")[0].strip()
        if not line.startswith("- ") or line.endswith(":"):
            continue
        entry = line[2:].strip()
        bracket = re.match(r"^([A-Za-z0-9_.-]+)\[version='([^']+)'", entry)
        if bracket:
            out[bracket.group(1).lower()] = bracket.group(2)
        elif not entry.startswith("-"):
            name, spec = REQUIREMENT.match(entry).groups()
            out[name.lower()] = spec.replace(" ", "")
    return out


def test_environment_yml_has_every_dependency_with_pyprojects_bounds():
    declared = _requirements(PYPROJECT["project"]["dependencies"])
    extras = PYPROJECT["project"]["optional-dependencies"]
    for extra in ("gpu", "notebooks", "test"):
        declared |= {name: spec for name, spec in _requirements(extras[extra]).items() if name not in declared}
    env = _environment()
    assert "pytorch-cuda" not in env and "accelerate" not in env
    for name, spec in declared.items():
        conda = CONDA_NAMES.get(name, name)
        assert conda in env, f"environment.yml lacks {conda} (pyproject: {name}{spec})"
        if name != "faiss-gpu-cu12":  # conda-forge's faiss-gpu has its own version line
            assert env[conda] == spec, f"{conda}: environment.yml says {env[conda]}, pyproject {spec}"
    channels = re.search(r"channels:\n((?:\s+- .*\n)+)", (ROOT / "environment.yml").read_text()).group(1)
    assert [c.strip("- \n") for c in channels.splitlines()] == ["conda-forge", "nodefaults"]


def test_every_declared_dependency_is_imported_by_the_library():
    """A dependency nobody imports (accelerate was one) is dropped, not carried."""
    sources = "\n".join(p.read_text() for p in (ROOT / "collm_lib").rglob("*.py"))
    for name in _requirements(PYPROJECT["project"]["dependencies"]):
        module = IMPORT_NAMES.get(name, name).replace("-", "_")
        if name in ("tabulate", "gguf"):  # used by pandas' to_markdown and by transformers' GGUF loader
            continue
        assert re.search(rf"^\s*(?:import|from)\s+{module}\b", sources, re.MULTILINE), f"{name} is never imported"


def test_the_faiss_error_names_the_extras(monkeypatch):
    from collm_lib import retrieval

    monkeypatch.setitem(sys.modules, "faiss", None)  # makes `import faiss` raise ImportError
    with pytest.raises(ImportError) as err:
        retrieval._faiss()
    for hint in ('".[faiss]"', '".[gpu]"', "conda-forge"):
        assert hint in str(err.value)
