"""Similarity matching for cold ids (docs/protocol.md §8.3), on a trained stage-2 model.

A user without train rows borrows the mean MF vector of the warm users nearest to it (cosine over pooled MF
vectors of the warm items in its history); an item without train rows borrows from the warm items nearest by a
text representation of its title. `MatchedEncoder` wraps the MF with those overrides and is swapped into
`model.hybrid.collab`, so the FECE slot carries g(borrowed vector) with no model change. This module is matching's
one home: the borrowing itself (`borrow_vectors`, `pool_history` over a Faiss index from `retrieval`) and its
settings, `MatchingConfig` (notebook 05 builds it from its `rerank.RerankConfig`: `config.matching`, so a rerank
run's identity keeps hashing the same fields).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from . import metrics, retrieval, settings
from .catalogue import item_titles, mf_tables, train_ids
from .configs import MatchingConfig
from .data import Splits
from .prompts import default_template, encode_frame
from .scoring import score


class MatchedEncoder(nn.Module):
    """A collaborative encoder: the wrapped model's vectors, except for overridden ids (borrowed vectors)."""

    def __init__(self, base: nn.Module, n_users: int, n_items: int, user_ids: np.ndarray, user_vectors: np.ndarray,
                 item_ids: np.ndarray, item_vectors: np.ndarray) -> None:
        super().__init__()
        self.base, self.dim, self.max_len = base, base.dim, base.max_len
        for side, n, ids, vecs in (("user", n_users, user_ids, user_vectors), ("item", n_items, item_ids, item_vectors)):
            ids = torch.tensor(np.asarray(ids, dtype=np.int64))
            table, mask = torch.zeros(n, self.dim), torch.zeros(n, dtype=torch.bool)
            if len(ids):
                table[ids] = torch.as_tensor(np.asarray(vecs, dtype=np.float32)).reshape(len(ids), self.dim)
                mask[ids] = True
            self.register_buffer(f"{side}_table", table, persistent=False)
            self.register_buffer(f"{side}_mask", mask, persistent=False)

    def user_vectors(self, uids: torch.LongTensor, history: torch.LongTensor | None = None) -> torch.Tensor:
        base = self.base.user_vectors(uids, history)
        return torch.where(self.user_mask[uids].unsqueeze(-1), self.user_table[uids].to(base.dtype), base)

    def item_vectors(self, iids: torch.LongTensor) -> torch.Tensor:
        base = self.base.item_vectors(iids)
        return torch.where(self.item_mask[iids].unsqueeze(-1), self.item_table[iids].to(base.dtype), base)


@dataclass
class MatchingInputs:
    """What matching needs, computed once for every neighbour count: representations of cold and warm ids."""

    cold_users: np.ndarray  # ids; *_repr: one row per id
    cold_user_repr: np.ndarray  # pooled MF vectors of the warm items in the history (zeros: empty history)
    warm_users: np.ndarray
    warm_user_repr: np.ndarray  # pooled MF vectors of the warm items the user liked in train
    cold_items: np.ndarray
    cold_item_repr: np.ndarray  # title representation, centred on the warm items' mean
    warm_items: np.ndarray
    warm_item_repr: np.ndarray
    item_text: str
    text_seconds: float
    n_users: int  # table sizes of the wrapped encoder
    n_items: int


def title_vectors(texts: list[str], method: str, bundle=None, batch_size: int = 64) -> np.ndarray:
    """Title representation: "llm" = mean-pooled hidden states of the frozen LLM; "hashed" = char 2-4-gram counts."""
    if method == "llm":
        from .llm import encode_texts
        return encode_texts(bundle, texts, batch_size=batch_size).numpy()
    if method == "hashed":
        from sklearn.feature_extraction.text import HashingVectorizer
        vec = HashingVectorizer(analyzer="char_wb", ngram_range=(2, 4), n_features=1024, alternate_sign=False)
        return vec.transform([t.lower() for t in texts]).toarray().astype(np.float32)
    raise ValueError(f"item_text={method!r}; choose 'llm' or 'hashed'")


