"""Top-K ranking metrics for retrieval (notebook 05, rerank.py): recall, hit rate and NDCG at K.

ranked_ids[u]: the items recommended to user u, best first (distinct ids; -1 entries are search padding);
relevant_sets[u]: the items that are relevant for u. All three metrics are averaged over the users with at least one
relevant item (others are skipped); ValueError if there is none.
  recall@k   = |top-k ∩ relevant| / |relevant|
  hit_rate@k = 1 if top-k ∩ relevant is non-empty else 0
  ndcg@k     = DCG / IDCG with binary gains: DCG = sum over hits at 1-based rank r <= k of 1 / log2(r + 1); IDCG is
               the DCG of min(k, |relevant|) hits at ranks 1, 2, ...
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np


def _check_distinct(ranked: np.ndarray, user: int) -> None:
    """A repeated candidate would count as several hits (Recall@K above 1); -1 padding may repeat."""
    ids = ranked[ranked != -1] if ranked.dtype.kind in "iuf" else ranked
    uniq, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"ranked list of user {user} repeats id {uniq[counts > 1][0]}: ranked_ids[{user}] must "
                         "list each candidate once; deduplicate it before computing ranking metrics")


def _hits(ranked_ids: Sequence[Iterable], relevant_sets: Sequence[Iterable], k: int
          ) -> list[tuple[np.ndarray, int]]:
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if len(ranked_ids) != len(relevant_sets):
        raise ValueError(f"{len(ranked_ids)} ranked lists but {len(relevant_sets)} relevant sets")
    rows = []
    for user, (ranked, rel) in enumerate(zip(ranked_ids, relevant_sets)):
        ranked = np.asarray(ranked)
        _check_distinct(ranked, user)
        rel = set(np.asarray(list(rel)).tolist())
        if rel:
            top = ranked[:k].tolist()
            rows.append((np.fromiter((i in rel for i in top), dtype=bool, count=len(top)), len(rel)))
    if not rows:
        raise ValueError("no user has a relevant item; ranking metrics are undefined")
    return rows


def recall_at_k(ranked_ids: Sequence[Iterable], relevant_sets: Sequence[Iterable], k: int) -> float:
    """Mean over users of |top-k ∩ relevant| / |relevant|."""
    return float(np.mean([h.sum() / n_rel for h, n_rel in _hits(ranked_ids, relevant_sets, k)]))


def hit_rate_at_k(ranked_ids: Sequence[Iterable], relevant_sets: Sequence[Iterable], k: int) -> float:
    """Share of users with at least one relevant item in their top k."""
    return float(np.mean([h.any() for h, _ in _hits(ranked_ids, relevant_sets, k)]))


def ndcg_at_k(ranked_ids: Sequence[Iterable], relevant_sets: Sequence[Iterable], k: int) -> float:
    """Mean over users of binary-gain NDCG@k (see the definitions above)."""
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    values = []
    for h, n_rel in _hits(ranked_ids, relevant_sets, k):
        values.append(discount[: h.size][h].sum() / discount[: min(k, n_rel)].sum())
    return float(np.mean(values))
