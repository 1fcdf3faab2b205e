"""Every config each profile produces (collm_lib.profiles) equals the snapshot in tests/expected/profiles.json, and
docs/profiles.md's table shows them.

Run identities hash these configs, so a changed value makes every run of that profile a new run: this test is the
guard that such a change is deliberate. After changing a value in collm_lib/profiles.py on purpose, regenerate the
snapshot and the table, and commit them with the change:

    .venv/bin/python tests/test_profiles.py
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from collm_lib import encoder_registry, plan_runs, profiles, retrieval, settings
from collm_lib.data import DATASETS

EXPECTED = Path(__file__).resolve().parent / "expected" / "profiles.json"
DOC = Path(__file__).resolve().parent.parent / "docs" / "profiles.md"
TABLE_START, TABLE_END = "<!-- table: tests/test_profiles.py -->\n", "<!-- end of table -->\n"


def _plain(config: Any) -> Any:
    return json.loads(json.dumps(dataclasses.asdict(config)))


def _sweep(plan: profiles.SweepPlan) -> dict[str, Any]:
    """The configs a plan's own runs get: the other datasets' stages (and stage 2's MF), the MFs of Figure 3's
    embedding-size sweep, CTRL(DIN)."""
    made = {s: plan_runs.stage_run(plan, s, "amazon-book-msl") for s in (1, 2)}
    return {"stage1": _plain(made[1].stage), "stage2": _plain(made[2].stage), "stage2_mf": _plain(made[2].mf),
            "figure3_point": _plain(plan_runs.stage_run(plan, 2, "ml-1m", sweep=True).stage),
            "mf_dim_mf": _plain(plan_runs.stage_run(plan, 2, "ml-1m", **plan.mf).mf),
            "ctrl": _plain(profiles.ctrl(plan.profile, **plan.ctrl))}


def snapshot() -> dict[str, Any]:
    """{profile: {step: config as JSON}}: MF for no dataset ("") and every built-in one, both stages, the plan and
    what its runs get."""
    return {p: {"prepare": _plain(profiles.prepare(p)),
                "mf": {name or "": _plain(profiles.mf(p, name)) for name in (None, *DATASETS)},
                "stage": {str(s): _plain(profiles.stage(p, s)) for s in (1, 2)},
                "index": _plain(profiles.index(p)), "rerank": _plain(profiles.rerank(p)),
                "ctrl": _plain(profiles.ctrl(p)), "plan": _plain(profiles.plan(p)),
                "encoder": {name: _plain(profiles.encoder(p, name=name)) for name in encoder_registry.names()},
                "compare": _plain(profiles.compare(p)),
                "sweep": _sweep(profiles.plan(p))}
            for p in settings.PROFILES}


def _one(value: Any) -> str:
    """A value as the table shows it: None (no limit) "all", a tuple its items, a float as 1e-4."""
    if isinstance(value, tuple):
        return ", ".join(map(_one, value))
    if isinstance(value, float):
        return f"{value:.0e}".replace("e-0", "e-")
    return "all" if value is None else str(value)


def _shown(*values: Any) -> str:
    return " / ".join(map(_one, values))


def _stages(p: str, field: str, **plan_stage: Any) -> str:
    """A StageConfig field of stage 1 / stage 2, once when both stages agree."""
    return " / ".join(dict.fromkeys(_one(getattr(profiles.stage(p, s, **plan_stage), field)) for s in (1, 2)))


def _evaluations(p: str) -> str:
    second = profiles.stage(p, 2)
    early = f" (stage 2 also every {second.eval_every_early} up to step {second.early_until})"
    return _stages(p, "eval_every") + (early if second.eval_every_early else "")


def _index(config: Any) -> str:
    where = {"auto": "GPU if any", True: "GPU", False: "CPU"}[config.use_gpu]
    ivf = f"nlist {config.nlist}, nprobe {config.nprobe}"
    detail = {"flat": "exact", "ivf": ivf, "hnsw": f"M {config.hnsw_m}, efSearch {config.ef_search}",
              "auto": f"exact below {retrieval.EXACT_BELOW:,} items, else ivf {ivf}"}[config.kind]
    return f"{config.kind} ({detail}; {where})"


def _datasets(p: str) -> str:
    built = profiles.prepare(p).datasets
    return "all" if built == tuple(DATASETS) else "all but " + ", ".join(n for n in DATASETS if n not in built)


ROWS = [  # (step, setting, its value for a profile); stage settings: stage 1 / stage 2 where they differ
    ("01 data", "datasets built", _datasets),
    ("02 MF", "epochs (max) / patience", lambda p: _shown(profiles.mf(p).max_epochs, profiles.mf(p).patience)),
    ("02 MF", "patience on BookCrossing / the Amazon substitute",
     lambda p: _shown(profiles.mf(p, "bookcrossing").patience, profiles.mf(p, "amazon-book-msl").patience)),
    ("03-04 stages", "train rows", lambda p: _stages(p, "train_rows")),
    ("03-04 stages", "valid / test rows", lambda p: " / ".join(_stages(p, f) for f in ("eval_rows", "test_rows"))),
    ("03-04 stages", "batch", lambda p: _stages(p, "batch_size")),
    ("03-04 stages", "steps (max)", lambda p: _stages(p, "max_steps")),
    ("03-04 stages", "evaluation every", _evaluations),
    ("03-04 stages", "patience (evaluations)", lambda p: _stages(p, "patience")),
    ("03-04 stages", "scoring batch", lambda p: _stages(p, "score_batch_size")),
    ("05 Faiss", "index", lambda p: _index(profiles.index(p))),
    ("05 re-rank", "users / whole-catalogue users", lambda p: _shown(profiles.rerank(p).n_users,
                                                                      profiles.rerank(p).n_full_users)),
    ("05 re-rank", "K", lambda p: _shown(profiles.rerank(p).ks)),
    ("05 re-rank", "index", lambda p: _index(profiles.rerank(p).index)),
    ("05 re-rank", "cold-item text", lambda p: profiles.rerank(p).item_text),
    ("06 CTRL(DIN)", "aligned rows / align epochs / epochs (max)",
     lambda p: " / ".join(_shown(getattr(profiles.ctrl(p, **profiles.plan(p).ctrl), f))
                          for f in ("align_rows", "align_epochs", "max_epochs"))),
    ("09 plan", "Figure 3 learning rates", lambda p: _shown(profiles.plan(p).lrs)),
    ("09 plan", "Figure 3 MF sizes d", lambda p: _shown(profiles.plan(p).dims)),
    ("09 plan", "... their MFs: epochs (max) / patience",
     lambda p: _shown(*(getattr(profiles.mf(p, **profiles.plan(p).mf), f) for f in ("max_epochs", "patience")))),
    ("09 plan", "other datasets' stages: train / test rows",
     lambda p: " / ".join(_stages(p, f, **profiles.plan(p).stage) for f in ("train_rows", "test_rows"))),
    ("09 plan", "... steps (max)", lambda p: _stages(p, "max_steps", **profiles.plan(p).stage)),
    ("09 plan", "Figure 3's ML-1M points: train / test rows", lambda p: " / ".join(
        _stages(p, f, **profiles.plan(p).sweep) for f in ("train_rows", "test_rows"))),
    ("06/08 plan", "seeds: MF and CTRL(DIN) / stage 2 (ML-1M)",
     lambda p: _shown(profiles.plan(p).n_seeds, profiles.plan(p).n_llm_seeds)),
    ("07 encoders", "scored alone / stage 2 over", lambda p: " / ".join(_shown(getattr(profiles.compare(p), f))
                                                                         for f in ("encoders", "stage2"))),
    ("07 encoders", "stage 2 steps (max) per encoder", lambda p: ", ".join(
        f"{name} {profiles.stage(p, 2, **profiles.compare(p).stage.get(name, {})).max_steps}"
        for name in profiles.compare(p).stage2)),
]


def table() -> str:
    """docs/profiles.md's table of the key sizes, from collm_lib.profiles."""
    lines = ["| step | setting | " + " | ".join(f"`{p}`" for p in settings.PROFILES) + " |",
             "|---|---|" + "---|" * len(settings.PROFILES)]
    lines += [f"| {step} | {name} | " + " | ".join(value(p) for p in settings.PROFILES) + " |"
              for step, name, value in ROWS]
    return "\n".join(lines) + "\n"


def _doc_with(text: str, made: str) -> str:
    head, rest = text.split(TABLE_START)
    return head + TABLE_START + made + TABLE_END + rest.split(TABLE_END, 1)[1]


def test_doc_table_is_current():
    text = DOC.read_text(encoding="utf-8")
    assert _doc_with(text, table()) == text, f"{DOC.name}'s table is stale: run {Path(__file__).name} (its docstring)"


def test_profiles_match_the_snapshot():
    expected = json.loads(EXPECTED.read_text(encoding="utf-8"))
    made = snapshot()
    for profile in expected:
        for step in expected[profile]:
            assert made[profile][step] == expected[profile][step], (
                f"profiles.{step}({profile!r}) changed; if on purpose, regenerate {EXPECTED.name} (see this docstring)")
    assert made.keys() == expected.keys() and all(made[p].keys() == expected[p].keys() for p in made)


def _sequences(value: Any) -> list[type]:
    if dataclasses.is_dataclass(value):
        return [t for f in dataclasses.fields(value) for t in _sequences(getattr(value, f.name))]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _sequences(v)]
    return [type(value)] if isinstance(value, (list, tuple)) else []


