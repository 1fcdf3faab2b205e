"""The two training stages end to end: load, tokenise once, train, score valid and test, save.

These are what notebooks 03 / 04, the sweep runner and the GPU script call. A finished stage
folder holds config.json, best.pt (LoRA / mapping / MF only), results.json and per-row scores.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from . import settings
from .collab import MFConfig, checkpoint_dir, load_mf
from .data import Splits
from .fece import HybridEncoder
from .io import _jsonable, read_json, write_json
from .llm import LLMBundle, LLMConfig, add_lora, load_llm
from .prompts import EncodedSplit, default_template, encode_frame
from .train import CoLLM, StageConfig, evaluate_and_save, fit, init_distributed, load_adapter_state, set_trainable


def sample_rows(frame: pd.DataFrame, n: int | None, seed: int) -> pd.DataFrame:
    """A seeded row sample (training data)."""
    if n is None or n >= len(frame):
        return frame
    return frame.sample(n=n, random_state=seed).sort_index()


def sample_users(frame: pd.DataFrame, n: int | None, seed: int) -> pd.DataFrame:
    """Whole users, in seeded order, until at least `n` rows: keeps UAUC meaningful on a subsample."""
    if n is None or n >= len(frame):
        return frame
    users = frame["uid"].unique()
    np.random.default_rng(seed).shuffle(users)
    counts = frame.groupby("uid").size().reindex(users).to_numpy()
    keep = users[: int(np.searchsorted(np.cumsum(counts), n)) + 1]
    return frame[frame["uid"].isin(keep)]


def encode_splits(splits: Splits, config: StageConfig, tokenizer) -> dict[str, EncodedSplit]:
    """Tokenise the (sub)sampled train / valid_small / test frames once for this stage's template."""
    template = config.template or default_template(splits.name, with_ids=config.stage == 2)
    frames = {"train": sample_rows(splits.train, config.train_rows, config.seed),
              "valid": sample_users(splits.valid_small, config.eval_rows, config.seed),
              "test": sample_users(splits.test, config.test_rows, config.seed)}
    for name, frame in frames.items():
        if len(frame) == 0:
            raise ValueError(f"{splits.name}: the {name} split is empty")
    return {name: encode_frame(f, template, tokenizer, config.max_history) for name, f in frames.items()}


def build_model(config: StageConfig, bundle: LLMBundle | None = None, mf_dir: Path | None = None,
                device: torch.device | None = None) -> tuple[CoLLM, LLMBundle]:
    """LLM + LoRA, plus the hybrid encoder over a trained MF when `mf_dir` is given."""
    bundle = bundle or add_lora(load_llm(config.llm), config.llm)
    hybrid = None
    if mf_dir is not None:
        hybrid = HybridEncoder(load_mf(mf_dir), bundle.model.config.hidden_size)
    model = CoLLM(bundle, hybrid)
    return model.to(device or settings.device(config.llm.device)), bundle


def run_stage(splits: Splits, config: StageConfig, out_dir: str | Path, stage1_dir: str | Path | None = None,
              mf_dir: str | Path | None = None, progress: bool = True) -> dict:
    """Train one stage and score valid_small and test on its best checkpoint.

    Stage 2 needs `stage1_dir` (its LoRA is loaded and frozen) and `mf_dir` (the trained MF).
    A finished folder with the same config is not retrained: its results are returned.
    """
    out_dir = Path(out_dir)
    done = out_dir / "results.json"
    if done.exists() and read_json(done)["config"] == _plain(asdict(config)):
        return read_json(done)
    if config.stage == 2 and (stage1_dir is None or mf_dir is None):
        raise ValueError("stage 2 needs stage1_dir (the trained LoRA) and mf_dir (the trained MF)")
    device = init_distributed() if settings.distributed()[1] > 1 else settings.device(config.llm.device)
    settings.set_seed(config.seed)
    model, bundle = build_model(config, mf_dir=Path(mf_dir) if mf_dir else None, device=device)
    if config.stage == 2:
        stage1 = torch.load(Path(stage1_dir) / "best.pt", map_location="cpu")
        load_adapter_state(model, {k: v for k, v in stage1.items() if "lora_" in k})
    trainable = set_trainable(model, config.stage, config.unfreeze_mf)
    encs = encode_splits(splits, config, bundle.tokenizer)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "config.json", {"config": config, "stage1_dir": stage1_dir, "mf_dir": mf_dir,
                                         "llm": bundle.info})
    pad_id = bundle.tokenizer.pad_token_id
    result = fit(model, encs["train"], encs["valid"], config, pad_id, out_dir, progress)
    extra = {"llm": bundle.info, "template": encs["train"].template, "dataset": splits.name,
             "stage1_dir": str(stage1_dir) if stage1_dir else None, "mf_dir": str(mf_dir) if mf_dir else None,
             "trainable_parameters": sum(p.numel() for n, p in model.named_parameters() if n in set(trainable)),
             "sample_sizes": {k: len(v) for k, v in encs.items()},
             "fit": {"best_step": result.best_step, "best_valid_auc": result.best_valid_auc, "steps": result.steps,
                     "stopped_early": result.stopped_early, "train_seconds": round(result.train_seconds, 1),
                     "history": result.history.to_dict(orient="list")}}
    results = evaluate_and_save(model, {"valid": encs["valid"], "test": encs["test"]}, pad_id, config, out_dir,
                                extra, progress, known={"valid": result.best_valid_scores})
    return _plain(results)  # as a later read of results.json returns it


