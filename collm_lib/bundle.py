"""Bundles: the finished runs of one reproduction part in a tar.gz that travels back from a GPU box, and replay.

A bundle holds, for every run folder a part finished, everything but the weights: results.json / config.json
(full config, versions, device, seed, timings), run.json and identity.json, per-row scores, training curves.
bundle.json beside them says which part made it, on which device, how long each phase took, the fingerprints of
the data, the LLM and the code it ran with, the code's git commit, and the sha256 of every file it holds (signed
with $COLLM_BUNDLE_KEY, a secret shared with the machine that made it, when that is set).

A bundle from someone else is data, never code (docs/runs.md, "What a replay trusts"). `check` validates a whole
bundle before anything is written: only run folders under runs/ with the file types runs write (JSON, CSV, gzip
CSV, logs), regular files only (no links, devices or folders of their own), no name, manifest key or field that
could leave the target folder, every file's sha256 as recorded. `unpack` then writes the files itself, checking
the resolved path of every write, and marks each run folder with replayed.json naming the weight files the bundle
left out (their size and sha256 stay recorded in run.json). `runs.finished` accepts such a run as finished;
anything that needs its weights gets an error saying so (`runs.output`). With $COLLM_REPLAY=1 no run may start
(`runs.begin`), so notebooks replayed over bundles show the bundles' numbers or fail.
"""
from __future__ import annotations

import fnmatch
import hashlib
import hmac
import io
import json
import os
import re
import subprocess
import tarfile
import time
import zlib
from pathlib import Path
from typing import Any

from . import runs, settings
from .hashing import sha256_bytes, sha256_file
from .io import atomic_path, write_json

MANIFEST = "bundle.json"
WEIGHTS = ("*.pt", "*.safetensors", "*.bin")  # never travel: the bundle is results, not checkpoints
MAX_BYTES = 16 * 2**20  # what one file coming back from the device machine may weigh
MAX_UNPACKED = 2**30  # what a bundle's files may weigh unpacked: a gzip bomb is refused before it is read
KEY_ENV = "COLLM_BUNDLE_KEY"  # a shared secret: bundles packed with it are signed, replays with it check the signature
FILE_TYPES = (".json", ".csv", ".csv.gz", ".log")  # what run folders write; anything else is refused
NAME = re.compile(r"[A-Za-z0-9_+=,-][A-Za-z0-9_.+=,-]*")  # one path component: runs' alphabet, no leading dot
PARTS = ("mf", "ml-1m", "table1", "figure3")  # reproduce.PARTS: the parts a bundle can hold
SEED_MAX = 2**32 - 1  # params' seed range: a seed a notebook accepts
TEXT_MAX = 200  # what one manifest text field may hold, and what a report shows of it
UNREADABLE = (tarfile.TarError, EOFError, zlib.error, OSError)  # a truncated or damaged tar.gz


class UnsafeBundle(ValueError):
    """A bundle that this code did not pack as it is: refused before anything is written."""


