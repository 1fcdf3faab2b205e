"""Training, saving, loading and scoring any collaborative encoder: MF (collab.py), LightGCN (lightgcn.py),
SASRec (sasrec.py) or one registered in encoder_registry.py, each a run kind of its own (docs/protocol.md §4).

The config's class names the model (encoder_registry.py: each encoder's config, builder and label). Every model
trains the same way (configs.TrainSettings): on splits.collab_rows, BCE-with-logits on the explicit labels, early
stopping on valid AUC checked every epoch, best weights kept. A finished run is a folder: <kind>.pt (state dict),
config.json (config, sizes, best epoch, metrics, run info), history.csv and test_scores.csv (uid, iid, label,
not_cold, score) so that anyone can recompute the test metrics without torch; run.json last.
"""
from __future__ import annotations

import copy
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from . import encoder_registry, io, metrics, runs, settings
from .collab import torch_threads
from .configs import TrainSettings
from .data import Splits
from .prompts import history_matrix

log = logging.getLogger(__name__)

HISTORY_BATCH = 4096  # rows per scoring batch of a model that reads histories (attention over max_len items)


def _kind_entry(config: TrainSettings) -> tuple[str, encoder_registry.EncoderInfo]:
    """(run kind, registry entry) of a config; TypeError for a class no registered encoder uses."""
    kinds = encoder_registry.kinds()
    for kind, entry in kinds.items():
        if type(config) is encoder_registry.resolve(entry.config):
            return kind, entry
    raise TypeError(f"{type(config).__name__} is not an encoder config; use the config of one of "
                    f"{', '.join(kinds)} (collm_lib/encoder_registry.py)")


def kind_of(config: TrainSettings) -> str:
    """The run kind of a config ("mf", "lightgcn", "sasrec", or a registered one's): it names the run
    ("mf-d256-<identity>") and its weights file."""
    return _kind_entry(config)[0]


def weights_file(kind: str) -> str:
    return f"{kind}.pt"


