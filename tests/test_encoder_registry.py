"""A new encoder is one module and one registry entry: the toy of tests/toy_encoder.py, registered here and nowhere
else, is found by the profiles, `collm config`, the CLI, notebook 07's parameters and the comparison, trains as a run
of its own kind, and is refused where it does not belong; the built-in ones keep their kinds (so their runs' names)."""
from __future__ import annotations

import dataclasses
import json
import re

import pytest

from collm_lib import cli, comparison, encoder_registry, encoders, params, profiles, rules, settings
from collm_lib.configs import MFConfig, TrainSettings
import toy_encoder
from tiny_llm import movie_splits


@pytest.fixture
def toy(monkeypatch) -> str:
    monkeypatch.setattr(encoder_registry, "ENCODERS", dict(encoder_registry.ENCODERS))  # this test's registry
    encoder_registry.register("toy", toy_encoder.ENTRY)
    return "toy"


def test_a_registered_encoder_is_found_by_every_reader(toy, capsys):
    for profile in settings.PROFILES:
        assert profiles.encoder(profile, "ml-1m", toy) == toy_encoder.ToyConfig()  # no profile entry: its defaults
        assert toy in profiles.compare(profile).encoders
    assert toy in profiles.compare("gpu").stage2 and toy not in profiles.compare("cpu").stage2  # gpu: all of them
    assert toy in profiles.steps()
    assert cli.main(["config", "--profile", "smoke", "--step", toy, "--json"]) == 0
    rows = {row["field"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["dim"] == {"field": "dim", "value": 8, "source": "default (ToyConfig)"}
    # notebook 07's parameters and its comparison table
    assert params.check({"encoders": [toy, "mf"], "stage2_encoders": [toy]}) == {
        "encoders": [toy, "mf"], "stage2_encoders": [toy]}
    assert (comparison.alone(toy), comparison.over(toy)) == ("Toy", "CoLLM-FaissRet over Toy")
    # the CLI's --encoder (its help lists it) and the MF settings it refuses
    parser = cli.build_parser()
    assert parser.parse_args(["encoder", "--encoder", toy]).encoder == toy
    with pytest.raises(SystemExit):
        parser.parse_args(["encoder", "--help"])
    assert "toy: a toy of tests/toy_encoder.py" in " ".join(capsys.readouterr().out.split())
    with pytest.raises(SystemExit):
        cli.mf_config(parser.parse_args(["encoder", "--encoder", toy, "--dim", "8"]), "ml-1m")
    assert "apply to --encoder mf or mf-bias, not toy" in capsys.readouterr().err


def test_a_registered_encoder_trains_as_a_run_of_its_own_kind(toy, tmp_path, monkeypatch, one_thread):
    monkeypatch.setenv("COLLM_WORK_DIR", str(tmp_path))
    splits = movie_splits()
    plan = profiles.compare("smoke", encoders=(toy,))
    run = comparison.encoder_runs(plan, splits, seed=7, progress=False)[toy]
    assert run.name.startswith("toy-d8-") and (run / "toy.pt").is_file() and encoders.kind_at(run) == toy
    model = encoders.load(run)
    assert type(model) is toy_encoder.Toy
    assert encoders.check_saved_scores(run, splits) == {"rows": len(splits.test), "auc": pytest.approx(
        encoders.load_result(run).metrics["test"]["all"]["auc"]), "rescored": True}
    assert encoders.ensure(splits, profiles.encoder("smoke", name=toy, seed=7), progress=False) == run  # found


def test_its_config_is_checked_by_its_own_and_its_base_rules(toy):
    with pytest.raises(rules.ConfigError, match=r"ToyConfig\.dim: 0") as own:
        toy_encoder.ToyConfig(dim=0)
    with pytest.raises(rules.ConfigError, match=r"ToyConfig\.lr: -1") as inherited:
        toy_encoder.ToyConfig(lr=-1)
    assert own.value.path == ("dim",) and inherited.value.path == ("lr",)


def test_unknown_names_and_configs_are_refused_naming_the_registry():
    with pytest.raises(ValueError, match="encoder 'toy': choose one of mf, mf-bias, lightgcn, sasrec") as unknown:
        profiles.encoder("smoke", name="toy")
    assert "encoder_registry.py" in str(unknown.value)
    with pytest.raises(TypeError, match="ToyConfig is not an encoder config"):
        encoders.kind_of(toy_encoder.ToyConfig())  # not registered: no run kind
    assert params.check({"encoders": ["mf"]}) == {"encoders": ["mf"]}
    with pytest.raises(ValueError, match="encoders"):
        params.check({"encoders": ["toy"]})


def test_the_built_in_encoders_keep_their_run_kinds():
    """A kind names the run folder and weights file: the committed runs stay found only if these hold."""
    assert {n: encoder_registry.kind(n) for n in encoder_registry.names()} == {
        "mf": "mf", "mf-bias": "mf", "lightgcn": "lightgcn", "sasrec": "sasrec"}
    assert encoders.kind_of(profiles.encoder("smoke", name="mf-bias")) == "mf"
    assert profiles.encoder("smoke", name="mf-bias") == MFConfig(**{**vars(profiles.mf("smoke")), "bias": True})
    assert [encoders.weights_file(k) for k in encoder_registry.kinds()] == ["mf.pt", "lightgcn.pt", "sasrec.pt"]


@dataclasses.dataclass
class _Unruled(TrainSettings):
    dim: int = 8
    width: int = 3  # no rule: refused before any config is built


@pytest.mark.parametrize("name, entry, problem", [
    ("mf", toy_encoder.ENTRY, "encoder 'mf' is registered already (MF)"),
    ("my toy", toy_encoder.ENTRY, "use letters, digits, '-' and '_'"),
    ("toy", dataclasses.replace(toy_encoder.ENTRY, config="toy_encoder:Nope"), "has no attribute 'Nope'"),
    ("toy", dataclasses.replace(toy_encoder.ENTRY, config="no_such_module:X"), "No module named 'no_such_module'"),
    ("toy", dataclasses.replace(toy_encoder.ENTRY, config="toy_encoder:Toy"), "is not a dataclass subclassing"),
    ("toy", dataclasses.replace(toy_encoder.ENTRY, config="collm_lib.configs:TrainSettings"), "has no `dim` field"),
    ("toy", dataclasses.replace(toy_encoder.ENTRY, config="test_encoder_registry:_Unruled"), "width have no rule"),
    ("toy", dataclasses.replace(toy_encoder.ENTRY, builder="toy_encoder:ENTRY"), "is not callable"),
])
def test_register_refuses_an_entry_that_does_not_resolve(monkeypatch, name, entry, problem):
    monkeypatch.setattr(encoder_registry, "ENCODERS", dict(encoder_registry.ENCODERS))
    with pytest.raises(ValueError, match=re.escape(problem)):
        encoder_registry.register(name, entry)
    assert list(encoder_registry.ENCODERS) == ["mf", "mf-bias", "lightgcn", "sasrec"]  # nothing half-registered