@pytest.mark.parametrize("profile", settings.PROFILES)
def test_sequences_are_tuples(profile):
    """JSON does not tell a tuple from a list: every sequence in a config is a tuple, as the dataclasses declare."""
    configs = [profiles.prepare(profile), profiles.mf(profile), profiles.stage(profile, 1), profiles.index(profile),
               profiles.rerank(profile), profiles.ctrl(profile), profiles.plan(profile)]
    assert set(_sequences(configs[-1]) + [t for c in configs[:-1] for t in _sequences(c)]) <= {tuple}


def test_overrides_and_copies():
    assert profiles.stage("gpu", 1).max_steps == 2400 and profiles.stage("gpu", 2).eval_every_early == 20
    assert profiles.stage("cpu", 2, lr=3e-4).lr == 3e-4
    assert profiles.mf("cpu", "bookcrossing").patience == 5 and profiles.mf("smoke", "bookcrossing").patience == 1
    assert profiles.mf("smoke", "bookcrossing").bias and not profiles.mf("cpu", "ml-1m").bias
    assert profiles.rerank("gpu").index == profiles.index("gpu")
    profiles.plan("cpu").stage["test_rows"] = 1  # a caller changing its plan leaves the table alone
    profiles.rerank("smoke").index.kind = "hnsw"
    assert profiles.plan("cpu").stage["test_rows"] == 1000 and profiles.rerank("smoke").index.kind == "flat"
    with pytest.raises(ValueError, match="unknown profile"):
        profiles.ctrl("laptop")


if __name__ == "__main__":  # regenerate the snapshot and the table (a deliberate profile change)
    EXPECTED.write_text(json.dumps(snapshot(), indent=1, sort_keys=True) + "\n", encoding="utf-8")
    DOC.write_text(_doc_with(DOC.read_text(encoding="utf-8"), table()), encoding="utf-8")
    print(f"wrote {EXPECTED} and {DOC}'s table")
