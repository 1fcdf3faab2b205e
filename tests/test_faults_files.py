"""Damaged or wrong files: our own caches are detected and rebuilt, anything else stops with an error naming
the file, the problem and the fix (processed meta.json, the model cache, incomplete or non-causal model
folders, empty splits)."""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import pandas as pd
import pytest
import transformers
from transformers import AutoModelForCausalLM

from collm_lib import collab, encoders, ctrl, embedded
from collm_lib.data import load_dataset, processed_dir
from collm_lib.data.common import load_processed, save_processed, write_frame_json
from collm_lib.hashing import sha256_file
from collm_lib.llm import DEFAULT_MODEL, LLMConfig, load_llm, resolve_model_path
from tiny_llm import movie_splits, real_tokenizer, tiny_llama

# docs/protocol.md §2.1 month windows: one month inside each of train, valid and test.
MONTHS = {"train": (2001, 8), "valid": (2002, 6), "test": (2002, 11)}


def write_raw_ml1m(data_dir: Path, windows: tuple[str, ...] = ("train", "valid", "test")) -> Path:
    """A tiny ratings.dat + movies.dat: two users rate three movies in each of `windows`."""
    folder = data_dir / "ml-1m-raw"
    folder.mkdir(parents=True)
    lines = []
    for user in (1, 2):
        for window in windows:
            year, month = MONTHS[window]
            base = int(pd.Timestamp(year=year, month=month, day=15, tz="UTC").timestamp())
            lines += [f"{user}::{item}::{4 if (user + item) % 2 else 2}::{base + 60 * item}" for item in (1, 2, 3)]
    (folder / "ratings.dat").write_text("\n".join(lines) + "\n")
    (folder / "movies.dat").write_text("1::Toy Story (1995)::Animation\n2::Heat (1995)::Action\n"
                                       "3::Casino (1995)::Drama\n", encoding="latin-1")
    return folder


