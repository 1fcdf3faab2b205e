"""Where the LLM comes from (a folder, the Hugging Face Hub cache, a download), LoRA targets, and what runs record."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from huggingface_hub.errors import LocalEntryNotFoundError

from collm_lib import model_source, runs
from collm_lib.llm import PROMPT_WRAPPING, LLMConfig, add_lora, answer_logits, load_llm
from collm_lib.stages import run_stage
from collm_lib.train import StageConfig
from tiny_llm import movie_splits, save_tiny

COMMIT_A, COMMIT_B = "a" * 40, "b" * 40


def _logits(bundle, texts=("I liked Movie A. Will I like Movie B? Answer:", "Hi. Answer:")) -> torch.Tensor:
    """Answer logits through llm.answer_logits, checked against the full forward pass of the causal LM."""
    tok = bundle.tokenizer
    batch = tok(list(texts), return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        embeds = bundle.model.get_input_embeddings()(batch["input_ids"])
        got = answer_logits(bundle.model, embeds, batch["attention_mask"], bundle.answer_id)
        full = bundle.model(**batch).logits[torch.arange(len(texts)), batch["attention_mask"].sum(1) - 1]
    torch.testing.assert_close(got, full[:, bundle.answer_id].float(), rtol=1e-5, atol=1e-5)
    return got


def _snapshot(cache: Path, source: Path, commit: str, repo: str = "models--testorg--tiny") -> Path:
    """Lay `source`'s files out as the Hub cache does: snapshots/<commit>/ and refs/main naming the commit."""
    folder = cache / repo / "snapshots" / commit
    shutil.copytree(source, folder)
    (cache / repo / "refs").mkdir(parents=True, exist_ok=True)
    (cache / repo / "refs" / "main").write_text(commit)
    return folder


@pytest.fixture
def offline_cache(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)  # "testorg/tiny" must not exist as a relative folder
    return cache


def test_folder_and_hub_id_load_the_same_model(tiny, offline_cache):
    folder = load_llm(LLMConfig(model=str(tiny), device="cpu"))
    assert folder.info["model_source"] == {"kind": "folder", "folder": str(tiny.resolve())}
    expected = _logits(folder)
    _snapshot(offline_cache, tiny, COMMIT_A)
    hub = load_llm(LLMConfig(model="testorg/tiny", device="cpu"))
    assert hub.info["model_source"] == {"kind": "hub", "repo_id": "testorg/tiny", "revision": "main",
                                        "commit": COMMIT_A, "folder": str(offline_cache / "models--testorg--tiny" /
                                                                          "snapshots" / COMMIT_A)}
    torch.testing.assert_close(_logits(hub), expected)


def test_hub_fingerprint_follows_the_cached_commit(tiny, tmp_path, offline_cache):
    _snapshot(offline_cache, tiny, COMMIT_A)
    first = runs.model_fingerprint("testorg/tiny")
    assert first == runs.model_fingerprint("testorg/tiny@main") == runs.model_fingerprint(f"testorg/tiny@{COMMIT_A}")
    assert first != runs.model_fingerprint(str(tiny))  # the same files as a folder: another source
    _snapshot(offline_cache, save_tiny(tmp_path / "tiny-b", seed=1), COMMIT_B)  # a new revision becomes main
    second = runs.model_fingerprint("testorg/tiny")
    assert second != first and runs.model_fingerprint(f"testorg/tiny@{COMMIT_A}") == first
    for model, commit in (("testorg/tiny", COMMIT_B), (f"testorg/tiny@{COMMIT_A}", COMMIT_A)):
        assert load_llm(LLMConfig(model=model, device="cpu")).info["model_source"]["commit"] == commit


