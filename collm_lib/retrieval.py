"""Faiss retrieval: top-K candidates over collaborative item vectors (cold-id matching: `matching`).

Scores are "higher is better" everywhere: inner product for metric "ip", minus the squared distance for
metric "l2". Rows that cannot be filled (catalogue smaller than K, or too few ids left after exclusion)
are padded with id -1 and score -inf, so every search returns exactly K columns.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from collm_lib import faiss_gpu, io, settings
from collm_lib.configs import METRICS, IndexConfig

GPU_K_LIMIT = 2048  # faiss GPU k-selection handles at most this many results (and nprobe) per query
# "auto" searches exactly below this many items and with IVF from it. Measured ends (benchmarks/results/): on ML-1M's
# 3,255 MF vectors flat answers 34k queries/s at recall 1 and HNSW (efSearch 128) 19k at 0.97; on 100,000
# synthetic vectors HNSW (efSearch 64) is 5x flat at recall 0.997. The crossover lies between: 20,000 is their
# midpoint on a log scale.
EXACT_BELOW = 20_000


def _faiss():
    """Import faiss lazily so the rest of the library works without it."""
    try:
        import faiss
    except ImportError as err:
        raise ImportError(
            "collm_lib.retrieval needs faiss. From this repository: `pip install -e \".[faiss]\"` (CPU) or "
            "`pip install -e \".[gpu]\"` (faiss-gpu, the official CUDA 12 build); with conda: "
            "`conda install -c conda-forge faiss-cpu` or `faiss-gpu` (environment.yml). Install only one of them: "
            "both provide `import faiss`."
        ) from err
    return faiss


def _as_matrix(x: np.ndarray, name: str, dim: int | None = None, finite: bool = True) -> np.ndarray:
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (rows x dim), got shape {x.shape}")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"{name} has dimension {x.shape[1]} but the index holds dimension {dim}")
    # faiss skips NaN vectors and pads NaN queries, torch ranks NaN first: refuse them
    with np.errstate(over="ignore", invalid="ignore"):  # the sum is 10x cheaper than isfinite().all()
        bad = np.flatnonzero(~np.isfinite(x).all(1)) if finite and not np.isfinite(x.sum()) else []
    if len(bad):
        raise ValueError(f"{name} has {len(bad)} row{'s' * (len(bad) > 1)} with NaN or inf (first: row {bad[0]}); "
                         "fix or drop those rows (and their ids) first")
    return x


def _check_unique(ids: np.ndarray, name: str) -> None:
    """Duplicate ids would fill several top-k slots with one item and push other items out."""
    s = np.sort(ids)
    dup = np.unique(s[1:][s[1:] == s[:-1]])
    if len(dup):
        raise ValueError(f"{name} holds {len(dup)} duplicated id{'s' * (len(dup) > 1)}, e.g. id {dup[0]} at rows "
                         f"{np.flatnonzero(ids == dup[0]).tolist()}; give each vector a distinct id")


def _extra_for(exclude: list[np.ndarray] | None, n_rows: int) -> int:
    if exclude is None:
        return 0
    if len(exclude) != n_rows:
        raise ValueError(f"exclude has {len(exclude)} entries for {n_rows} queries; give one id array per query")
    return max((len(e) for e in exclude), default=0)


def _filter_topk(scores: np.ndarray, ids: np.ndarray, k: int, exclude: list[np.ndarray] | None) -> tuple[np.ndarray, np.ndarray]:
    """Drop excluded and missing (-1) ids, keep the first k per row, pad with -1 / -inf."""
    out_s = np.full((ids.shape[0], k), -np.inf, dtype=np.float32)
    out_i = np.full((ids.shape[0], k), -1, dtype=np.int64)
    for row in range(ids.shape[0]):
        keep = ids[row] >= 0
        if exclude is not None and len(exclude[row]):
            keep &= ~np.isin(ids[row], np.asarray(exclude[row], dtype=np.int64))
        kept = np.flatnonzero(keep)[:k]
        out_s[row, : len(kept)] = scores[row, kept]
        out_i[row, : len(kept)] = ids[row, kept]
    return out_s, out_i


class VectorIndex:
    """A Faiss index over a catalogue of vectors with external ids, exclusion lists and GPU placement."""

    def __init__(self, config: IndexConfig | None = None) -> None:
        self.config = config or IndexConfig()
        self.index = None  # the CPU index: always kept, it is what save() writes and the >2048-k fallback
        self.gpu_index = None
        self.ids: np.ndarray = np.empty(0, dtype=np.int64)
        self.dim = 0
        self.nlist_effective: int | None = None
        self.notes: list[str] = []  # fallbacks taken (GPU k limit, HNSW on CPU), recorded in describe()
        self.last_backend: str | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def _note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def build(self, vectors: np.ndarray, ids: np.ndarray | None = None) -> "VectorIndex":
        faiss = _faiss()
        cfg = self.config
        x = _as_matrix(vectors, "vectors")
        n, self.dim = x.shape
        if n == 0:
            raise ValueError("cannot build an index over an empty catalogue (0 vectors)")
        self.ids = np.arange(n, dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64).ravel()
        if len(self.ids) != n:
            raise ValueError(f"ids has {len(self.ids)} entries for {n} vectors")
        if (self.ids < 0).any():
            raise ValueError("ids must be non-negative: -1 marks padding in search results")
        _check_unique(self.ids, "ids")
        if cfg.kind == "auto":
            cfg = self.config = dataclasses.replace(cfg, kind="flat" if n < EXACT_BELOW else "ivf")
            self._note(f"auto: {cfg.kind} for {n:,} items (exact search below {EXACT_BELOW:,})")
        metric = faiss.METRIC_INNER_PRODUCT if cfg.metric == "ip" else faiss.METRIC_L2
        if cfg.kind == "flat":
            index = faiss.index_factory(self.dim, "Flat", metric)
        elif cfg.kind == "ivf":
            self.nlist_effective = max(1, min(cfg.nlist, n // 39))  # faiss wants >= 39 training points per list
            index = faiss.index_factory(self.dim, f"IVF{self.nlist_effective},Flat", metric)
            index.cp.seed = cfg.seed
            index.cp.max_points_per_centroid = cfg.train_points_per_list
            index.train(x)
        else:
            index = faiss.index_factory(self.dim, f"HNSW{cfg.hnsw_m},Flat", metric)
            index.hnsw.efConstruction = cfg.ef_construction
        index.add(x)
        self.index = index
        self._apply_search_params()
        self._place()
        return self

    def _apply_search_params(self) -> None:
        if self.config.kind == "ivf":
            self.index.nprobe = self.config.nprobe
        elif self.config.kind == "hnsw":
            self.index.hnsw.efSearch = self.config.ef_search

    def _place(self) -> None:
        """Clone to all GPUs when allowed; HNSW has no faiss GPU implementation and stays on CPU."""
        faiss = _faiss()
        n_gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
        self.gpu_index = None
        if self.config.use_gpu is False:
            return
        if n_gpus == 0:
            if self.config.use_gpu is True:
                raise RuntimeError("IndexConfig.use_gpu=True but faiss sees no GPU: install the GPU build "
                                   "(`pip install -e \".[gpu]\"` instead of `.[faiss]`) or use 'auto'")
            return
        if self.config.kind == "hnsw":
            self._note("HNSW has no faiss GPU implementation: searched on CPU")
            return
        if self.config.kind == "ivf" and self.config.nprobe > GPU_K_LIMIT:
            self._note(f"nprobe > {GPU_K_LIMIT} is beyond the GPU limit: searched on CPU")
            return
        probe = faiss_gpu.gpu_probe()  # a build without kernels for this card aborts the process: asked aside first
        if not probe.ok:
            if self.config.use_gpu is True:
                raise RuntimeError(f"IndexConfig.use_gpu=True, but {probe.message(fallback=False)}")
            self._note(probe.message())
            return
        self.gpu_index = faiss.index_cpu_to_all_gpus(self.index)

    def set_search_params(self, nprobe: int | None = None, ef_search: int | None = None) -> None:
        """Change the recall / speed knob after build (re-clones to GPU when one is used)."""
        changes = {k: v for k, v in dict(nprobe=nprobe, ef_search=ef_search).items() if v is not None}
        self.config = dataclasses.replace(self.config, **changes)
        self._apply_search_params()
        if self.config.use_gpu is not False:
            self._place()

    def search(self, queries: np.ndarray, k: int, exclude: list[np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, ids), each (n_queries, k); excluded ids are dropped and the row refilled."""
        if self.index is None:
            raise RuntimeError("search() before build() or load()")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        q = _as_matrix(queries, "queries", self.dim)
        k_search = min(k + _extra_for(exclude, len(q)), len(self.ids))
        if len(q) == 0:
            return np.empty((0, k), dtype=np.float32), np.empty((0, k), dtype=np.int64)
        index, self.last_backend = self.index, "cpu"
        if self.gpu_index is not None:
            if k_search <= GPU_K_LIMIT:
                index, self.last_backend = self.gpu_index, "gpu"
            else:
                self._note(f"k={k_search} > {GPU_K_LIMIT} (faiss GPU limit): searched with the CPU index")
        scores, pos = index.search(q, k_search)
        if self.config.metric == "l2":
            scores = -scores  # faiss returns squared distances; flip so higher is better
        ids = np.where(pos >= 0, self.ids[np.clip(pos, 0, None)], -1)
        return _filter_topk(scores, ids, k, exclude)

    def describe(self) -> dict[str, Any]:
        """Index type and parameters, for embedding in every result."""
        faiss = _faiss()
        cfg = self.config
        out: dict[str, Any] = {
            "kind": cfg.kind, "metric": cfg.metric,
            "faiss_class": type(self.index).__name__ if self.index is not None else None,
            "faiss_version": faiss.__version__,
            "n_items": len(self.ids), "dim": self.dim,
            "backend": "gpu" if self.gpu_index is not None else "cpu", "last_search_backend": self.last_backend,
            "notes": list(self.notes), "config": dataclasses.asdict(cfg),
        }
        if cfg.kind == "ivf":
            out.update(nlist=self.nlist_effective, nprobe=cfg.nprobe)
        elif cfg.kind == "hnsw":
            out.update(hnsw_m=cfg.hnsw_m, ef_construction=cfg.ef_construction, ef_search=cfg.ef_search)
        return out

    def save(self, path: str | os.PathLike) -> Path:
        """Write the CPU index to `path` and config + ids to `path`.json, both atomically."""
        if self.index is None:
            raise RuntimeError("save() before build()")
        path = Path(path)
        with io.atomic_path(path) as tmp:
            _faiss().write_index(self.index, str(tmp))
        sidecar = {"config": dataclasses.asdict(self.config), "ids": self.ids.tolist(), "dim": self.dim,
                   "nlist_effective": self.nlist_effective}
        io.write_json(path.with_name(path.name + ".json"), sidecar)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, use_gpu: Literal["auto"] | bool | None = None) -> "VectorIndex":
        """Read an index written by save(); `use_gpu` overrides the saved placement."""
        path = Path(path)
        sidecar_path = path.with_name(path.name + ".json")
        if not path.exists() or not sidecar_path.exists():
            raise FileNotFoundError(f"no saved index at {path} (needs both {path.name} and {sidecar_path.name})")
        meta = json.loads(sidecar_path.read_text())
        config = IndexConfig(**meta["config"])
        if use_gpu is not None:
            config = dataclasses.replace(config, use_gpu=use_gpu)
        self = cls(config)
        self.index = _faiss().read_index(str(path))
        self.ids, self.dim = np.asarray(meta["ids"], dtype=np.int64), meta["dim"]
        _check_unique(self.ids, f"ids in {sidecar_path.name}")
        self.nlist_effective = meta["nlist_effective"]
        self._apply_search_params()
        self._place()
        return self


