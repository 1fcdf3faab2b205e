"""What every dataset shares: the Splits container, the schema check, statistics, checksums, the
processed-file cache and the history / id / not_cold construction of CoLLM's protocol."""
from __future__ import annotations

import gzip
import hashlib
import json
import random
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import pandas as pd

from ..hashing import sha256_file
from ..io import atomic_path, read_json, sole_writer, write_frame, write_json

SPLIT_NAMES = ("train", "valid", "valid_small", "test")
BASE_COLUMNS = ("uid", "iid", "label", "timestamp", "his", "his_title", "title", "flag", "not_cold")
BOOK_COLUMNS = ("author", "his_author", "his_label")
INT_COLUMNS = ("uid", "iid", "label", "timestamp", "flag", "not_cold")
LIST_COLUMNS = ("his", "his_title", "his_author", "his_label")
FLAGS = {"train": -1, "valid": 0, "test": 1}  # the "flag" column: a row's split (valid_small rows are valid ones)
# Bumped whenever the processed format or a builder changes, so stale caches are rebuilt.
FORMAT_VERSION = 4  # 2: meta.json holds the frames' content sha256; 3: gzip JSON, no pickles; 4: BX text repaired
FRAME_SUFFIX = ".json.gz"


@dataclass
class Splits:
    """One dataset's processed splits; ids start at 1 and 0 is padding."""

    name: str
    train: pd.DataFrame
    valid: pd.DataFrame
    valid_small: pd.DataFrame
    test: pd.DataFrame
    n_users: int  # number of user ids INCLUDING padding id 0 (= max uid + 1)
    n_items: int  # likewise for items
    collab_train: pd.DataFrame | None = None  # (uid, iid, label) rows for the collaborative model; None: train
    meta: dict = field(default_factory=dict)  # protocol, seeds, source files + sha256, notes

    @property
    def collab_rows(self) -> pd.DataFrame:
        """The rows collaborative models (MF, popularity) learn from: collab_train where a dataset has it, else train."""
        return self.collab_train if self.collab_train is not None else self.train

    def split(self, name: str) -> pd.DataFrame:
        if name not in SPLIT_NAMES:
            raise ValueError(f"unknown split {name!r}; choose one of {SPLIT_NAMES}")
        return getattr(self, name)


def _native(value: Any) -> Any:
    return value.tolist() if hasattr(value, "tolist") else str(value)


def content_sha256(frame: pd.DataFrame) -> str:
    """sha256 of a frame's column names and values as canonical JSON: equal on any pandas / numpy version, unlike
    a file's bytes, so data processed on another machine (a GPU box) has the same identity as here."""
    digest = hashlib.sha256()
    for column in frame.columns:
        values = frame[column].tolist()
        digest.update(json.dumps([str(column), values], default=_native, ensure_ascii=False).encode())
    return digest.hexdigest()


def require_files(folder: Path, names: list[str], how_to_get: str) -> list[Path]:
    """Paths of `names` in `folder`; a missing folder or file raises FileNotFoundError saying how to get it."""
    if not folder.is_dir():
        raise FileNotFoundError(f"data folder {folder} does not exist; it must hold {', '.join(names)}. "
                                f"{how_to_get}")
    missing = [name for name in names if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"missing {', '.join(missing)} in {folder}. {how_to_get}")
    return [folder / name for name in names]


def check_columns(frame: pd.DataFrame, needed: list[str] | tuple[str, ...], source: str) -> None:
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise ValueError(f"{source}: missing column(s) {missing}; found {list(frame.columns)}. "
                         "The file is not in the expected format (truncated or a different release?).")


