"""A bundle from someone else is data, never code: crafted bundles are refused whole, with a message naming the
problem, before anything is written; no file lands outside the replay folder and no payload runs."""
from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import tarfile
from pathlib import Path

import pytest

from collm_lib import bundle, cli, collab, encoders, hashing, runner, runs
from collm_lib.data import common
from tiny_llm import movie_splits

INFO = {"part": "mf", "device": "cpu", "profile": "smoke", "seed": 2023, "model": "smollm2-135m"}


@pytest.fixture(autouse=True)
def work(monkeypatch, tmp_path) -> Path:
    monkeypatch.setenv("COLLM_WORK_DIR", str(tmp_path / "work"))
    monkeypatch.delenv("COLLM_REPLAY", raising=False)
    monkeypatch.delenv(bundle.KEY_ENV, raising=False)
    return tmp_path / "work"


@pytest.fixture
def made(tmp_path, work) -> Path:
    """A genuine bundle of one finished MF run."""
    with runs.track() as used:
        encoders.ensure(movie_splits(), collab.MFConfig(dim=4, max_epochs=1, batch_size=16), progress=False)
    return bundle.pack(tmp_path / "mf.tar.gz", work, sorted(used), INFO)


class Payload:
    """Unpickling this creates the marker file: what a hostile pickle would do, harmlessly."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def _members(path: Path) -> tuple[dict, list[tuple[tarfile.TarInfo, bytes | None]]]:
    with tarfile.open(path) as tar:
        manifest = json.loads(tar.extractfile(bundle.MANIFEST).read())
        return manifest, [(m, tar.extractfile(m).read() if m.isreg() else None) for m in tar.getmembers()
                          if m.name != bundle.MANIFEST]


def _craft(path: Path, manifest: dict, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    """A tar.gz with `manifest` as bundle.json and the given members, as a forger would write it."""
    with tarfile.open(path, "w:gz") as tar:
        data = json.dumps(manifest).encode()
        info = tarfile.TarInfo(bundle.MANIFEST)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        for member, content in members:
            tar.addfile(member, io.BytesIO(content) if content is not None else None)
    return path


def _file(name: str, content: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(content)
    return info, content


def _refused(path: Path, target: Path, match: str) -> None:
    with pytest.raises(bundle.UnsafeBundle, match=match):
        bundle.unpack(path, target)
    assert not target.exists() or not any(target.rglob("*")), "a refused bundle wrote something"


def test_a_pickle_in_a_bundle_never_runs(made, tmp_path):
    """Old replays unpacked every member: a processed cache with its meta.json ran its pickle."""
    marker = tmp_path / "marker"
    manifest, members = _members(made)
    evil = pickle.dumps(Payload(marker))
    meta = {"files": {"train": hashing.sha256_bytes(evil)}, "n_users": 1, "n_items": 1, "name": "ml-1m"}
    crafted = _craft(tmp_path / "evil.tar.gz", manifest, members + [
        _file("processed/ml-1m/train.pkl", evil), _file("processed/ml-1m/meta.json", json.dumps(meta).encode())])
    _refused(crafted, tmp_path / "replay", "outside the bundle's run folders")
    assert not marker.exists()


def test_a_processed_cache_is_never_unpickled(tmp_path):
    """Even a cache someone else wrote into the work dir, its meta.json vouching for it, runs no code: frames are
    gzip JSON; a pickle in their place is a damaged cache, rebuilt from the raw files."""
    out, marker = tmp_path / "processed", tmp_path / "marker"
    common.save_processed(movie_splits(), out)
    evil = gzip.compress(pickle.dumps(Payload(marker)))
    (out / "train.json.gz").write_bytes(evil)
    meta = json.loads((out / "meta.json").read_text())
    meta["files"]["train"] = hashing.sha256_bytes(evil)
    (out / "meta.json").write_text(json.dumps(meta))
    with pytest.warns(UserWarning, match="train.json.gz is not a processed frame.*rebuilding"):
        assert common.load_processed("ml-synthetic", out) is None
    assert not marker.exists()


def test_links_in_a_bundle_are_refused(made, tmp_path):
    """A symlink chain (CVE-2025-4517 on Python < 3.11.13) and a hard link: never followed, nothing written."""
    manifest, members = _members(made)
    run = next(iter(manifest["runs"]))
    outside = tmp_path / "outside"
    outside.mkdir()
    link = tarfile.TarInfo(f"{run}/a")
    link.type, link.linkname = tarfile.SYMTYPE, str(outside)
    hard = tarfile.TarInfo(f"{run}/h.json")
    hard.type, hard.linkname = tarfile.LNKTYPE, "/etc/passwd"
    for i, extra in enumerate(([(link, None), _file(f"{run}/a/pwned.json", b"{}")], [(hard, None)])):
        _refused(_craft(tmp_path / f"links{i}.tar.gz", manifest, members + extra), tmp_path / f"replay{i}",
                 "link, a folder or a special file")
    assert not list(outside.iterdir())


def test_a_link_already_in_the_work_dir_is_not_written_through(made, tmp_path):
    outside, target = tmp_path / "outside", tmp_path / "replay"
    outside.mkdir()
    target.mkdir()
    (target / "runs").symlink_to(outside)
    with pytest.raises(bundle.UnsafeBundle, match="is a link"):
        bundle.unpack(made, target)
    assert not list(outside.iterdir())


@pytest.mark.parametrize("key", ["/tmp/abs", "runs/../../escape", "runs/ml-1m/../../x", "runs/.hidden/x"])
def test_manifest_keys_that_leave_the_folder_are_refused(made, tmp_path, key):
    manifest, members = _members(made)
    manifest["runs"][key] = {"left_behind": {}}
    _refused(_craft(tmp_path / "keys.tar.gz", manifest, members), tmp_path / "replay", "not a plain path")
    assert not Path("/tmp/abs/replayed.json").exists()


def test_a_profile_that_is_a_path_is_refused_before_anything_is_written(made, tmp_path):
    manifest, members = _members(made)
    manifest["profile"] = str(tmp_path / "elsewhere")
    crafted = _craft(tmp_path / "profile.tar.gz", manifest, members)
    with pytest.raises(bundle.UnsafeBundle, match="has profile"):
        runner.replay([crafted], work_dir=tmp_path / "replay")
    assert not (tmp_path / "replay").exists() and not (tmp_path / "elsewhere").exists()


def _edit_scores(made: Path, tmp_path: Path, rehash: bool) -> Path:
    """Scores set to the labels (AUC 1.0), run.json updated to match, and (rehash) bundle.json's sha256s too."""
    manifest, members = _members(made)
    edited = []
    for member, content in members:
        if member.name.endswith("test_scores.csv"):
            lines = content.decode().splitlines()
            head = lines[0].split(",")
            label, score = head.index("label"), head.index("score")
            rows = [r.split(",") for r in lines[1:]]
            for r in rows:
                r[score] = r[label]
            content = "\n".join([lines[0]] + [",".join(r) for r in rows]).encode() + b"\n"
        edited.append([member, content])
    scores = next(c for m, c in edited if m.name.endswith("test_scores.csv"))
    for pair in edited:
        if pair[0].name.endswith("/run.json"):
            record = json.loads(pair[1])
            record["outputs"]["test_scores.csv"] = {"bytes": len(scores), "sha256": hashing.sha256_bytes(scores)}
            pair[1] = json.dumps(record).encode()
    for pair in edited:
        pair[0].size = len(pair[1])
        if rehash:
            manifest["files"][pair[0].name] = hashing.sha256_bytes(pair[1])
    return _craft(tmp_path / f"edited{int(rehash)}.tar.gz", manifest, [tuple(p) for p in edited])