def test_hf_home_is_read_at_call_time(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert model_source.hub_cache_dir() == tmp_path / "home" / "hub"


def test_offline_empty_cache_says_how_to_fetch(offline_cache):
    for call in (lambda: load_llm(LLMConfig(model="testorg/missing", device="cpu")),
                 lambda: runs.model_fingerprint("testorg/missing@v2")):
        with pytest.raises(FileNotFoundError) as err:
            call()
        text = str(err.value)
        assert "testorg/missing" in text and "HF_HUB_OFFLINE" in text and str(offline_cache) in text
        assert "hf download testorg/missing" in text and "snapshot_download('testorg/missing'" in text
        assert "LLMConfig(model='/path/to/folder')" in text
    assert "--revision v2" in text


def test_paths_and_folders_are_not_hub_ids(tiny, tmp_path):
    assert model_source.is_hub_id("Qwen/Qwen2.5-0.5B-Instruct@v1") and model_source.is_hub_id("gpt2")
    assert not model_source.is_hub_id(str(tiny)) and not model_source.is_hub_id("smollm2-135m")
    assert not model_source.is_hub_id(str(tmp_path / "missing")) and not model_source.is_hub_id("./a/b/c")


def test_download_fetches_only_model_files_and_failures_are_clear(tiny, offline_cache, monkeypatch):
    """Online, not cached: one download of config, tokenizer and safetensors (no other formats), into the cache."""
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(model_source.constants, "HF_HUB_OFFLINE", False)
    calls = []

    def fake_download(repo_id, revision=None, cache_dir=None, local_files_only=False, allow_patterns=None,
                      ignore_patterns=None):
        calls.append({"local": local_files_only, "allow": allow_patterns, "ignore": ignore_patterns})
        folder = Path(cache_dir) / "models--testorg--tiny" / "snapshots" / COMMIT_A
        if local_files_only and not folder.is_dir():
            raise LocalEntryNotFoundError("not cached")
        return str(folder if local_files_only else _snapshot(Path(cache_dir), tiny, COMMIT_A))

    monkeypatch.setattr(model_source, "snapshot_download", fake_download)
    assert runs.model_fingerprint("testorg/tiny") == runs.model_fingerprint("testorg/tiny")  # cached after
    allow = calls[1]["allow"]
    assert [c["local"] for c in calls] == [True, False, True]
    assert {"config.json", "*.safetensors", "tokenizer*"} <= set(allow) and not any("bin" in a for a in allow)
    assert "*/*" in calls[1]["ignore"]  # onnx/, original/ and other sub-folders stay behind

    def offline_hub(repo_id, local_files_only=False, **kwargs):
        raise LocalEntryNotFoundError("Cannot find an appropriate cached snapshot folder")

    monkeypatch.setattr(model_source, "snapshot_download", offline_hub)
    with pytest.raises(FileNotFoundError, match=r"download of the Hugging Face Hub repository testorg/other.*"
                                                r"failed.*hf download testorg/other"):
        load_llm(LLMConfig(model="testorg/other", device="cpu"))


def _lora_layers(bundle) -> list[str]:
    from peft.tuners.lora import LoraLayer

    return [n for n, m in bundle.model.named_modules() if isinstance(m, LoraLayer)]


def test_lora_targets_all_linear_and_unknown_names(tiny):
    default = add_lora(load_llm(LLMConfig(model=str(tiny), device="cpu")), LLMConfig())
    assert len(_lora_layers(default)) == 2 * 2  # q_proj and v_proj of 2 layers
    config = LLMConfig(model=str(tiny), lora_targets="all-linear", device="cpu")
    assert config.lora_targets == ("all-linear",)
    bundle = add_lora(load_llm(config), config)
    wrapped = _lora_layers(bundle)
    assert len(wrapped) == 2 * 7  # q, k, v, o, gate, up, down of each of the 2 layers; the output head stays
    assert not any("lm_head" in n for n in wrapped)
    assert bundle.info["lora"]["wrapped"] == sorted(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                     "up_proj", "down_proj"])
    assert bundle.info["lora"]["layers"] == 2 * 7 and default.info["lora"]["layers"] == 2 * 2
    assert bundle.info["lora"]["targets"] == ["all-linear"]
    for targets in (("q_proj", "qkv_proj"), ("all-linear", "q_proj")):
        with pytest.raises(ValueError, match="qkv_proj.*matches no module.*q_proj|pass it alone") as err:
            add_lora(load_llm(LLMConfig(model=str(tiny), device="cpu")), LLMConfig(lora_targets=targets))
    assert "pass it alone" in str(err.value)


def test_default_llm_config_keeps_its_recorded_form():
    """Existing runs' identities hash this dict: a new field changes every one of them (precision did, deliberately,
    with the cpu profile's new sizes; a stage run hashes it resolved, stages.resolve)."""
    assert runs.plain(LLMConfig()) == {"model": "smollm2-135m", "lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.05,
                                       "lora_targets": ["q_proj", "v_proj"], "device": None, "precision": "auto"}


def test_stage_results_record_answer_token_source_and_prompt_wrapping(tiny, tmp_path, offline_cache):
    _snapshot(offline_cache, tiny, COMMIT_A)
    config = StageConfig(stage=1, batch_size=4, max_steps=1, eval_every=1, warmup_steps=1, score_batch_size=8,
                         llm=LLMConfig(model="testorg/tiny", device="cpu"))
    result = run_stage(movie_splits(n_train=8, n_eval=8), config, tmp_path / "s1", progress=False)
    recorded = runs.plain(result)["llm"]
    assert recorded["answer_token"] == "ĠYes" and isinstance(recorded["answer_id"], int)
    assert recorded["prompt_wrapping"] == PROMPT_WRAPPING and "no chat template" in PROMPT_WRAPPING
    assert recorded["model_source"]["kind"] == "hub" and recorded["model_source"]["commit"] == COMMIT_A
    assert result["upstream"]["llm"] == runs.model_fingerprint("testorg/tiny")
