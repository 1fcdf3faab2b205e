"""The pipeline's steps (collm_lib/pipeline.py) make the profile's runs in the folders their identities name, and
find them finished the second time; a RunContext's configs are the profile's."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from collm_lib import encoders, pipeline, profiles, runs
from collm_lib.llm import LLMConfig
from tiny_llm import movie_splits


def test_the_steps_make_the_runs_their_folders_name_and_find_them_again(tiny, tmp_path, monkeypatch, one_thread):
    monkeypatch.setenv("COLLM_WORK_DIR", str(tmp_path))
    splits = movie_splits()
    ctx = pipeline.RunContext(splits, "smoke", seed=5, llm=LLMConfig(model=str(tiny)), progress=False)
    assert ctx.stage_config(2) == profiles.stage("smoke", 2, dataset=splits.name, seed=5, llm=ctx.llm)
    assert ctx.stage_config(1, max_steps=1).max_steps == 1
    assert ctx.encoder_config("sasrec") == profiles.encoder("smoke", splits.name, "sasrec", seed=5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ctx.seed = 6  # the steps of one context share it

    first = pipeline.stage1(ctx)
    named = pipeline.folders(ctx)  # the MF trained; stage 2's folder named from stage 1's fingerprint
    assert named["mf"] == encoders.default_dir(splits, profiles.mf("smoke", splits.name, seed=5))
    assert Path(first["run_dir"]) == named["stage1"] and runs.finished(named["mf"]) is not None
    assert runs.finished(named["stage2"]) is None
    second = pipeline.stage2(ctx, first["run_dir"], named["mf"])
    assert Path(second["run_dir"]) == named["stage2"] and runs.finished(named["stage2"]) is not None
    assert second["upstream"]["mf"] == runs.finished(named["mf"])["fingerprint"]
    assert pipeline.stage2(ctx, first["run_dir"], pipeline.encoder(ctx)) == second  # found, not retrained
