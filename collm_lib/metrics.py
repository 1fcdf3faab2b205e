"""Evaluation metrics on plain arrays: AUC, UAUC, warm/cold breakdowns, bootstrap intervals (top-K: ranking.py).

Pure numpy; imports nothing else of ours. `evaluate` takes any frame-like object whose columns
can be read with `frame[name]` (a pandas DataFrame in practice).

AUC is the Mann-Whitney statistic computed from average ranks, so tied scores count half -- the
same value as scikit-learn's roc_auc_score. UAUC is the unweighted mean of per-user AUCs over the
users that have more than one row and both classes (docs/protocol.md §7.2); it is computed with one
global sort by (user, score), without a Python loop over users, so it stays fast on millions of rows.
`bootstrap` gives user-level bootstrap percentile intervals for both, `paired_difference` those of the
difference between two methods on the same rows.
"""
from __future__ import annotations

import math

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # annotations only: this module stays pure numpy at run time
    import pandas as pd

UNDEFINED_UAUC = "undefined: no user has more than one row with both classes"
BOOTSTRAP = {"n_boot": 1000, "level": 0.95}  # the intervals the tables and key numbers report


@dataclass
class UAUC:
    """User-averaged AUC and what it covered; `value` is None (with `note` saying why) when undefined."""

    value: float | None
    n_users: int
    n_rows: int
    note: str


def require_finite_loss(loss: float, lr: float, where: str) -> None:
    """ValueError when a training loss is NaN or infinite: training diverged, and the message names the learning
    rate to lower (scores would be NaN, and nothing after it would say why)."""
    if not math.isfinite(loss):
        raise ValueError(f"{where}: training diverged (train loss {loss}) at learning rate {lr:g}; lower the "
                         "learning rate (--lr, or the notebook's lr parameter)")


def _check(labels: Any, scores: Any, users: Any | None = None) -> tuple[np.ndarray, ...]:
    y = np.asarray(labels)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim != 1 or s.shape != y.shape:
        raise ValueError(f"labels and scores must be 1-D of equal length, got {y.shape} and {s.shape}")
    if y.size == 0:
        raise ValueError("empty input: no rows to evaluate")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN; fix the model output before evaluating")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0/1")
    out = (y.astype(np.int8), s)
    if users is not None:
        u = np.asarray(users)
        if u.dtype.kind not in "iub":  # strings or objects: sort on integer codes instead
            u = np.unique(u, return_inverse=True)[1].reshape(u.shape)
        if u.shape != y.shape:
            raise ValueError(f"users must have the same length as labels, got {u.shape} and {y.shape}")
        out += (u,)
    return out


def _dense_ranks(values: np.ndarray) -> tuple[np.ndarray, int]:
    """0-based dense ranks (equal values share one) and the number of distinct values."""
    order = np.argsort(values)
    sorted_values = values[order]
    step = np.empty(values.size, dtype=np.int64)
    step[0] = 0
    # `!=` rather than np.diff so that equal infinities stay one tie block
    np.not_equal(sorted_values[1:], sorted_values[:-1], out=step[1:])
    ranks = np.empty(values.size, dtype=np.int64)
    ranks[order] = np.cumsum(step)
    return ranks, int(ranks[order[-1]]) + 1


