"""Retrieve-then-rank (docs/protocol.md §8.2) on a trained stage-2 model (cold-id matching: `matching`).

For each sampled test user a Faiss index over the MF item vectors returns the top-K of the whole catalogue
(inner product with the user's MF vector; items the user rated before their first test row excluded); the
stage-2 LLM scores only those K prompts and the final list is ordered by its score. Compared with MF alone
(exact top-K) and, on a few users, the LLM scoring the whole catalogue. All prompts of one user share their
history, so by default they are scored through one shared-prefix pass per user (`prefix`, same scores).
`RerankConfig` holds notebook 05's settings, matching's among them (`RerankConfig.matching`); the steps of one
ranking share a `Ranking` (model, users, catalogue, template), so no helper takes more than a handful of arguments.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from torch import nn

from . import ranking, retrieval, runs, settings
from .catalogue import item_titles, mf_tables, train_ids
from .data import Splits
from .io import read_json
from .configs import RerankConfig
from .prompts import default_template, encode_frame
from .scoring import score


@dataclass
class Ranking:
    """What the steps of one retrieve-then-rank share: the model, the sampled users and the catalogue."""

    model: nn.Module
    bundle: Any
    users: pd.DataFrame  # sample_test_users' rows
    catalogue: np.ndarray  # every item id with a title and an MF vector
    titles: dict[int, str]
    warm_users: set[int]
    warm_items: set[int]
    template: str
    stage_config: Any
    config: RerankConfig
    progress: bool = True

    def candidates(self, users: pd.DataFrame, lists: list[np.ndarray]) -> pd.DataFrame:
        return candidate_frame(users, lists, self.titles, self.warm_users, self.warm_items)

    def llm_scores(self, frame: pd.DataFrame) -> tuple[np.ndarray, float]:
        return llm_scores(self.model, self.bundle, frame, self.template, self.stage_config.max_history,
                          self.config.score_batch_size, self.progress, self.config.shared_prefix)


def run_folder(config: RerankConfig, stage_dir: str | Path) -> Path:
    """Where notebook 05 writes its per-row results: named by its config and the stage-2 run it ranks with."""
    upstream = {"stage2": runs.upstream_fingerprint(stage_dir, "stage-2 run", "run notebook 04 first")}
    dataset = read_json(Path(stage_dir) / "results.json")["dataset"]
    return runs.run_dir("faiss", dataset, runs.identity("faiss", config, upstream))


def sample_test_users(splits: Splits, n_users: int | None, seed: int, warm_users: set[int]) -> pd.DataFrame:
    """One row per sampled warm test user with a test positive: the first test row's history; relevant = test
    positives; seen = every item rated before the first test row (train, valid, either label; prompt history)."""
    test = splits.test.sort_values(["uid", "timestamp"], kind="stable")
    positives = test[test["label"] == 1].groupby("uid")["iid"].agg(lambda s: sorted(set(map(int, s))))
    users = np.array(sorted(set(positives.index.astype(int)) & warm_users), dtype=np.int64)
    if len(users) == 0:
        raise ValueError(f"{splits.name}: no warm test user has a positive; nothing to rank")
    np.random.default_rng(seed).shuffle(users)
    users = users[:n_users] if n_users is not None else users
    first = test.groupby("uid").head(1).set_index("uid")
    earlier = pd.concat([splits.train[["uid", "iid"]], splits.valid[["uid", "iid"]]])
    earlier = earlier[earlier["uid"].isin(users)].groupby("uid")["iid"].agg(lambda s: set(map(int, s)))
    rows = [{"uid": int(u), "his": list(first.at[u, "his"]), "his_title": list(first.at[u, "his_title"]),
             "relevant": positives[u],
             "seen": sorted(earlier.get(u, set()) | set(map(int, first.at[u, "his"])))} for u in users]
    return pd.DataFrame(rows)


def candidate_frame(users: pd.DataFrame, candidates: list[np.ndarray], titles: dict[int, str],
                    warm_users: set[int], warm_items: set[int]) -> pd.DataFrame:
    """Prompt rows (user, candidate): the user's history, the candidate's title, label = relevant, and the user's
    number of relevant items (Recall@K's denominator, so the ranking metrics recompute from these rows)."""
    rows = []
    for user, cands in zip(users.itertuples(index=False), candidates):
        rel = set(user.relevant)
        for rank, iid in enumerate(int(i) for i in cands if i >= 0):
            rows.append({"uid": user.uid, "iid": iid, "rank": rank, "label": int(iid in rel), "relevant": len(rel),
                         "his": user.his,
                         "his_title": user.his_title, "title": titles[iid],
                         "not_cold": int(user.uid in warm_users and iid in warm_items)})
    return pd.DataFrame(rows)


def llm_scores(model: nn.Module, bundle, frame: pd.DataFrame, template: str, max_history: int = 10,
               batch_size: int = 16, progress: bool = True, shared_prefix: bool = True) -> tuple[np.ndarray, float]:
    """Stage-2 logits for every row of `frame` and the seconds spent (tokenising + scoring)."""
    enc, seconds = timed(encode_frame, frame, template, bundle.tokenizer, max_history, 1024, False)
    scores, more = timed(score, model, enc, bundle.tokenizer.pad_token_id, batch_size, progress, shared_prefix)
    return scores, seconds + more


def ranking_metrics(ranked: list, relevant: list, ks: tuple[int, ...]) -> dict[str, float]:
    """Recall, NDCG and hit rate at each cut-off (metrics module definitions)."""
    return {f"{name}@{k}": fn(ranked, relevant, k) for k in ks for name, fn in (
        ("recall", ranking.recall_at_k), ("ndcg", ranking.ndcg_at_k), ("hit", ranking.hit_rate_at_k))}


def _rerank(frame: pd.DataFrame, scores: np.ndarray, users: np.ndarray, top: int | None = None) -> list[list[int]]:
    """Per user (in `users` order): candidates (the first `top` by retrieval rank) sorted by LLM score."""
    f = frame.assign(llm=scores)
    if top is not None:
        f = f[f["rank"] < top]
    f = f.sort_values(["uid", "llm", "rank"], ascending=[True, False, True], kind="stable")
    lists = f.groupby("uid")["iid"].agg(list)
    return [lists.get(u, []) for u in users]


# ---- retrieve-then-rank -----------------------------------------------------------------------------------

def retrieve_then_rank(model: nn.Module, bundle, splits: Splits, stage_config, config: RerankConfig,
                       progress: bool = True) -> dict[str, Any]:
    """MF alone vs Faiss top-K + LLM re-rank (vs the LLM over the whole catalogue); see the module docstring.
    Returns {"table": DataFrame (one row per method and K), "rows": per-row scores, "info": every setting}."""
    settings.set_seed(config.seed)
    k_max, titles = max(config.ks), item_titles(splits)
    warm_users, warm_items = train_ids(splits)
    user_tab, item_tab = mf_tables(model.hybrid.collab, splits.n_users, splits.n_items)
    catalogue = np.array(sorted(i for i in titles if 0 < i < len(item_tab)), dtype=np.int64)
    users = sample_test_users(splits, config.n_users, config.seed, warm_users)
    uids, seen = users["uid"].to_numpy(), [np.asarray(s, dtype=np.int64) for s in users["seen"]]
    template = stage_config.template or default_template(splits.name, with_ids=True)

    # exact search runs over catalogue positions, so exclusions are mapped to positions too
    pos_of = {int(i): p for p, i in enumerate(catalogue)}
    seen_pos = [np.array([pos_of[i] for i in s if i in pos_of], dtype=np.int64) for s in seen]
    (exact_s, exact_pos), exact_seconds = timed(retrieval.exact_topk_torch, user_tab[uids], item_tab[catalogue],
                                                 k_max, seen_pos, "cpu")
    exact_ids = np.where(exact_pos >= 0, catalogue[np.clip(exact_pos, 0, None)], -1)
    index, build_seconds = timed(retrieval.VectorIndex(config.index).build, item_tab[catalogue], catalogue)
    (faiss_s, faiss_ids), search_seconds = timed(index.search, user_tab[uids], k_max, seen)
    ranking = Ranking(model, bundle, users, catalogue, titles, warm_users, warm_items, template, stage_config, config,
                      progress)
    cands = ranking.candidates(users, list(faiss_ids))
    cand_scores, llm_seconds = ranking.llm_scores(cands)
    relevant, per_prompt = list(users["relevant"]), llm_seconds / max(1, len(cands))
    exact = ranking.candidates(users, list(exact_ids))
    rows = [cands.assign(method="faiss+llm", llm_score=cand_scores,
                         mf_score=faiss_s[pd.Index(uids).get_indexer(cands["uid"]), cands["rank"]]),
            exact.assign(method="mf_exact", llm_score=np.nan,  # MF's own list: every table row recomputes from rows
                         mf_score=np.asarray(exact_s)[pd.Index(uids).get_indexer(exact["uid"]), exact["rank"]])]
    table = []
    for k in config.ks:
        calls = int((cands["rank"] < k).sum())
        table += [_row("MF exact top-K", k, list(exact_ids), relevant, 0, exact_seconds),
                  _row("Faiss top-K (MF order)", k, list(faiss_ids), relevant, 0, build_seconds + search_seconds),
                  _row("Faiss top-K + LLM re-rank", k, _rerank(cands, cand_scores, uids, top=k), relevant, calls,
                       build_seconds + search_seconds + calls * per_prompt)]
        if k < k_max:
            table.append(_row(f"Faiss top-{k_max} + LLM re-rank, cut at K", k, _rerank(cands, cand_scores, uids),
                              relevant, len(cands), build_seconds + search_seconds + llm_seconds))
    info = {"config": config, "template": template, "n_users": len(uids), "catalogue_items": len(catalogue),
            "index": index.describe(), "index_build_seconds": build_seconds, "index_search_seconds": search_seconds,
            "exact_seconds": exact_seconds, "llm_seconds_kmax": llm_seconds, "llm_prompts_kmax": len(cands),
            "llm_prompts_per_second": len(cands) / llm_seconds if llm_seconds > 0 else None,
            "index_recall_vs_exact": {k: retrieval.recall_vs_exact(faiss_ids[:, :k], exact_ids[:, :k])
                                      for k in config.ks},
            "seconds_note": f"LLM seconds for K < {k_max} are prorated from the measured time of the {k_max} "
                            "candidates per user (prompts are scored once, the K-lists are prefixes)",
            "users": uids.tolist()}
    if config.n_full_users > 0:
        full = _full_catalogue(ranking, exact_ids, cands, cand_scores)
        table, info["full_catalogue"] = table + full[0], full[2]
        rows.append(full[1])
    rows = pd.concat(rows, ignore_index=True).drop(columns=["his", "his_title"])
    return {"table": pd.DataFrame(table), "rows": rows, "info": info}


def timed(fn, *args):
    t0 = time.perf_counter()
    return fn(*args), time.perf_counter() - t0


def _row(method: str, k: int, ranked: list, relevant: list, calls: int, seconds: float | None) -> dict[str, Any]:
    m = ranking_metrics(ranked, relevant, (k,))
    return {"method": method, "K": k, "users": len(relevant), "Recall@K": m[f"recall@{k}"], "NDCG@K": m[f"ndcg@{k}"],
            "HitRate@K": m[f"hit@{k}"], "llm_calls": calls, "seconds": seconds}


def _full_catalogue(ranking: Ranking, exact_ids: np.ndarray, cands: pd.DataFrame, cand_scores: np.ndarray
                    ) -> tuple[list[dict], pd.DataFrame, dict[str, Any]]:
    """The LLM scores every unseen catalogue item of the first config.n_full_users users; MF and re-rank on the same
    users beside."""
    config, users = ranking.config, ranking.users.head(ranking.config.n_full_users)
    uids = users["uid"].to_numpy()
    lists = [np.setdiff1d(ranking.catalogue, np.asarray(s, dtype=np.int64)) for s in users["seen"]]
    frame = ranking.candidates(users, lists)
    scores, seconds = ranking.llm_scores(frame)
    ranked, relevant, same = _rerank(frame, scores, uids), list(users["relevant"]), cands["uid"].isin(uids).to_numpy()
    sub, sub_scores = cands[same], cand_scores[same]
    sub_ranked = {k: _rerank(sub, sub_scores, uids, top=k) for k in config.ks}
    table = [r for k in config.ks for r in (
        _row("LLM whole catalogue", k, ranked, relevant, len(frame), seconds),
        _row("MF exact top-K (same users)", k, list(exact_ids[: len(uids)]), relevant, 0, None),
        _row("Faiss top-K + LLM re-rank (same users)", k, sub_ranked[k], relevant, int((sub["rank"] < k).sum()), None))]
    info = {"users": uids.tolist(), "prompts": len(frame), "seconds": seconds,
            "prompts_per_second": len(frame) / seconds if seconds > 0 else None}
    return table, frame.assign(method="llm_full", llm_score=scores, mf_score=np.nan), info


def index_sweep(item_vectors: np.ndarray, queries: np.ndarray, k: int, base: retrieval.IndexConfig,
                nprobes: tuple[int, ...] = (1, 2, 4, 8, 16, 32), ef_searches: tuple[int, ...] = (16, 32, 64, 128)
                ) -> pd.DataFrame:
    """Recall@k against exact search and queries/s for Flat, IVF (nprobe) and HNSW (efSearch) on real vectors."""
    _, exact = retrieval.exact_topk_torch(queries, item_vectors, k, device="cpu")
    rows = []
    for kind, knob, values in (("flat", None, (None,)), ("ivf", "nprobe", nprobes), ("hnsw", "ef_search", ef_searches)):
        index = retrieval.VectorIndex(dataclasses.replace(base, kind=kind, use_gpu=False)).build(item_vectors)
        for value in values:
            if knob is not None:
                index.set_search_params(**{knob: value})
            runs = [timed(index.search, queries, k) for _ in range(3)]  # best of three: the machine is shared
            ids, best = runs[0][0][1], min(r[1] for r in runs)
            rows.append({"kind": kind, "knob": knob or "", "value": value, "recall": retrieval.recall_vs_exact(ids, exact),
                         "queries_per_s": len(queries) / best, "nlist": index.nlist_effective})
    return pd.DataFrame(rows)


def relevant_counts(rows: pd.DataFrame) -> dict[str, int]:
    """From a ranking's rows (uid, relevant: the user's relevant test items): how many relevant items all users
    have together and the fewest one user has; what one item moves Recall@K by (plots.recall_vs_k)."""
    per_user = rows.groupby("uid")["relevant"].first()
    return {"n_relevant": int(per_user.sum()), "min_relevant": int(per_user.min())}