def build(config: TrainSettings, n_users: int, n_items: int, rows: pd.DataFrame | None = None,
          state: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """A fresh model of `config`'s kind (its registry entry's builder); its data (LightGCN's graph, SASRec's last
    histories) from the training `rows`, or from a saved `state`."""
    return encoder_registry.resolve(_kind_entry(config)[1].builder)(config, n_users, n_items, rows=rows, state=state)


@dataclass
class EncoderResult:
    model: nn.Module | None  # best-epoch weights, on CPU (None: a replayed run, weights elsewhere)
    history: pd.DataFrame  # epoch, loss, valid_auc, valid_uauc
    best_epoch: int
    metrics: dict  # {"valid": evaluate(...), "test": evaluate(...)}
    config: TrainSettings
    test_scores: pd.DataFrame | None = field(repr=False, default=None)  # uid, iid, label, not_cold, score
    dataset: str = ""


def _check_frame(frame: pd.DataFrame, name: str, n_users: int, n_items: int,
                 columns: tuple[str, ...] = ("uid", "iid", "label")) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{name}: missing column(s) {missing}; a collaborative model needs {', '.join(columns)}")
    if len(frame) == 0:
        raise ValueError(f"{name}: empty split (0 rows); load_dataset never returns one, so it was emptied "
                         "after loading: check the filter or sample that made these splits")
    if (frame["uid"].max() >= n_users or frame["iid"].max() >= n_items
            or min(frame["uid"].min(), frame["iid"].min()) < 0):
        raise ValueError(f"{name}: ids out of range for n_users={n_users}, n_items={n_items}")


def _tensors(model: nn.Module, frame: pd.DataFrame, device: torch.device | str) -> list[torch.Tensor]:
    """uids, iids (and the histories, for a model that reads them) of `frame`'s rows."""
    out = [torch.tensor(frame["uid"].to_numpy(np.int64), device=device),
           torch.tensor(frame["iid"].to_numpy(np.int64), device=device)]
    if model.max_len:
        if "his" not in frame:
            raise ValueError(f"{type(model).__name__} reads each row's history: the frame has no 'his' column")
        out.append(torch.as_tensor(history_matrix(frame["his"], model.max_len), device=device))
    return out


@torch.no_grad()
def score(model: nn.Module, frame: pd.DataFrame, batch_size: int = 65536) -> np.ndarray:
    """The model's logits for every (uid, iid) row of `frame` (with its history, for SASRec), as float64."""
    _check_frame(frame, "scored frame", model.n_users, model.n_items, columns=("uid", "iid"))
    dev = next(model.parameters()).device
    batch = min(batch_size, HISTORY_BATCH) if model.max_len else batch_size
    was_training = model.training
    model.eval()
    columns = _tensors(model, frame, "cpu")
    out = [model(*(c[i:i + batch].to(dev) for c in columns)).double().cpu() for i in range(0, len(frame), batch)]
    model.train(was_training)
    return torch.cat(out).numpy()


def require_fit(splits: Splits, config: TrainSettings) -> None:
    """ValueError when `config`'s model cannot train on `splits`' collaborative rows, naming the dataset and what
    to use instead: a model that reads each row's history (SASRec) cannot train on rows without one, such as
    BookCrossing's collab_train (every rating)."""
    entry = _kind_entry(config)[1]
    if entry.reads_history and "his" not in splits.collab_rows:
        others = [name for name, e in encoder_registry.ENCODERS.items() if not e.reads_history]
        raise ValueError(f"{splits.name}: {entry.label} trains on each row's history of liked items, and this "
                         "dataset's collaborative rows (every rating, collab_train) hold none; use --encoder "
                         f"{', '.join(others)} for it")


def train(splits: Splits, config: TrainSettings, out_dir: str | os.PathLike | None = None,
          progress: bool = True) -> EncoderResult:
    """Train `config`'s model on splits.collab_rows; early stopping on valid AUC; best weights kept.

    With `out_dir`, the result is saved there (save); ensure also reuses a finished run."""
    require_fit(splits, config)
    cpu = settings.device(config.device).type == "cpu"
    with torch_threads(config.cpu_threads if cpu else None):
        result = _train(splits, config, progress)
    if out_dir is not None:
        save(result, out_dir)
    return result


def _train(splits: Splits, config: TrainSettings, progress: bool) -> EncoderResult:
    train_rows, label = splits.collab_rows, _kind_entry(config)[1].label
    for name, frame in (("train", train_rows), ("valid", splits.valid), ("test", splits.test)):
        _check_frame(frame, f"{splits.name}.{name}", splits.n_users, splits.n_items)
    settings.set_seed(config.seed)
    dev = settings.device(config.device)
    model = build(config, splits.n_users, splits.n_items, rows=train_rows).to(dev)
    # fused: one kernel per step instead of a dozen; ~2x faster epochs on CPU, same update rule
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay, fused=True)
    loss_fn = nn.BCEWithLogitsLoss()
    columns = _tensors(model, train_rows, dev)
    labels = torch.tensor(train_rows["label"].to_numpy(), dtype=torch.float32, device=dev)
    gen = torch.Generator(device="cpu").manual_seed(config.seed)

    rows, best_auc, best_epoch, best_state, started = [], -np.inf, 0, None, time.perf_counter()
    # mininterval: a notebook without widgets stores every redraw, so redraw at most every few seconds
    bar = tqdm(range(1, config.max_epochs + 1), desc=f"{label} {splits.name}", disable=settings.quiet(progress),
               mininterval=5)
    for epoch in bar:
        model.train()
        perm = torch.randperm(len(labels), generator=gen).to(dev)
        total = 0.0
        for start in range(0, len(perm), config.batch_size):
            idx = perm[start:start + config.batch_size]
            loss = loss_fn(model(*(c[idx] for c in columns)), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        metrics.require_finite_loss(total, config.lr, f"{label} {splits.name} epoch {epoch}")
        valid = score(model, splits.valid, config.eval_batch_size)
        valid_auc = metrics.auc(splits.valid["label"], valid)
        rows.append({"epoch": epoch, "loss": total / len(labels), "valid_auc": valid_auc,
                     "valid_uauc": metrics.uauc(splits.valid["uid"].to_numpy(), splits.valid["label"], valid).value})
        if valid_auc > best_auc:
            best_auc, best_epoch = valid_auc, epoch
            best_state = copy.deepcopy(model.state_dict())
        bar.set_postfix(loss=f"{rows[-1]['loss']:.4f}", auc=f"{valid_auc:.4f}", best=best_epoch, refresh=False)
        log.info("%s %s epoch %d: train loss %.4f, valid AUC %.4f%s", label, splits.name, epoch, rows[-1]["loss"],
                 valid_auc, " (best)" if best_epoch == epoch else "")
        if epoch - best_epoch >= config.patience:
            break

    log.info("%s %s trained %d epochs in %.1f s; best valid AUC %.4f at epoch %d", label, splits.name, len(rows),
             time.perf_counter() - started, best_auc, best_epoch)
    model.load_state_dict(best_state)
    model = model.cpu().eval()
    valid = splits.valid.assign(score=score(model, splits.valid))
    test = splits.test.assign(score=score(model, splits.test))
    return EncoderResult(
        model=model, history=pd.DataFrame(rows), best_epoch=best_epoch, config=config, dataset=splits.name,
        metrics={"valid": metrics.evaluate(valid, train_frame=train_rows),
                 "test": metrics.evaluate(test, train_frame=train_rows)},
        test_scores=test[[c for c in ("uid", "iid", "label", "not_cold", "score") if c in test]],
    )


def identity(splits: Splits, config: TrainSettings) -> str:
    """A collaborative run's identity: its kind, its config and the data it was trained on."""
    return runs.identity(kind_of(config), config, {"data": runs.data_fingerprint(splits)})


def default_dir(splits: Splits, config: TrainSettings, work_dir: str | os.PathLike | None = None) -> Path:
    """The folder ensure() uses for `config` on `splits`, whether or not it ran: runs/<dataset>/<kind>-d<dim>-<id>."""
    return runs.run_dir(kind_of(config), splits.name, identity(splits, config), f"d{config.dim}", work_dir)


def ensure(splits: Splits, config: TrainSettings, out_dir: str | os.PathLike | None = None,
           progress: bool = True, work_dir: str | os.PathLike | None = None) -> Path:
    """The folder of a finished run of `config` on `splits`, trained first unless one is there intact.

    Default folder: runs.run_dir(kind, dataset, identity, "d<dim>"); a folder of other settings or data, or
    with damaged weights, is never reused (it is cleared and retrained, saying why)."""
    require_fit(splits, config)  # before a run folder is made
    kind, ident = kind_of(config), identity(splits, config)
    out = Path(out_dir) if out_dir else default_dir(splits, config, work_dir)
    owned = (weights_file(kind), "config.json", "history.csv", "test_scores.csv")
    with runs.claim(out, ident) as todo:
        if todo:
            with runs.running(out, kind, ident, config, {"data": runs.data_fingerprint(splits)}, owned=owned):
                save(train(splits, config, progress=progress), out, ident=ident)
        else:
            log.info("%s %s: %s finished before, read back (not retrained)", kind, splits.name, out)
    return out


def save(result: EncoderResult, out_dir: str | os.PathLike, ident: str | None = None) -> Path:
    """Write the weights, config.json, history.csv and test_scores.csv atomically into out_dir, then run.json with
    their sha256 (`ident`: the run's identity; default: the config's fingerprint)."""
    out, model, config = Path(out_dir), result.model, result.config
    kind = kind_of(config)
    with io.atomic_path(out / weights_file(kind)) as tmp:
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp)
    record = {"model": type(model).__name__, "kind": kind, "n_users": model.n_users, "n_items": model.n_items,
              "dim": model.dim, "config": config, "run": io.run_info(config.seed), "dataset": result.dataset,
              "best_epoch": result.best_epoch, "epochs_run": len(result.history), "metrics": result.metrics}
    if kind == "mf":  # as MF records always held them
        record |= {"dim": model.embedding_dim, "bias": model.bias, "init_std": model.init_std}
    outputs = [weights_file(kind), "config.json", "history.csv"]
    io.write_frame(out / "history.csv", result.history)
    if result.test_scores is not None:
        io.write_frame(out / "test_scores.csv", result.test_scores)
        outputs.append("test_scores.csv")
    io.write_json(out / "config.json", record)
    runs.finish(out, ident or runs.identity(kind, config), outputs)  # last: marks a complete checkpoint
    return out


