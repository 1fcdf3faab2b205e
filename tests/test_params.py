"""params: notebook parameters are coerced to their declared types where they enter, or fail naming the parameter."""
from __future__ import annotations

import ast
import json
import math
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from collm_lib import params, settings
from collm_lib.data import DATASETS

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("0*.ipynb"))


def _rejects(name: str, value: typing.Any) -> str:
    """check() raises a ValueError naming `name`; returns its message for further asserts."""
    with pytest.raises(ValueError) as info:
        params.check({name: value})
    message = str(info.value)
    assert message.startswith(f"parameter {name}: "), message
    return message


# --- the three reported cases -------------------------------------------------------------------------------

def test_rebuild_false_string_is_false():
    assert params.check({"rebuild": "false"}) == {"rebuild": False}


def test_lr_abc_names_lr_the_value_and_what_it_accepts():
    assert _rejects("lr", "abc") == ("parameter lr: 'abc' is not a number; "
                                     "give a positive float such as 1e-3, or None for the profile's value")


def test_dim_64_5_names_dim():
    message = _rejects("dim", 64.5)
    assert "64.5" in message and "not an integer" in message and "positive int" in message


# --- booleans -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [
    (True, True), (False, False), ("true", True), ("FALSE", False), ("Yes", True), ("no", False),
    ("1", True), ("0", False), (1, True), (0, False), (" True ", True)])
def test_bool_accepts(value, expected):
    assert params.check({"rebuild": value})["rebuild"] is expected


@pytest.mark.parametrize("value", ["maybe", "", "on", 2, -1, 1.0, 0.0, [], None])
def test_bool_rejects(value):
    assert "give True or False" in _rejects("rebuild", value)


def test_optional_bool_takes_none():
    assert params.check({"shared_prefix": None, "unfreeze_mf": "yes"}) == {"shared_prefix": None, "unfreeze_mf": True}
    _rejects("shared_prefix", "sometimes")


# --- integers -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [64, 64.0, "64", " 64 "])
def test_int_accepts(value):
    out = params.check({"dim": value})["dim"]
    assert out == 64 and type(out) is int


@pytest.mark.parametrize("value, problem", [
    (64.5, "not an integer"), ("64.5", "not an integer"), ("abc", "not an integer"), (True, "not an integer"),
    (False, "not an integer"), (math.inf, "not an integer"), (math.nan, "not an integer"), ([64], "not an integer"),
    (0, "below 1"), (-3, "below 1"), (None, "None is not accepted")])
def test_int_rejects(value, problem):
    assert problem in _rejects("dim", value)


def test_int_bounds_follow_the_spec():
    assert params.check({"seed": 0, "n_users": 0, "n_full_users": "0"}) == {"seed": 0, "n_users": 0, "n_full_users": 0}
    assert params.check({"seed": 2**32 - 1})["seed"] == 2**32 - 1
    _rejects("seed", -1)
    _rejects("seed", 2**32)  # numpy's seed limit: would fail later inside settings.set_seed
    _rejects("n_users", -1)
    _rejects("n_neighbors", 0)
    assert params.check({"n_neighbors": None, "n_users": None}) == {"n_neighbors": None, "n_users": None}


# --- floats ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [(1, 1.0), (1e-3, 1e-3), ("1e-3", 1e-3), (" 0.5 ", 0.5), ("2", 2.0)])
def test_float_accepts(value, expected):
    out = params.check({"init_std": value})["init_std"]
    assert out == expected and type(out) is float


@pytest.mark.parametrize("value, problem", [
    (math.nan, "not finite"), (math.inf, "not finite"), ("nan", "not finite"), ("-inf", "not finite"),
    ("abc", "not a number"), ("", "not a number"), (True, "not a number"), ([0.1], "not a number"),
    (0, "not positive"), (-1e-3, "not positive"), (None, "None is not accepted")])
def test_float_rejects(value, problem):
    assert problem in _rejects("init_std", value)


def test_lr_none_means_the_profiles_value():
    assert params.check({"lr": None}) == {"lr": None}
    assert params.check({"lr": "1e-4"}) == {"lr": 1e-4}


