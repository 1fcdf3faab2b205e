"""CTRL(DIN) baseline (docs/protocol.md §6.2): a DIN click model aligned with the frozen LLM, then fine-tuned
on labels.

DIN (Zhou et al. 2018): [user, target, attention-pooled history] embeddings feed a ReLU MLP head (200-80-1;
ReLU rather than DIN's Dice, for simplicity). DIN's local activation unit weighs each history item by an MLP
over [h, t, h - t, h * t]; padding is masked and, as in DIN, there is no softmax.
CTRL (Li et al. 2023), phase 1: a symmetric InfoNCE loss (in-batch negatives) aligns DIN's representation
(the vector before the head, through a projection head) with the frozen LLM's encoding of the same sample's
text prompt (through its own head); the encodings are cached as .npy because the LLM is slow on CPU.
Phase 2: DIN alone is fine-tuned on the labels (BCE), early stopping on valid AUC; it alone scores.
Histories: the last `max_history` ids of `his`. The book datasets' `his` holds liked and disliked books: each
history item's embedding gets a learned label embedding added (his_label 0 / 1; MovieLens histories are all 1).
Keeping only the liked books instead gave BookCrossing test AUC 0.54 against 0.70 with labels embedded.
"""
from __future__ import annotations

import copy
import hashlib
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from . import io, metrics, settings
from .collab import torch_threads
from .configs import CTRLConfig
from .data import Splits
from .prompts import default_template, get_template, identity_key

TextEncoder = Callable[[list[str]], np.ndarray]


def _mlp(sizes: list[int]) -> nn.Sequential:
    """Linear layers with a ReLU between each two (none after the last)."""
    layers = [m for a, b in zip(sizes, sizes[1:]) for m in (nn.Linear(a, b), nn.ReLU())]
    return nn.Sequential(*layers[:-1])


class DIN(nn.Module):
    """DIN's click model. Padding is hidden by the mask, not by id 0. No dropout or batch norm, so there is
    no train / eval mode difference."""

    def __init__(self, n_users: int, n_items: int, embed_dim: int, attention_hidden: tuple[int, ...],
                 mlp_hidden: tuple[int, ...]) -> None:
        super().__init__()
        self.user_embedding = nn.Embedding(n_users, embed_dim)
        self.item_embedding = nn.Embedding(n_items, embed_dim)
        self.label_embedding = nn.Embedding(2, embed_dim)  # liked / disliked history item
        for emb in (self.user_embedding, self.item_embedding, self.label_embedding):
            nn.init.normal_(emb.weight, std=0.05)
        self.attention = _mlp([4 * embed_dim, *attention_hidden, 1])
        self.rep_dim = 3 * embed_dim
        self.head = _mlp([self.rep_dim, *mlp_hidden, 1])

    def represent(self, uid: torch.Tensor, iid: torch.Tensor, his: torch.Tensor, his_label: torch.Tensor,
                  mask: torch.Tensor) -> torch.Tensor:
        """[user, target, attention-pooled history]: the sample's representation (B, 3 d)."""
        t = self.item_embedding(iid)
        h = self.item_embedding(his) + self.label_embedding(his_label)
        tt = t.unsqueeze(1).expand_as(h)
        w = self.attention(torch.cat([h, tt, h - tt, h * tt], dim=-1)).squeeze(-1) * mask
        pooled = (w.unsqueeze(-1) * h).sum(1)
        return torch.cat([self.user_embedding(uid), t, pooled], dim=-1)

    def forward(self, uid, iid, his, his_label, mask) -> torch.Tensor:
        return self.head(self.represent(uid, iid, his, his_label, mask)).squeeze(-1)


class CTRL(nn.Module):
    """DIN plus the two phase-1 projection heads (text_proj is None when there is no text encoder)."""

    def __init__(self, n_users: int, n_items: int, config: CTRLConfig, text_dim: int | None) -> None:
        super().__init__()
        self.n_users, self.n_items, self.text_dim = n_users, n_items, text_dim
        self.din = DIN(n_users, n_items, config.embed_dim, tuple(config.attention_hidden), tuple(config.mlp_hidden))
        self.din_proj = nn.Linear(self.din.rep_dim, config.proj_dim) if text_dim else None
        self.text_proj = nn.Linear(text_dim, config.proj_dim) if text_dim else None


