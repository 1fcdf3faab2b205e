"""Files' sha256, streamed once and cached by path, size and mtime, so large model files are read only once."""
from __future__ import annotations

import logging
import os
from pathlib import Path

from . import settings
from .data.common import sha256_file
from .io import read_json, write_json

log = logging.getLogger(__name__)
HASHES = "sha256.json"  # in settings.cache_dir(): path -> (bytes, mtime_ns, sha256), so big files are read once


def file_sha256(path: str | os.PathLike) -> str:
    """A file's sha256, streamed once and cached by resolved path, size and mtime: a rewrite (even to the same
    size) changes the mtime and is hashed again."""
    path = Path(path).resolve()
    stat, cache = path.stat(), settings.cache_dir() / HASHES
    key = str(path)
    try:
        held = read_json(cache)
    except (OSError, ValueError):  # no cache yet, or a truncated one: start afresh
        held = {}
    held = held if isinstance(held, dict) else {}
    hit = held.get(key)
    if isinstance(hit, dict) and hit.get("bytes") == stat.st_size and hit.get("mtime_ns") == stat.st_mtime_ns:
        return hit["sha256"]
    digest = sha256_file(path)
    try:  # a cache that cannot be written only costs a re-hash next time
        write_json(cache, {**held, key: {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest}})
    except OSError as err:
        log.debug("hash cache %s not written: %s", cache, err)
    return digest