def code_fingerprint() -> str:
    """sha256 over the library's source files: which code made a bundle."""
    digest = hashlib.sha256()
    root = Path(__file__).resolve().parent
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def code_commit() -> str | None:
    """The checkout's git commit ("<sha>-dirty" with uncommitted changes to the library); None outside git."""
    try:
        git = ["git", "-C", str(settings.REPO_ROOT)]
        sha = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run([*git, "status", "--porcelain", "--", "collm_lib"], capture_output=True, text=True,
                               check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return f"{sha}-dirty" if dirty else sha


def shown(value: Any, limit: int = TEXT_MAX) -> str:
    """A manifest value as a report may print it: printable characters only (others as "?"), at most `limit`
    long; a field cannot move the cursor, colour the terminal or add a line to what --verify and replays print."""
    text = "".join(c if c.isprintable() else "?" for c in str(value))
    return text if len(text) <= limit else f"{text[:limit - 3]}..."


def _is_weight(name: str) -> bool:
    return any(fnmatch.fnmatch(name, pattern) for pattern in WEIGHTS)


def _signature(manifest: dict[str, Any], key: str) -> str:
    """HMAC-SHA256 of the manifest without its signature; the manifest holds every file's sha256, so it covers all."""
    body = json.dumps({k: v for k, v in manifest.items() if k != "signature"}, sort_keys=True, default=str)
    return hmac.new(key.encode(), body.encode(), hashlib.sha256).hexdigest()


def pack(out: str | os.PathLike, work_dir: str | os.PathLike, folders: list[Path], info: dict[str, Any]) -> Path:
    """Write the run `folders` (under work_dir) without their weights, and bundle.json (`info` plus the folder list,
    the weights left out and every file's sha256) as the tar.gz `out`; raises, writing nothing, when it would exceed
    MAX_BYTES. Signed when $COLLM_BUNDLE_KEY is set."""
    out, work_dir = Path(out), Path(work_dir)
    manifest = dict(info, code=code_fingerprint(), commit=code_commit(),
                    packed_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"), runs={}, files={})
    members = []
    for folder in folders:
        rel = folder.relative_to(work_dir).as_posix()
        record = runs.read_record(folder / runs.DONE) or {}
        behind = {name: want for name, want in record.get("outputs", {}).items() if _is_weight(name)}
        manifest["runs"][rel] = {"left_behind": behind}
        members += [(p, f"{rel}/{p.name}") for p in sorted(folder.iterdir()) if p.is_file() and not _is_weight(p.name)
                    and not p.name.startswith(".")]
    manifest["files"] = {name: sha256_file(path) for path, name in members}
    if os.environ.get(KEY_ENV):
        manifest["signature"] = _signature(manifest, os.environ[KEY_ENV])
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


def _not_a_bundle(bundle: str | os.PathLike, why: str) -> ValueError:
    return ValueError(f"{bundle} is not a bundle made by python -m collm_lib.reproduce (a tar.gz holding "
                      f"{MANIFEST}): {why}")


def read_manifest(bundle: str | os.PathLike) -> dict[str, Any]:
    """bundle.json of a bundle, without unpacking it; its fields checked (`_check_manifest`)."""
    try:
        with tarfile.open(bundle, "r:gz") as tar:
            entry = tar.getmember(MANIFEST)
            if not entry.isreg() or entry.size > MAX_BYTES:
                raise UnsafeBundle(f"{bundle}: {MANIFEST} is not a regular file of at most {MAX_BYTES} bytes")
            manifest = json.loads(tar.extractfile(entry).read())
    except (*UNREADABLE, KeyError, ValueError) as err:
        if isinstance(err, (FileNotFoundError, UnsafeBundle)):
            raise
        damaged = "truncated or damaged, " if isinstance(err, UNREADABLE) else ""
        raise _not_a_bundle(bundle, f"{damaged}{type(err).__name__}: {err}") from err
    _check_manifest(bundle, manifest)
    return manifest


def _safe_rel(path: str, least: int) -> bool:
    """A relative path of at least `least` components, each a plain name (no "..", no absolute, no leading dot)."""
    parts = path.split("/")
    return len(parts) >= least and all(NAME.fullmatch(p) and p not in (".", "..") for p in parts)


def _check_manifest(bundle: str | os.PathLike, manifest: Any) -> None:
    """Refuse a manifest whose fields could reach outside the replay folder or into the notebooks as anything but
    the values pack writes: run keys are runs/<dataset>/.../<folder>, the profile one of settings.PROFILES, etc."""
    def refuse(why: str) -> None:
        raise UnsafeBundle(f"{bundle}: {MANIFEST} {why}; this bundle was not packed by this code as it is: do not "
                           "replay it (ask its sender for the bundle that `collm reproduce` wrote)")

    if not isinstance(manifest, dict) or not isinstance(manifest.get("runs"), dict):
        refuse("is not an object with a 'runs' object")
    for key, entry in manifest["runs"].items():
        if not (key.startswith("runs/") and _safe_rel(key, 3)):
            refuse(f"names the run folder {shown(key, 80)!r}, not a plain path runs/<dataset>/<folder>")
        behind = entry.get("left_behind") if isinstance(entry, dict) else None
        if not isinstance(behind, dict) or not all(NAME.fullmatch(n) and _is_weight(n) and _output(w)
                                                   for n, w in behind.items()):
            refuse(f"lists left-behind files of {key!r} that are not weight file names with their bytes and sha256")
    for field, (fits, words) in FIELDS.items():
        if field in manifest and not fits(manifest[field]):
            refuse(f"has {field} {shown(manifest[field], 80)!r}, not {words}")
    for field in ("profile", "seed", "model"):  # the notebooks' parameters: every bundle has them
        if field not in manifest:
            refuse(f"lacks its {field}")


def _text(limit: int = TEXT_MAX) -> Any:
    return lambda v: isinstance(v, str) and v.isprintable() and len(v) <= limit


def _hex(v: Any) -> bool:
    return isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v) is not None


def _output(v: Any) -> bool:
    """A run.json output record {"bytes": n, "sha256": hex}."""
    return isinstance(v, dict) and type(v.get("bytes")) is int and 0 <= v["bytes"] < 2**50 and _hex(v.get("sha256"))


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 10**9


# Every field pack writes, with what it may hold: checked before anything is emptied or written, so no field reaches
# a folder name, a notebook parameter or a report as anything but the values `collm reproduce` writes.
FIELDS: dict[str, tuple[Any, str]] = {
    "profile": (lambda v: v in settings.PROFILES, f"one of {settings.PROFILES}"),
    "seed": (lambda v: type(v) is int and 0 <= v <= SEED_MAX, f"a whole number from 0 to {SEED_MAX}"),
    "model": (_text(300), "a model name of at most 300 printable characters"),
    "precision": (lambda v: v in (*settings.RESOLVED_PRECISIONS, None), f"one of {settings.RESOLVED_PRECISIONS}"),
    "part": (lambda v: v in PARTS, f"one of {PARTS}"),
    "device": (_text(100), "a device name of at most 100 printable characters"),
    "commit": (lambda v: v is None or isinstance(v, str) and re.fullmatch(r"[0-9a-f]{40}(-dirty)?", v) is not None,
               "a git commit"),
    "code": (_hex, "a sha256"),
    "llm": (_hex, "a sha256"),
    "packed_at": (_text(40), "a time of at most 40 printable characters"),
    "complete": (lambda v: isinstance(v, bool), "true or false"),
    "seconds": (_number, "a number of seconds"),
    "jobs": (lambda v: type(v) is int and 1 <= v <= 1024, "a count of jobs"),
    "data": (lambda v: isinstance(v, dict) and all(isinstance(k, str) and NAME.fullmatch(k) and len(k) <= 100
                                                   and _hex(f) for k, f in v.items()),
             "{dataset name: fingerprint} (a name, never a path)"),
    "phases": (lambda v: isinstance(v, list) and len(v) <= 1000 and all(
        isinstance(r, dict) and all(isinstance(k, str) and len(k) <= 40 and (_text()(x) or _number(x) or x is None)
                                    for k, x in r.items()) for r in v), "a list of phase rows"),
    "run": (lambda v: isinstance(v, dict) and len(json.dumps(v, default=str)) <= 20_000, "a run record"),
    "files": (lambda v: isinstance(v, dict) and all(isinstance(n, str) and _hex(h) for n, h in v.items()),
              "{name: sha256}"),
    "signature": (_hex, "an HMAC-SHA256"),
}


def _member_problem(member: tarfile.TarInfo, run_keys: set[str]) -> str | None:
    """Why a tar member may not be unpacked; None when it is a file of a listed run folder, of a type runs write."""
    if not member.isreg():
        return "is a link, a folder or a special file (a bundle holds regular files only)"
    folder, _, name = member.name.rpartition("/")
    if folder not in run_keys:
        return f"lies outside the bundle's run folders {sorted(run_keys)[:3]}{'...' if len(run_keys) > 3 else ''}"
    if not NAME.fullmatch(name) or not name.endswith(FILE_TYPES) or name == runs.REPLAYED:
        return f"is not a file type run folders hold ({', '.join(FILE_TYPES)})"
    return None


def _members(bundle: str | os.PathLike, run_keys: set[str]) -> dict[str, bytes]:
    """{member: content} of every file beside the manifest, each refused unless `_member_problem` finds none."""
    contents, total = {}, 0
    with tarfile.open(bundle, "r:gz") as tar:
        for member in tar:
            if member.name == MANIFEST:
                continue
            problem = _member_problem(member, run_keys)
            if problem or member.name in contents:
                raise UnsafeBundle(f"{bundle}: member {shown(member.name)!r} {problem or 'occurs twice'}; nothing "
                                   "was unpacked. Do not replay it: ask its sender for the bundle `collm reproduce` "
                                   "wrote")
            total += member.size
            if total > MAX_UNPACKED:
                raise UnsafeBundle(f"{bundle}: over {MAX_UNPACKED // 2**20} MiB unpacked; nothing was unpacked")
            contents[member.name] = tar.extractfile(member).read()
    return contents


def check(bundle: str | os.PathLike, allow_unsigned: bool = False
          ) -> tuple[dict[str, Any], dict[str, bytes], dict[str, Any]]:
    """Validate a whole bundle without writing anything: (manifest, {member: content}, verification).

    Raises UnsafeBundle naming the first problem: a member that is not a regular file of a listed run folder of a
    known type, a folder that is neither a finished run nor a sweep setting, a file whose sha256 differs from
    bundle.json's, a signature that does not match $COLLM_BUNDLE_KEY (or none while the key is set, unless
    `allow_unsigned`), more than MAX_UNPACKED bytes; a truncated or damaged archive raises ValueError. Bundles from
    before sha256s were recorded pass with verification["sha256"] "not recorded"."""
    manifest = read_manifest(bundle)
    run_keys = set(manifest["runs"])
    try:
        contents = _members(bundle, run_keys)
    except UNREADABLE as err:
        raise _not_a_bundle(bundle, f"truncated or damaged ({type(err).__name__}: {err}); nothing was unpacked") \
            from err
    for key in sorted(run_keys):  # a finished run has run.json; a sweep setting (sweep.run_sweep) its result.json
        if f"{key}/{runs.DONE}" not in contents and f"{key}/result.json" not in contents:
            raise UnsafeBundle(f"{bundle}: folder {key} holds neither {runs.DONE} nor result.json: not a finished run "
                               "or sweep setting; nothing was unpacked")
    verification = {"commit": manifest.get("commit"), "device": manifest.get("device"),
                    "same_code": manifest.get("code") == code_fingerprint()}
    recorded = manifest.get("files")
    if recorded is None:
        verification["sha256"] = "not recorded (bundle from before sha256s were recorded)"
    else:
        wrong = sorted(set(contents) ^ set(recorded)) + sorted(
            n for n in contents if n in recorded and sha256_bytes(contents[n]) != recorded[n])
        if wrong:
            raise UnsafeBundle(f"{bundle}: {len(wrong)} file(s) differ from the sha256s bundle.json records, e.g. "
                               f"{wrong[0]}: the bundle was changed after it was packed; nothing was unpacked")
        verification["sha256"] = f"verified ({len(contents)} files)"
    verification["signature"] = _check_signature(bundle, manifest, allow_unsigned)
    return manifest, contents, verification


def _check_signature(bundle: str | os.PathLike, manifest: dict[str, Any], allow_unsigned: bool) -> str:
    key, signature = os.environ.get(KEY_ENV), manifest.get("signature")
    if signature is None and key and not allow_unsigned:
        raise UnsafeBundle(f"{bundle}: it is unsigned and ${KEY_ENV} is set: with a key, only bundles signed with it "
                           "are replayed (a forger strips the signature); nothing was unpacked. Ask its sender for a "
                           f"bundle packed with ${KEY_ENV} set, or pass --allow-unsigned to accept it knowingly")
    if signature is None:
        return "unsigned" + (f", accepted with --allow-unsigned although ${KEY_ENV} is set" if key else "")
    if not key:
        return f"signed, not checked (set ${KEY_ENV} to the key it was signed with)"
    if not hmac.compare_digest(str(signature), _signature(manifest, key)):
        raise UnsafeBundle(f"{bundle}: its signature does not match ${KEY_ENV}: signed with another key, or edited "
                           "after it was signed; nothing was unpacked")
    return f"verified with ${KEY_ENV}"


def verify(bundle: str | os.PathLike, allow_unsigned: bool = False) -> dict[str, Any]:
    """What `collm replay --verify` shows: the bundle's provenance and whether it verified, writing nothing."""
    manifest, contents, verification = check(bundle, allow_unsigned)
    return {"bundle": str(bundle), "bundle_sha256": sha256_file(bundle), "part": manifest.get("part"),
            "profile": manifest["profile"], "packed_at": manifest.get("packed_at"), "runs": len(manifest["runs"]),
            "files": len(contents), **verification}


def conflicts(manifests: dict[Path, dict[str, Any]]) -> None:
    """Refuse bundles that carry one run folder with different files: unpacked together, the later would replace
    the earlier's silently. The same run in two parts' bundles (a part reuses another's runs) holds the same files
    with the same sha256s and is fine; a bundle without recorded sha256s may share no folder."""
    seen: dict[str, tuple[Path, dict[str, str] | None]] = {}
    for path, manifest in manifests.items():
        files = manifest.get("files")
        for key in manifest["runs"]:
            mine = None if files is None else {n: h for n, h in files.items() if n.rpartition("/")[0] == key}
            if key in seen:
                other, theirs = seen[key]
                if mine is None or theirs is None or mine != theirs:
                    raise UnsafeBundle(f"{other} and {path} both carry the run folder {key} with different files: "
                                       "unpacked together one would silently replace the other; replay the bundles "
                                       "of one reproduction (nothing was unpacked)")
            seen[key] = (path, mine)


def _write_inside(root: Path, rel: str, data: bytes) -> None:
    """Write `data` to root/rel, refusing any link on the way: the resolved path must stay under root."""
    target, base = root / rel, root.resolve()
    for parent in [*reversed(target.relative_to(root).parents)][1:] + [Path(rel)]:
        if (root / parent).is_symlink():
            raise UnsafeBundle(f"{root / parent} is a link: a replay writes no file through one; replay into an "
                               "empty folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.parent.resolve().is_relative_to(base):
        raise UnsafeBundle(f"{target} would be written outside {root}; nothing more was unpacked")
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def unpack(bundle: str | os.PathLike, work_dir: str | os.PathLike | None = None,
           allow_unsigned: bool = False) -> dict[str, Any]:
    """Check a bundle whole (`check`), then write its run folders under `work_dir` (default settings.work_dir()) and
    mark each as replayed; returns its bundle.json with the verification and the bundle's path and sha256."""
    bundle, work_dir = Path(bundle), settings.work_dir(work_dir)
    manifest, contents, verification = check(bundle, allow_unsigned)
    origin = {"path": str(bundle.resolve()), "sha256": sha256_file(bundle)}
    settings.require_space(work_dir, sum(map(len, contents.values())) + 2**20, f"unpacking {bundle.name}")
    work_dir.mkdir(parents=True, exist_ok=True)
    for name, data in contents.items():
        _write_inside(work_dir, name, data)
    for rel, entry in manifest["runs"].items():
        record = {"bundle": bundle.name, "bundle_sha256": origin["sha256"], "part": manifest.get("part"),
                  "device": manifest.get("device"), "commit": manifest.get("commit"), "verification": verification,
                  "left_behind": entry["left_behind"]}
        _write_inside(work_dir, f"{rel}/{runs.REPLAYED}", json.dumps(record, indent=2).encode())
    manifest = dict(manifest, verification=verification, origin=origin)
    # named by content: two bundles of one file name (from two folders) are both listed
    write_json(work_dir / "bundles" / f"{origin['sha256'][:16]}.json", manifest)
    return manifest


def provenance(work_dir: str | os.PathLike | None = None) -> list[str]:
    """One line per bundle unpacked into the work dir: its path and sha256, part, device, code commit, packed when,
    and what verified; what a replayed notebook prints first (params.check), so a reader sees where its numbers
    came from. Every field passes through `shown`: a bundle cannot write the report."""
    lines = []
    for path in sorted((settings.work_dir(work_dir) / "bundles").glob("*.json")):
        m = runs.read_record(path) or {}
        v, origin = m.get("verification", {}), m.get("origin", {})
        code = "same" if v.get("same_code") else "other"
        lines.append(shown(f"replayed bundle {origin.get('path', path.stem)} (sha256 {origin.get('sha256')}): part "
                           f"{shown(m.get('part'))}, {shown(m.get('device'))}, commit "
                           f"{shown(m.get('commit') or 'not recorded')} ({code} library code than this checkout), "
                           f"packed {shown(m.get('packed_at'))}; sha256 {v.get('sha256', 'not checked')}; "
                           f"signature {v.get('signature', 'not checked')}", 2000))
    return lines
