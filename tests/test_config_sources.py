"""`collm config`: every step's merged settings with the layer each value came from (collm_lib/config_sources.py)."""
from __future__ import annotations

import dataclasses
import json

import pytest

from collm_lib import cli, config_sources, profiles


def _by_field(step: str, profile: str, dataset: str = "ml-1m") -> dict[str, dict]:
    return {r["field"]: r for r in config_sources.sources(step, profile, dataset)}


@pytest.mark.parametrize("step", profiles.steps())
@pytest.mark.parametrize("profile", ["smoke", "cpu", "gpu"])
def test_the_values_shown_are_the_configs_the_notebooks_build(step, profile):
    rows = _by_field(step, profile, "bookcrossing")
    built = config_sources.build(step, profile, "bookcrossing")
    flat = config_sources._flat(dataclasses.asdict(built))
    assert {k: r["value"] for k, r in rows.items()} == flat
    assert all(r["source"] for r in rows.values())


def test_each_value_names_the_last_layer_that_set_it():
    stage2 = _by_field("stage2", "cpu")
    assert stage2["max_steps"]["value"] == 120 and stage2["max_steps"]["source"] == "profiles.STAGE_BY_STAGE['cpu'][2]"
    assert stage2["batch_size"]["source"] == "profiles.STAGE['cpu']"
    assert stage2["lr"]["source"] == "default (StageConfig)" and stage2["llm.lora_r"]["source"] == "default (LLMConfig)"
    assert stage2["stage"]["source"] == "the step (stage2)"
    assert "here" in stage2["llm.precision"] and "here" not in stage2["lr"]  # auto: what it resolves to here
    mf = _by_field("mf", "cpu", "bookcrossing")
    assert (mf["patience"]["value"], mf["patience"]["source"]) == (5, "profiles.MF_DATASET['bookcrossing']")
    assert (mf["bias"]["value"], mf["bias"]["source"]) == (True, "profiles.MF_MODEL['bookcrossing']")
    assert _by_field("mf", "smoke", "bookcrossing")["patience"]["source"] == "profiles.MF['smoke']"  # no per-dataset
    assert _by_field("mf-bias", "cpu")["bias"]["source"] == "the encoder name mf-bias"
    assert _by_field("rerank", "cpu")["index.kind"]["source"] == "profiles.RERANK['cpu']"


def test_the_command_prints_text_and_json(capsys):
    assert cli.main(["config", "--profile", "cpu", "--step", "stage1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("stage1 at profile cpu (defaults < profile tables")
    assert any(line.split()[:2] == ["max_steps", "100"] and "STAGE_BY_STAGE['cpu'][1]" in line
               for line in out.splitlines())
    assert cli.main(["config", "--profile", "gpu", "--step", "index", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {"field": "nprobe", "value": 64, "source": "profiles.INDEX['gpu']"} in rows
    with pytest.raises(SystemExit):
        cli.main(["config", "--step", "stage3"])
    assert "invalid choice: 'stage3'" in capsys.readouterr().err
    assert cli.main(["config", "--step", "mf", "--dataset", "no-such-data"]) == 1  # not shown as if it were one
    assert "unknown dataset 'no-such-data'" in capsys.readouterr().err