def _load_quietly(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a sound cache loads without any warning
        return load_dataset(*args, **kwargs)


# ---------------------------------------------------------------- case 1: processed cache

def test_truncated_meta_json_is_rebuilt_from_the_raw_files(tmp_path):
    raw, work = tmp_path / "raw", tmp_path / "work"
    write_raw_ml1m(raw)
    first = load_dataset("ml-1m-raw", raw, work)
    meta = processed_dir("ml-1m-raw", work) / "meta.json"
    meta.write_bytes(meta.read_bytes()[:40])
    with pytest.warns(UserWarning, match=r"meta\.json.*rebuild"):
        again = load_dataset("ml-1m-raw", raw, work)
    pd.testing.assert_frame_equal(again.test, first.test)
    assert json.loads(meta.read_text())["files"] == first.meta["files"]  # the cache was written whole again
    pd.testing.assert_frame_equal(_load_quietly("ml-1m-raw", raw, work).valid, first.valid)


def test_truncated_frame_is_still_caught_by_its_checksum(tmp_path):
    splits = movie_splits()
    save_processed(splits, tmp_path)
    frame = tmp_path / "train.json.gz"
    frame.write_bytes(frame.read_bytes()[: frame.stat().st_size // 2])
    with pytest.warns(UserWarning, match=r"train\.json\.gz.*sha256"):
        assert load_processed("ml-synthetic", tmp_path) is None


# ---------------------------------------------------------------- case 5: empty splits

def test_builder_giving_an_empty_split_names_the_raw_files_and_says_rebuild_does_not_help(tmp_path):
    folder = write_raw_ml1m(tmp_path / "raw", windows=("train", "valid"))  # nothing in the test window
    for rebuild in (False, True):
        with pytest.raises(ValueError) as err:
            load_dataset("ml-1m-raw", tmp_path / "raw", tmp_path / "work", rebuild=rebuild)
        msg = str(err.value)
        assert "ml-1m-raw/test" in msg and str(folder) in msg and "ratings.dat" in msg
        assert "rebuild=True" not in msg and "does not help" in msg


def test_empty_cached_split_is_rebuilt(tmp_path):
    raw, work = tmp_path / "raw", tmp_path / "work"
    write_raw_ml1m(raw)
    first = load_dataset("ml-1m-raw", raw, work)
    out = processed_dir("ml-1m-raw", work)
    write_frame_json(out / "test.json.gz", first.test.head(0))  # an empty file the checksum vouches for
    meta = json.loads((out / "meta.json").read_text())
    meta["files"]["test"] = sha256_file(out / "test.json.gz")
    (out / "meta.json").write_text(json.dumps(meta))
    with pytest.warns(UserWarning, match=r"test\.json\.gz.*empty.*rebuild"):
        again = load_dataset("ml-1m-raw", raw, work)
    pd.testing.assert_frame_equal(again.test, first.test)


@pytest.mark.parametrize("trainer", ["mf", "ctrl"])
def test_training_on_an_empty_split_does_not_advise_a_rebuild(trainer, tmp_path):
    splits = movie_splits()
    splits.valid = splits.valid.head(0)  # emptied after loading, e.g. by a filter
    with pytest.raises(ValueError) as err:
        if trainer == "mf":
            encoders.train(splits, collab.MFConfig(max_epochs=1), progress=False)
        else:
            ctrl.train_ctrl(splits, ctrl.CTRLConfig(max_epochs=1), None, cache_dir=tmp_path, progress=False)
    msg = str(err.value)
    assert "valid" in msg and "after loading" in msg and "rebuild=True" not in msg


# ---------------------------------------------------------------- case 2: the model cache

@pytest.fixture()
def fake_dequantise(monkeypatch):
    """The GGUF step replaced by a tiny Llama (real tokenizer): the cache logic runs for real, in seconds."""
    tok = real_tokenizer()
    builds = []

    def dequantise(gguf: Path):
        builds.append(gguf)
        return tiny_llama(len(tok)), tok

    monkeypatch.setattr(embedded, "_dequantise", dequantise)
    return builds


def test_damaged_model_cache_is_detected_and_rebuilt(tmp_path, fake_dequantise, monkeypatch):
    builds = fake_dequantise
    target = resolve_model_path(DEFAULT_MODEL, tmp_path)
    weights = target / "model.safetensors"
    assert len(builds) == 1 and (target / embedded.CACHE_MARKER).is_file()
    assert resolve_model_path(DEFAULT_MODEL, tmp_path) == target and len(builds) == 1  # sound: reused

    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # truncated
    with pytest.warns(UserWarning, match=r"model\.safetensors.*bytes.*rebuild"):
        assert resolve_model_path(DEFAULT_MODEL, tmp_path) == target
    assert len(builds) == 2
    AutoModelForCausalLM.from_pretrained(target)  # whole again

    data = bytearray(weights.read_bytes())  # same size, other bytes (and a newer mtime)
    data[-64:] = bytes(64)
    weights.write_bytes(bytes(data))
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    with pytest.warns(UserWarning, match=r"model\.safetensors.*sha256.*rebuild"):
        resolve_model_path(DEFAULT_MODEL, tmp_path)
    assert len(builds) == 3

    (target / embedded.CACHE_MARKER).unlink()  # a cache folder written by an older version
    with pytest.warns(UserWarning, match=f"{embedded.CACHE_MARKER}.*rebuild"):
        resolve_model_path(DEFAULT_MODEL, tmp_path)
    assert len(builds) == 4 and (target / embedded.CACHE_MARKER).is_file()

    monkeypatch.setattr(embedded, "_gguf_sha256", lambda: "0" * 64)  # another GGUF installed since the build
    with pytest.warns(UserWarning, match="built from another .*gguf than the one installed now.*rebuild"):
        resolve_model_path(DEFAULT_MODEL, tmp_path)
    assert len(builds) == 5
    # nothing left beside it but the lock file of the conversions (io.sole_writer)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".{target.name}.lock", target.name]


# ---------------------------------------------------------------- cases 3 and 4: model folders

def test_folder_with_only_config_names_what_is_missing(tmp_path):
    tiny_llama(100).config.save_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError) as err:
        load_llm(LLMConfig(model=str(tmp_path), device="cpu"))
    msg = str(err.value)
    assert str(tmp_path) in msg and "safetensors" in msg and "tokenizer" in msg and "save_pretrained" in msg


def test_folder_without_tokenizer_says_so(tmp_path):
    tiny_llama(100).save_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError) as err:
        load_llm(LLMConfig(model=str(tmp_path), device="cpu"))
    msg = str(err.value)
    assert str(tmp_path) in msg and "tokenizer" in msg and "weights" not in msg


def _tiny_bert(folder: Path, cls: str, **config) -> Path:
    bert = transformers.BertConfig(vocab_size=30, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                   intermediate_size=16, **config)
    getattr(transformers, cls)(bert).save_pretrained(folder)
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "Yes", "No"]) + "\n")
    return folder


@pytest.mark.parametrize("cls", ["BertModel", "BertForMaskedLM"])
def test_bert_folder_is_refused_before_its_weights_load(tmp_path, monkeypatch, cls):
    _tiny_bert(tmp_path, cls)

    def weights_loaded(*args, **kwargs):
        raise AssertionError("the weights were loaded")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", weights_loaded)
    with pytest.raises(ValueError) as err:
        load_llm(LLMConfig(model=str(tmp_path), device="cpu"))
    msg = str(err.value)
    assert str(tmp_path) in msg and cls in msg and "not a causal" in msg and DEFAULT_MODEL in msg


def test_model_type_without_causal_lm_class_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "t5"}))
    with pytest.raises(ValueError, match=r"'t5'.*not a causal"):
        resolve_model_path(str(tmp_path))


def test_checkpoint_lacking_head_weights_is_refused_after_loading(tmp_path):
    """No architectures in config.json, so only the load can tell: a randomly initialised head is an error."""
    _tiny_bert(tmp_path, "BertModel", is_decoder=True)
    config = json.loads((tmp_path / "config.json").read_text())
    del config["architectures"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"randomly initialised.*cls\.predictions"):
        load_llm(LLMConfig(model=str(tmp_path), device="cpu"))


def test_bert_decoder_with_its_causal_head_is_accepted(tmp_path):
    _tiny_bert(tmp_path, "BertLMHeadModel", is_decoder=True)
    assert resolve_model_path(str(tmp_path)) == tmp_path
