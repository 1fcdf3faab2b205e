"""The collaborative model f: matrix factorisation (docs/protocol.md §4) and the encoder interface FECE consumes.

MF: user and item embeddings, score = dot product (plus user, item and global biases where `bias`), BCE-with-logits on the explicit 0/1
labels (no negative sampling), Adam with weight decay, early stopping on valid AUC checked every epoch,
best weights kept. Checkpoints are a folder: mf.pt (state dict), config.json (config, sizes, best
epoch, metrics, run info) and test_scores.csv (uid, iid, label, not_cold, score) so that anyone can
recompute the test metrics without torch.
"""
from __future__ import annotations

import contextlib
import copy
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Protocol, runtime_checkable

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from . import io, metrics, params, settings
from .data import Splits

log = logging.getLogger(__name__)


@runtime_checkable
class CollaborativeEncoder(Protocol):
    """Anything that maps user / item ids to `dim`-wide vectors (MF now; LightGCN etc. later)."""

    dim: int

    def user_vectors(self, uids: torch.LongTensor) -> torch.Tensor: ...

    def item_vectors(self, iids: torch.LongTensor) -> torch.Tensor: ...


class MatrixFactorization(nn.Module):
    """score(u, i) = <P_u, Q_i>; embeddings drawn from N(0, init_std); id 0 is padding (never trained on).

    bias=True adds a user, an item and a global bias (zero at start): score = <P_u, Q_i> + b_u + b_i + g. They are
    carried inside the vectors, user [P_u, b_u + g, 1] and item [Q_i, 1, b_i], so `dim` is embedding_dim + 2,
    the dot product stays the score, and FECE and Faiss see the biases like any other coordinate."""

    def __init__(self, n_users: int, n_items: int, dim: int = 256, init_std: float = 0.1, bias: bool = False) -> None:
        super().__init__()
        self.n_users, self.n_items, self.embedding_dim, self.init_std, self.bias = n_users, n_items, dim, init_std, bias
        self.dim = dim + 2 if bias else dim  # the width of user_vectors / item_vectors
        self.user_embedding = nn.Embedding(n_users, dim)
        self.item_embedding = nn.Embedding(n_items, dim)
        nn.init.normal_(self.user_embedding.weight, std=init_std)
        nn.init.normal_(self.item_embedding.weight, std=init_std)
        if bias:
            self.user_bias, self.item_bias = nn.Embedding(n_users, 1), nn.Embedding(n_items, 1)
            nn.init.zeros_(self.user_bias.weight)
            nn.init.zeros_(self.item_bias.weight)
            self.global_bias = nn.Parameter(torch.zeros(1))

    def user_vectors(self, uids: torch.LongTensor) -> torch.Tensor:
        p = self.user_embedding(uids)
        if not self.bias:
            return p
        return torch.cat([p, self.user_bias(uids) + self.global_bias, torch.ones_like(p[..., :1])], dim=-1)

    def item_vectors(self, iids: torch.LongTensor) -> torch.Tensor:
        q = self.item_embedding(iids)
        if not self.bias:
            return q
        return torch.cat([q, torch.ones_like(q[..., :1]), self.item_bias(iids)], dim=-1)

    def forward(self, uids: torch.LongTensor, iids: torch.LongTensor) -> torch.Tensor:
        return (self.user_vectors(uids) * self.item_vectors(iids)).sum(-1)


@dataclass
class MFConfig:  # each profile's values, and each dataset's: collm_lib/profiles.py
    dim: int = 256  # embedding size d (the paper sweeps 64, 128, 256; docs/protocol.md §4)
    bias: bool = False  # user, item and global biases (docs/protocol.md §4; on for BookCrossing: profiles.MF_MODEL)
    lr: float = 1e-3  # Adam learning rate
    weight_decay: float = 1e-4  # Adam's L2 term (applies to every row, also ids unseen in train)
    batch_size: int = 2048
    max_epochs: int = 1000
    patience: int = 100  # stop after this many epochs without a better valid AUC
    init_std: float = 0.1  # std of the N(0, std) embedding init
    seed: int = 2023
    device: str | None = None  # None: settings.device() (GPU when present)
    eval_batch_size: int = 65536
    cpu_threads: int | None = 1  # torch threads while training on CPU; MF's ops are too small to gain
    # from more, and on a shared machine extra threads made each epoch ~10x slower. None: leave as is.

    def __post_init__(self) -> None:
        params.check_config(self)  # a bad value fails here, before any run folder is made