def borrow_vectors(query_repr: np.ndarray, warm_repr: np.ndarray, warm_vectors: np.ndarray, n_neighbors: int = 10,
                   weighting: Literal["uniform", "similarity"] = "uniform",
                   config: retrieval.IndexConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Collaborative vectors for cold ids, borrowed from their nearest warm neighbours (cosine, via Faiss).

    query_repr: (n_cold, r) representation available for cold ids; warm_repr: (n_warm, r) the same space
    for warm ids; warm_vectors: (n_warm, d) the collaborative vectors to borrow. "similarity" weights
    neighbours by their cosine clipped at 0 (uniform when all are <= 0). A query row that is all zeros or
    has a NaN (e.g. a cold user with no history) falls back to the mean warm vector; the warm side must be finite.
    Returns (vectors (n_cold, d), fallback_mask (n_cold,) bool).
    """
    if weighting not in ("uniform", "similarity"):
        raise ValueError(f"weighting={weighting!r}; choose 'uniform' or 'similarity'")
    warm_repr = retrieval._as_matrix(warm_repr, "warm_repr")
    warm_vectors = retrieval._as_matrix(warm_vectors, "warm_vectors")
    query_repr = retrieval._as_matrix(query_repr, "query_repr", warm_repr.shape[1], finite=False)  # NaN rows fall back
    if len(warm_repr) != len(warm_vectors):
        raise ValueError(f"warm_repr has {len(warm_repr)} rows but warm_vectors has {len(warm_vectors)}")
    if len(warm_repr) == 0:
        raise ValueError("borrow_vectors needs at least one warm id")
    fallback = ~np.isfinite(query_repr).all(1) | ~np.any(query_repr != 0, axis=1)
    out = np.repeat(warm_vectors.mean(0, keepdims=True), len(query_repr), axis=0)
    live = np.flatnonzero(~fallback)
    if len(live):
        config = config or retrieval.IndexConfig(kind="flat", metric="ip", use_gpu=False)
        if config.metric != "ip":
            raise ValueError("borrow_vectors matches by cosine: give an IndexConfig with metric='ip'")
        index = retrieval.VectorIndex(config).build(retrieval.normalise(warm_repr))
        k = min(n_neighbors, len(warm_repr))
        sims, nbrs = index.search(retrieval.normalise(query_repr[live]), k)
        valid = nbrs >= 0  # approximate indexes may return fewer than k neighbours
        if weighting == "uniform":
            w = valid.astype(np.float32)
        else:
            w = np.where(valid, np.clip(sims, 0, None), 0).astype(np.float32)
            w[w.sum(1) == 0] = valid[w.sum(1) == 0]
        w_sum = w.sum(1, keepdims=True)
        borrowed = np.einsum("qk,qkd->qd", w, warm_vectors[np.clip(nbrs, 0, None)]) / np.maximum(w_sum, 1e-12)
        has_nbr = w_sum[:, 0] > 0
        out[live[has_nbr]] = borrowed[has_nbr]
        fallback[live[~has_nbr]] = True
    return out, fallback


def pool_history(item_vectors: np.ndarray, histories: list[list[int]],
                 max_len: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mean item vector of each history (its last `max_len` items); empty histories give zeros + mask True."""
    item_vectors = retrieval._as_matrix(item_vectors, "item_vectors")
    pooled = np.zeros((len(histories), item_vectors.shape[1]), dtype=np.float32)
    empty = np.zeros(len(histories), dtype=bool)
    for row, hist in enumerate(histories):
        h = np.asarray(hist, dtype=np.int64)
        if max_len is not None:
            h = h[-max_len:] if max_len > 0 else h[:0]
        if len(h) == 0:
            empty[row] = True
            continue
        if h.min() < 0 or h.max() >= len(item_vectors):
            raise ValueError(f"history {row} holds item ids outside 0..{len(item_vectors) - 1}: "
                             "map ids to rows of item_vectors first")
        pooled[row] = item_vectors[h].mean(0)
    return pooled, empty


def matching_inputs(collab: nn.Module, splits: Splits, frame: pd.DataFrame, item_text: str = "llm",
                    bundle=None) -> MatchingInputs:
    """Cold users / items of `frame` and their representations; a cold user's history is that of its first row."""
    warm_u, warm_i = train_ids(splits)
    user_tab, item_tab = mf_tables(collab, splits.n_users, splits.n_items)
    warm_items, warm_users = (np.array(sorted(ids), dtype=np.int64) for ids in (warm_i, warm_u))
    train = splits.collab_rows
    liked = train[train["label"] == 1].groupby("uid")["iid"].agg(list)
    hist = lambda items: [i for i in map(int, items) if i in warm_i]  # noqa: E731 - cold items have no MF signal
    warm_user_repr, _ = pool_history(item_tab, [hist(liked.get(u, [])) for u in warm_users])
    first = frame[~frame["uid"].isin(warm_u)].sort_values(["uid", "timestamp"], kind="stable").groupby("uid").head(1)
    cold_users = first["uid"].to_numpy(np.int64)
    cold_user_repr, _ = pool_history(item_tab, [hist(h) for h in first["his"]])
    cold_items = np.array(sorted(set(frame["iid"].astype(int)) - warm_i), dtype=np.int64)
    titles = item_titles(splits)
    start = time.perf_counter()
    text = title_vectors([titles[i] for i in np.concatenate([warm_items, cold_items])], item_text, bundle)
    text_seconds = time.perf_counter() - start
    text = text - text[: len(warm_items)].mean(0, keepdims=True)  # mean-pooled LLM states share one big direction
    return MatchingInputs(cold_users, cold_user_repr, warm_users, warm_user_repr, cold_items, text[len(warm_items):],
                          warm_items, text[: len(warm_items)], item_text, text_seconds,
                          splits.n_users, splits.n_items)


def matched_encoder(collab: nn.Module, inputs: MatchingInputs, n_neighbors: int,
                    weighting: str = "uniform", index: retrieval.IndexConfig | None = None
                    ) -> tuple[MatchedEncoder, dict[str, int]]:
    """The MF with every cold id of `inputs` overridden by its neighbours' mean vector; counts of fallbacks."""
    user_tab, item_tab = mf_tables(collab, inputs.n_users, inputs.n_items)
    index = index or retrieval.IndexConfig(kind="flat", metric="ip", use_gpu=False)
    parts, counts = {}, {}
    for side, cold, cold_r, warm, warm_r, tab in (
            ("user", inputs.cold_users, inputs.cold_user_repr, inputs.warm_users, inputs.warm_user_repr, user_tab),
            ("item", inputs.cold_items, inputs.cold_item_repr, inputs.warm_items, inputs.warm_item_repr, item_tab)):
        vecs, fallback = (borrow_vectors(cold_r, warm_r, tab[warm], n_neighbors, weighting, index)
                          if len(cold) else (np.zeros((0, collab.dim)), np.zeros(0, bool)))
        parts[side], counts[f"cold_{side}s"], counts[f"{side}_fallbacks"] = vecs, len(cold), int(fallback.sum())
    enc = MatchedEncoder(collab, len(user_tab), len(item_tab), inputs.cold_users, parts["user"],
                         inputs.cold_items, parts["item"])
    return enc.to(next(collab.parameters()).device), counts


def cold_matching(model: nn.Module, bundle, splits: Splits, stage_config, stage_dir: str | Path,
                  config: MatchingConfig, progress: bool = True) -> dict[str, Any]:
    """AUC / UAUC on warm and cold rows of notebook 04's test rows (a sample of whole users of them with
    config.test_rows), with and without matching (`config`: a MatchingConfig, or a rerank.RerankConfig whose matching
    fields are used; info["config"] records it as given). Rows with no overridden id keep their scores; only rows
    with a cold user or item are rescored per neighbour count. The no-matching scores are the stage's
    scores_test.csv when a rescored check reproduces them."""
    from .stages import sample_users

    given, config = config, MatchingConfig.of(config)
    settings.set_seed(config.seed)
    frame = sample_users(splits.test, stage_config.test_rows, stage_config.seed)
    frame = sample_users(frame, config.test_rows, config.seed).reset_index(drop=True)
    template = stage_config.template or default_template(splits.name, with_ids=True)
    enc = encode_frame(frame, template, bundle.tokenizer, stage_config.max_history, progress=False)
    pad, base_collab = bundle.tokenizer.pad_token_id, model.hybrid.collab
    baseline, source = _baseline(model, enc, frame, Path(stage_dir), pad, config.score_batch_size, progress)
    inputs = matching_inputs(base_collab, splits, frame, config.item_text, bundle)
    touched = np.flatnonzero(frame["uid"].isin(inputs.cold_users).to_numpy() | frame["iid"].isin(inputs.cold_items).to_numpy())
    results, rows = {"without": metrics.evaluate(frame.assign(score=baseline))}, {"without": baseline}
    counts, seconds = {}, {}
    for n in tqdm(sorted(set(config.neighbor_curve) | {config.n_neighbors}), desc="neighbours", disable=settings.quiet(progress)):
        matched, counts[n] = matched_encoder(base_collab, inputs, n, config.weighting)
        model.hybrid.collab = matched
        try:
            t0, new = time.perf_counter(), baseline.copy()
            if len(touched):
                new[touched] = score(model, enc.subset(touched), pad, config.score_batch_size, progress=False)
            seconds[n] = time.perf_counter() - t0
        finally:
            model.hybrid.collab = base_collab
        results[n], rows[f"matched_{n}"] = metrics.evaluate(frame.assign(score=new)), new
    def name(key: Any) -> str:
        return "without matching" if key == "without" else f"matching, {key} neighbours"

    table = [{"setting": name(key), "neighbours": None if key == "without" else key, "subset": subset,
              "rows": m["rows"], "AUC": m["auc"], "UAUC": m["uauc"], "UAUC users": m["uauc_users"]}
             for key, res in results.items() for subset, m in res.items()]
    keys = frame[["uid", "iid", "label", "not_cold"]]  # per-row scores in long form: one block per setting
    per_row = pd.concat([keys.assign(setting=name(key), score=rows["without" if key == "without" else f"matched_{key}"])
                         for key in results], ignore_index=True)
    info = {"config": given, "template": template, "rows": len(frame), "rescored_rows": len(touched),
            "baseline_scores": source, "item_text": inputs.item_text, "text_seconds": inputs.text_seconds,
            "counts": counts, "rescore_seconds": seconds, "test_rows": stage_config.test_rows,
            "stage_seed": stage_config.seed, "results": {str(k): v for k, v in results.items()}}
    return {"table": pd.DataFrame(table), "rows": per_row, "info": info}


def cold_table(table: pd.DataFrame) -> pd.DataFrame:
    """cold_matching's long table as one row per setting: AUC and UAUC on all, warm and cold rows."""
    wide = table.pivot_table(index="setting", columns="subset", values=["AUC", "UAUC"], sort=False)
    wide = wide[[c for c in wide.columns if c[1] in ("all", "warm", "cold")]]
    wide.columns = [f"{metric} {subset}" for metric, subset in wide.columns]
    return wide.reset_index()


def _baseline(model, enc, frame, stage_dir: Path, pad: int, batch_size: int, progress: bool,
              n_check: int = 8) -> tuple[np.ndarray, str]:
    """The stage's saved test scores of these rows (all of them, or a user sample), when they reproduce on a check
    sample: within 1e-3 in fp32; in bf16 within 0.25 (a logit of ~+-20 moves by ~1e-2 when its row is scored in
    another group of rows: scoring.py), far below what another model's scores would differ by."""
    path = stage_dir / "scores_test.csv"
    if path.exists():
        saved = pd.read_csv(path)
        keyed = frame[["uid", "iid"]].astype(saved["uid"].dtype).merge(
            saved.reset_index()[["uid", "iid", "index"]].drop_duplicates(["uid", "iid"], keep=False), how="left")
        if len(keyed) == len(frame) and keyed["index"].notna().all():
            mine = saved["score"].to_numpy(np.float32)[keyed["index"].to_numpy(int)]
            check = np.random.default_rng(0).choice(len(frame), min(n_check, len(frame)), replace=False)
            fresh = score(model, enc.subset(check), pad, batch_size, progress=False)
            if np.allclose(fresh, mine[check], **model.runtime.score_tolerance):
                return mine, f"{settings.shown(path)} (reproduced on {len(check)} rescored rows)"
    return score(model, enc, pad, batch_size, progress), "rescored (no matching saved scores)"


def subset_counts(rows: pd.DataFrame) -> dict[str, tuple[int, int]]:
    """(rows, users) of all, warm and cold test rows in cold_matching's rows (one setting's rows are all of them)."""
    first = rows[rows["setting"] == rows["setting"].iloc[0]]
    parts = {"all": first, "warm": first[first["not_cold"] == 1], "cold": first[first["not_cold"] == 0]}
    return {name: (len(part), part["uid"].nunique()) for name, part in parts.items()}