def _record(out: Path) -> tuple[str, TrainSettings, dict]:
    record = io.read_json(out / "config.json")
    kind = record.get("kind", "mf")  # MF runs from before other encoders existed carry no kind
    return kind, encoder_registry.config_class(kind)(**record["config"]), record


def kind_at(out_dir: str | os.PathLike) -> str:
    """The kind of the finished collaborative run in `out_dir` ("mf", "lightgcn", "sasrec")."""
    return _record(Path(out_dir))[0]


def load(out_dir: str | os.PathLike, device: str | torch.device | None = None) -> nn.Module:
    """Reload a finished run's model onto `device` (None: CPU), in eval mode; its files are checked against
    run.json first, so truncated or replaced weights are named instead of failing deep in torch."""
    out = Path(out_dir)
    runs.require_finished(out, "collaborative model", "train it again with encoders.ensure(splits, config) "
                                                      "(notebook 02), which replaces a damaged one")
    kind, config, record = _record(out)
    state = torch.load(runs.output(out, weights_file(kind), kind), map_location="cpu", weights_only=True)
    model = build(config, record["n_users"], record["n_items"], state=state)
    model.load_state_dict(state)
    return model.to(device or "cpu").eval()


def load_result(out_dir: str | os.PathLike) -> EncoderResult:
    """The EncoderResult of a finished run folder (weights, history, metrics, test scores), as train returned it;
    model is None for a run replayed from a bundle (its weights stayed where it was trained)."""
    out = Path(out_dir)
    kind, config, record = _record(out)
    model = None if runs.stayed_behind(out, weights_file(kind)) else load(out)
    scores = out / "test_scores.csv"
    return EncoderResult(model=model, history=pd.read_csv(out / "history.csv"), best_epoch=record["best_epoch"],
                         metrics=record["metrics"], config=config, dataset=record["dataset"],
                         test_scores=pd.read_csv(scores) if scores.is_file() else None)