def exact_topk_torch(queries: np.ndarray, vectors: np.ndarray, k: int, exclude: list[np.ndarray] | None = None,
                     device: str | torch.device | None = None, metric: str = "ip",
                     chunk_elems: int = 1 << 25) -> tuple[np.ndarray, np.ndarray]:
    """Reference exact top-k with torch; ids are row positions in `vectors`.

    Works through (query chunk x item chunk) score blocks of at most `chunk_elems` floats, keeping a
    running top-k, so 1M x 256 items never need a full score matrix.
    """
    if metric not in METRICS:
        raise ValueError(f"metric={metric!r}; choose one of {METRICS}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    dev = settings.device(str(device) if device is not None else None)
    v_np = _as_matrix(vectors, "vectors")
    q_np = _as_matrix(queries, "queries", v_np.shape[1])
    n = len(v_np)
    k_search = min(k + _extra_for(exclude, len(q_np)), n)
    if len(q_np) == 0 or n == 0:
        return _filter_topk(np.empty((len(q_np), 0), np.float32), np.empty((len(q_np), 0), np.int64), k, exclude)
    v = torch.from_numpy(v_np).to(dev)
    q_rows = max(1, min(len(q_np), 1024))
    v_rows = max(k_search, chunk_elems // q_rows)
    all_s, all_i = [], []
    for q0 in range(0, len(q_np), q_rows):
        q = torch.from_numpy(q_np[q0:q0 + q_rows]).to(dev)
        best_s = torch.empty((len(q), 0), device=dev)
        best_i = torch.empty((len(q), 0), dtype=torch.long, device=dev)
        for v0 in range(0, n, v_rows):
            block = v[v0:v0 + v_rows]
            s = q @ block.T
            if metric == "l2":
                s = 2 * s - (q * q).sum(1, keepdim=True) - (block * block).sum(1)[None, :]
            top = torch.topk(s, min(k_search, s.shape[1]), dim=1)
            cat_s = torch.cat([best_s, top.values], 1)
            cat_i = torch.cat([best_i, top.indices + v0], 1)
            keep = torch.topk(cat_s, min(k_search, cat_s.shape[1]), dim=1)
            best_s, best_i = keep.values, torch.gather(cat_i, 1, keep.indices)
        all_s.append(best_s.float().cpu().numpy())
        all_i.append(best_i.cpu().numpy())
    return _filter_topk(np.concatenate(all_s), np.concatenate(all_i), k, exclude)


def recall_vs_exact(approx_ids: np.ndarray, exact_ids: np.ndarray) -> float:
    """Mean over queries of |approx ∩ exact| / k, where k is the width of exact_ids (-1 padding ignored)."""
    approx_ids, exact_ids = np.asarray(approx_ids), np.asarray(exact_ids)
    if approx_ids.shape[0] != exact_ids.shape[0]:
        raise ValueError(f"recall_vs_exact: {approx_ids.shape[0]} approximate rows vs {exact_ids.shape[0]} exact rows")
    if exact_ids.size == 0:
        raise ValueError("recall_vs_exact: no rows to compare")
    k = exact_ids.shape[1]
    hits = [len(np.intersect1d(a[a >= 0], e[e >= 0])) for a, e in zip(approx_ids, exact_ids)]
    return float(np.mean(hits) / k)


def normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (all-zero rows stay zero): inner product becomes cosine similarity."""
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