@dataclass
class CTRLResult:
    model: CTRL  # best phase-2 weights, on CPU
    history: pd.DataFrame  # phase, epoch, loss, valid_auc, valid_uauc (phase 2) / cos_* (phase 1)
    metrics: dict  # {"valid": evaluate(...), "test": evaluate(...)}
    config: CTRLConfig
    alignment: dict  # phase 1 before / after: loss, cos_matched, cos_mismatched (empty without encoder)
    best_epoch: int
    test_scores: pd.DataFrame | None = field(repr=False, default=None)
    dataset: str = ""
    info: dict = field(default_factory=dict)  # template, encoder cache file, rows used


# ---------------------------------------------------------------- data

def history_arrays(frame: pd.DataFrame, max_history: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, labels, mask), each (rows, max_history): the last history items, left-aligned, 0-padded."""
    if "his" not in frame:
        raise ValueError("CTRL needs the history column 'his'; use a processed split from load_dataset")
    ids = np.zeros((len(frame), max_history), dtype=np.int64)
    labels = np.zeros((len(frame), max_history), dtype=np.int64)
    mask = np.zeros((len(frame), max_history), dtype=np.float32)
    his_labels = frame["his_label"] if "his_label" in frame else [None] * len(frame)
    for r, (his, lab) in enumerate(zip(frame["his"], his_labels)):
        last = list(his)[-max_history:]
        ids[r, :len(last)] = last
        labels[r, :len(last)] = 1 if lab is None else list(lab)[-max_history:]  # no his_label: earlier positives
        mask[r, :len(last)] = 1.0
    return ids, labels, mask


def _tensors(frame: pd.DataFrame, config: CTRLConfig) -> dict[str, torch.Tensor]:
    if "uid" not in frame or "iid" not in frame:
        raise ValueError(f"CTRL needs columns uid and iid; the frame has {list(frame.columns)}")
    his, his_label, mask = history_arrays(frame, config.max_history)
    out = {"uid": torch.tensor(frame["uid"].to_numpy(np.int64)), "iid": torch.tensor(frame["iid"].to_numpy(np.int64)),
           "his": torch.as_tensor(his), "his_label": torch.as_tensor(his_label), "mask": torch.as_tensor(mask)}
    return out | ({"label": torch.tensor(frame["label"].to_numpy(np.float32))} if "label" in frame else {})


def _batch(t: dict[str, torch.Tensor], idx, dev: torch.device) -> tuple[torch.Tensor, ...]:
    """(uid, iid, his, his_label, mask) of rows `idx`, on `dev`: DIN's inputs."""
    return tuple(t[k][idx].to(dev) for k in ("uid", "iid", "his", "his_label", "mask"))


@torch.no_grad()
def score_ctrl(model: CTRL, frame: pd.DataFrame, config: CTRLConfig) -> np.ndarray:
    """DIN's logits for every row of `frame`, as float64."""
    t = _tensors(frame, config)
    dev = next(model.parameters()).device
    out = [model.din(*_batch(t, slice(i, i + config.eval_batch_size), dev)).double().cpu()
           for i in range(0, len(frame), config.eval_batch_size)]
    return torch.cat(out).numpy()


# ---------------------------------------------------------------- LLM encodings, cached

def cached_encodings(texts: list[str], encoder: TextEncoder, cache_dir: Path, key: str) -> tuple[np.ndarray, Path]:
    """encoder(texts), stored once as cache_dir/<key>_<texts hash>.npy and read back on later calls."""
    digest = hashlib.sha256("\x00".join(texts).encode()).hexdigest()[:16]
    path = Path(cache_dir) / f"{re.sub(r'[^A-Za-z0-9_.@+-]+', '-', key)}_{len(texts)}_{digest}.npy"
    if path.is_file():
        return np.load(path), path
    vectors = np.asarray(encoder(texts), dtype=np.float32)
    if vectors.ndim != 2 or len(vectors) != len(texts):
        raise ValueError(f"text encoder returned shape {vectors.shape} for {len(texts)} texts; expected (n, dim)")
    with io.atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, vectors)
    return vectors, path


# ---------------------------------------------------------------- phase 1: contrastive alignment

