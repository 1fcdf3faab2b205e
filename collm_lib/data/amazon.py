"""Amazon-Book by CoLLM's protocol (docs/protocol.md §2.2) from the 2018 raw files, and a clearly labelled
substitute built from MSL's Amazon Books windows (no ratings, so negatives are sampled; docs/protocol.md §2.4)."""
from __future__ import annotations

import ast
import gzip
import html
import json
import time
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from .common import (FLAGS, SPLIT_NAMES, Splits, add_history, add_not_cold, by_flag, check_columns, make_splits,
                     remap_ids, require_files, source_record)

REVIEWS, META = "Books_5.json.gz", "meta_Books.json.gz"
AMAZON_HOW = ("Get the Amazon review data (2018) of J. McAuley's lab (UCSD), category Books: the 5-core reviews "
              "Books_5.json.gz and the metadata meta_Books.json.gz (nijianmo.github.io/amazon/index.html), and put "
              "both in <data_dir>/amazon-book/.")
YEAR = 2017
MIN_COUNT = 20  # users and items with MORE than 20 ratings in 2017, one pass
VALID_SMALL_FRAC, VALID_SMALL_SEED = 0.25, 2023

MSL_FILES = ["train.csv", "test.csv", "id2name4Rec.json"]
MSL_HOW = ("Copy data/Amazon_Books/{train.csv,test.csv,id2name4Rec.json} of github.com/WANGBohaO-jpg/MSL into "
           "<data_dir>/amazon-book-msl/.")
NEGATIVE_SEED = 2023


def _json_lines(path: Path, keep: tuple[str, ...]):
    """Records of a gzip json-lines file, only the `keep` fields; errors name the file and line."""
    try:
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}, line {number}: not JSON ({err}). {AMAZON_HOW}") from err
                yield {k: record.get(k) for k in keep}
    except (OSError, EOFError, zlib.error) as err:
        raise ValueError(f"{path} is not a complete gzip file ({err}); download it again. {AMAZON_HOW}") from err


def read_amazon(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame, list[Path]]:
    """2017 reviews with a rating (reviewerID, asin, overall, unixReviewTime) and deduplicated titles."""
    paths = require_files(folder, [REVIEWS, META], AMAZON_HOW)
    rows = []
    for rec in _json_lines(paths[0], ("reviewerID", "asin", "overall", "unixReviewTime")):
        if rec["overall"] is None or rec["unixReviewTime"] is None:
            continue
        # Only 2017 is used; filtering while reading keeps memory small on the 27M-review file.
        if time.gmtime(int(rec["unixReviewTime"])).tm_year == YEAR:
            rows.append(rec)
    reviews = pd.DataFrame(rows, columns=["reviewerID", "asin", "overall", "unixReviewTime"])
    check_columns(reviews, ["reviewerID", "asin", "overall", "unixReviewTime"], str(paths[0]))
    if reviews.empty or reviews[["reviewerID", "asin"]].isna().any().any():
        raise ValueError(f"{paths[0]}: no usable reviews, or reviews without reviewerID / asin. {AMAZON_HOW}")
    meta = pd.DataFrame(list(_json_lines(paths[1], ("asin", "title"))), columns=["asin", "title"])
    meta = meta.dropna(subset=["asin"]).fillna({"title": ""})
    meta["title"] = meta["title"].astype(str)
    # CoLLM drops the unformatted metadata rows (title holding page script) and keeps the last of duplicates.
    meta = meta[~meta["title"].str.contains("getTime", regex=False)]
    meta = meta.drop_duplicates(subset=["asin"], keep="last")
    return reviews, meta, paths


