"""A tiny randomly initialised Llama sharing the real tokenizer, and small synthetic movie splits."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from collm_lib.data import Splits
from collm_lib.llm import DEFAULT_MODEL, resolve_model_path


def real_tokenizer():
    return AutoTokenizer.from_pretrained(resolve_model_path(DEFAULT_MODEL))


def tiny_llama(vocab_size: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                         tie_word_embeddings=True)
    return LlamaForCausalLM(config).to(dtype)


def save_tiny(folder: Path, seed: int = 0) -> Path:
    """A Hugging Face model folder: exercises the 'any causal-LM directory' path of load_llm."""
    tok = real_tokenizer()
    tiny_llama(len(tok), seed).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


TITLES = [f"Movie {c} ({1990 + i})" for i, c in enumerate("ABCDEFGHIJKLMNOPQRST")]


def movie_frame(n: int, n_users: int, n_items: int, flag: int, seed: int) -> pd.DataFrame:
    """Rows with varied history lengths (0..12) so prompts have mixed lengths."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        h = rng.integers(1, n_items, size=rng.integers(0, 13)).tolist()
        iid = int(rng.integers(1, n_items))
        rows.append({"uid": int(rng.integers(1, n_users)), "iid": iid, "label": int(rng.random() < 0.5),
                     "timestamp": int(rng.integers(1e9, 2e9)), "his": h,
                     "his_title": [TITLES[i % len(TITLES)] for i in h], "title": TITLES[iid % len(TITLES)],
                     "flag": flag, "not_cold": int(rng.random() < 0.7)})
    return pd.DataFrame(rows)


def movie_splits(n_train: int = 32, n_eval: int = 16, n_users: int = 12, n_items: int = 20) -> Splits:
    valid = movie_frame(n_eval, n_users, n_items, 0, 2)
    return Splits("ml-synthetic", movie_frame(n_train, n_users, n_items, -1, 1), valid, valid,
                  movie_frame(n_eval, n_users, n_items, 1, 3), n_users, n_items)