def validate_frame(df: pd.DataFrame, name: str = "frame") -> None:
    """Check the processed schema; raises ValueError naming the missing or wrong columns."""
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"{name}: expected a pandas DataFrame, got {type(df).__name__}")
    check_columns(df, BASE_COLUMNS, name)
    if len(df) == 0:
        raise ValueError(f"{name}: the split is empty (0 rows)")
    wrong = [c for c in INT_COLUMNS if not pd.api.types.is_integer_dtype(df[c])]
    wrong += [c for c in ("title",) + BOOK_COLUMNS[:1] if c in df and not _all_str(df[c])]
    wrong += [c for c in LIST_COLUMNS if c in df and not df[c].map(lambda v: isinstance(v, list)).all()]
    if wrong:
        raise ValueError(f"{name}: column(s) {wrong} have the wrong type (ints: {INT_COLUMNS}; "
                         f"lists: {LIST_COLUMNS}; strings: title, author)")
    if df["uid"].min() < 1 or df["iid"].min() < 1:
        raise ValueError(f"{name}: uid / iid must start at 1 (0 is padding)")
    if not df["label"].isin((0, 1)).all() or not df["not_cold"].isin((0, 1)).all():
        raise ValueError(f"{name}: columns label and not_cold must be 0/1")
    if not df["flag"].isin(FLAGS.values()).all():
        raise ValueError(f"{name}: column flag must be -1 (train), 0 (valid) or 1 (test)")
    aligned = [c for c in ("his_title", "his_author", "his_label") if c in df]
    lengths = df["his"].map(len)
    bad = [c for c in aligned if not (df[c].map(len) == lengths).all()]
    if bad:
        raise ValueError(f"{name}: column(s) {bad} are not aligned with his (different list lengths)")


def _all_str(series: pd.Series) -> bool:
    return bool(series.map(lambda v: isinstance(v, str)).all())


def split_stats(splits: Splits) -> pd.DataFrame:
    """Rows, users, items, positive rate and cold share (not_cold == 0) of every split; when the meta records
    repeated interactions dropped before the split (own data: one row per (user, item)), their count too."""
    rows = []
    frames = [(n, splits.split(n)) for n in SPLIT_NAMES]
    if splits.collab_train is not None:
        frames.append(("collab_train", splits.collab_train))
    for split_name, frame in frames:
        rows.append({
            "dataset": splits.name, "split": split_name, "rows": len(frame),
            "users": frame["uid"].nunique(), "items": frame["iid"].nunique(),
            "positive_rate": round(float(frame["label"].mean()), 4),
            "cold_share": round(float((frame["not_cold"] == 0).mean()), 4) if "not_cold" in frame else np.nan,
            "mean_history": round(float(frame["his"].map(len).mean()), 2) if "his" in frame else np.nan,
        })
    stats = pd.DataFrame(rows)
    if "duplicates_dropped" in splits.meta:  # dataset-wide, so the same on every split's row
        stats["duplicates_dropped"] = int(splits.meta["duplicates_dropped"])
    return stats


def clean_lists(frame: pd.DataFrame) -> pd.DataFrame:
    """Plain python ints / strs inside list columns and ints elsewhere, so cached frames and equality are simple."""
    frame = frame.copy()
    for col in LIST_COLUMNS:
        if col in frame:
            cast = str if col in ("his_title", "his_author") else int
            frame[col] = [list(map(cast, values)) for values in frame[col]]
    for col in ("title", "author"):
        if col in frame:
            frame[col] = frame[col].map(str).astype(object)
    for col in INT_COLUMNS:
        if col in frame:
            frame[col] = frame[col].astype("int64")
    return frame.reset_index(drop=True)


def add_history(stream: pd.DataFrame, extra: tuple[str, ...] = ()) -> pd.DataFrame:
    """CoLLM's history: in a (uid, timestamp)-sorted stream, every earlier positive of the same user.

    `stream` must already be in stream order; `his` gets iid and `his_title` title (plus his_<c> for c in
    `extra`), oldest first."""
    his: list[list[int]] = []
    titles: list[list[str]] = []
    extras: dict[str, list[list]] = {c: [] for c in extra}
    cur_user, cur_items, cur_titles = None, [], []
    cur_extra: dict[str, list] = {c: [] for c in extra}
    columns = [stream[c].to_numpy() for c in ("uid", "iid", "label", "title")]
    extra_cols = {c: stream[c].to_numpy() for c in extra}
    for pos, (uid, iid, label, title) in enumerate(zip(*columns)):
        if uid != cur_user:
            cur_user, cur_items, cur_titles = uid, [], []
            cur_extra = {c: [] for c in extra}
        his.append(list(cur_items))
        titles.append(list(cur_titles))
        for c in extra:
            extras[c].append(list(cur_extra[c]))
        if label == 1:
            cur_items.append(int(iid))
            cur_titles.append(str(title))
            for c in extra:
                cur_extra[c].append(extra_cols[c][pos])
    stream = stream.copy()
    stream["his"], stream["his_title"] = his, titles
    for c in extra:
        stream[f"his_{c}"] = extras[c]
    return stream