def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE: row i of a matches row i of b; the other rows of the batch are negatives."""
    logits = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T / temperature
    target = torch.arange(len(a), device=a.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


@torch.no_grad()
def alignment(model: CTRL, t: dict[str, torch.Tensor], text: torch.Tensor, config: CTRLConfig) -> dict[str, float]:
    """Mean InfoNCE over fixed batches, and the mean cosine of matched pairs and of mismatched ones (i, i+1)."""
    dev, za, zb, losses = next(model.parameters()).device, [], [], []
    for i in range(0, len(text), config.align_batch_size):
        sl = slice(i, i + config.align_batch_size)
        a = model.din_proj(model.din.represent(*_batch(t, sl, dev)))
        b = model.text_proj(text[sl].to(dev))
        if len(a) > 1:
            losses.append(info_nce(a, b, config.temperature).item())
        za.append(F.normalize(a, dim=-1).cpu())
        zb.append(F.normalize(b, dim=-1).cpu())
    a, b = torch.cat(za), torch.cat(zb)
    return {"loss": float(np.mean(losses)), "cos_matched": float((a * b).sum(-1).mean()),
            "cos_mismatched": float((a * b.roll(1, 0)).sum(-1).mean())}


def _align(model: CTRL, t: dict[str, torch.Tensor], text: torch.Tensor, config: CTRLConfig, gen: torch.Generator,
           progress: bool) -> tuple[list[dict], dict]:
    """Phase 1 on the aligned rows: trains embeddings, attention and both projection heads (not DIN's head)."""
    dev = next(model.parameters()).device
    params = [p for m in (model.din.user_embedding, model.din.item_embedding, model.din.label_embedding,
                          model.din.attention, model.din_proj, model.text_proj) for p in m.parameters()]
    opt = torch.optim.Adam(params, lr=config.align_lr, weight_decay=config.weight_decay)
    before = after = alignment(model, t, text, config)
    rows: list[dict] = []
    for epoch in tqdm(range(1, config.align_epochs + 1), desc="CTRL phase 1", disable=settings.quiet(progress)):
        perm, total = torch.randperm(len(text), generator=gen), 0.0
        for start in range(0, len(perm), config.align_batch_size):
            idx = perm[start:start + config.align_batch_size]
            if len(idx) < 2:  # InfoNCE needs a negative
                continue
            loss = info_nce(model.din_proj(model.din.represent(*_batch(t, idx, dev))),
                            model.text_proj(text[idx].to(dev)), config.temperature)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        after = alignment(model, t, text, config)
        rows.append({"phase": 1, "epoch": epoch, "loss": total / len(text),
                     "cos_matched": after["cos_matched"], "cos_mismatched": after["cos_mismatched"]})
    return rows, {"before": before, "after": after}


# ---------------------------------------------------------------- phase 2 and the whole run

def _finetune(model: CTRL, splits: Splits, config: CTRLConfig, gen: torch.Generator,
              progress: bool) -> tuple[list[dict], int]:
    dev = next(model.parameters()).device
    t = _tensors(splits.train, config)
    opt = torch.optim.Adam(model.din.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    rows, best_auc, best_epoch, best_state = [], -np.inf, 0, None
    bar = tqdm(range(1, config.max_epochs + 1), desc="CTRL phase 2", disable=settings.quiet(progress))
    for epoch in bar:
        perm, total = torch.randperm(len(t["label"]), generator=gen), 0.0
        for start in range(0, len(perm), config.batch_size):
            idx = perm[start:start + config.batch_size]
            loss = F.binary_cross_entropy_with_logits(model.din(*_batch(t, idx, dev)), t["label"][idx].to(dev))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        auc = metrics.auc(splits.valid["label"], s := score_ctrl(model, splits.valid, config))
        rows.append({"phase": 2, "epoch": epoch, "loss": total / len(perm), "valid_auc": auc,
                     "valid_uauc": metrics.uauc(splits.valid["uid"].to_numpy(), splits.valid["label"], s).value})
        if auc > best_auc:
            best_auc, best_epoch, best_state = auc, epoch, copy.deepcopy(model.din.state_dict())
        bar.set_postfix(loss=f"{rows[-1]['loss']:.4f}", auc=f"{auc:.4f}", best=best_epoch)
        if epoch - best_epoch >= config.patience:
            break
    model.din.load_state_dict(best_state)
    return rows, best_epoch


def train_ctrl(splits: Splits, config: CTRLConfig, text_encoder: TextEncoder | None,
               out_dir: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
               progress: bool = True) -> CTRLResult:
    """Phase 1 (skipped when text_encoder is None: plain DIN), then phase 2; saved to out_dir when given.
    LLM encodings are cached under cache_dir (None: settings.work_dir() / "cache" / "ctrl_text")."""
    for name in ("train", "valid", "test"):
        if len(splits.split(name)) == 0:
            raise ValueError(f"{splits.name}: the {name} split is empty (0 rows); load_dataset never returns one, "
                             "so it was emptied after loading: check the filter or sample that made these splits")
    dev = settings.device(config.device)
    cache = Path(cache_dir) if cache_dir else settings.work_dir() / "cache" / "ctrl_text"
    with torch_threads(config.cpu_threads if dev.type == "cpu" else None):
        result = _train(splits, config, text_encoder, dev, cache, progress)
    if out_dir is not None:
        save_ctrl(result, out_dir)
    return result


def _train(splits: Splits, config: CTRLConfig, text_encoder: TextEncoder | None, dev: torch.device,
           cache_dir: Path, progress: bool) -> CTRLResult:
    settings.set_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    info: dict[str, Any] = {"train_rows": len(splits.train), "aligned_rows": 0}
    history, align, text = [], {}, None
    if text_encoder is not None:
        template = get_template(config.template or default_template(splits.name, with_ids=False))
        n = len(splits.train) if config.align_rows is None else min(config.align_rows, len(splits.train))
        rows = splits.train.sample(n=n, random_state=config.align_seed).sort_index()
        texts = [template.render(row, config.max_history) for _, row in rows.iterrows()]
        key = f"{splits.name}_{template.key}_{config.encoder}"
        vectors, path = cached_encodings(texts, text_encoder, cache_dir, key)
        text = torch.as_tensor(vectors)
        info |= {"template": template.key, "encoder": config.encoder, "encoding_cache": str(path),
                 "aligned_rows": len(rows), "text_dim": int(text.shape[1])}
    model = CTRL(splits.n_users, splits.n_items, config, None if text is None else int(text.shape[1])).to(dev)
    if text is not None:
        history, align = _align(model, _tensors(rows, config), text, config, gen, progress)
    phase2, best_epoch = _finetune(model, splits, config, gen, progress)
    history += phase2
    model = model.cpu().eval()
    valid = splits.valid.assign(score=score_ctrl(model, splits.valid, config))
    test = splits.test.assign(score=score_ctrl(model, splits.test, config))
    return CTRLResult(
        model=model, history=pd.DataFrame(history), config=config, alignment=align, best_epoch=best_epoch,
        # warm_gt3 counts the rows this model learned from, as MF's counts its own (Splits.collab_rows): DIN trains on
        # train, the rows with a history and a prompt; collab_train (BookCrossing) has neither, so it is not used here.
        metrics={"valid": metrics.evaluate(valid, train_frame=splits.train),
                 "test": metrics.evaluate(test, train_frame=splits.train)},
        test_scores=test[[c for c in ("uid", "iid", "label", "score", "not_cold") if c in test]],
        dataset=splits.name, info=info)


# ---------------------------------------------------------------- disk

CTRL_FILES = ("ctrl.pt", "history.csv", "test_scores.csv", "results.json")


def save_ctrl(result: CTRLResult, out_dir: str | os.PathLike, ident: str | None = None) -> Path:
    """ctrl.pt, history.csv, test_scores.csv, results.json (every setting), then run.json with their sha256
    (`ident`: the run's identity; default: the config's fingerprint)."""
    from . import runs

    out = Path(out_dir)
    with io.atomic_path(out / "ctrl.pt") as tmp:
        torch.save({k: v.detach().cpu() for k, v in result.model.state_dict().items()}, tmp)
    io.write_frame(out / "history.csv", result.history)
    if result.test_scores is not None:
        io.write_frame(out / "test_scores.csv", result.test_scores)
    m = result.model
    io.write_json(out / "results.json", {
        "model": "CTRL(DIN)" if result.alignment else "DIN", "dataset": result.dataset, "config": result.config,
        "n_users": m.n_users, "n_items": m.n_items, "text_dim": m.text_dim, "best_epoch": result.best_epoch,
        "alignment": result.alignment, "metrics": result.metrics, "info": result.info,
        "head_activation": "ReLU", "run": io.run_info(result.config.seed)})
    runs.finish(out, ident or runs.identity("ctrl", result.config),
                [f for f in CTRL_FILES if f != "test_scores.csv" or result.test_scores is not None])
    return out


def load_ctrl(out_dir: str | os.PathLike, device: str | torch.device | None = None) -> tuple[CTRL, CTRLConfig]:
    """Rebuild a model saved by save_ctrl (eval mode, on `device`, default CPU) and its config."""
    from . import runs

    out = Path(out_dir)
    runs.require_finished(out, "CTRL run", "train it with ctrl.run_ctrl(splits, config, encoder), which also "
                                           "replaces a damaged one")
    record = io.read_json(out / "results.json")
    raw = record["config"]
    config = CTRLConfig(**raw | {k: tuple(raw[k]) for k in ("attention_hidden", "mlp_hidden")})
    model = CTRL(record["n_users"], record["n_items"], config, record["text_dim"])
    model.load_state_dict(torch.load(runs.output(out, "ctrl.pt", "CTRL(DIN)"), map_location="cpu", weights_only=True))
    return model.to(device or "cpu").eval(), config


def _identity(splits: Splits, config: CTRLConfig, text_encoder: TextEncoder | None
              ) -> tuple[CTRLConfig, str, dict[str, Any]]:
    """(config with its encoder named, identity, upstream) of a CTRL(DIN) run."""
    from . import runs

    # an LLM text encoder names its model: runs and cached encodings of another LLM are never taken for this one's
    config = replace(config, encoder=getattr(text_encoder, "model", config.encoder))
    upstream = {"data": runs.data_fingerprint(splits), "encoder": config.encoder if text_encoder else None}
    template = identity_key(config.template or default_template(splits.name, with_ids=False))
    if text_encoder and template:  # a changed prompt is other encodings
        upstream["template"] = template
    return config, runs.identity("ctrl", config, upstream), upstream


def finished_run(splits: Splits, config: CTRLConfig, text_encoder: TextEncoder | None) -> dict[str, Any] | None:
    """results.json (with "run_dir") of the finished run that run_ctrl would return, without training; None when
    there is none."""
    from . import runs

    _, ident, _ = _identity(splits, config, text_encoder)
    out = runs.run_dir("ctrl", splits.name, ident)
    return io.read_json(out / "results.json") | {"run_dir": str(out)} if runs.finished(out, ident) else None


def run_ctrl(splits: Splits, config: CTRLConfig, text_encoder: TextEncoder | None,
             out_dir: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
             progress: bool = True) -> dict[str, Any]:
    """results.json of a finished run of `config` on `splits` (with or without the text encoder), training first
    unless its folder (default: runs.run_dir("ctrl", dataset, identity)) holds one intact; adds "run_dir". An
    encoder from llm.text_encoder sets config.encoder to its LLM's name."""
    from . import runs

    config, ident, upstream = _identity(splits, config, text_encoder)
    out = Path(out_dir) if out_dir else runs.run_dir("ctrl", splits.name, ident)
    with runs.claim(out, ident) as todo:
        if todo:
            with runs.running(out, "ctrl", ident, config, upstream, owned=CTRL_FILES):
                save_ctrl(train_ctrl(splits, config, text_encoder, cache_dir=cache_dir, progress=progress), out,
                          ident)
    return io.read_json(out / "results.json") | {"run_dir": str(out)}


def summary(record: dict[str, Any]) -> dict[str, Any]:
    """One flat row of a results.json (as run_ctrl returns it) for tables: settings and test metrics."""
    test, cfg = record["metrics"]["test"], record["config"]
    row = {"dataset": record["dataset"], "model": record["model"], "aligned_rows": record["info"]["aligned_rows"],
           "embed_dim": cfg["embed_dim"], "seed": cfg["seed"], "best_epoch": record["best_epoch"],
           "valid_auc": record["metrics"]["valid"]["all"]["auc"], "test_auc": test["all"]["auc"],
           "test_uauc": test["all"]["uauc"], "uauc_users": test["all"]["uauc_users"]}
    return row | {f"{part}_auc": test[part]["auc"] for part in ("warm", "cold") if part in test}
