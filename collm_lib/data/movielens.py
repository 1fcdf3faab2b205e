"""MovieLens-1M: CoLLM's released processed splits, and the same temporal protocol built from raw files
(docs/protocol.md §2.1)."""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pandas as pd

from ..hashing import sha256_bytes
from .common import (FLAGS, SPLIT_NAMES, Splits, add_history, add_not_cold, by_flag, check_columns, make_splits,
                     remap_ids, require_files, source_record)

COLLM_ZIP = "ml-1m.zip"
# sha256 of the zip members, from ../shared/data/ml-1m-collm/SOURCE.md.
COLLM_MEMBERS = {
    "train": ("ml-1m/train_ood2.pkl", "a0c4cb50a61a27453aa8c14a81cb1b41b1fdc874362e46960956b0bc720c21fe"),
    "valid": ("ml-1m/valid_ood2.pkl", "02d4f13a5845f6f86304c2624ef5858d1753cd9d1d5fb7250c960b9dc5e613f5"),
    "valid_small": ("ml-1m/valid_small_ood2.pkl",
                    "e1cd4f7f4f7505ee160571a38117e7f153f2d928cd6f6f1705db6f4ffe64e41a"),
    "test": ("ml-1m/test_ood2.pkl", "a35ec4a7d93a76f2a81a0c0c926a95ad5fa5fe4ea8190f02dc1630c58a0e167a"),
}
COLLM_HOW = ("Get collm-datasets/ml-1m.zip from github.com/zyang1580/CoLLM (blob b619201f) and put it in "
             "<data_dir>/ml-1m-collm/.")
RAW_HOW = ("Download ml-1m.zip from grouplens.org/datasets/movielens/1m/ and put ratings.dat (or "
           "ratings.dat.gz) and movies.dat in <data_dir>/ml-1m-raw/.")
# Month index m = (year - 2000) * 12 + month - 4 (April 2000 = 0); inclusive windows of docs/protocol.md §2.1.
WINDOWS = {"train": (14, 23), "valid": (24, 28), "test": (29, 33)}
VALID_SMALL_FRAC, VALID_SMALL_SEED = 0.5, 2023


def load_collm(folder: Path) -> Splits:
    """CoLLM's pickles: member checksums verified, left padding of `his` stripped, flag made int."""
    (zip_path,) = require_files(folder, [COLLM_ZIP], COLLM_HOW)
    try:
        archive = zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile as err:
        raise ValueError(f"{zip_path} is not a readable zip ({err}); the download is truncated or corrupt. "
                         f"{COLLM_HOW}") from err
    frames, members = {}, {}
    with archive:
        names = set(archive.namelist())
        for split_name, (member, digest) in COLLM_MEMBERS.items():
            if member not in names:
                raise ValueError(f"{zip_path} lacks member {member}; it is not CoLLM's ml-1m.zip. {COLLM_HOW}")
            try:
                blob = archive.read(member)
            except (zipfile.BadZipFile, OSError, EOFError) as err:
                raise ValueError(f"{zip_path}: member {member} cannot be read ({err}). {COLLM_HOW}") from err
            got = sha256_bytes(blob)
            if got != digest:
                raise ValueError(f"{zip_path}: member {member} has sha256 {got}, expected {digest} "
                                 f"(SOURCE.md); the archive differs from CoLLM's release. {COLLM_HOW}")
            frame = pd.read_pickle(io.BytesIO(blob))
            check_columns(frame, ["uid", "iid", "label", "timestamp", "his", "his_title", "title", "flag",
                                  "not_cold"], f"{zip_path}:{member}")
            frames[split_name] = _strip_padding(frame)
            members[member] = digest
    meta = {
        "protocol": "docs/protocol.md §2.1 (CoLLM temporal ML-1M), CoLLM's released processed frames",
        "source": {"folder": str(folder), **source_record([zip_path]), "members_sha256": members},
        "seeds": {"valid_small": VALID_SMALL_SEED},
        "notes": ["his: CoLLM's left padding zeros stripped; flag cast from float to int.",
                  "valid_small is CoLLM's own 50% sample of valid (seed 2023)."],
    }
    return make_splits("ml-1m", frames, meta)


def _strip_padding(frame: pd.DataFrame) -> pd.DataFrame:
    """CoLLM pads `his` (and `his_title` with '') on the left with one 0: drop the leading zeros."""
    frame = frame.copy()
    lead = [next((k for k, v in enumerate(h) if v != 0), len(h)) for h in frame["his"]]
    frame["his"] = [h[k:] for h, k in zip(frame["his"], lead)]
    frame["his_title"] = [t[k:] for t, k in zip(frame["his_title"], lead)]
    if any(0 in h for h in frame["his"]):
        raise ValueError("CoLLM's his lists hold 0 inside a history, not only as left padding")
    frame["flag"] = frame["flag"].astype("int64")
    return frame


