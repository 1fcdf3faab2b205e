"""Bundles (collm_lib.bundle) and replay mode: results travel without weights, come back finished, and a replay
never trains; the data's identity survives a change of pickle bytes (another pandas on the GPU box)."""
from __future__ import annotations

import tarfile
from pathlib import Path

import pandas as pd
import pytest

from collm_lib import baselines, bundle, collab, encoders, hashing, runs
from collm_lib.data import common
from collm_lib.io import read_json
from tiny_llm import movie_splits


@pytest.fixture(autouse=True)
def work(monkeypatch, tmp_path) -> Path:
    monkeypatch.setenv("COLLM_WORK_DIR", str(tmp_path / "work"))
    monkeypatch.delenv("COLLM_REPLAY", raising=False)
    return tmp_path / "work"


INFO = {"part": "mf", "device": "cpu", "profile": "smoke", "seed": 2023, "model": "smollm2-135m"}  # as reproduce


def _mf(splits=None) -> Path:
    splits = splits or movie_splits()
    return encoders.ensure(splits, collab.MFConfig(dim=8, max_epochs=2, patience=1, batch_size=16), progress=False)


def test_pack_leaves_weights_out_and_unpack_gives_finished_runs(tmp_path, work, monkeypatch):
    with runs.track() as used:
        folder = _mf()
    assert used == {folder.resolve()}
    target = bundle.pack(tmp_path / "mf.tar.gz", work, sorted(used), INFO)
    with tarfile.open(target) as tar:
        names = tar.getnames()
    assert not [n for n in names if n.endswith(".pt")] and any(n.endswith("test_scores.csv") for n in names)
    manifest = bundle.read_manifest(target)
    rel = folder.relative_to(work).as_posix()
    assert set(manifest["runs"][rel]["left_behind"]) == {"mf.pt"} and manifest["code"] == bundle.code_fingerprint()

    other = tmp_path / "replay"
    bundle.unpack(target, other)
    copy = other / rel
    assert runs.finished(copy) is not None  # finished although mf.pt stayed behind
    assert not (copy / "mf.pt").exists()
    assert encoders.load_result(copy).model is None
    with pytest.raises(FileNotFoundError, match="without its weights"):
        encoders.load(copy)
    assert (copy / "test_scores.csv").read_bytes() == (folder / "test_scores.csv").read_bytes()
    kept = read_json(other / "bundles" / f"{hashing.sha256_file(target)[:16]}.json")  # unpack keeps its bundle.json
    assert kept["part"] == "mf"
    assert kept["origin"] == {"path": str(target.resolve()), "sha256": hashing.sha256_file(target)}


def test_a_replay_trains_nothing(monkeypatch, work):
    splits = movie_splits()
    _mf(splits)  # finished before the replay: found
    monkeypatch.setenv("COLLM_REPLAY", "1")
    assert _mf(splits).is_dir()
    with pytest.raises(runs.NotInBundles, match="in none of the bundles"):
        encoders.ensure(splits, collab.MFConfig(dim=4, max_epochs=1, batch_size=16), progress=False)


def test_same_row_baselines_are_a_run_with_per_row_scores(tmp_path, work, monkeypatch):
    """MF on a stage's rows: saved per row, recomputable, and read back (not rescored) the second time."""
    splits = movie_splits()
    mf = _mf(splits)
    stage = tmp_path / "stage"  # a finished stage run's files, as run_stage leaves them
    rows = splits.test.assign(score=0.0)[["uid", "iid", "label", "score", "not_cold"]]
    stage.mkdir()
    rows.to_csv(stage / "scores_test.csv", index=False)
    runs.finish(stage, "x" * 64, ["scores_test.csv"])
    first = baselines.baselines_on_same_rows(splits, stage, mf)
    saved = next((work / "runs" / splits.name).glob("same-rows-*"))
    per_row = pd.read_csv(saved / "scores_MF.csv")
    assert per_row[["uid", "iid", "label"]].equals(rows[["uid", "iid", "label"]])
    assert per_row["score"].to_numpy() == pytest.approx(encoders.score(encoders.load(mf), rows))
    monkeypatch.setattr(baselines.encoders, "load", lambda folder: pytest.fail("rescored a finished comparison"))
    assert baselines.baselines_on_same_rows(splits, stage, mf) == first


def test_pack_refuses_a_bundle_over_the_size_limit(tmp_path, work, monkeypatch):
    with runs.track() as used:
        _mf()
    monkeypatch.setattr(bundle, "MAX_BYTES", 100)
    with pytest.raises(ValueError, match="over the 0 MiB"):
        bundle.pack(tmp_path / "mf.tar.gz", work, sorted(used), {})
    assert list(tmp_path.glob("*mf.tar.gz*")) == []  # nothing half-written


def test_data_identity_is_content_not_pickle_bytes(tmp_path):
    """The GPU box processes the raw data with its own pandas: other pickle bytes, same content, same identity."""
    common.save_processed(movie_splits(), tmp_path / "a")
    cached = common.load_processed("ml-synthetic", tmp_path / "a")
    assert runs.data_fingerprint(cached) == runs.data_fingerprint(movie_splits())  # recorded == recomputed
    for name in common.SPLIT_NAMES:  # the frames through another pickle protocol: other bytes, same content
        path = tmp_path / f"{name}.pkl"
        getattr(cached, name).to_pickle(path, protocol=2)
        assert common.content_sha256(pd.read_pickle(path)) == cached.meta["content_sha256"][name]
    changed = movie_splits()
    changed.test.loc[changed.test.index[0], "label"] ^= 1
    assert runs.data_fingerprint(changed) != runs.data_fingerprint(cached)


def test_a_file_that_is_no_bundle_is_named(tmp_path):
    for content in (b"not a tar file", b""):
        path = tmp_path / "notes.tar.gz"
        path.write_bytes(content)
        with pytest.raises(ValueError, match="is not a bundle made by python -m collm_lib.reproduce"):
            bundle.read_manifest(path)
    plain = tmp_path / "plain.tar.gz"  # a real tar.gz, but without bundle.json
    with tarfile.open(plain, "w:gz") as tar:
        tar.add(__file__, arcname="x.py")
    with pytest.raises(ValueError, match="holding bundle.json"):
        bundle.read_manifest(plain)


def test_reproduce_refuses_a_non_positive_deadline_or_jobs(capsys):
    from collm_lib import reproduce

    for bad in (["--deadline", "0"], ["--deadline", "-5"], ["--jobs", "0"]):
        with pytest.raises(SystemExit):
            reproduce.main(["--out", "unused", *bad])
        assert "positive" in capsys.readouterr().err


def test_replay_refuses_bundles_of_different_reproductions(tmp_path, work):
    from collm_lib import runner

    with runs.track() as used:
        _mf()
    made = [bundle.pack(tmp_path / f"{p}.tar.gz", work, sorted(used), INFO | {"profile": p}) for p in ("smoke", "gpu")]
    with pytest.raises(ValueError, match="different \\(profile, seed, model\\)"):
        runner.replay(made)
    assert not (work / "replay").exists()  # refused before anything was unpacked