def test_edited_scores_are_told_from_the_bundle_that_was_made(made, tmp_path, monkeypatch):
    _refused(_edit_scores(made, tmp_path, rehash=False), tmp_path / "replay", "differ from the sha256s")
    forged = _edit_scores(made, tmp_path, rehash=True)  # a careful forger re-hashes: only a signature tells
    assert bundle.verify(forged)["signature"] == "unsigned" and bundle.verify(made)["signature"] == "unsigned"
    monkeypatch.setenv(bundle.KEY_ENV, "shared secret")
    with runs.track() as used:
        encoders.ensure(movie_splits(), collab.MFConfig(dim=4, max_epochs=1, batch_size=16), progress=False)
    signed = bundle.pack(tmp_path / "signed.tar.gz", Path(runs.settings.work_dir()), sorted(used), INFO)
    assert bundle.verify(signed)["signature"] == f"verified with ${bundle.KEY_ENV}"
    _refused(_edit_scores(signed, tmp_path, rehash=True), tmp_path / "replay2", "signature does not match")
    monkeypatch.delenv(bundle.KEY_ENV)
    assert bundle.verify(signed)["signature"].startswith("signed, not checked")


def test_a_second_replay_does_not_serve_the_first_ones_runs(made, tmp_path, work):
    """A replay work dir holds one replay: runs an earlier replay left are gone before the next unpacks."""
    target = tmp_path / "replay"
    first = bundle.unpack(made, target)
    (target / "processed").mkdir()
    runner.start_clean(target)
    assert sorted(p.name for p in target.iterdir()) == ["processed"]
    assert all(runs.finished(target / rel) is None for rel in first["runs"])
    (target / "mine.txt").write_text("a user's file")
    with pytest.raises(ValueError, match="no replay made"):
        runner.start_clean(tmp_path)  # a folder no replay made is never emptied


