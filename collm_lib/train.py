"""Two-stage training of CoLLM-FaissRet: the stage configs and the one training loop.

Stage 1 trains LoRA on text-only prompts (alone, this is TALLRec). Stage 2 freezes LoRA and trains
the FECE mapping on ID prompts, the collaborative model frozen unless `unfreeze_mf`. One loop serves
both: AdamW (decay on matrices only), linear warm-up then cosine decay, evaluation on valid_small
every `eval_every` steps (denser early on with `eval_every_early`), best weights kept, early stopping by
patience, gradient accumulation, bf16 autocast where the LLM runs in bf16 (settings.precision), resumable, and
unchanged under torchrun (DistributedDataParallel). The model is in `model`, scoring in `scoring`, the process group set-up in
`distributed`.
"""
from __future__ import annotations

import contextlib
import logging
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from . import metrics, settings
from .configs import StageConfig
from .distributed import broadcast_flag, is_main, rank_world
from .io import atomic_path, run_info, write_frame, write_json
from .model import CoLLM, adapter_state, load_adapter_state
from .prompts import EncodedSplit
from .scoring import autocast, collate, frozen_prefix, score, scores_frame

log = logging.getLogger(__name__)


def evaluates_at(step: int, config: StageConfig) -> bool:
    """Whether the loop evaluates on valid (valid_small's sample) after `step`: every eval_every steps, every
    eval_every_early steps up to early_until, and at the last step."""
    early = config.eval_every_early > 0 and step <= config.early_until and step % config.eval_every_early == 0
    return early or step % config.eval_every == 0 or step == config.max_steps


def _optimizer(model: nn.Module, config: StageConfig):
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [{"params": [p for _, p in params if p.ndim >= 2], "weight_decay": config.weight_decay},
              {"params": [p for _, p in params if p.ndim < 2], "weight_decay": 0.0}]
    opt = torch.optim.AdamW([g for g in groups if g["params"]], lr=config.lr)
    floor = config.min_lr / config.lr

    def lr_at(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        progress = min(1.0, (step - config.warmup_steps) / max(1, config.max_steps - config.warmup_steps))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lr_at)


@dataclass
class FitResult:
    best_step: int
    best_valid_auc: float  # on the stage's valid sample, which stages.sample_frames draws from valid_small
    steps: int
    history: pd.DataFrame
    stopped_early: bool
    train_seconds: float
    best_valid_scores: np.ndarray | None = None  # the kept weights' valid scores: no need to score them again
    valid_curve: dict[int, np.ndarray] = field(default_factory=dict)  # step -> that evaluation's valid scores


def _rng_states() -> dict:
    """Every random-number state a resumed run needs to continue as if never stopped (dropout draws included)."""
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": _np_state(np.random.get_state(legacy=False)), "python": _py_state(random.getstate())}


