"""Test tiers (tests/conftest.py): every item has one, named modules exist, and the unit tier loads no LLM."""
from __future__ import annotations

from pathlib import Path

import pytest
from conftest import MODULE_TIERS, TIERS, tier_of

HERE = Path(__file__).resolve().parent


class _Item:  # what tier_of reads of a collected item
    def __init__(self, path: Path, markers: tuple[str, ...] = (), fixtures: tuple[str, ...] = ()):
        self.fspath, self.fixturenames, self._markers = path, fixtures, markers

    def get_closest_marker(self, name: str):
        return name if name in self._markers else None


def test_every_named_module_exists_and_has_one_tier():
    named = [m for modules in MODULE_TIERS.values() for m in modules]
    assert len(named) == len(set(named)), "a module is named in two tiers"
    assert not [m for m in named if not (HERE / f"{m}.py").is_file()], "MODULE_TIERS names a module that is gone"
    assert set(MODULE_TIERS) <= set(TIERS)


def test_tier_rules():
    assert tier_of(_Item(HERE.parent / "notebooks" / "03_stage1_lora.ipynb")) == "notebooks"
    assert tier_of(_Item(HERE / "test_precision.py")) == "integration"
    assert tier_of(_Item(HERE / "test_readme.py")) == "meta"
    assert tier_of(_Item(HERE / "test_metrics.py")) == "unit"
    assert tier_of(_Item(HERE / "test_metrics.py", fixtures=("tiny",))) == "integration"  # the tiny LLM
    assert tier_of(_Item(HERE / "test_precision.py", markers=("unit",))) == "unit"  # its own marker wins


def test_a_unit_test_that_loads_an_llm_is_told_to_move(request):
    assert request.node.get_closest_marker("unit") is not None
    import transformers

    with pytest.raises(RuntimeError, match="unit tier and loads an LLM: mark it @pytest.mark.integration"):
        transformers.AutoModelForCausalLM.from_pretrained("any/model")
