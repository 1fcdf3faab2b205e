"""Faiss retrieval against brute force on small seeded data (ties tolerated, K within the GPU limit)."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("faiss", reason="pip install faiss-cpu to run the retrieval tests")

from collm_lib import matching as M  # noqa: E402
from collm_lib import profiles  # noqa: E402
from collm_lib import retrieval as R  # noqa: E402
from synthetic import synthetic_clusters  # noqa: E402

RECALL_FLOOR = 0.9  # recall@10 the approximate indexes must reach on the clustered data below


@pytest.fixture(scope="module")
def clustered():
    items, queries = synthetic_clusters(n_items=8000, dim=32, n_clusters=40, n_queries=200, spread=1.0, seed=7)
    return items, queries


@pytest.fixture(scope="module")
def exact10(clustered):
    items, queries = clustered
    return R.exact_topk_torch(queries, items, 10, device="cpu")


def numpy_topk(queries, items, k, metric="ip"):
    if metric == "ip":
        s = queries @ items.T
    else:
        s = -((queries[:, None, :] - items[None, :, :]) ** 2).sum(-1)
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, order, 1), order


def assert_same_topk(s1, i1, s2, i2, atol=1e-4):
    """Scores must agree; ids must agree wherever a score is distinct from its neighbours (no tie)."""
    np.testing.assert_allclose(s1, s2, atol=atol, rtol=1e-4)
    for row in range(len(s1)):
        gaps = np.diff(s2[row])
        distinct = np.ones(len(s2[row]), bool)
        distinct[:-1] &= np.abs(gaps) > atol
        distinct[1:] &= np.abs(gaps) > atol
        np.testing.assert_array_equal(i1[row][distinct], i2[row][distinct])


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_flat_matches_torch_and_numpy(metric):
    rng = np.random.default_rng(0)
    items = rng.standard_normal((700, 16)).astype(np.float32)
    queries = rng.standard_normal((30, 16)).astype(np.float32)
    items[5] = items[6]  # a planted exact tie
    index = R.VectorIndex(R.IndexConfig(kind="flat", metric=metric, use_gpu=False)).build(items)
    s, i = index.search(queries, 25)
    ts, ti = R.exact_topk_torch(queries, items, 25, device="cpu", metric=metric, chunk_elems=30 * 100)
    ns, ni = numpy_topk(queries.astype(np.float64), items.astype(np.float64), 25, metric)
    assert s.shape == i.shape == (30, 25)
    assert_same_topk(s, i, ns, ni, atol=1e-3)
    assert_same_topk(ts, ti, ns, ni, atol=1e-3)
    assert (np.diff(s, axis=1) <= 1e-6).all(), "scores must be sorted best first"


@pytest.mark.parametrize("kind, params", [("ivf", dict(nlist=64, nprobe=8)), ("hnsw", dict(hnsw_m=16, ef_search=64))])
def test_approximate_recall_floor(clustered, exact10, kind, params):
    items, queries = clustered
    index = R.VectorIndex(R.IndexConfig(kind=kind, use_gpu=False, **params)).build(items)
    _, ids = index.search(queries, 10)
    recall = R.recall_vs_exact(ids, exact10[1])
    assert recall >= RECALL_FLOOR, f"{kind} recall@10 {recall:.3f} < {RECALL_FLOOR}"
    info = index.describe()
    assert info["kind"] == kind and info["n_items"] == len(items)


def test_ivf_nprobe_trades_recall(clustered, exact10):
    items, queries = clustered
    index = R.VectorIndex(R.IndexConfig(kind="ivf", nlist=64, nprobe=1, use_gpu=False)).build(items)
    low = R.recall_vs_exact(index.search(queries, 10)[1], exact10[1])
    index.set_search_params(nprobe=64)
    full = R.recall_vs_exact(index.search(queries, 10)[1], exact10[1])
    assert low < full and full > 0.99  # visiting every list is exhaustive
    assert index.describe()["nprobe"] == 64


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_save_load_round_trip(tmp_path, clustered, kind):
    items, queries = clustered
    ids = np.arange(len(items)) * 3 + 11  # external ids, not positions
    index = R.VectorIndex(R.IndexConfig(kind=kind, nlist=32, nprobe=4, use_gpu=False)).build(items, ids)
    before = index.search(queries, 10)
    path = index.save(tmp_path / "items.faiss")
    loaded = R.VectorIndex.load(path)
    after = loaded.search(queries, 10)
    np.testing.assert_array_equal(before[1], after[1])
    np.testing.assert_array_equal(before[0], after[0])
    assert loaded.describe()["config"] == index.describe()["config"]
    assert set(np.unique(after[1])) <= set(ids)
    assert not list(tmp_path.glob(".*.tmp")), "atomic writes must leave no temporary files"


def test_load_missing_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.faiss"):
        R.VectorIndex.load(tmp_path / "nothing.faiss")


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_k_larger_than_catalogue_pads(kind):
    items = np.random.default_rng(1).standard_normal((12, 8)).astype(np.float32)
    index = R.VectorIndex(R.IndexConfig(kind=kind, use_gpu=False)).build(items)
    s, i = index.search(items[:3], 20)
    assert s.shape == i.shape == (3, 20)
    assert (i[:, 12:] == -1).all() and np.isneginf(s[:, 12:]).all()
    assert all(sorted(row[:12]) == list(range(12)) for row in i)
    ts, ti = R.exact_topk_torch(items[:3], items, 20, device="cpu")
    assert (ti[:, 12:] == -1).all() and np.isneginf(ts[:, 12:]).all()


def test_empty_queries():
    items = np.random.default_rng(2).standard_normal((50, 8)).astype(np.float32)
    index = R.VectorIndex(R.IndexConfig(use_gpu=False)).build(items)
    s, i = index.search(np.empty((0, 8), np.float32), 5)
    assert s.shape == i.shape == (0, 5) and i.dtype == np.int64
    ts, ti = R.exact_topk_torch(np.empty((0, 8), np.float32), items, 5, device="cpu")
    assert ts.shape == ti.shape == (0, 5)
    with pytest.raises(ValueError, match="dimension"):
        index.search(np.zeros((2, 9), np.float32), 5)


def test_exclude_drops_ids_and_keeps_k(clustered, exact10):
    items, queries = clustered
    index = R.VectorIndex(R.IndexConfig(kind="flat", use_gpu=False)).build(items)
    full_s, full_i = index.search(queries[:20], 30)
    exclude = [full_i[r, : r % 7] for r in range(20)]  # drop the first 0..6 hits of each row
    exclude[3] = np.array([], dtype=np.int64)
    s, i = index.search(queries[:20], 10, exclude=exclude)
    ts, ti = R.exact_topk_torch(queries[:20], items, 10, exclude=exclude, device="cpu")
    assert i.shape == (20, 10) and (i >= 0).all()
    for r in range(20):
        assert not np.isin(i[r], exclude[r]).any()
        np.testing.assert_array_equal(i[r], full_i[r, len(exclude[r]): len(exclude[r]) + 10])
    assert_same_topk(ts, ti, s, i)
    with pytest.raises(ValueError, match="one id array per query"):
        index.search(queries[:20], 10, exclude=exclude[:5])


def test_exclude_on_tiny_catalogue_pads():
    items = np.eye(4, dtype=np.float32)
    index = R.VectorIndex(R.IndexConfig(use_gpu=False)).build(items, ids=np.array([10, 20, 30, 40]))
    s, i = index.search(items[:1], 3, exclude=[np.array([10, 30])])
    assert list(i[0]) == [20, 40, -1] or list(i[0]) == [40, 20, -1]
    assert np.isneginf(s[0, 2])


def test_recall_vs_exact():
    exact = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    assert R.recall_vs_exact(exact, exact) == 1.0
    assert R.recall_vs_exact(np.array([[4, 3, 9, 9], [-1, -1, -1, -1]]), exact) == pytest.approx(0.25)


def test_borrow_vectors_planted_neighbour():
    rng = np.random.default_rng(3)
    warm_repr = rng.standard_normal((200, 24)).astype(np.float32)
    warm_vectors = rng.standard_normal((200, 6)).astype(np.float32)
    picks = np.array([5, 77, 199])
    vecs, fb = M.borrow_vectors(warm_repr[picks] * 3.0, warm_repr, warm_vectors, n_neighbors=1)
    np.testing.assert_allclose(vecs, warm_vectors[picks], rtol=1e-6)
    assert not fb.any()
    # k neighbours, uniform: the mean of the k most cosine-similar warm rows
    vecs, _ = M.borrow_vectors(warm_repr[:2], warm_repr, warm_vectors, n_neighbors=5)
    nbrs = R.exact_topk_torch(R.normalise(warm_repr[:2]), R.normalise(warm_repr), 5, device="cpu")[1]
    np.testing.assert_allclose(vecs, warm_vectors[nbrs].mean(1), rtol=1e-5, atol=1e-6)
    sim, _ = M.borrow_vectors(warm_repr[:2], warm_repr, warm_vectors, n_neighbors=5, weighting="similarity")
    assert not np.allclose(sim, vecs)  # similarity weighting differs from the plain mean


def test_borrow_vectors_empty_history_falls_back():
    rng = np.random.default_rng(4)
    item_vectors = rng.standard_normal((30, 8)).astype(np.float32)
    warm_vectors = rng.standard_normal((30, 5)).astype(np.float32)
    pooled, empty = M.pool_history(item_vectors, [[1, 2, 3], [], [4, 5, 6, 7]], max_len=2)
    assert list(empty) == [True if h == 1 else False for h in range(3)]
    np.testing.assert_allclose(pooled[0], item_vectors[[2, 3]].mean(0), rtol=1e-6)
    np.testing.assert_allclose(pooled[2], item_vectors[[6, 7]].mean(0), rtol=1e-6)
    assert (pooled[1] == 0).all()
    pooled[2, 0] = np.nan
    vecs, fb = M.borrow_vectors(pooled, item_vectors, warm_vectors, n_neighbors=3)
    assert list(fb) == [False, True, True]
    np.testing.assert_allclose(vecs[1], warm_vectors.mean(0), rtol=1e-6)
    np.testing.assert_allclose(vecs[2], warm_vectors.mean(0), rtol=1e-6)
    assert np.isfinite(vecs).all()
    with pytest.raises(ValueError, match="outside"):
        M.pool_history(item_vectors, [[30]])


def test_bad_config_and_empty_catalogue():
    with pytest.raises(ValueError, match="kind"):
        R.IndexConfig(kind="lsh")
    with pytest.raises(ValueError, match="empty catalogue"):
        R.VectorIndex().build(np.empty((0, 4), np.float32))


def test_profile_index():
    assert profiles.index("smoke").kind == "flat"
    assert profiles.index("cpu", nprobe=3).nprobe == 3
    with pytest.raises(ValueError, match="profile"):
        profiles.index("laptop")


def test_auto_index_searches_exactly_below_the_size_and_with_ivf_from_it(monkeypatch):
    from collm_lib import retrieval
    rng = np.random.default_rng(0)
    x = rng.standard_normal((400, 8)).astype(np.float32)
    small = retrieval.VectorIndex(retrieval.IndexConfig(kind="auto", use_gpu=False)).build(x)
    assert small.config.kind == "flat" and small.describe()["faiss_class"] == "IndexFlat"
    assert any("auto: flat for 400 items" in n for n in small.notes)
    monkeypatch.setattr(retrieval, "EXACT_BELOW", 100)
    large = retrieval.VectorIndex(retrieval.IndexConfig(kind="auto", nlist=4, use_gpu=False)).build(x)
    assert large.config.kind == "ivf" and large.describe()["kind"] == "ivf"