def build_amazon_stream(reviews: pd.DataFrame, meta: pd.DataFrame) -> pd.DataFrame:
    """docs/protocol.md §2.2: 2017 only, one-pass > 20 filter, label rating == 5, Dec halves, history, ids."""
    first_seen = {asin: k for k, asin in enumerate(pd.unique(reviews["asin"]))}
    data = reviews.merge(meta, on="asin", how="inner")
    data["timestamp"] = data["unixReviewTime"].astype("int64")
    when = pd.to_datetime(data["timestamp"], unit="s", utc=True)
    data = data[when.dt.year == YEAR].copy()
    data["month"] = when[data.index].dt.month
    user_counts = data["reviewerID"].map(data["reviewerID"].value_counts())
    item_counts = data["asin"].map(data["asin"].value_counts())
    data = data[(user_counts > MIN_COUNT) & (item_counts > MIN_COUNT)].copy()
    if data.empty:
        raise ValueError(f"no 2017 reviews left after keeping users and items with > {MIN_COUNT} ratings")
    data["label"] = (data["overall"].astype(float) == 5).astype("int64")
    data["flag"] = FLAGS["train"]
    december = data[data["month"] == 12].sort_values("timestamp", kind="stable")
    half = len(december) // 2
    data.loc[december.index[:half], "flag"] = FLAGS["valid"]
    data.loc[december.index[half:], "flag"] = FLAGS["test"]
    # As for ML-1M: ties on (user, timestamp) follow the pandas (< 2.2) merge order (grouped by item).
    data["item_rank"] = data["asin"].map(first_seen)
    data = data.sort_values(["reviewerID", "timestamp", "item_rank"], kind="stable").reset_index(drop=True)
    data, _, _ = remap_ids(data, "reviewerID", "asin")
    data = add_history(data)
    return add_not_cold(data)


def prepare_amazon_book(folder: Path) -> Splits:
    reviews, meta, paths = read_amazon(folder)
    stream = build_amazon_stream(reviews, meta)
    frames = by_flag(stream)
    frames["valid_small"] = frames["valid"].sample(frac=VALID_SMALL_FRAC, random_state=VALID_SMALL_SEED)
    columns = ["uid", "iid", "label", "timestamp", "his", "his_title", "title", "flag", "not_cold",
               "reviewerID", "asin"]
    meta_info = {
        "protocol": "docs/protocol.md §2.2 (CoLLM Amazon-Book) from Books_5.json.gz + meta_Books.json.gz",
        "source": {"folder": str(folder), **source_record(paths)},
        "seeds": {"valid_small": VALID_SMALL_SEED},
        "notes": ["2017 (UTC) reviews with a rating, joined with titles (meta deduplicated by asin, keep last).",
                  "One pass: users and items with > 20 ratings in 2017; label = rating == 5.",
                  "train = Jan..Nov; December sorted by time, first half valid, second half test.",
                  "his = every earlier positive of the user in any split; duplicates kept.",
                  "valid_small = valid.sample(frac=0.25, random_state=2023)."],
    }
    return make_splits("amazon-book", {n: frames[n][columns] for n in SPLIT_NAMES}, meta_info)


# ---------------------------------------------------------------- MSL substitute

def read_msl(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict[int, str], list[Path]]:
    paths = require_files(folder, MSL_FILES, MSL_HOW)
    frames = []
    for path in paths[:2]:
        try:
            frame = pd.read_csv(path)
        except (ValueError, OSError, pd.errors.ParserError) as err:
            raise ValueError(f"cannot read {path} ({err}). {MSL_HOW}") from err
        check_columns(frame, ["user_id", "item_ids", "timestamp"], str(path))
        try:
            frame["item_ids"] = frame["item_ids"].map(ast.literal_eval)
        except (ValueError, SyntaxError) as err:
            raise ValueError(f"{path}: item_ids is not a list literal ({err}). {MSL_HOW}") from err
        frames.append(frame)
    try:
        names = json.loads(paths[2].read_text(encoding="utf-8"))
    except (ValueError, OSError) as err:
        raise ValueError(f"cannot read {paths[2]} ({err}). {MSL_HOW}") from err
    titles = {int(k): html.unescape(v or "") for k, v in names.items()}
    return frames[0], frames[1], titles, paths