def remap_ids(stream: pd.DataFrame, user_col: str, item_col: str) -> tuple[pd.DataFrame, dict, dict]:
    """uid = rank of the original user id (ascending); iid = order of first appearance in the stream."""
    users = np.sort(stream[user_col].unique())
    user_map = {u: k + 1 for k, u in enumerate(users)}
    item_map = {i: k + 1 for k, i in enumerate(pd.unique(stream[item_col]))}
    stream = stream.copy()
    stream["uid"] = stream[user_col].map(user_map).astype("int64")
    stream["iid"] = stream[item_col].map(item_map).astype("int64")
    return stream, user_map, item_map


def by_flag(stream: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The train, valid and test rows of `stream`, by its flag column (FLAGS)."""
    return {name: stream[stream["flag"] == flag] for name, flag in FLAGS.items()}


def split_users(users: Iterable, seed: int, cuts: tuple[float, float]) -> dict[str, list]:
    """TALLRec's user split (docs/protocol.md §2.3): the users, ascending, shuffled with `seed`, cut with int() at the
    two cut points (shares of users: BookCrossing's 0.8 and 0.9)."""
    order = sorted(users)
    random.Random(seed).shuffle(order)
    cut1, cut2 = int(len(order) * cuts[0]), int(len(order) * cuts[1])
    return {"train": order[:cut1], "valid": order[cut1:cut2], "test": order[cut2:]}


def sample_valid_users(valid: pd.DataFrame, frac: float, seed: int) -> pd.DataFrame:
    """A user split's valid_small: every row of a seeded sample of valid's users."""
    users = pd.Series(sorted(valid["uid"].unique()))
    return valid[valid["uid"].isin(set(users.sample(frac=frac, random_state=seed)))]


def add_not_cold(stream: pd.DataFrame) -> pd.DataFrame:
    """not_cold = 1 when both the user and the item occur in the train split (flag == -1)."""
    train = stream[stream["flag"] == FLAGS["train"]]
    warm_users, warm_items = set(train["uid"]), set(train["iid"])
    stream = stream.copy()
    stream["not_cold"] = (stream["uid"].isin(warm_users) & stream["iid"].isin(warm_items)).astype("int64")
    return stream


# ---------------------------------------------------------------- processed cache

def _frame_files(splits: Splits) -> dict[str, pd.DataFrame]:
    frames = {n: splits.split(n) for n in SPLIT_NAMES}
    if splits.collab_train is not None:
        frames["collab_train"] = splits.collab_train
    return frames


def write_frame_json(path: Path, frame: pd.DataFrame) -> None:
    """A frame as gzip JSON (columns, dtypes, values): a format that cannot run code when read, unlike a pickle,
    so a processed cache from elsewhere can at worst hold wrong rows, which its sha256 in meta.json catches."""
    body = {"columns": [str(c) for c in frame.columns], "columns_dtype": str(frame.columns.dtype),
            "dtypes": {str(c): str(t) for c, t in frame.dtypes.items()},
            "data": {str(c): frame[c].tolist() for c in frame.columns}}
    with atomic_path(path) as tmp:  # no name, mtime 0: the same rows give the same bytes on every rebuild
        tmp.write_bytes(gzip.compress(json.dumps(body, default=_native, ensure_ascii=False).encode(), 6, mtime=0))


def read_frame_json(path: Path) -> pd.DataFrame:
    body = json.loads(gzip.decompress(path.read_bytes()))
    frame = pd.DataFrame({c: body["data"][c] for c in body["columns"]},
                         columns=pd.Index(body["columns"], dtype=body["columns_dtype"]))
    # back to the written dtypes: pandas would read a column of titles as "str" where the frame had "object"
    return frame.astype(body["dtypes"])


def save_processed(splits: Splits, out_dir: Path) -> None:
    """Write each frame (`_write_frame`), then stats.csv, then meta.json (with the frames' sha256) last:
    meta.json is the commit marker, so a crash mid-way leaves a cache that load_processed refuses."""
    with sole_writer(out_dir.parent, out_dir.name):  # one build at a time; a killed one's temporaries go first
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "meta.json").unlink(missing_ok=True)
        for old in out_dir.glob("*.pkl"):  # format 2's pickles: never read again
            old.unlink()
        hashes = {}
        for name, frame in _frame_files(splits).items():
            write_frame_json(out_dir / f"{name}{FRAME_SUFFIX}", frame)
            hashes[name] = sha256_file(out_dir / f"{name}{FRAME_SUFFIX}")
        write_frame(out_dir / "stats.csv", split_stats(splits))
        meta = dict(splits.meta, name=splits.name, n_users=splits.n_users, n_items=splits.n_items,
                    format_version=FORMAT_VERSION, files=hashes,
                    content_sha256={name: content_sha256(frame) for name, frame in _frame_files(splits).items()},
                    rows={name: len(frame) for name, frame in _frame_files(splits).items()})
        write_json(out_dir / "meta.json", meta)
        splits.meta = meta


_CONTENT_CHECKED: set[tuple[str, str]] = set()  # (name, what meta.json claims) verified against the rows here


class _DamagedCache(Exception):
    """Why a processed cache cannot be used; load_processed turns it into a warning and a rebuild."""


def load_processed(name: str, out_dir: Path) -> Splits | None:
    """The cached splits if complete, unchanged and valid; None when they must be rebuilt.

    No cache yet gives None quietly; a damaged or stale one (meta.json unreadable, a frame truncated or
    changed, an empty or invalid split) gives None with a warning saying what was wrong, so the caller
    rebuilds it from the raw files instead of failing on every later load."""
    if not (out_dir / "meta.json").is_file():
        return None  # nothing cached, or a build stopped before its commit marker
    try:
        return _read_processed(name, out_dir)
    except _DamagedCache as err:
        warnings.warn(f"processed cache {out_dir}: {err}; rebuilding it from the raw files", stacklevel=3)
        return None


def _read_processed(name: str, out_dir: Path) -> Splits:
    try:
        meta = read_json(out_dir / "meta.json")
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError: a truncated or overwritten file
        raise _DamagedCache(f"meta.json is not valid JSON ({err}): truncated or damaged") from err
    if not isinstance(meta, dict) or not {"files", "n_users", "n_items"} <= meta.keys():
        raise _DamagedCache("meta.json lacks files / n_users / n_items: not written by save_processed")
    if meta.get("format_version") != FORMAT_VERSION:
        raise _DamagedCache(f"meta.json has format version {meta.get('format_version')}, this code writes "
                           f"{FORMAT_VERSION}")
    if meta.get("name") != name:
        raise _DamagedCache(f"meta.json belongs to dataset {meta.get('name')!r}, not {name!r}")
    frames = {}
    for fname, digest in meta["files"].items():
        path = out_dir / f"{fname}{FRAME_SUFFIX}"
        if not path.is_file():
            raise _DamagedCache(f"{path.name} is missing")
        if sha256_file(path) != digest:
            raise _DamagedCache(f"{path.name} does not match its sha256 in meta.json (truncated or changed)")
        try:
            frames[fname] = read_frame_json(path)
        except (ValueError, KeyError, TypeError, EOFError, OSError) as err:  # gzip/JSON errors, missing keys
            raise _DamagedCache(f"{path.name} is not a processed frame ({type(err).__name__}: {err})") from err
    missing = [n for n in SPLIT_NAMES if n not in frames]
    if missing:
        raise _DamagedCache(f"meta.json lists no file for split(s) {missing}")
    for fname in SPLIT_NAMES:
        try:
            validate_frame(frames[fname], f"{name}/{fname}")
        except ValueError as err:  # e.g. an empty split cached by an older version
            raise _DamagedCache(f"{fname}{FRAME_SUFFIX} is invalid: {err}") from err
    # the identity runs are keyed by (runs.data_fingerprint) and the id counts are recomputed from the rows, never
    # read: a cache edited consistently (its files' sha256s updated) must not stand under the genuine data's
    # identity. Once per process for the same files (their sha256s were just checked): a session loads a dataset
    # many times.
    claimed = json.dumps({k: meta.get(k) for k in ("files", "content_sha256", "n_users", "n_items")}, sort_keys=True)
    if (name, claimed) not in _CONTENT_CHECKED:
        content = {fname: content_sha256(frame) for fname, frame in frames.items()}
        if content != meta.get("content_sha256"):
            raise _DamagedCache("its rows differ from the content sha256 meta.json records (edited after it was "
                                "built)")
        counts = _id_counts(frames[n] for n in (*SPLIT_NAMES, "collab_train") if n in frames)
        if counts != (meta["n_users"], meta["n_items"]):
            raise _DamagedCache(f"meta.json says {meta['n_users']!r} users and {meta['n_items']!r} items, its rows "
                                f"hold {counts[0]} and {counts[1]}")
        _CONTENT_CHECKED.add((name, claimed))
    n_users, n_items = int(meta["n_users"]), int(meta["n_items"])
    return Splits(name=name, **{n: frames[n] for n in SPLIT_NAMES}, n_users=n_users, n_items=n_items,
                  collab_train=frames.get("collab_train"), meta=meta)


def _id_counts(frames: Iterable[pd.DataFrame]) -> tuple[int, int]:
    """(n_users, n_items) of the rows: every id seen (in histories too) plus the padding id 0."""
    parts = list(frames)
    n_users = int(max(int(f["uid"].max()) for f in parts)) + 1
    n_items = int(max(max(int(f["iid"].max()), max((max(h) for h in f["his"] if h), default=0))
                      if "his" in f else int(f["iid"].max()) for f in parts)) + 1
    return n_users, n_items


def make_splits(name: str, frames: dict[str, pd.DataFrame], meta: dict[str, Any],
                collab_train: pd.DataFrame | None = None) -> Splits:
    """Clean, validate and wrap the four frames; n_users / n_items count every id seen plus padding."""
    frames = {n: clean_lists(frames[n]) for n in SPLIT_NAMES}
    for split_name, frame in frames.items():
        if len(frame) == 0:
            raise _empty_build_error(f"{name}/{split_name}", meta)
        validate_frame(frame, f"{name}/{split_name}")
    n_users, n_items = _id_counts([*frames.values(), *([collab_train] if collab_train is not None else [])])
    if collab_train is not None:
        collab_train = collab_train[["uid", "iid", "label"]].astype("int64").reset_index(drop=True)
    return Splits(name=name, **frames, n_users=n_users, n_items=n_items, collab_train=collab_train,
                  meta=meta)


def _empty_build_error(split: str, meta: dict[str, Any]) -> ValueError:
    """A builder that yields no rows for a split: the raw files or the filters are at fault, not a cache."""
    source = meta.get("source", {})
    files = [key for key, value in source.items() if isinstance(value, dict) and "sha256" in value]
    where = f"{', '.join(files) or 'the raw files'} in {source.get('folder', 'the raw data folder')}"
    return ValueError(f"{split}: the builder produced 0 rows for this split from {where}. The raw data or "
                      "the builder's filters (time windows, minimum counts, user split) leave nothing for it, "
                      "so rebuilding does not help: check that those files are complete and are the release "
                      "named in the dataset's SOURCE.md.")


def source_record(paths: list[Path], hasher: Callable[[Path], str] = sha256_file) -> dict[str, dict]:
    return {p.name: {"bytes": p.stat().st_size, "sha256": hasher(p)} for p in paths}