# --- lists ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [
    ([1e-4, 1e-3], [1e-4, 1e-3]), ((1e-4, 1e-3), [1e-4, 1e-3]), ("[1e-4, 1e-3]", [1e-4, 1e-3]),
    ("1e-4,1e-3", [1e-4, 1e-3]), ("1e-4, 1e-3", [1e-4, 1e-3]), (["1e-4", 1], [1e-4, 1.0]),
    (1e-3, [1e-3]), ("1e-3", [1e-3])])  # a lone value: what papermill makes of `-p lrs 1e-3`
def test_float_list_accepts(value, expected):
    assert params.check({"lrs": value}) == {"lrs": expected}


@pytest.mark.parametrize("value, expected", [
    ([10, 20, 50], [10, 20, 50]), ("10,20,50", [10, 20, 50]), ("[10, 20, 50]", [10, 20, 50]),
    ([10.0, "20"], [10, 20]), (10, [10])])
def test_int_list_accepts(value, expected):
    out = params.check({"ks": value})["ks"]
    assert out == expected and all(type(k) is int for k in out)


@pytest.mark.parametrize("value, problem", [
    ([10, 20.5], "20.5"), ([10, 0], "below 1"), ("10,abc", "'abc'"), ("[10, true]", "True"), ([], "empty"),
    ("[]", "empty"), ("", "not an integer"), ('{"a": 1}', "not a list"), ({"a": 1}, "not a list"),
    ([[10]], "not an integer")])
def test_int_list_rejects(value, problem):
    message = _rejects("ks", value)
    assert problem in message and "list of positive ints" in message


def test_optional_lists_take_none():
    names = ("ks", "neighbor_curve", "lrs", "dims")
    assert params.check(dict.fromkeys(names)) == dict.fromkeys(names)
    assert params.check({"dims": "64,128", "neighbor_curve": [1, 10]}) == {"dims": [64, 128], "neighbor_curve": [1, 10]}
    _rejects("dims", [64, 64.5])
    _rejects("lrs", [1e-3, "nan"])


# --- choices --------------------------------------------------------------------------------------------------

def test_datasets_are_names_from_the_data_registry():
    assert params.check({"datasets": "ml-1m, bookcrossing"}) == {"datasets": ["ml-1m", "bookcrossing"]}
    assert params.check({"datasets": "ml-1m"}) == {"datasets": ["ml-1m"]}
    assert params.check({"datasets": list(DATASETS)}) == {"datasets": list(DATASETS)}
    message = _rejects("datasets", ["ml-1m", "ml-2m"])
    assert "'ml-2m'" in message and all(name in message for name in DATASETS)
    _rejects("datasets", None)


def test_dataset_is_one_name():
    assert params.check({"dataset": "bookcrossing"}) == {"dataset": "bookcrossing"}
    for bad in ("ML-1M", "", 1, None, ["ml-1m"]):
        _rejects("dataset", bad)


def test_profile_is_none_or_a_known_profile():
    for name in settings.PROFILES:
        assert params.check({"profile": name}) == {"profile": name}
    assert params.check({"profile": None}) == {"profile": None}
    message = _rejects("profile", "laptop")
    assert all(repr(name) in message for name in settings.PROFILES)


def test_index_kind_and_item_text_choices():
    assert params.check({"index_kind": "ivf", "item_text": "hashed"}) == {"index_kind": "ivf", "item_text": "hashed"}
    assert params.check({"index_kind": None, "item_text": None}) == {"index_kind": None, "item_text": None}
    assert "'flat'" in _rejects("index_kind", "HNSW")
    assert "'llm'" in _rejects("item_text", "bert")


def test_index_kind_and_item_text_match_the_library():
    """The spec's choices track their sources: the index kinds read from configs, the item texts a literal copy
    of RerankConfig's Literal."""
    from collm_lib import configs
    assert params.INDEX_KINDS == configs.KINDS
    hints = typing.get_type_hints(configs.RerankConfig)
    assert params.ITEM_TEXTS == typing.get_args(hints["item_text"])


# --- strings, paths, overrides --------------------------------------------------------------------------------