def _set_rng_states(saved: dict) -> None:
    torch.set_rng_state(saved["torch"])
    if saved["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(saved["cuda"])
    np.random.set_state({**saved["numpy"], "state": {**saved["numpy"]["state"],
                                                     "key": np.asarray(saved["numpy"]["state"]["key"], np.uint32)}})
    version, internal, gauss = saved["python"]
    random.setstate((version, tuple(internal), gauss))


def _np_state(state: dict) -> dict:
    return {**state, "state": {**state["state"], "key": torch.as_tensor(state["state"]["key"].astype(np.int64))}}


def _py_state(state: tuple) -> list:
    return [state[0], list(state[1]), state[2]]


def _load_last(path: Path, identity: str | None) -> dict | None:
    """The training state in last.pt if it is readable and of this run; else None, saying why.

    Loaded as weights only: a checkpoint holds tensors and plain values, so a run folder from someone else
    cannot execute code on load.
    """
    if not path.exists():
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated or foreign file: torch raises several types
        log.warning("%s is unreadable (%s: %s); training starts from step 0", path, type(exc).__name__,
                    str(exc)[:120])
        return None
    if saved.get("identity") != identity:
        log.warning("%s belongs to another run (%s, not %s); training starts from step 0", path,
                    str(saved.get("identity"))[:10], str(identity)[:10])
        return None
    return saved


def fit(model: CoLLM, train: EncodedSplit, valid: EncodedSplit, config: StageConfig, pad_id: int,
        out_dir: Path | None = None, progress: bool = True, identity: str | None = None) -> FitResult:
    """Train the parameters marked trainable; keep the best valid-AUC weights in `model` at the end.

    With `out_dir`, the best adapter state goes to out_dir/best.pt and the full training state (optimizer,
    scheduler, data order and every random-number state) to out_dir/last.pt after every evaluation. A last.pt
    of the same `identity` is resumed from, and the run then ends bit-identical to an uninterrupted one on CPU;
    one of another run, or a damaged one, is ignored with a message.
    """
    device = next(model.parameters()).device
    rank, world = rank_world()
    settings.set_seed(config.seed)
    wrapped = model
    if world > 1:
        wrapped = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    opt, sched = _optimizer(model, config)
    rng = np.random.default_rng(config.seed)
    state = {"step": 0, "best_auc": -1.0, "best_step": 0, "bad": 0, "history": [], "order": None, "pos": 0,
             "best_scores": None, "curve": {}}
    best = adapter_state(model)
    last_path = out_dir / "last.pt" if out_dir else None
    saved = _load_last(last_path, identity) if last_path is not None else None
    if saved is not None:
        load_adapter_state(model, saved["adapter"])
        opt.load_state_dict(saved["optimizer"])
        sched.load_state_dict(saved["scheduler"])
        state, best = saved["state"], saved["best"]
        state.setdefault("curve", {})  # a checkpoint from before the per-evaluation scores were kept
        rng.bit_generator.state = saved["rng"]
        _set_rng_states(saved["rng_states"])
        log.info("stage %d resumes from step %d of %s", config.stage, state["step"], last_path)
    global_batch = config.batch_size * world
    # forward-only prefix: exact only while nothing in the LLM trains (stage 2 freezes LoRA)
    no_grad_prefix = config.prefix_no_grad and not any(p.requires_grad for p in model.llm.parameters())
    running = torch.zeros((), device=device)  # train loss summed on the device, read once per evaluation
    # a resumed run's clock goes on from its last checkpoint: train_seconds is the whole run's (minus redone steps)
    started = time.perf_counter() - (state["history"][-1]["seconds"] if state["history"] else 0.0)
    bar = tqdm(total=config.max_steps, initial=state["step"], desc=f"stage {config.stage}",
               disable=settings.quiet(progress) or rank != 0)
    wrapped.train()
    stop = False
    while state["step"] < config.max_steps and not stop:
        opt.zero_grad(set_to_none=True)
        for micro in range(config.grad_accum):
            if state["order"] is None or state["pos"] + global_batch > len(state["order"]):
                state["order"], state["pos"] = torch.as_tensor(rng.permutation(len(train))), 0
            idx = state["order"][state["pos"]:state["pos"] + global_batch][rank::world].numpy()
            state["pos"] += global_batch
            batch = collate(train, idx, pad_id, device)
            sync = micro == config.grad_accum - 1 or world == 1
            ctx = wrapped.no_sync() if not sync else contextlib.nullcontext()
            with ctx, autocast(model):
                logits = wrapped(**batch, split=frozen_prefix(train, idx) if no_grad_prefix else None)
                loss = nn.functional.binary_cross_entropy_with_logits(
                    logits.float(), torch.as_tensor(train.label[idx], device=device))
                (loss / config.grad_accum).backward()
            running += loss.detach() / config.grad_accum
        opt.step()
        sched.step()
        state["step"] += 1
        bar.update(1)
        if evaluates_at(state["step"], config):
            since = state["step"] - (state["history"][-1]["step"] if state["history"] else 0)
            train_loss = running.item() / since  # the one host sync of the interval
            metrics.require_finite_loss(train_loss, config.lr, f"stage {config.stage} step {state['step']}")
            running.zero_()
            bar.set_postfix(loss=f"{train_loss:.4f}")
            valid_scores = score(model, valid, pad_id, config.score_batch_size, progress=False)
            auc = metrics.auc(valid.label, valid_scores)
            state["curve"][state["step"]] = torch.as_tensor(valid_scores)  # per-row: the curve's intervals
            improved = auc > state["best_auc"]
            if improved:
                state.update(best_auc=auc, best_step=state["step"], bad=0, best_scores=torch.as_tensor(valid_scores))
                best = adapter_state(model)
            else:
                state["bad"] += 1
            state["history"].append({"step": state["step"], "loss": train_loss, "valid_auc": auc,
                                     "lr": sched.get_last_lr()[0], "seconds": time.perf_counter() - started})
            stop = broadcast_flag(state["bad"] >= config.patience, device)
            if rank == 0:
                log.info("stage %d step %d/%d: train loss %.4f, valid AUC %.4f%s (%.0f s)", config.stage,
                         state["step"], config.max_steps, train_loss, auc, " (best)" if improved else "",
                         time.perf_counter() - started)
            if out_dir is not None and rank == 0:
                if improved:
                    with atomic_path(out_dir / "best.pt") as tmp:
                        torch.save(best, tmp)
                with atomic_path(last_path) as tmp:
                    torch.save({"identity": identity, "adapter": adapter_state(model), "optimizer": opt.state_dict(),
                                "scheduler": sched.state_dict(), "state": state, "best": best,
                                "rng": rng.bit_generator.state, "rng_states": _rng_states()}, tmp)
    bar.close()
    load_adapter_state(model, best)
    best_scores = state.get("best_scores")
    if rank == 0:
        log.info("stage %d trained %d steps in %.1f s%s; best valid AUC %.4f at step %d", config.stage, state["step"],
                 time.perf_counter() - started, " (stopped early)" if stop else "", state["best_auc"],
                 state["best_step"])
    return FitResult(state["best_step"], state["best_auc"], state["step"], pd.DataFrame(state["history"]),
                     stop, time.perf_counter() - started, None if best_scores is None else best_scores.numpy(),
                     {step: scores.numpy() for step, scores in state["curve"].items()})


def evaluate_and_save(model: nn.Module, encs: dict[str, EncodedSplit], pad_id: int, config: StageConfig,
                      out_dir: Path, extra: dict | None = None, progress: bool = True,
                      known: dict[str, np.ndarray] | None = None) -> dict:
    """Score each split (or take its `known` scores of these very weights), save per-row scores (CSV) and
    one results.json with every setting."""
    results = {"config": asdict(config), "run": run_info(config.seed), **(extra or {})}
    known = known or {}
    for split, enc in encs.items():
        scores = known.get(split)
        if scores is None or len(scores) != len(enc):
            scores = score(model, enc, pad_id, config.score_batch_size, progress)
        frame = scores_frame(enc, scores)
        if is_main():
            write_frame(out_dir / f"scores_{split}.csv", frame)
        results[split] = metrics.evaluate(frame) | {"rows": len(frame)}
    if is_main():
        write_json(out_dir / "results.json", results)
    return results