def test_verify_shows_provenance_and_writes_nothing(made, tmp_path, capsys):
    before = sorted(tmp_path.rglob("*"))
    report = bundle.verify(made)
    assert report["sha256"].startswith("verified") and report["same_code"] and report["device"] == "cpu"
    assert runner.show_verification([made]) is True
    bad = _edit_scores(made, tmp_path, rehash=False)
    assert runner.show_verification([made, bad]) is False
    out = capsys.readouterr().out
    assert f"OK {made}" in out and f"REFUSED {bad}" in out
    for argv, status in ((["replay", "--verify", str(made)], 0), (["replay", "--verify", str(made), str(bad)], 1)):
        with pytest.raises(SystemExit) as stop:
            cli.main(argv)
        assert stop.value.code == status
    assert sorted(tmp_path.rglob("*")) == sorted(before + [bad])
    unpacked = bundle.unpack(made, tmp_path / "replay")
    lines = bundle.provenance(tmp_path / "replay")
    assert len(lines) == 1 and "sha256 verified" in lines[0] and str(unpacked["commit"] or "not recorded") in lines[0]


# --- a key means signed; the report is this code's; one replay at a time; every bundle listed -----------------------

def _signed(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv(bundle.KEY_ENV, "shared secret")
    with runs.track() as used:
        encoders.ensure(movie_splits(), collab.MFConfig(dim=4, max_epochs=1, batch_size=16), progress=False)
    return bundle.pack(tmp_path / "signed.tar.gz", Path(runs.settings.work_dir()), sorted(used), INFO)


def test_with_a_key_a_stripped_signature_is_refused(tmp_path, monkeypatch, capsys):
    """A forger who edits scores, run.json and the sha256s consistently and deletes the signature: with a key
    set, only signed bundles replay (before: "OK ... signature unsigned" and AUC 1.0 in the notebook)."""
    signed = _signed(tmp_path, monkeypatch)
    manifest, members = _members(_edit_scores(signed, tmp_path, rehash=True))
    del manifest["signature"]
    stripped = _craft(tmp_path / "stripped.tar.gz", manifest, members)
    _refused(stripped, tmp_path / "replay", "it is unsigned and \\$COLLM_BUNDLE_KEY is set")
    assert runner.show_verification([stripped]) is False and "REFUSED" in capsys.readouterr().out
    with pytest.raises(SystemExit) as stop:
        cli.main(["replay", "--verify", str(stripped)])
    assert stop.value.code == 1
    accepted = bundle.verify(stripped, allow_unsigned=True)  # knowingly, and said so
    assert accepted["signature"] == f"unsigned, accepted with --allow-unsigned although ${bundle.KEY_ENV} is set"
    monkeypatch.delenv(bundle.KEY_ENV)
    assert bundle.verify(stripped)["signature"] == "unsigned"  # no key: no promise was made


@pytest.mark.parametrize("field, value", [
    ("device", "cpu\x1b[2K\rsignature verified with $COLLM_BUNDLE_KEY"),  # an escape hid "unsigned"
    ("part", "mf\nOK other.tar.gz: profile smoke"),  # a newline printed a fake OK line
    ("packed_at", "x" * 5000),  # a 5,000-character field: "File name too long"
])
def test_manifest_text_cannot_write_the_verify_report(made, tmp_path, capsys, field, value):
    manifest, members = _members(made)
    manifest[field] = value
    crafted = _craft(tmp_path / "crafted.tar.gz", manifest, members)
    assert runner.show_verification([crafted]) is False
    out = capsys.readouterr().out
    assert out.startswith(f"REFUSED {crafted}: ") and f"has {field} " in out
    assert out.count("\n") == 1 and "\x1b" not in out and "\r" not in out and len(out) < 2100
    assert bundle.shown("a\x1b[2Kb\nc" + "d" * 300) == "a?[2Kb?c" + "d" * 189 + "..."


def test_a_second_replay_into_a_busy_work_dir_is_refused(made, tmp_path):
    """Before: the second replay emptied and refilled the folder while the first one's notebooks read it."""
    target = tmp_path / "replay"
    bundle.unpack(made, target)
    before = sorted(target.rglob("*"))
    with runner.replay_lock(target):
        with pytest.raises(ValueError, match=f"another replay is running into {target}"):
            runner.replay([made], work_dir=target)
    assert sorted(target.rglob("*")) == before  # not emptied
    lock = tmp_path / ".replay.replay.lock"
    lock.unlink()
    lock.mkdir()
    with pytest.raises(runs.settings.NotWritable, match="is a folder, not a file: remove it"):
        runner.replay([made], work_dir=target)


def test_a_replay_leaves_the_callers_environment_as_it_was(made, tmp_path, monkeypatch):
    """The notebooks see the replay's work dir, $COLLM_REPLAY and the bundles' precision; the caller's process gets
    its own back (it used to keep them: a later run in that process would have written into the replay)."""
    monkeypatch.setenv("COLLM_PRECISION", "fp32")
    seen = {}

    def notebooks(*args, **kwargs):
        seen.update({k: os.environ.get(k) for k in ("COLLM_WORK_DIR", "COLLM_REPLAY")})
        return []

    monkeypatch.setattr(runner, "run_main", notebooks)
    before = dict(os.environ)
    runner.replay([made], work_dir=tmp_path / "replay", out_dir=tmp_path / "out")
    assert seen == {"COLLM_WORK_DIR": str(tmp_path / "replay"), "COLLM_REPLAY": "1"}
    assert dict(os.environ) == before


def _other_mf(tmp_path: Path, folder: str) -> Path:
    """A genuine bundle of another MF run (dim 6), named mf.tar.gz in its own folder."""
    with runs.track() as used:
        encoders.ensure(movie_splits(), collab.MFConfig(dim=6, max_epochs=1, batch_size=16), progress=False)
    return bundle.pack(tmp_path / folder / "mf.tar.gz", Path(runs.settings.work_dir()), sorted(used), INFO)


def test_bundles_carrying_one_run_folder_with_other_files_are_refused_naming_both(made, tmp_path):
    forged = _edit_scores(made, tmp_path, rehash=True)
    with pytest.raises(bundle.UnsafeBundle, match=f"{made} and {forged} both carry the run folder runs/"):
        runner.replay([made, forged], work_dir=tmp_path / "replay")
    assert not (tmp_path / "replay").exists()
    bundle.conflicts({made: bundle.read_manifest(made), tmp_path / "copy": bundle.read_manifest(made)})  # same files


def test_provenance_lists_every_bundle_by_path_and_sha256(made, tmp_path):
    """Two bundles of one file name from two folders: both listed (before: the later replaced the earlier)."""
    first, second = _other_mf(tmp_path, "a"), made.rename(tmp_path / "b.mf.tar.gz")
    second = second.rename(tmp_path / "mf.tar.gz")
    target = tmp_path / "replay"
    for path in (first, second):
        bundle.unpack(path, target)
    lines = bundle.provenance(target)
    assert len(lines) == 2
    for path in (first, second):
        assert sum(f"{path.resolve()} (sha256 {hashing.sha256_file(path)})" in line for line in lines) == 1


def test_a_processed_cache_edited_consistently_is_rebuilt_not_trusted(tmp_path):
    """Train labels flipped and the file's sha256 in meta.json updated: the identity is recomputed from the rows,
    so the cache is refused (and rebuilt) instead of training under the genuine data's identity."""
    splits, folder = movie_splits(), tmp_path / "processed" / "ml-synthetic"
    common.save_processed(splits, folder)
    genuine = runs.data_fingerprint(common.load_processed("ml-synthetic", folder))
    train = common.read_frame_json(folder / f"train{common.FRAME_SUFFIX}")
    train["label"] = 1 - train["label"]
    common.write_frame_json(folder / f"train{common.FRAME_SUFFIX}", train)
    meta = json.loads((folder / "meta.json").read_text())
    meta["files"]["train"] = hashing.sha256_file(folder / f"train{common.FRAME_SUFFIX}")
    (folder / "meta.json").write_text(json.dumps(meta))
    with pytest.warns(UserWarning, match="rows differ from the content sha256 meta.json records"):
        assert common.load_processed("ml-synthetic", folder) is None
    meta["content_sha256"]["train"] = common.content_sha256(train)  # a forger who rehashes the content too
    (folder / "meta.json").write_text(json.dumps(meta))
    edited = common.load_processed("ml-synthetic", folder)
    assert runs.data_fingerprint(edited) != genuine  # another identity: never the genuine data's runs
    meta["n_users"] = 10**11  # an allocator traceback before
    (folder / "meta.json").write_text(json.dumps(meta))
    with pytest.warns(UserWarning, match="meta.json says 100000000000 users"):
        assert common.load_processed("ml-synthetic", folder) is None


def test_a_model_file_edited_with_its_mtime_put_back_is_hashed_again(tmp_path, monkeypatch):
    monkeypatch.setenv("COLLM_CACHE_DIR", str(tmp_path / "cache"))
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"a" * 1000)
    first, stat = hashing.file_sha256(weights), weights.stat()
    weights.write_bytes(b"b" * 1000)  # same size
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # mtime put back: ctime moves all the same
    assert hashing.file_sha256(weights) == hashing.sha256_bytes(b"b" * 1000) != first
    # what no stat can see (a clock reset by root) --rehash covers: a cache entry that lies is not trusted
    cache = tmp_path / "cache" / hashing.HASHES
    held = json.loads(cache.read_text())
    held[str(weights.resolve())]["sha256"] = "0" * 64
    cache.write_text(json.dumps(held))
    assert hashing.file_sha256(weights) == "0" * 64
    monkeypatch.setenv(hashing.REHASH_ENV, "1")
    assert hashing.file_sha256(weights) == hashing.sha256_bytes(b"b" * 1000)