def _windows_to_rows(windows: pd.DataFrame, titles: dict[int, str], touched: dict[int, set[int]],
                     rng: np.random.Generator) -> pd.DataFrame:
    """Each window: a positive (its target) and one negative, drawn from the targets of the same windows (so from
    the same period, as often as the period's readers chose each item) among items the user never touched.

    Drawing negatives uniformly from the whole catalogue made item age a label: the test period's targets are
    mostly books first seen after training, its uniform negatives mostly older books, so popularity scored an
    AUC of 0.28 and the item id alone 0.78 on test (docs/protocol.md §2.4). Period-matched negatives share the
    positives' item distribution, so what is left to learn is which user reads which book."""
    pool = np.array([int(items[-1]) for items in windows["item_ids"]], dtype=np.int64)
    distinct = set(pool.tolist())
    rows = []
    for user, items, ts in zip(windows["user_id"], windows["item_ids"], windows["timestamp"]):
        history = [int(i) for i in items[:-1]]
        seen = touched[int(user)]
        if distinct <= seen:
            raise ValueError(f"MSL user {user} touched every target of its period; no negative can be drawn")
        negative = int(rng.choice(pool))
        while negative in seen:
            negative = int(rng.choice(pool))
        for item, label in ((int(items[-1]), 1), (negative, 0)):
            rows.append({"user": int(user), "iid": item, "label": label, "timestamp": int(ts), "his": history,
                         "his_title": [titles[i] for i in history], "title": titles[item]})
    return pd.DataFrame(rows)


def prepare_msl(folder: Path) -> Splits:
    """SUBSTITUTE for Amazon-Book: MSL's sliding windows, positives = targets, one sampled negative each."""
    train_w, test_w, titles, paths = read_msl(folder)
    unknown = {i for items in pd.concat([train_w["item_ids"], test_w["item_ids"]]) for i in items} - set(titles)
    if unknown:
        raise ValueError(f"{paths[2]} lacks titles for {len(unknown)} item ids (e.g. {sorted(unknown)[:5]})")
    touched: dict[int, set[int]] = {}
    for user, items in zip(pd.concat([train_w["user_id"], test_w["user_id"]]),
                           pd.concat([train_w["item_ids"], test_w["item_ids"]])):
        touched.setdefault(int(user), set()).update(int(i) for i in items)
    rng = np.random.default_rng(NEGATIVE_SEED)
    test_w = test_w.sort_values("timestamp", kind="stable").reset_index(drop=True)
    half = len(test_w) // 2
    parts = {"train": train_w, "valid": test_w.iloc[:half], "test": test_w.iloc[half:]}
    stream = pd.concat([_windows_to_rows(parts[n], titles, touched, rng).assign(flag=FLAGS[n])
                        for n in ("train", "valid", "test")], ignore_index=True)
    stream = stream.sort_values(["user", "timestamp"], kind="stable").reset_index(drop=True)
    users = {u: k + 1 for k, u in enumerate(sorted(stream["user"].unique()))}
    stream["uid"] = stream["user"].map(users)
    stream = add_not_cold(stream)
    frames = by_flag(stream)
    frames["valid_small"] = frames["valid"].sample(frac=VALID_SMALL_FRAC, random_state=VALID_SMALL_SEED)
    meta = {
        "protocol": "SUBSTITUTE (docs/protocol.md §2.4): MSL's Amazon Books sliding windows (not CoLLM's Amazon-Book)",
        "substitute": True,
        "source": {"folder": str(folder), **source_record(paths)},
        "seeds": {"negatives": NEGATIVE_SEED, "valid_small": VALID_SMALL_SEED},
        "notes": ["NOT CoLLM's Amazon-Book: no ratings; positives = window targets, negatives = one item per "
                  "positive drawn from the targets of the same split's windows (the same period, "
                  "popularity-matched) among items the user never touched (seeded), with the same history and "
                  "timestamp.",
                  "No validation period exists in MSL's data: test windows sorted by target time and cut in "
                  "halves, first half valid, second half test.",
                  "his = the window's history (up to 10 items), not every earlier positive.",
                  "iid = MSL's item id (1..6344); uid follows ascending MSL user id (column user keeps it).",
                  "Titles html-unescaped. valid_small = valid.sample(frac=0.25, random_state=2023)."],
    }
    return make_splits("amazon-book-msl", {n: frames[n] for n in SPLIT_NAMES}, meta)
