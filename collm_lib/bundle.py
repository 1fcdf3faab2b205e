"""Bundles: the finished runs of one reproduction part in a tar.gz that travels back from a GPU box, and replay.

A bundle holds, for every run folder a part finished, everything but the weights: results.json / config.json
(full config, versions, device, seed, timings), run.json and identity.json, per-row scores, training curves.
bundle.json beside them says which part made it, on which device, how long each phase took, and the
fingerprints of the data, the LLM and the code it ran with.

`unpack` puts the folders back under a work dir and marks each with replayed.json, naming the weight files the
bundle left out (their size and sha256 stay recorded in run.json). `runs.finished` accepts such a run as
finished; anything that needs its weights gets an error saying so (`runs.output`). With $COLLM_REPLAY=1 no
run may start (`runs.begin`), so notebooks replayed over bundles show the bundles' numbers or fail.
"""
from __future__ import annotations

import fnmatch
import hashlib
import io
import json
import os
import tarfile
import time
from pathlib import Path
from typing import Any

from . import runs, settings
from .io import write_json

MANIFEST = "bundle.json"
WEIGHTS = ("*.pt", "*.safetensors", "*.bin")  # never travel: the bundle is results, not checkpoints
MAX_BYTES = 16 * 2**20  # what one file coming back from the device machine may weigh


def code_fingerprint() -> str:
    """sha256 over the library's source files: which code made a bundle."""
    digest = hashlib.sha256()
    root = Path(__file__).resolve().parent
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _is_weight(name: str) -> bool:
    return any(fnmatch.fnmatch(name, pattern) for pattern in WEIGHTS)


def pack(out: str | os.PathLike, work_dir: str | os.PathLike, folders: list[Path], info: dict[str, Any]) -> Path:
    """Write the run `folders` (under work_dir) without their weights, and bundle.json (`info` plus the folder list
    and the weights left out) as the tar.gz `out`; raises, writing nothing, when it would exceed MAX_BYTES."""
    out, work_dir = Path(out), Path(work_dir)
    manifest = dict(info, code=code_fingerprint(), packed_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"), runs={})
    members = []
    for folder in folders:
        rel = folder.relative_to(work_dir).as_posix()
        record = runs.read_record(folder / runs.DONE) or {}
        behind = {name: want for name, want in record.get("outputs", {}).items() if _is_weight(name)}
        manifest["runs"][rel] = {"left_behind": behind}
        members += [(p, f"{rel}/{p.name}") for p in sorted(folder.iterdir()) if p.is_file() and not _is_weight(p.name)
                    and not p.name.startswith(".")]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    with tarfile.open(tmp, "w:gz") as tar:
        data = json.dumps(manifest, indent=1, default=str).encode()
        entry = tarfile.TarInfo(MANIFEST)
        entry.size, entry.mtime = len(data), int(time.time())
        tar.addfile(entry, io.BytesIO(data))
        for path, name in members:
            tar.add(path, arcname=name)
    size = tmp.stat().st_size
    if size > MAX_BYTES:
        tmp.unlink()
        raise ValueError(f"{out.name} would be {size / 2**20:.1f} MiB, over the {MAX_BYTES // 2**20} MiB a file may "
                         "weigh coming back from the device machine: split the part (reproduce --part)")
    os.replace(tmp, out)
    return out


def read_manifest(bundle: str | os.PathLike) -> dict[str, Any]:
    """bundle.json of a bundle, without unpacking it."""
    try:
        with tarfile.open(bundle, "r:gz") as tar:
            return json.loads(tar.extractfile(MANIFEST).read())
    except (tarfile.TarError, KeyError, AttributeError, OSError, ValueError) as err:
        if isinstance(err, FileNotFoundError):
            raise
        raise ValueError(f"{bundle} is not a bundle made by python -m collm_lib.reproduce (a tar.gz holding "
                         f"{MANIFEST}): {type(err).__name__}: {err}") from err


def unpack(bundle: str | os.PathLike, work_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Extract a bundle's run folders under `work_dir` (default settings.work_dir()) and mark each as replayed;
    returns its bundle.json. Paths that would leave the work dir are refused (tarfile's "data" filter)."""
    bundle, work_dir = Path(bundle), settings.work_dir(work_dir)
    manifest = read_manifest(bundle)
    with tarfile.open(bundle, "r:gz") as tar:
        members = [m for m in tar.getmembers() if m.name != MANIFEST]
        tar.extractall(work_dir, members=members, filter="data")
    for rel, entry in manifest["runs"].items():
        write_json(work_dir / rel / runs.REPLAYED, {"bundle": bundle.name, "part": manifest.get("part"),
                                                    "device": manifest.get("device"),
                                                    "left_behind": entry["left_behind"]})
    write_json(work_dir / "bundles" / f"{bundle.name}.json", manifest)
    return manifest