def _grouped_mann_whitney(groups: np.ndarray, y: np.ndarray, s: np.ndarray
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per group: (n_pos, n_neg, U) with U the Mann-Whitney count of (pos > neg) pairs, ties half.

    Speed: instead of a lexsort (two argsorts), group code, dense score rank and label are packed
    into one int64 key and sorted by value, which is several times faster on millions of rows.
    Inside each (group, score) tie block every row gets the block's average rank; the sum of the
    positives' within-group ranks minus n_pos (n_pos + 1) / 2 is U.
    """
    s_rank, n_scores = _dense_ranks(s)
    g = groups.astype(np.int64) - groups.min()
    if (int(g.max()) + 1) * n_scores * 2 >= 2**62:  # sparse ids: compact them first
        g = np.unique(g, return_inverse=True)[1].reshape(g.shape)
    key = (g * n_scores + s_rank) * 2 + y
    key.sort()
    yy = key & 1
    block_key = key >> 1
    gg = block_key // n_scores
    n = key.size
    new_group = np.empty(n, dtype=bool)
    new_group[0] = True
    np.not_equal(gg[1:], gg[:-1], out=new_group[1:])
    new_block = np.empty(n, dtype=bool)
    new_block[0] = True
    np.not_equal(block_key[1:], block_key[:-1], out=new_block[1:])

    group_id = np.cumsum(new_group) - 1
    group_start = np.flatnonzero(new_group)
    block_id = np.cumsum(new_block) - 1
    block_start = np.flatnonzero(new_block)
    block_end = np.append(block_start[1:], n)  # exclusive
    # 1-based average rank of each block inside its group
    block_rank = (block_start + block_end + 1) / 2.0 - group_start[group_id[block_start]]
    rank = block_rank[block_id]

    n_groups = group_start.size
    n_pos = np.bincount(group_id, weights=yy, minlength=n_groups)
    n_neg = np.diff(np.append(group_start, n)) - n_pos
    rank_sum_pos = np.bincount(group_id, weights=rank * yy, minlength=n_groups)
    return n_pos, n_neg, rank_sum_pos - n_pos * (n_pos + 1) / 2.0


def auc(labels: Any, scores: Any) -> float:
    """Global ROC AUC with ties counted half; ValueError on empty input or a single class."""
    y, s = _check(labels, scores)
    n_pos, n_neg, u_stat = _grouped_mann_whitney(np.zeros(y.size, dtype=np.int8), y, s)
    if n_pos[0] == 0 or n_neg[0] == 0:
        raise ValueError("AUC is undefined when only one class is present")
    return float(u_stat[0] / (n_pos[0] * n_neg[0]))


def _user_aucs(u: np.ndarray, y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per user, in sorted-id order: AUC (NaN without both classes, hence for single rows) and row count."""
    n_pos, n_neg, u_stat = _grouped_mann_whitney(u, y, s)
    pairs = n_pos * n_neg
    return np.divide(u_stat, pairs, out=np.full(pairs.size, np.nan), where=pairs > 0), n_pos + n_neg


def uauc(users: Any, labels: Any, scores: Any) -> UAUC:
    """Unweighted mean of per-user AUCs over users with > 1 row and both classes (vectorised)."""
    y, s, u = _check(labels, scores, users)
    per_user, sizes = _user_aucs(u, y, s)
    ok = ~np.isnan(per_user)
    n_users = int(ok.sum())
    if n_users == 0:
        return UAUC(None, 0, 0, UNDEFINED_UAUC)
    per_user = per_user[ok]
    n_rows = int(sizes[ok].sum())
    skipped = int(ok.size - n_users)
    return UAUC(float(per_user.mean()), n_users, n_rows,
                f"{n_users} users ({n_rows} rows) covered; {skipped} users skipped (single row or class)")


def _subset_metrics(users: np.ndarray, y: np.ndarray, s: np.ndarray) -> dict[str, Any]:
    out: dict[str, Any] = {"rows": int(y.size), "pos_rate": float(y.mean()) if y.size else None}
    if y.size == 0:
        return out | {"auc": None, "auc_note": "no rows in this subset",
                      "uauc": None, "uauc_users": 0, "uauc_rows": 0, "uauc_note": "no rows in this subset"}
    if y.min() == y.max():
        out |= {"auc": None, "auc_note": f"undefined: only label {int(y[0])} in this subset"}
    else:
        out |= {"auc": auc(y, s), "auc_note": ""}
    ua = uauc(users, y, s)
    return out | {"uauc": ua.value, "uauc_users": ua.n_users, "uauc_rows": ua.n_rows, "uauc_note": ua.note}


def evaluate(frame: Any, score_col: str = "score", train_frame: Any | None = None,
             user_col: str = "uid", item_col: str = "iid", label_col: str = "label") -> dict[str, dict]:
    """AUC / UAUC / rows / positive rate overall and per subset.

    Subsets: "all"; "warm" (not_cold == 1) and "cold" (not_cold == 0) when the frame has not_cold;
    with `train_frame`, also CoLLM's alternative "warm_gt3" (user and item each with more than 3
    train rows) and its complement "cold_gt3". Each value is a dict with keys rows, pos_rate, auc,
    auc_note, uauc, uauc_users, uauc_rows, uauc_note; an undefined metric is None with a note.
    """
    missing = [c for c in (user_col, label_col, score_col) if c not in frame]
    if missing:
        raise ValueError(f"evaluate: frame lacks columns {missing}; add the scores as column {score_col!r}")
    users = np.asarray(frame[user_col])
    y, s = _check(frame[label_col], frame[score_col])
    masks: dict[str, np.ndarray] = {"all": np.ones(y.size, dtype=bool)}
    if "not_cold" in frame:
        warm = np.asarray(frame["not_cold"]) == 1
        masks |= {"warm": warm, "cold": ~warm}
    if train_frame is not None:
        warm3 = _warm_by_train_counts(np.asarray(frame[user_col]), np.asarray(frame[item_col]),
                                      np.asarray(train_frame[user_col]), np.asarray(train_frame[item_col]))
        masks |= {"warm_gt3": warm3, "cold_gt3": ~warm3}
    return {name: _subset_metrics(users[m], y[m], s[m]) for name, m in masks.items()}


def _warm_by_train_counts(users: np.ndarray, items: np.ndarray, train_users: np.ndarray,
                          train_items: np.ndarray, min_rows: int = 3) -> np.ndarray:
    """True where both the user and the item have more than `min_rows` rows in train."""
    return ((_train_counts(users, train_users) > min_rows)
            & (_train_counts(items, train_items) > min_rows))


def _train_counts(ids: np.ndarray, train_ids: np.ndarray) -> np.ndarray:
    uniq, counts = np.unique(train_ids, return_counts=True)
    if uniq.size == 0:
        return np.zeros(ids.size, dtype=np.int64)
    pos = np.minimum(np.searchsorted(uniq, ids), uniq.size - 1)
    return np.where(uniq[pos] == ids, counts[pos], 0)


def _check_bootstrap(frame: pd.DataFrame, n_boot: int, level: float) -> None:
    missing = [c for c in ("uid", "label", "score") if c not in frame]
    if missing:
        raise ValueError(f"bootstrap: frame lacks columns {missing}")
    if len(frame) == 0:
        raise ValueError("bootstrap: empty frame, no rows to resample")
    if n_boot < 1:
        raise ValueError(f"bootstrap: n_boot must be >= 1, got {n_boot}")
    if not 0 < level < 1:
        raise ValueError(f"bootstrap: level must lie strictly between 0 and 1, got {level}")


def _resampled(frame: pd.DataFrame, n_boot: int, seed: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(AUC per resample, UAUC per resample, users): users drawn with replacement, n_users draws from the sorted
    unique uids, a user drawn k times contributing all its rows k times; NaN where a resample leaves a metric
    undefined. The draws depend only on the set of users and the seed."""
    uids, codes = np.unique(np.asarray(frame["uid"]), return_inverse=True)
    y, s, codes = _check(frame["label"], frame["score"], codes.reshape(-1))
    n_users = uids.size
    per_user, _ = _user_aucs(codes, y, s)
    defined = ~np.isnan(per_user)
    rank, n_ranks = _dense_ranks(s)
    rng = np.random.default_rng(seed)
    chunk = max(1, 2**22 // y.size)  # resamples per batch: bounds memory at ~ 2**22 row weights
    boot_auc, boot_uauc = [], []
    for start in range(0, n_boot, chunk):
        k = min(chunk, n_boot - start)
        counts = np.stack([np.bincount(rng.integers(n_users, size=n_users), minlength=n_users)
                           for _ in range(k)]).astype(np.float64)  # (k, users): times each user is drawn
        w = counts[:, codes]  # row weights
        cell = (np.arange(k)[:, None] * n_ranks + rank).ravel()  # (resample, score rank) cells
        pos = np.bincount(cell, (w * y).ravel(), k * n_ranks).reshape(k, n_ranks)
        neg = np.bincount(cell, (w * (1 - y)).ravel(), k * n_ranks).reshape(k, n_ranks)
        u_stat = (pos * (np.cumsum(neg, axis=1) - 0.5 * neg)).sum(axis=1)  # negatives below + half the ties
        pairs = pos.sum(axis=1) * neg.sum(axis=1)
        boot_auc.append(np.divide(u_stat, pairs, out=np.full(k, np.nan), where=pairs > 0))
        drawn = counts[:, defined].sum(axis=1)
        boot_uauc.append(np.divide(counts[:, defined] @ per_user[defined], drawn,
                                   out=np.full(k, np.nan), where=drawn > 0))
    return np.concatenate(boot_auc), np.concatenate(boot_uauc), n_users


def _points(frame: pd.DataFrame) -> dict[str, float | None]:
    y = np.asarray(frame["label"], dtype=np.float64)
    return {"auc": auc(y, frame["score"]) if 0 < y.sum() < y.size else None,
            "uauc": uauc(np.asarray(frame["uid"]), y, frame["score"]).value}


def _intervals(points: dict[str, float | None], values: dict[str, np.ndarray], level: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, point in points.items():
        ok = values[name][~np.isnan(values[name])]
        lo, hi = (np.percentile(ok, [50 * (1 - level), 50 * (1 + level)]).tolist()
                  if point is not None and ok.size else (None, None))
        out |= {name: point, f"{name}_lo": lo, f"{name}_hi": hi, f"n_undefined_{name}": int(values[name].size - ok.size)}
    return out


def _keys(frame: pd.DataFrame) -> np.ndarray | None:
    """The sorted (uid, iid) keys of a frame's rows, None without an iid column."""
    if "iid" not in frame:
        return None
    return np.sort(np.asarray(frame["uid"], dtype=np.int64) * (1 << 32) + np.asarray(frame["iid"], dtype=np.int64))


def by_seed(frame: pd.DataFrame) -> list[pd.DataFrame]:
    """A method's per-row scores split into one frame per seed (its "seed" column); one frame when it has no such
    column or a single seed."""
    if "seed" not in frame or frame["seed"].nunique(dropna=False) <= 1:
        return [frame]
    return [part for _, part in frame.groupby("seed", sort=True, dropna=False)]


def _seed_parts(frame: pd.DataFrame, n_boot: int, level: float, what: str) -> list[pd.DataFrame]:
    """by_seed(frame), each part checked; the seeds must have scored the same (uid, iid) rows."""
    parts = by_seed(frame)
    for part in parts:
        _check_bootstrap(part, n_boot, level)
    first = _keys(parts[0])
    if len(parts) > 1 and any(_keys(p) is None or len(_keys(p)) != len(first) or not np.array_equal(_keys(p), first)
                              for p in parts):
        raise ValueError(f"{what}: its seeds scored other (uid, iid) rows; each seed must score the same rows")
    return parts


def _resampled_seeds(parts: list[pd.DataFrame], n_boot: int, seed: int, stream: int
                     ) -> tuple[dict[str, float | None], dict[str, np.ndarray], int]:
    """(points: each metric's mean over the seeds, resampled values, users). Each resample draws users (the same
    draws for every seed: they depend only on the users and `seed`) and one of the seeds (from the generator
    (seed, stream)), so the interval carries both the sampling of users and the spread over seeds."""
    runs = [_resampled(part, n_boot, seed) for part in parts]
    points = [_points(part) for part in parts]
    mean = {k: None if any(p[k] is None for p in points) else float(np.mean([p[k] for p in points])) for k in points[0]}
    if len(parts) == 1:
        return mean, {"auc": runs[0][0], "uauc": runs[0][1]}, runs[0][2]
    pick = np.random.default_rng([seed, stream]).integers(len(parts), size=n_boot)
    columns = np.arange(n_boot)
    values = {name: np.stack([r[i] for r in runs])[pick, columns] for i, name in enumerate(("auc", "uauc"))}
    return mean, values, runs[0][2]


def bootstrap(frame: pd.DataFrame, n_boot: int = 1000, level: float = 0.95, seed: int = 2023) -> dict[str, Any]:
    """User-level bootstrap percentile intervals for AUC and UAUC of frame's (uid, label, score) rows.

    Rows of one user are correlated, so users (not rows) are resampled with replacement (_resampled). The draws
    depend only on the set of users and the seed, so methods scored on the same rows get the same resamples (a
    paired comparison: paired_difference). A resample's AUC is the weighted Mann-Whitney statistic with the draw
    counts as row weights (equal to `auc` on the concatenated rows); its UAUC is the draw-weighted mean of the
    per-user AUCs, which are computed once. Resamples where a metric is undefined (one class; no user with both
    classes) are counted in n_undefined_* and left out.

    A frame with a "seed" column holding several seeds (the same rows scored by each seed's run) gives the mean over
    the seeds, and an interval that resamples the seeds too: each resample takes one seed's scores at random
    (_resampled_seeds), so it is as wide as users and seeds together make it.
    """
    parts = _seed_parts(frame, n_boot, level, "bootstrap")
    points, values, n_users = _resampled_seeds(parts, n_boot, seed, 1)
    out = _intervals(points, values, level)
    return out | {"n_boot": int(n_boot), "level": float(level), "seed": seed, "users": int(n_users),
                  "rows": int(len(parts[0])), "seeds": len(parts),
                  "method": "user-level bootstrap, percentile interval" + (" (users and seeds)" if len(parts) > 1
                                                                             else "")}


def paired_difference(a: pd.DataFrame, b: pd.DataFrame, n_boot: int = 1000, level: float = 0.95,
                      seed: int = 2023) -> dict[str, Any]:
    """AUC and UAUC of method a minus method b on the same rows, with the user-level bootstrap interval of the
    difference: each resample draws the same users for both (bootstrap's draws depend only on the users and the
    seed), so what the two methods share cancels and the interval is that of the difference itself, narrower than
    comparing two separate intervals. The (uid, iid) rows must be the same multiset: ValueError otherwise.
    With a "seed" column, every seed of a method counts: the difference of the seed means, each resample taking one
    seed of a and one of b at random (independently: their runs are), so the seed spread of both widens it.
    share_below_0 / share_above_0: the resamples where the difference is < 0 / > 0 (of those where it is defined)."""
    parts = {name: _seed_parts(f, n_boot, level, f"paired_difference ({name})") for name, f in (("a", a), ("b", b))}
    keys = [_keys(parts[name][0]) for name in ("a", "b")]
    if keys[0] is None or keys[1] is None or len(keys[0]) != len(keys[1]) or not np.array_equal(*keys):
        raise ValueError(f"paired_difference: the two frames must hold the same (uid, iid) rows ({len(parts['a'][0])} "
                         f"and {len(parts['b'][0])} rows given); score both methods on one set of rows "
                         "(baselines.rows_of)")
    (pa, va, n_users), (pb, vb, _) = (_resampled_seeds(parts[name], n_boot, seed, stream)
                                      for name, stream in (("a", 1), ("b", 2)))
    points = {k: None if pa[k] is None or pb[k] is None else pa[k] - pb[k] for k in pa}
    values = {k: va[k] - vb[k] for k in va}
    out = _intervals(points, values, level)
    for name, diffs in values.items():
        ok = diffs[~np.isnan(diffs)]
        out |= {f"{name}_share_below_0": float((ok < 0).mean()) if ok.size else None,
                f"{name}_share_above_0": float((ok > 0).mean()) if ok.size else None}
    seeds = (len(parts["a"]), len(parts["b"]))
    return out | {"n_boot": int(n_boot), "level": float(level), "seed": seed, "users": int(n_users),
                  "rows": int(len(parts["a"][0])), "seeds": seeds,
                  "method": "paired user-level bootstrap, percentile interval" + (
                      " (users and seeds)" if max(seeds) > 1 else "")}