def test_model_is_a_non_empty_string():
    assert params.check({"model": "smollm2-135m"}) == {"model": "smollm2-135m"}
    for bad in ("", "  ", 7, None):
        _rejects("model", bad)


def test_lora_takes_llmconfigs_lora_fields_as_a_dict_or_json():
    from dataclasses import fields

    from collm_lib.llm import LLMConfig

    assert params.LORA_FIELDS == tuple(f.name for f in fields(LLMConfig) if f.name.startswith("lora_"))
    assert params.check({"lora": {}}) == {"lora": {}}
    given = '{"lora_r": 16, "lora_alpha": "32", "lora_dropout": 0, "lora_targets": ["all-linear"]}'
    lora = params.check({"lora": given})["lora"]
    assert lora == {"lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.0, "lora_targets": ("all-linear",)}
    assert LLMConfig(**lora).lora_targets == ("all-linear",)
    for bad, problem in (({"lora_rank": 4}, "'lora_rank', which is not one of 'lora_r'"),
                         ({"lora_r": 0}, "'lora_r' to 0, which"), ({"lora_dropout": 1.5}, "is not in [0, 1)"),
                         ("r=4", "is not JSON"), ([4], "is not a dict")):
        with pytest.raises(ValueError) as err:
            params.check({"lora": bad})
        assert "parameter lora" in str(err.value) and problem in str(err.value)


def test_paths_are_none_or_non_empty_strings(tmp_path):
    assert params.check({"data_dir": None, "work_dir": str(tmp_path)}) == {"data_dir": None, "work_dir": str(tmp_path)}
    assert params.check({"work_dir": tmp_path}) == {"work_dir": str(tmp_path)}
    for bad in ("", 5, True, ["a"]):
        _rejects("data_dir", bad)


def test_overrides_map_datasets_to_dicts():
    change = {"bookcrossing": {"patience": 5}}
    assert params.check({"overrides": {}}) == {"overrides": {}}
    out = params.check({"overrides": change})["overrides"]
    assert out == change and out["bookcrossing"] is not change["bookcrossing"]  # the run's copy, not the caller's
    assert params.check({"overrides": json.dumps(change)}) == {"overrides": change}
    assert "'ml-2m'" in _rejects("overrides", {"ml-2m": {"patience": 5}})
    assert "not a dict" in _rejects("overrides", {"ml-1m": 5})
    for bad in ("abc", "[1]", [], None):
        _rejects("overrides", bad)


# --- the check itself -----------------------------------------------------------------------------------------

def test_unknown_names_are_named_with_the_known_ones():
    with pytest.raises(ValueError) as info:
        params.check({"lr": 1e-3, "learning_rate": 1e-3})
    message = str(info.value)
    assert "learning_rate" in message and all(name in message for name in params.SPECS)


def test_check_returns_new_dict_of_the_given_names_only():
    given = {"dim": "64", "rebuild": "no"}
    assert params.check(given) == {"dim": 64, "rebuild": False}
    assert given == {"dim": "64", "rebuild": "no"}
    assert params.check({}) == {}


def test_importing_params_does_not_import_torch():
    code = "import sys, collm_lib.params; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def _parameters_cell(path: Path) -> dict[str, typing.Any]:
    cells = [c for c in json.loads(path.read_text())["cells"] if "parameters" in c["metadata"].get("tags", [])]
    assert len(cells) == 1, f"{path.name}: {len(cells)} cells tagged 'parameters'"
    tree = ast.parse("".join(cells[0]["source"]))
    assert all(isinstance(node, ast.Assign) for node in tree.body), f"{path.name}: parameters cell is not only assignments"
    return {node.targets[0].id: ast.literal_eval(node.value) for node in tree.body}


def test_notebooks_exist():
    assert len(NOTEBOOKS) == 9


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_notebook_parameter_has_a_spec_its_default_passes(path):
    defaults = _parameters_cell(path)
    assert defaults, f"{path.name}: empty parameters cell"
    assert sorted(set(defaults) - set(params.SPECS)) == [], f"{path.name}: parameters without a spec in params.SPECS"
    checked = params.check(defaults)
    assert checked == defaults
    assert [type(v) for v in checked.values()] == [type(v) for v in defaults.values()]
