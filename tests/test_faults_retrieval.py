"""Bad input to retrieval and ranking metrics fails loudly instead of giving a silently wrong answer."""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("faiss", reason="pip install faiss-cpu to run the retrieval tests")

from collm_lib import ranking  # noqa: E402
from collm_lib import matching as M  # noqa: E402
from collm_lib import retrieval as R  # noqa: E402

RANKING = (ranking.recall_at_k, ranking.ndcg_at_k, ranking.hit_rate_at_k)


def _catalogue() -> tuple[np.ndarray, np.ndarray]:
    """4 unit vectors scored 1.0, 0.9, 0.8, 0.7 against the query, so the exact top-3 is rows 0, 1, 2."""
    angles = np.arccos([1.0, 0.9, 0.8, 0.7])
    items = np.stack([np.cos(angles), np.sin(angles)], 1).astype(np.float32)
    return items, np.array([[1.0, 0.0]], np.float32)


def test_build_rejects_duplicate_ids():
    items, query = _catalogue()
    index = R.VectorIndex(R.IndexConfig(use_gpu=False))
    with pytest.raises(ValueError, match=r"ids holds 1 duplicated id.*id 7 at rows \[0, 1\].*distinct id"):
        index.build(items, ids=np.array([7, 7, 8, 9]))
    _, ids = index.build(items, ids=np.array([7, 6, 8, 9])).search(query, 3)
    assert ids.tolist() == [[7, 6, 8]]  # distinct ids: unchanged results


def test_load_rejects_duplicate_ids(tmp_path):
    items, query = _catalogue()
    path = R.VectorIndex(R.IndexConfig(use_gpu=False)).build(items, ids=np.array([7, 6, 8, 9])).save(tmp_path / "i")
    assert R.VectorIndex.load(path, use_gpu=False).search(query, 3)[1].tolist() == [[7, 6, 8]]
    sidecar = tmp_path / "i.json"
    meta = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps(meta | {"ids": [7, 7, 8, 9]}))
    with pytest.raises(ValueError, match="duplicated id"):
        R.VectorIndex.load(path, use_gpu=False)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_search_rejects_nonfinite_query(bad):
    items, query = _catalogue()
    index = R.VectorIndex(R.IndexConfig(use_gpu=False)).build(items)
    queries = np.repeat(query, 4, 0)
    queries[2, 1] = queries[3, 0] = bad
    fragment = r"queries has 2 rows? with NaN or inf \(first: row 2\)"
    with pytest.raises(ValueError, match=fragment):
        index.search(queries, 3)
    with pytest.raises(ValueError, match=fragment):
        R.exact_topk_torch(queries, items, 3, device="cpu")
    assert index.search(query, 3)[1].tolist() == [[0, 1, 2]]


@pytest.mark.parametrize("bad", [np.nan, -np.inf])
def test_build_rejects_nonfinite_catalogue(bad):
    items, query = _catalogue()
    items[0, 0] = bad  # the best match: NaN made faiss drop it, torch rank it first
    with pytest.raises(ValueError, match=r"vectors has 1 row with NaN or inf \(first: row 0\).*fix or drop"):
        R.VectorIndex(R.IndexConfig(use_gpu=False)).build(items)
    with pytest.raises(ValueError, match=r"vectors has 1 row with NaN or inf \(first: row 0\)"):
        R.exact_topk_torch(query, items, 3, device="cpu")


def test_borrow_and_pool_reject_nonfinite_warm_side():
    rng = np.random.default_rng(5)
    warm_repr = rng.standard_normal((20, 4)).astype(np.float32)
    warm_vectors = rng.standard_normal((20, 3)).astype(np.float32)
    query = np.vstack([warm_repr[:2], np.full((1, 4), np.nan, np.float32)])  # a NaN query row is a fallback
    vecs, fb = M.borrow_vectors(query, warm_repr, warm_vectors, n_neighbors=1)
    np.testing.assert_allclose(vecs[:2], warm_vectors[:2], rtol=1e-6)
    assert fb.tolist() == [False, False, True]
    for col, name in enumerate(("warm_repr", "warm_vectors")):
        args = [warm_repr.copy(), warm_vectors.copy()]
        args[col][7, 1] = np.nan
        with pytest.raises(ValueError, match=rf"{name} has 1 row with NaN or inf \(first: row 7\)"):
            M.borrow_vectors(query, *args)
    bad_items = warm_vectors.copy()
    bad_items[4] = np.inf
    with pytest.raises(ValueError, match=r"item_vectors has 1 row with NaN or inf \(first: row 4\)"):
        M.pool_history(bad_items, [[1, 4]])


@pytest.mark.parametrize("fn", RANKING, ids=lambda f: f.__name__)
def test_ranking_metrics_reject_duplicate_candidates(fn):
    relevant = [{1}, {5, 6}]
    with pytest.raises(ValueError, match=r"ranked list of user 1 repeats id 5.*once"):
        fn([[1, 2, 3], [5, 5, 5]], relevant, 3)
    with pytest.raises(ValueError, match="repeats id 9"):  # beyond k the list is still broken
        fn([[1, 9, 3, 9], [5, 6, 7, 8]], relevant, 2)
    assert fn([[1, 2, 3], [5, 7, 6]], relevant, 3) == fn([[1, 2, 3], np.array([5, 7, 6])], relevant, 3)


def test_ranking_metrics_ignore_search_padding():
    """k beyond the catalogue pads with -1 (see VectorIndex.search): repeated padding is not a duplicate."""
    items, query = _catalogue()
    _, ids = R.VectorIndex(R.IndexConfig(use_gpu=False)).build(items).search(np.repeat(query, 2, 0), 6)
    assert ids[0].tolist() == [0, 1, 2, 3, -1, -1]
    relevant = [{2}, {9}]
    assert ranking.recall_at_k(list(ids), relevant, 6) == pytest.approx(0.5)
    assert ranking.hit_rate_at_k(list(ids), relevant, 6) == pytest.approx(0.5)
    assert ranking.ndcg_at_k(list(ids), relevant, 6) == pytest.approx(0.5 / np.log2(4))
