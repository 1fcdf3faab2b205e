"""Files' sha256, streamed once and cached by path, inode, size, mtime and ctime, so large model files are read once.

A file edited in place changes its mtime and ctime; putting the mtime back (touch -d, os.utime) sets the ctime to
now, which only the kernel writes: either way the file is hashed again. What this cannot see is an edit by someone
who also resets the system clock (root); $COLLM_REHASH=1 (`--rehash`) hashes every file again on first use in a
process, trusting no cache (docs/runs.md)."""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from . import settings
from .io import read_json, write_json

log = logging.getLogger(__name__)
HASHES = "sha256.json"  # in settings.cache_dir(): path -> (inode, bytes, mtime_ns, ctime_ns, sha256)
REHASH_ENV = "COLLM_REHASH"  # "1": the first use of a file in a process hashes it, whatever the cache holds
_hashed: dict[tuple, str] = {}  # (path, stat) -> sha256 hashed by this process: what $COLLM_REHASH trusts


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """A file's sha256, streamed (uncached: file_sha256 caches)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    """A file's sha256, streamed once and cached by resolved path, inode, size, mtime and ctime: a rewrite (even to
    the same size, even with its mtime put back) is hashed again."""
    path = Path(path).resolve()
    stat, cache = path.stat(), settings.cache_dir() / HASHES
    key = str(path)
    try:
        held = read_json(cache)
    except (OSError, ValueError):  # no cache yet, or a truncated one: start afresh
        held = {}
    held = held if isinstance(held, dict) else {}
    seen = {"inode": stat.st_ino, "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns, "ctime_ns": stat.st_ctime_ns}
    hit, mark = held.get(key), (key, *seen.values())
    if os.environ.get(REHASH_ENV) == "1":
        if mark in _hashed:
            return _hashed[mark]
    elif isinstance(hit, dict) and all(hit.get(k) == v for k, v in seen.items()):
        return hit["sha256"]
    digest = _hashed[mark] = sha256_file(path)
    try:  # a cache that cannot be written only costs a re-hash next time
        write_json(cache, {**held, key: {**seen, "sha256": digest}})
    except OSError as err:
        log.debug("hash cache %s not written: %s", cache, err)
    return digest
