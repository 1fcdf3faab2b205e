"""Amazon-Book (docs/protocol.md §2.2) on a small fixture in the raw json-lines gzip format, and the MSL substitute
(docs/protocol.md §2.4) on the real windows."""
from __future__ import annotations

import gzip
import json
import random
from datetime import datetime, timezone

import pandas as pd
import pytest

from collm_lib.data import load_dataset
from collm_lib.data.amazon import prepare_amazon_book
from conftest import require_dataset_folder


def _ts(year, month, day, hour=12):
    return int(datetime(year, month, day, hour, tzinfo=timezone.utc).timestamp())


def _write_gz(path, records):
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        for rec in records:
            handle.write(json.dumps(rec) + "\n")


def _write_fixture(folder, seed=0):
    """25 users x 25 items in 2017, plus edge cases around the one-pass > 20 filter and the year filter."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    reviews = []

    def add(user, item, ts, rating=None):
        rec = {"reviewerID": user, "asin": item, "unixReviewTime": ts, "reviewText": "..."}
        if rating is not None:
            rec["overall"] = float(rating)
        reviews.append(rec)

    for u in range(25):
        for i in range(25):
            add(f"U{u:02d}", f"I{i:02d}", _ts(2017, rng.randint(1, 12), rng.randint(1, 28), rng.randint(0, 23)),
                rng.randint(1, 5))
    for i in range(20):  # 21 ratings in 2017, 1 on an item that the filter drops: kept (one pass)
        add("Uedge", f"I{i:02d}", _ts(2017, 3, i + 1), 5)
    add("Uedge", "Ifew", _ts(2017, 4, 1), 5)
    for u in range(19):  # Ifew: 20 ratings in 2017 -> dropped (needs more than 20)
        add(f"U{u:02d}", "Ifew", _ts(2017, 5, u + 1), 4)
    for i in range(20):  # exactly 20 in 2017 -> dropped
        add("Ufew", f"I{i:02d}", _ts(2017, 6, i + 1), 5)
    for i in range(25):  # many ratings, but in 2016 and 2018
        add("Uold", f"I{i:02d}", _ts(2016 if i % 2 else 2018, 1, i + 1), 5)
    add("U00", "I00", _ts(2017, 7, 1))  # no rating: dropped
    rng.shuffle(reviews)
    meta = [{"asin": f"I{i:02d}", "title": f"Book {i}"} for i in range(25)]
    meta += [{"asin": "I01", "title": "Book 1, later edition"}, {"asin": "Ifew", "title": "Few"},
             {"asin": "Ijunk", "title": "var x = getTime();"}]
    _write_gz(folder / "Books_5.json.gz", reviews)
    _write_gz(folder / "meta_Books.json.gz", meta)
    return pd.DataFrame([r for r in reviews if "overall" in r])


def test_amazon_book_protocol_on_fixture(tmp_path):
    reviews = _write_fixture(tmp_path)
    splits = prepare_amazon_book(tmp_path)
    rows = pd.concat([splits.train, splits.valid, splits.test])
    assert sorted(rows["reviewerID"].unique()) == sorted([f"U{u:02d}" for u in range(25)] + ["Uedge"])
    assert sorted(rows["asin"].unique()) == [f"I{i:02d}" for i in range(25)]
    assert len(rows) == 25 * 25 + 20 and (rows["reviewerID"] == "Uedge").sum() == 20
    when = pd.to_datetime(rows["timestamp"], unit="s", utc=True)
    assert (when.dt.year == 2017).all()
    assert (when[rows["flag"] == -1].dt.month <= 11).all() and (when[rows["flag"] >= 0].dt.month == 12).all()
    assert abs(len(splits.valid) - len(splits.test)) <= 1 and splits.valid["timestamp"].max() <= splits.test[
        "timestamp"].min()
    truth = {(u, i): r for u, i, r in zip(reviews["reviewerID"], reviews["asin"], reviews["overall"])}
    assert all(lab == int(truth[(u, i)] == 5) for u, i, lab in zip(rows["reviewerID"], rows["asin"], rows["label"]))
    assert set(splits.train.loc[splits.train["asin"] == "I01", "title"]) == {"Book 1, later edition"}
    # history: every earlier positive of the user, in time order, across splits
    user = rows[rows["reviewerID"] == "U03"].sort_values("timestamp", kind="stable")
    for k in range(len(user)):
        earlier = user.iloc[:k]
        assert user.iloc[k]["his"] == earlier.loc[earlier["label"] == 1, "iid"].tolist()
    train_users, train_items = set(splits.train["uid"]), set(splits.train["iid"])
    for frame in (splits.valid, splits.test):
        expected = [int(u in train_users and i in train_items) for u, i in zip(frame["uid"], frame["iid"])]
        assert frame["not_cold"].tolist() == expected
    assert len(splits.valid_small) == round(0.25 * len(splits.valid))
    pd.testing.assert_frame_equal(splits.valid_small,
                                  splits.valid.sample(frac=0.25, random_state=2023).reset_index(drop=True))


def test_amazon_book_missing_or_truncated_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="Books_5.json.gz.*McAuley"):
        load_dataset("amazon-book", data_dir=tmp_path, work_dir=tmp_path / "work")
    folder = tmp_path / "amazon-book"
    _write_fixture(folder)
    blob = (folder / "Books_5.json.gz").read_bytes()
    (folder / "Books_5.json.gz").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ValueError, match="Books_5.json.gz is not a complete gzip"):
        prepare_amazon_book(folder)


@pytest.fixture(scope="module")
def msl(shared_data, data_work_dir):
    require_dataset_folder(shared_data, "amazon-book-msl")
    return load_dataset("amazon-book-msl", data_dir=shared_data, work_dir=data_work_dir)


def test_msl_substitute_is_labelled_and_balanced(msl):
    assert msl.meta["substitute"] is True and "NOT CoLLM" in msl.meta["notes"][0]
    assert len(msl.train) == 2 * 35060 and len(msl.valid) + len(msl.test) == 2 * 4383
    assert msl.valid["timestamp"].max() <= msl.test["timestamp"].min()
    for frame in (msl.train, msl.test):
        assert frame["label"].mean() == 0.5
    assert not any("&amp;" in t for t in msl.train["title"])
    touched = {}
    for frame in (msl.train, msl.valid, msl.test):
        for u, i, lab, his in zip(frame["uid"], frame["iid"], frame["label"], frame["his"]):
            touched.setdefault(u, set()).update(his)
            if lab:
                touched[u].add(i)
    negatives = msl.test[msl.test["label"] == 0]
    assert not any(i in touched[u] for u, i in zip(negatives["uid"], negatives["iid"]))


def test_msl_negatives_come_from_the_same_period(msl):
    """Negatives are drawn from the same split's targets, so item age and popularity carry no label (with
    catalogue-wide negatives, train popularity scored a test AUC of 0.28 and the item id alone 0.78)."""
    from collm_lib import metrics

    for frame in (msl.train, msl.valid, msl.test):
        assert set(frame.loc[frame["label"] == 0, "iid"]) <= set(frame.loc[frame["label"] == 1, "iid"])
    positives = msl.train.loc[msl.train["label"] == 1, "iid"].value_counts()
    for frame in (msl.valid, msl.test):
        assert abs(metrics.auc(frame["label"], frame["iid"].map(positives).fillna(0)) - 0.5) < 0.03
        assert abs(metrics.auc(frame["label"], frame["iid"]) - 0.5) < 0.03