@dataclass
class MFResult:
    model: MatrixFactorization | None  # best-epoch weights, on CPU (None: a replayed run, weights elsewhere)
    history: pd.DataFrame  # epoch, loss, valid_auc, valid_uauc
    best_epoch: int
    metrics: dict  # {"valid": evaluate(...), "test": evaluate(...)}
    config: MFConfig
    test_scores: pd.DataFrame | None = field(repr=False, default=None)  # uid, iid, label, not_cold, score
    dataset: str = ""


def _check_frame(frame: pd.DataFrame, name: str, n_users: int, n_items: int,
                 columns: tuple[str, ...] = ("uid", "iid", "label")) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{name}: missing column(s) {missing}; MF needs {', '.join(columns)}")
    if len(frame) == 0:
        raise ValueError(f"{name}: empty split (0 rows); load_dataset never returns one, so it was emptied "
                         "after loading: check the filter or sample that made these splits")
    if (frame["uid"].max() >= n_users or frame["iid"].max() >= n_items
            or min(frame["uid"].min(), frame["iid"].min()) < 0):
        raise ValueError(f"{name}: ids out of range for n_users={n_users}, n_items={n_items}")


@torch.no_grad()
def score_mf(model: MatrixFactorization, frame: pd.DataFrame, batch_size: int = 65536) -> np.ndarray:
    """Logits <P_u, Q_i> for every (uid, iid) row of `frame`, as float64."""
    _check_frame(frame, "score_mf frame", model.n_users, model.n_items, columns=("uid", "iid"))
    dev = model.user_embedding.weight.device
    uids = torch.tensor(frame["uid"].to_numpy(), dtype=torch.long)
    iids = torch.tensor(frame["iid"].to_numpy(), dtype=torch.long)
    was_training = model.training
    model.eval()
    out = [model(uids[i:i + batch_size].to(dev), iids[i:i + batch_size].to(dev)).double().cpu()
           for i in range(0, len(uids), batch_size)]
    model.train(was_training)
    return torch.cat(out).numpy()


def _valid_metrics(model: MatrixFactorization, valid: pd.DataFrame,
                   batch_size: int) -> tuple[float, float | None]:
    s = score_mf(model, valid, batch_size)
    return metrics.auc(valid["label"], s), metrics.uauc(valid["uid"].to_numpy(), valid["label"], s).value


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with `n` torch CPU threads (None: unchanged): small models are faster on one."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train_mf(splits: Splits, config: MFConfig, out_dir: str | os.PathLike | None = None,
             progress: bool = True) -> MFResult:
    """Train MF on splits.collab_train (else splits.train); early stopping on valid AUC; best weights kept.

    With `out_dir`, the result is saved there (save_mf); ensure_mf also reuses a finished run.
    """
    cpu = settings.device(config.device).type == "cpu"
    with torch_threads(config.cpu_threads if cpu else None):
        result = _train(splits, config, progress)
    if out_dir is not None:
        save_mf(result, out_dir)
    return result