def check_saved_scores(out_dir: str | os.PathLike, splits: Splits) -> dict[str, Any]:
    """Check a finished run's saved per-row test scores against the data and its reported metrics; raises on any
    difference. The rows must be the split's test rows (uid, iid, label, in order), their AUC the reported one,
    and, where the weights are at hand (not a replayed run), rescoring the rows must give the saved scores
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
    if result.model is not None and (score(result.model, test) != rows["score"].to_numpy()).any():
        raise ValueError(f"{out}: rescoring the test rows with its weights does not give the saved scores")
    return {"rows": len(rows), "auc": reported, "rescored": result.model is not None}


def summary(result: EncoderResult) -> dict[str, Any]:
    """One flat row per run for result tables: model, settings, stopping point and test metrics."""
    test, config = result.metrics["test"], result.config
    row = {"dataset": result.dataset, "encoder": kind_of(config), "dim": config.dim,
           "bias": getattr(config, "bias", False), "init_std": config.init_std, "seed": config.seed,
           "best_epoch": result.best_epoch, "epochs_run": len(result.history),
           "valid_auc": result.metrics["valid"]["all"]["auc"],
           "test_auc": test["all"]["auc"], "test_uauc": test["all"]["uauc"],
           "uauc_users": test["all"]["uauc_users"], "uauc_note": test["all"]["uauc_note"]}
    for part in ("warm", "cold"):
        if part in test:
            row |= {f"{part}_rows": test[part]["rows"], f"{part}_auc": test[part]["auc"]}
    return row