def load_trained(out_dir: str | Path, device: torch.device | None = None) -> tuple[CoLLM, LLMBundle, StageConfig]:
    """Rebuild a trained model from its folder (config.json + best.pt) for scoring."""
    out_dir = Path(out_dir)
    saved = read_json(out_dir / "config.json")
    raw = dict(saved["config"])
    raw["llm"] = LLMConfig(**{**raw["llm"], "lora_targets": tuple(raw["llm"]["lora_targets"])})
    config = StageConfig(**raw)
    mf_dir = saved.get("mf_dir") if config.stage == 2 else None
    model, bundle = build_model(config, mf_dir=Path(mf_dir) if mf_dir else None, device=device)
    load_adapter_state(model, torch.load(out_dir / "best.pt", map_location="cpu"))
    model.eval()
    return model, bundle, config


def _plain(obj):
    """The JSON round trip of a config (tuples become lists), to compare with a saved one."""
    return json.loads(json.dumps(obj, default=_jsonable))


def mf_on_same_rows(stage_dir: str | Path, mf_dir: str | Path, split: str = "test") -> dict:
    """Score the very rows an LLM stage was evaluated on with the MF model, for a like-for-like comparison."""
    from . import metrics
    from .collab import score_mf

    rows = pd.read_csv(Path(stage_dir) / f"scores_{split}.csv")
    rows["score"] = score_mf(load_mf(mf_dir), rows)
    return {split: metrics.evaluate(rows) | {"rows": len(rows)}}


def test_rows_of(splits: Splits, result: dict) -> pd.DataFrame:
    """The test rows (with histories) a finished stage was scored on: its seeded user sample, re-drawn."""
    config = result["config"]
    rows = sample_users(splits.test, config["test_rows"], config["seed"])
    if len(rows) != result["sample_sizes"]["test"]:
        raise ValueError(f"{splits.name}: re-drawn test sample has {len(rows)} rows, the stage scored "
                         f"{result['sample_sizes']['test']}; was it run on other data?")
    return rows


def baselines_on_same_rows(splits: Splits, result: dict, mf_dir: str | Path,
                           ctrl_dir: str | Path | None = None) -> dict[str, dict]:
    """MF (and CTRL(DIN)) scored on exactly the test rows of an LLM stage's result, as {"test": evaluate(...)}."""
    from . import ctrl, metrics
    from .collab import score_mf

    rows = test_rows_of(splits, result)
    scored = {"MF": score_mf(load_mf(mf_dir), rows)}
    if ctrl_dir is not None:
        model, config = ctrl.load_ctrl(ctrl_dir)
        scored["CTRL (DIN)"] = ctrl.score_ctrl(model, rows, config)
    return {name: {"test": metrics.evaluate(rows.assign(score=s)) | {"rows": len(rows)}} for name, s in scored.items()}


def ensure_mf(splits: Splits, config, out_dir: str | Path, progress: bool = True) -> Path:
    """The MF checkpoint in `out_dir` for `config` and this dataset; trained first when it is missing or was
    made with other settings (a smoke-profile checkpoint must never stand in for a cpu-profile one)."""
    from .collab import save_mf, train_mf

    out_dir = Path(out_dir)
    saved = out_dir / "config.json"
    if not saved.exists() or (read_json(saved).get("config"), read_json(saved).get("dataset")) != (
            _plain(asdict(config)), splits.name):
        save_mf(train_mf(splits, config, progress=progress), out_dir)
    return out_dir


@dataclass
class StageRun:
    """One stage run as the sweep runner sees it: the stage's settings and, for stage 2, the settings of the
    MF under it (so "mf.dim" can be swept like "stage.lr")."""

    stage: StageConfig
    mf: MFConfig | None = None


def stage_summary(result: dict) -> dict:
    """The numbers a sweep or a table needs from a results.json: test / valid metrics, rows, best step."""
    test = result["test"]
    row = {"test_auc": test["all"]["auc"], "test_uauc": test["all"]["uauc"], "test_rows": test["rows"],
           "uauc_users": test["all"]["uauc_users"], "valid_auc": result["valid"]["all"]["auc"],
           "best_step": result["fit"]["best_step"], "train_seconds": result["fit"]["train_seconds"]}
    return row | {f"{part}_auc": test[part]["auc"] for part in ("warm", "cold") if part in test}


def sweep_fn(splits: Splits, stage1_dir: str | Path | None = None, mf_root: str | Path | None = None,
             progress: bool = True) -> Callable[[StageRun, Path], dict]:
    """run_fn for sweep.run_sweep over StageRun configs: stage 2 sits on `stage1_dir`'s LoRA and on the MF of
    its `mf` settings, kept in mf_root/<dataset>_d<dim> (trained there first when missing or different)."""
    def run(config: StageRun, out_dir: Path) -> dict:
        mf_dir = None
        if config.stage.stage == 2:
            if config.mf is None:
                raise ValueError("a stage-2 StageRun needs its MF settings (StageRun.mf)")
            root = Path(mf_root) if mf_root else checkpoint_dir(splits.name, config.mf.dim).parent
            mf_dir = ensure_mf(splits, config.mf, root / f"{splits.name}_d{config.mf.dim}", progress)
        return stage_summary(run_stage(splits, config.stage, out_dir, stage1_dir, mf_dir, progress))
    return run