def _train(splits: Splits, config: MFConfig, progress: bool) -> MFResult:
    train = splits.collab_rows
    for name, frame in (("train", train), ("valid", splits.valid), ("test", splits.test)):
        _check_frame(frame, f"{splits.name}.{name}", splits.n_users, splits.n_items)
    settings.set_seed(config.seed)
    dev = settings.device(config.device)
    model = MatrixFactorization(splits.n_users, splits.n_items, config.dim, config.init_std, config.bias).to(dev)
    # fused: one kernel per step instead of a dozen; ~2x faster epochs on CPU, same update rule
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay, fused=True)
    loss_fn = nn.BCEWithLogitsLoss()
    uids = torch.tensor(train["uid"].to_numpy(), dtype=torch.long, device=dev)
    iids = torch.tensor(train["iid"].to_numpy(), dtype=torch.long, device=dev)
    labels = torch.tensor(train["label"].to_numpy(), dtype=torch.float32, device=dev)
    gen = torch.Generator(device="cpu").manual_seed(config.seed)

    rows, best_auc, best_epoch, best_state, started = [], -np.inf, 0, None, time.perf_counter()
    # mininterval: a notebook without widgets stores every redraw, so redraw at most every few seconds
    bar = tqdm(range(1, config.max_epochs + 1), desc=f"MF {splits.name}", disable=settings.quiet(progress), mininterval=5)
    for epoch in bar:
        model.train()
        perm = torch.randperm(len(labels), generator=gen).to(dev)
        total = 0.0
        for start in range(0, len(perm), config.batch_size):
            idx = perm[start:start + config.batch_size]
            loss = loss_fn(model(uids[idx], iids[idx]), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        valid_auc, valid_uauc = _valid_metrics(model, splits.valid, config.eval_batch_size)
        rows.append({"epoch": epoch, "loss": total / len(labels), "valid_auc": valid_auc,
                     "valid_uauc": valid_uauc})
        if valid_auc > best_auc:
            best_auc, best_epoch = valid_auc, epoch
            best_state = copy.deepcopy(model.state_dict())
        bar.set_postfix(loss=f"{rows[-1]['loss']:.4f}", auc=f"{valid_auc:.4f}", best=best_epoch, refresh=False)
        log.info("MF %s epoch %d: train loss %.4f, valid AUC %.4f%s", splits.name, epoch, rows[-1]["loss"], valid_auc,
                 " (best)" if best_epoch == epoch else "")
        if epoch - best_epoch >= config.patience:
            break

    log.info("MF %s trained %d epochs in %.1f s; best valid AUC %.4f at epoch %d", splits.name, len(rows),
             time.perf_counter() - started, best_auc, best_epoch)
    model.load_state_dict(best_state)
    model = model.cpu().eval()
    valid = splits.valid.assign(score=score_mf(model, splits.valid))
    test = splits.test.assign(score=score_mf(model, splits.test))
    return MFResult(
        model=model, history=pd.DataFrame(rows), best_epoch=best_epoch, config=config, dataset=splits.name,
        metrics={"valid": metrics.evaluate(valid, train_frame=train),
                 "test": metrics.evaluate(test, train_frame=train)},
        test_scores=test[[c for c in ("uid", "iid", "label", "not_cold", "score") if c in test]],
    )


MF_FILES = ("mf.pt", "config.json", "history.csv", "test_scores.csv")


def mf_identity(splits: Splits, config: MFConfig) -> str:
    """An MF run's identity: its config and the data it was trained on."""
    from . import runs

    return runs.identity("mf", config, {"data": runs.data_fingerprint(splits)})


def ensure_mf(splits: Splits, config: MFConfig, out_dir: str | os.PathLike | None = None,
              progress: bool = True, work_dir: str | os.PathLike | None = None) -> Path:
    """The folder of a finished MF run of `config` on `splits`, trained first unless one is there intact.

    Default folder: runs.run_dir("mf", dataset, identity, "d<dim>"); a folder of other settings or data, or
    with a damaged mf.pt, is never reused (it is cleared and retrained, saying why).
    """
    from . import runs

    ident = mf_identity(splits, config)
    out = Path(out_dir) if out_dir else runs.run_dir("mf", splits.name, ident, f"d{config.dim}", work_dir)
    with runs.claim(out, ident) as todo:
        if todo:
            with runs.running(out, "mf", ident, config, {"data": runs.data_fingerprint(splits)}, owned=MF_FILES):
                save_mf(train_mf(splits, config, progress=progress), out, ident=ident)
        else:
            log.info("MF %s: %s finished before, read back (not retrained)", splits.name, out)
    return out


def save_mf(result_or_model: MFResult | MatrixFactorization, out_dir: str | os.PathLike,
            config: MFConfig | None = None, ident: str | None = None) -> Path:
    """Write mf.pt + config.json (+ history.csv, test_scores.csv for a result) atomically into out_dir, then
    run.json with their sha256 (`ident`: the run's identity; default: the config's fingerprint)."""
    from . import runs

    out = Path(out_dir)
    is_result = isinstance(result_or_model, MFResult)
    model = result_or_model.model if is_result else result_or_model
    config = result_or_model.config if is_result else config
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    with io.atomic_path(out / "mf.pt") as tmp:
        torch.save(state, tmp)
    record = {"model": "MatrixFactorization", "n_users": model.n_users, "n_items": model.n_items,
              "dim": model.embedding_dim, "bias": model.bias, "init_std": model.init_std, "config": config,
              "run": io.run_info(config.seed if config else None)}
    outputs = ["mf.pt", "config.json"]
    if is_result:
        record |= {"dataset": result_or_model.dataset, "best_epoch": result_or_model.best_epoch,
                   "epochs_run": len(result_or_model.history), "metrics": result_or_model.metrics}
        io.write_frame(out / "history.csv", result_or_model.history)
        outputs.append("history.csv")
        if result_or_model.test_scores is not None:
            io.write_frame(out / "test_scores.csv", result_or_model.test_scores)
            outputs.append("test_scores.csv")
    io.write_json(out / "config.json", record)
    runs.finish(out, ident or runs.identity("mf", config), outputs)  # last: marks a complete checkpoint
    return out


def load_mf(out_dir: str | os.PathLike, device: str | torch.device | None = None) -> MatrixFactorization:
    """Reload a checkpoint written by save_mf onto `device` (None: CPU), in eval mode; its files are checked
    against run.json first, so a truncated or replaced mf.pt is named instead of failing deep in torch."""
    from . import runs

    out = Path(out_dir)
    runs.require_finished(out, "MF checkpoint", "train it again with collab.ensure_mf(splits, config) "
                                                "(notebook 02), which replaces a damaged one")
    record = io.read_json(out / "config.json")
    model = MatrixFactorization(record["n_users"], record["n_items"], record["dim"], record["init_std"],
                                record.get("bias", False))
    model.load_state_dict(torch.load(runs.output(out, "mf.pt", "MF"), map_location="cpu", weights_only=True))
    return model.to(device or "cpu").eval()


def load_result(out_dir: str | os.PathLike) -> MFResult:
    """The MFResult of a finished run folder (weights, history, metrics, test scores), as train_mf returned it;
    model is None for a run replayed from a bundle (its weights stayed where it was trained)."""
    from . import runs

    out = Path(out_dir)
    model = None if runs.stayed_behind(out, "mf.pt") else load_mf(out)
    record = io.read_json(out / "config.json")
    scores = out / "test_scores.csv"
    return MFResult(model=model, history=pd.read_csv(out / "history.csv"), best_epoch=record["best_epoch"],
                    metrics=record["metrics"], config=MFConfig(**record["config"]), dataset=record["dataset"],
                    test_scores=pd.read_csv(scores) if scores.is_file() else None)


def check_saved_scores(out_dir: str | os.PathLike, splits: Splits) -> dict[str, Any]:
    """Check a finished MF run's saved per-row test scores against the data and its reported metrics; raises on
    any difference. The rows must be the split's test rows (uid, iid, label, in order), their AUC the reported
    one, and, where the weights are at hand (not a replayed run), rescoring the rows must give the saved scores
    exactly. Returns what was checked."""
    out = Path(out_dir)
    result = load_result(out)
    rows, test = result.test_scores, splits.test
    if rows is None:
        raise FileNotFoundError(f"{out}/test_scores.csv is missing: this run saved no per-row scores")
    for column in ("uid", "iid", "label"):
        if len(rows) != len(test) or (rows[column].to_numpy() != test[column].to_numpy()).any():
            raise ValueError(f"{out}/test_scores.csv: column {column} differs from {splits.name}'s test split "
                             f"({len(rows)} vs {len(test)} rows): these scores are of other data")
    reported = result.metrics["test"]["all"]["auc"]
    if metrics.auc(rows["label"], rows["score"]) != reported:
        raise ValueError(f"{out}: the saved scores give AUC {metrics.auc(rows['label'], rows['score'])}, "
                         f"config.json reports {reported}")
    if result.model is not None and (score_mf(result.model, test) != rows["score"].to_numpy()).any():
        raise ValueError(f"{out}: rescoring the test rows with mf.pt does not give the saved scores")
    return {"rows": len(rows), "auc": reported, "rescored": result.model is not None}


def summary(result: MFResult) -> dict[str, Any]:
    """One flat row per run for result tables: settings, stopping point and test metrics."""
    test = result.metrics["test"]
    row = {"dataset": result.dataset, "dim": result.config.dim, "bias": result.config.bias, "init_std": result.config.init_std,
           "seed": result.config.seed, "best_epoch": result.best_epoch, "epochs_run": len(result.history),
           "valid_auc": result.metrics["valid"]["all"]["auc"],
           "test_auc": test["all"]["auc"], "test_uauc": test["all"]["uauc"],
           "uauc_users": test["all"]["uauc_users"], "uauc_note": test["all"]["uauc_note"]}
    for part in ("warm", "cold"):
        if part in test:
            row |= {f"{part}_rows": test[part]["rows"], f"{part}_auc": test[part]["auc"]}
    return row
