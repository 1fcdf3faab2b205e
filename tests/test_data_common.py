"""Schema check, statistics, history construction and the processed cache, on small hand-made frames."""
from __future__ import annotations

import pandas as pd
import pytest

from collm_lib.data import Splits, split_stats, validate_frame
from collm_lib.data.common import (add_history, add_not_cold, load_processed, make_splits, remap_ids,
                                   save_processed, write_frame_json)


def _frame(flag: int = -1, **over) -> pd.DataFrame:
    base = {"uid": [1, 1, 2], "iid": [1, 2, 1], "label": [1, 0, 1], "timestamp": [10, 20, 30],
            "his": [[], [1], []], "his_title": [[], ["a"], []], "title": ["a", "b", "a"],
            "flag": [flag] * 3, "not_cold": [1, 1, 1]}
    base.update(over)
    return pd.DataFrame(base)


def _splits() -> Splits:
    frames = {"train": _frame(-1), "valid": _frame(0), "valid_small": _frame(0).head(1), "test": _frame(1)}
    return make_splits("toy", frames, {"notes": ["toy"]})


def test_validate_frame_names_the_problem():
    validate_frame(_frame())
    with pytest.raises(ValueError, match=r"missing column\(s\) \['his_title'\]"):
        validate_frame(_frame().drop(columns=["his_title"]), "toy")
    with pytest.raises(ValueError, match="wrong type.*'his'"):
        validate_frame(_frame(his=["1", "2", "3"]))
    with pytest.raises(ValueError, match="not aligned"):
        validate_frame(_frame(his_title=[[], [], []]))
    with pytest.raises(ValueError, match="empty"):
        validate_frame(_frame().head(0))
    with pytest.raises(ValueError, match="start at 1"):
        validate_frame(_frame(uid=[0, 1, 2]))
    with pytest.raises(ValueError, match="0/1"):
        validate_frame(_frame(label=[2, 0, 1]))


def test_split_stats_and_counts():
    splits = _splits()
    assert (splits.n_users, splits.n_items) == (3, 3)
    stats = split_stats(splits).set_index("split")
    assert stats.loc["train", "rows"] == 3 and stats.loc["valid_small", "rows"] == 1
    assert stats.loc["test", "positive_rate"] == pytest.approx(2 / 3, abs=1e-4)
    assert stats.loc["test", "cold_share"] == 0.0
    with pytest.raises(ValueError, match="unknown split"):
        splits.split("dev")


def test_history_is_earlier_positives_of_the_same_user_in_stream_order():
    stream = pd.DataFrame({"user": [7, 7, 7, 7, 3], "item": ["x", "y", "x", "z", "y"],
                           "label": [1, 0, 1, 1, 1], "title": ["X", "Y", "X", "Z", "Y"],
                           "timestamp": [1, 2, 2, 3, 1], "flag": [-1, -1, 0, 1, -1]})
    stream = stream.sort_values(["user", "timestamp"], kind="stable").reset_index(drop=True)
    stream, user_map, item_map = remap_ids(stream, "user", "item")
    assert user_map == {3: 1, 7: 2} and item_map == {"y": 1, "x": 2, "z": 3}
    stream = add_not_cold(add_history(stream))
    assert stream["his"].tolist() == [[], [], [2], [2], [2, 2]]
    assert stream["his_title"].tolist()[-1] == ["X", "X"]
    assert stream["not_cold"].tolist() == [1, 1, 1, 1, 0]  # z never occurs in train


def test_cache_round_trip_and_incomplete_cache_is_refused(tmp_path):
    splits = _splits()
    save_processed(splits, tmp_path)
    assert {p.name for p in tmp_path.iterdir()} >= {"train.json.gz", "stats.csv", "meta.json"}
    loaded = load_processed("toy", tmp_path)
    pd.testing.assert_frame_equal(loaded.valid, splits.valid)
    assert loaded.meta["notes"] == ["toy"] and loaded.n_items == 3
    assert load_processed("other", tmp_path) is None  # a cache of another dataset
    write_frame_json(tmp_path / "test.json.gz", splits.test.head(1))  # a stale or foreign file: checksum differs
    assert load_processed("toy", tmp_path) is None
    (tmp_path / "valid.json.gz").unlink()
    assert load_processed("toy", tmp_path) is None
    (tmp_path / "meta.json").unlink()  # a crash before meta.json was written
    assert load_processed("toy", tmp_path) is None
