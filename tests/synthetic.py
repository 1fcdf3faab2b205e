"""Seeded synthetic item and query vectors for the retrieval tests and benchmarks/bench_faiss.py (which adds this
folder to sys.path): test data, not library code."""
from __future__ import annotations

import numpy as np

from collm_lib.retrieval import normalise


def synthetic_clusters(n_items: int, dim: int, n_clusters: int, n_queries: int, spread: float = 1.5,
                       seed: int = 2023, chunk: int = 100_000) -> tuple[np.ndarray, np.ndarray]:
    """Seeded L2-normalised gaussian clusters (items, queries).

    Each point is a unit-norm centre plus noise of total norm ~`spread`, then normalised; queries are
    drawn the same way around random centres. Generated in chunks so 1M x 256 needs no float64 copy.
    """
    rng = np.random.default_rng(seed)
    centres = normalise(rng.standard_normal((n_clusters, dim), dtype=np.float32))

    def draw(n: int) -> np.ndarray:
        out = np.empty((n, dim), dtype=np.float32)
        for start in range(0, n, chunk):
            m = min(chunk, n - start)
            noise = rng.standard_normal((m, dim), dtype=np.float32) * np.float32(spread / np.sqrt(dim))
            out[start:start + m] = normalise(centres[rng.integers(0, n_clusters, m)] + noise)
        return out

    return draw(n_items), draw(n_queries)