def read_raw(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame, list[Path]]:
    """ratings (user, item, rating, timestamp) and movies (item, title) of the GroupLens `::` files."""
    ratings_name = "ratings.dat" if (folder / "ratings.dat").is_file() else "ratings.dat.gz"
    paths = require_files(folder, [ratings_name, "movies.dat"], RAW_HOW)
    try:
        ratings = pd.read_csv(paths[0], sep="::", engine="python", header=None,
                              names=["user", "item", "rating", "timestamp"], dtype="int64")
        movies = pd.read_csv(paths[1], sep="::", engine="python", header=None,
                             names=["item", "title", "genres"], encoding="latin-1")
    except (ValueError, EOFError, OSError, pd.errors.ParserError) as err:
        raise ValueError(f"cannot parse {folder} ({type(err).__name__}: {err}); expected "
                         f"UserID::MovieID::Rating::Timestamp lines. {RAW_HOW}") from err
    if movies["title"].isna().any():
        raise ValueError(f"{paths[1]}: lines without a title; expected MovieID::Title::Genres. {RAW_HOW}")
    return ratings, movies[["item", "title"]], paths


def month_index(timestamp: pd.Series) -> pd.Series:
    """(year - 2000) * 12 + month - 4 of the UTC time: April 2000 is 0."""
    when = pd.to_datetime(timestamp, unit="s", utc=True)
    return (when.dt.year - 2000) * 12 + when.dt.month - 4


def build_stream(ratings: pd.DataFrame, movies: pd.DataFrame) -> pd.DataFrame:
    """All rows of the three windows in (user, timestamp) order with ids, flag, history and not_cold."""
    ratings = ratings.copy()
    first_seen = {item: rank for rank, item in enumerate(pd.unique(ratings["item"]))}
    ratings["month"] = month_index(ratings["timestamp"])
    ratings["flag"] = pd.NA
    for split_name, (lo, hi) in WINDOWS.items():
        ratings.loc[ratings["month"].between(lo, hi), "flag"] = FLAGS[split_name]
    stream = ratings.dropna(subset=["flag"]).copy()
    stream["flag"] = stream["flag"].astype("int64")
    stream["label"] = (stream["rating"] >= 4).astype("int64")
    unknown = set(stream["item"]) - set(movies["item"])
    if unknown:
        raise ValueError(f"movies.dat lacks {len(unknown)} rated MovieIDs (e.g. {sorted(unknown)[:5]}); "
                         "ratings.dat and movies.dat come from different releases.")
    stream = stream.merge(movies, on="item", how="left", validate="many_to_one")
    # Ties on (user, timestamp) follow CoLLM's pandas (< 2.2) inner merge with movies.dat, which grouped
    # rows by MovieID in order of each movie's first appearance in ratings.dat (file order within a group).
    stream["item_rank"] = stream["item"].map(first_seen)
    stream = stream.sort_values(["user", "timestamp", "item_rank"], kind="stable").reset_index(drop=True)
    stream, _, _ = remap_ids(stream, "user", "item")
    stream = add_history(stream)
    return add_not_cold(stream)


def split_stream(stream: pd.DataFrame) -> dict[str, pd.DataFrame]:
    frames = by_flag(stream)
    frames["valid_small"] = frames["valid"].sample(frac=VALID_SMALL_FRAC, random_state=VALID_SMALL_SEED)
    return {name: frames[name] for name in SPLIT_NAMES}


def prepare_raw(folder: Path) -> Splits:
    """docs/protocol.md §2.1 from ratings.dat + movies.dat."""
    ratings, movies, paths = read_raw(folder)
    stream = build_stream(ratings, movies)
    frames = split_stream(stream)
    columns = ["uid", "iid", "label", "timestamp", "his", "his_title", "title", "flag", "not_cold",
               "user", "item"]
    meta = {
        "protocol": "docs/protocol.md §2.1 (CoLLM temporal ML-1M) built from raw ratings",
        "source": {"folder": str(folder), **source_record(paths)},
        "seeds": {"valid_small": VALID_SMALL_SEED},
        "windows_month_index": WINDOWS,
        "n_ratings_read": len(ratings),
        "notes": ["label = rating >= 4; month index (year-2000)*12+month-4 of UTC time.",
                  "his = every earlier positive of the user in any split, oldest first.",
                  "ties on (user, timestamp) are ordered by the movie's first appearance in ratings.dat "
                  "(CoLLM's pandas inner-merge order), then file order.",
                  "columns user / item keep the original MovieLens ids.",
                  "valid_small = valid.sample(frac=0.5, random_state=2023), as CoLLM's release."],
    }
    if len(ratings) < 1_000_209:
        meta["notes"].append(f"ratings.dat holds {len(ratings):,} of ML-1M's 1,000,209 ratings: PARTIAL data, "
                             "sizes will not match docs/protocol.md §2.5.")
    return make_splits("ml-1m-raw", {n: f[columns] for n, f in frames.items()}, meta)
