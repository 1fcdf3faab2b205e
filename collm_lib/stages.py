"""The two training stages end to end: load, tokenise once, train, score valid and test, save.

A stage's "valid" (its sample, scores_valid.csv, results.json's "valid" and fit.best_valid_auc) is a seeded user
sample of the dataset's valid_small split, never of valid: CoLLM selects checkpoints on valid_small.

These are what notebooks 03 / 04, the sweep runner and the GPU script call. A stage run's folder and identity
come from `runs` (config + data + LLM + its stage-1 run and MF); a finished folder holds identity.json,
config.json, best.pt (LoRA / mapping / MF only), results.json, per-row scores and run.json (written last).
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import distributed, encoders, metrics, runs, settings
from .configs import MFConfig
from .data import Splits
from .fece import HybridEncoder
from .io import read_json, score_rows, write_frame, write_json
from .llm import LLMBundle, LLMConfig, add_lora, load_llm, precision_of
from .prompts import EncodedSplit, default_template, encode_frame, identity_key
from .model import CoLLM, load_adapter_state, set_trainable
from .scoring import scores_frame
from .train import StageConfig, evaluate_and_save, fit

log = logging.getLogger(__name__)


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


def sample_frames(splits: Splits, config: StageConfig) -> dict[str, pd.DataFrame]:
    """The seeded train / valid / test samples of a stage, checked before any model loads: "valid" is sampled from
    valid_small (eval_rows users), test from test (test_rows users), train from train (train_rows rows)."""
    frames = {"train": sample_rows(splits.train, config.train_rows, config.seed),
              "valid": sample_users(splits.valid_small, config.eval_rows, config.seed),
              "test": sample_users(splits.test, config.test_rows, config.seed)}
    for name, frame in frames.items():
        if len(frame) == 0:
            raise ValueError(f"{splits.name}: the {name} sample is empty; the dataset's split has "
                             f"{len(splits.split('valid_small' if name == 'valid' else name))} rows")
    for name in ("valid", "test"):
        if frames[name]["label"].nunique() < 2:
            raise ValueError(f"{splits.name}: the {name} sample ({len(frames[name])} rows) holds only label "
                             f"{frames[name]['label'].iloc[0]}; AUC needs both classes. Raise "
                             f"{'eval_rows' if name == 'valid' else 'test_rows'} (more users), or check the "
                             f"dataset's {'valid_small' if name == 'valid' else 'test'} split")
    return frames


def build_model(config: StageConfig, bundle: LLMBundle | None = None, mf_dir: Path | None = None,
                device: torch.device | None = None) -> tuple[CoLLM, LLMBundle]:
    """LLM + LoRA, plus the hybrid encoder over a trained MF when `mf_dir` is given."""
    bundle = bundle or add_lora(load_llm(config.llm, device=device), config.llm)
    hybrid = None
    if mf_dir is not None:
        hybrid = HybridEncoder(encoders.load(mf_dir), bundle.model.config.hidden_size)
    model = CoLLM(bundle, hybrid)
    return model.to(device or settings.device(config.llm.device)), bundle


_ENCODED: dict[tuple, EncodedSplit] = {}  # tokenised samples, shared by the runs of a sweep within one process
_ENCODED_MAX = 12  # ~45 MB per full ML-1M train split


def encode_sample(data: str, config: StageConfig, name: str, frame: pd.DataFrame, template: str,
                  tokenizer) -> EncodedSplit:
    """encode_frame(frame, ...) of a stage's `name` sample of the data with fingerprint `data`, tokenised once per
    process: the runs of a sweep share data, sample and template, and a full ML-1M train split costs ~7 s."""
    rows = {"train": config.train_rows, "valid": config.eval_rows, "test": config.test_rows}[name]
    key = (data, name, rows, config.seed, template, config.max_history,
           tokenizer.name_or_path, len(tokenizer))
    if key not in _ENCODED:
        while len(_ENCODED) >= _ENCODED_MAX:
            _ENCODED.pop(next(iter(_ENCODED)))
        _ENCODED[key] = encode_frame(frame, template, tokenizer, config.max_history)
    return _ENCODED[key]


STAGE_FILES = ("best.pt", "last.pt", "results.json", "scores_*.csv")  # config.json is rewritten anyway
CURVE_FILE = "scores_valid_curve.csv"  # every evaluation's per-row valid scores: the curve's intervals recompute


def valid_curve(valid: EncodedSplit, curve: dict[int, np.ndarray]) -> pd.DataFrame:
    """The per-row valid scores of every evaluation (train.FitResult.valid_curve), one block of rows per step."""
    return pd.concat([scores_frame(valid, scores).assign(step=step) for step, scores in sorted(curve.items())],
                     ignore_index=True)


def curve_intervals(out_dir: str | Path, seed: int) -> pd.DataFrame:
    """Each evaluation of a finished stage run with its valid AUC and 95 % user-level interval (from CURVE_FILE), and
    the paired difference to the kept step: what says whether the kept step was told apart from the others. Empty
    for a run that predates CURVE_FILE (its scores per evaluation were not kept); the difference is blank where the
    kept step's scores are not in the file (a run resumed past it from a checkpoint that predates the file)."""
    columns = ["step", "valid_auc", "lo", "hi", "rows", "users", "minus kept", "minus kept lo", "minus kept hi"]
    if not (Path(out_dir) / CURVE_FILE).exists():
        log.warning("%s has no %s (a run from before it was kept): no intervals on its curve", out_dir, CURVE_FILE)
        return pd.DataFrame(columns=columns)
    curve = pd.read_csv(Path(out_dir) / CURVE_FILE)
    kept = read_json(Path(out_dir) / "results.json")["fit"]["best_step"]
    best = curve[curve["step"] == kept]
    out = []
    for step, part in curve.groupby("step"):
        boot = metrics.bootstrap(part, seed=seed, **metrics.BOOTSTRAP)
        diff = (metrics.paired_difference(part, best, seed=seed, **metrics.BOOTSTRAP) if step != kept and len(best)
                else None)
        out.append({"step": step, "valid_auc": boot["auc"], "lo": boot["auc_lo"], "hi": boot["auc_hi"],
                    "rows": boot["rows"], "users": boot["users"], "minus kept": diff and diff["auc"],
                    "minus kept lo": diff and diff["auc_lo"], "minus kept hi": diff and diff["auc_hi"]})
    return pd.DataFrame(out, columns=columns)


def resolve(config: StageConfig) -> StageConfig:
    """`config` with its LLM's precision "auto" replaced by what it means here (llm.precision_of): what a run records
    and hashes, so "auto" on a CPU without bf16 units and an explicit "fp32" are one run."""
    return replace(config, llm=replace(config.llm, precision=precision_of(config.llm)))


def stage_identity(splits: Splits, config: StageConfig, stage1_dir: str | Path | None = None,
                   mf_dir: str | Path | None = None) -> tuple[str, dict[str, str]]:
    """(identity, upstream fingerprints) of a stage run: its config (precision resolved), the data, the LLM, the
    precision again (so the records of sweeps over unresolved configs change with it too) and, for stage 2, the
    finished stage-1 run and the collaborative model (MF, LightGCN or SASRec: encoders.py) it stands on."""
    config = resolve(config)
    upstream = {"data": runs.data_fingerprint(splits), "llm": runs.model_fingerprint(config.llm.model),
                "precision": config.llm.precision}
    template = identity_key(config.template or default_template(splits.name, with_ids=config.stage == 2))
    if template:  # a changed prompt is another run
        upstream["template"] = template
    if config.stage == 2:
        if stage1_dir is None or mf_dir is None:
            raise ValueError("stage 2 needs stage1_dir (the trained LoRA) and mf_dir (the trained collaborative model)")
        upstream["stage1"] = runs.upstream_fingerprint(stage1_dir, "stage-1 run",
                                                       "run stage 1 first (notebook 03, stages.run_stage)")
        encoder = runs.upstream_fingerprint(mf_dir, "collaborative model", "train it first (notebooks 02 / 07, "
                                            "encoders.ensure)")
        # keyed by the model's kind: "mf" as before other encoders existed, so MF's stage-2 runs keep their identity
        upstream[encoders.kind_at(mf_dir)] = encoder
    return runs.identity(f"stage{config.stage}", config, upstream), upstream


def stage_dir(splits: Splits, config: StageConfig, stage1_dir: str | Path | None = None,
              mf_dir: str | Path | None = None) -> Path:
    """The default folder of a stage run: runs/<dataset>/stage<k>-<identity>, whether it ran or not."""
    ident, _ = stage_identity(splits, config, stage1_dir, mf_dir)
    return runs.run_dir(f"stage{config.stage}", splits.name, ident)


def run_stage(splits: Splits, config: StageConfig, out_dir: str | Path | None = None,
              stage1_dir: str | Path | None = None, mf_dir: str | Path | None = None, progress: bool = True) -> dict:
    """Train one stage and score valid_small and test on its best checkpoint; returns results.json's content
    with "run_dir", the folder (default: stage_dir(...)).

    Stage 2 needs `stage1_dir` (its LoRA is loaded and frozen) and `mf_dir` (the trained MF). A finished run of
    the same identity (config and inputs) is not retrained; a folder of another identity is cleared first, and an
    interrupted run of this identity resumes from its last.pt.
    """
    config = resolve(config)
    ident, upstream = stage_identity(splits, config, stage1_dir, mf_dir)
    out_dir = Path(out_dir) if out_dir else runs.run_dir(f"stage{config.stage}", splits.name, ident)
    if runs.finished(out_dir, ident) is not None:
        log.info("stage %d: %s finished before, read back (not retrained)", config.stage, out_dir)
        return read_json(out_dir / "results.json") | {"run_dir": str(out_dir)}
    frames = sample_frames(splits, config)  # bad samples fail here, before the LLM loads
    device = distributed.process_device(config.llm.device)
    rank0 = distributed.is_main()
    settings.set_seed(config.seed)
    # the model loads before the run folder is claimed: a model that fails to load leaves no folder behind
    model, bundle = build_model(config, mf_dir=Path(mf_dir) if mf_dir else None, device=device)
    # rank 0 claims the folder (a second identical run waits for it) and keeps its run.log; other ranks only read it
    with runs.claim(out_dir, ident) as todo, runs.running(out_dir, f"stage{config.stage}", ident, config, upstream,
                                                          owned=STAGE_FILES) if rank0 and todo \
            else contextlib.nullcontext():
        if not todo:
            log.info("stage %d: %s finished by another process meanwhile, read back", config.stage, out_dir)
            return read_json(out_dir / "results.json") | {"run_dir": str(out_dir)}
        distributed.barrier()  # no rank reads last.pt before rank 0 has cleared a foreign one
        if config.stage == 2:
            lora = runs.output(stage1_dir, "best.pt", "stage-1 LoRA")
            stage1 = torch.load(lora, map_location="cpu", weights_only=True)
            load_adapter_state(model, {k: v for k, v in stage1.items() if "lora_" in k})
        trainable = set_trainable(model, config.stage, config.unfreeze_mf)
        template = config.template or default_template(splits.name, with_ids=config.stage == 2)
        encs = {name: encode_sample(upstream["data"], config, name, f, template, bundle.tokenizer)
                for name, f in frames.items()}
        if rank0:
            write_json(out_dir / "config.json", {"config": config, "stage1_dir": stage1_dir, "mf_dir": mf_dir,
                                                 "llm": bundle.info, "identity": ident, "upstream": upstream})
        pad_id = bundle.tokenizer.pad_token_id
        result = fit(model, encs["train"], encs["valid"], config, pad_id, out_dir, progress, identity=ident)
        extra = {"llm": bundle.info, "template": encs["train"].template, "dataset": splits.name,
                 "stage1_dir": str(stage1_dir) if stage1_dir else None, "mf_dir": str(mf_dir) if mf_dir else None,
                 "identity": ident, "upstream": upstream,
                 "trainable_parameters": sum(p.numel() for n, p in model.named_parameters() if n in set(trainable)),
                 "sample_sizes": {k: len(v) for k, v in encs.items()},
                 "fit": {"best_step": result.best_step, "best_valid_auc": result.best_valid_auc, "steps": result.steps,
                         "stopped_early": result.stopped_early, "train_seconds": round(result.train_seconds, 1),
                         "history": result.history.to_dict(orient="list")}}
        results = evaluate_and_save(model, {"valid": encs["valid"], "test": encs["test"]}, pad_id, config, out_dir,
                                    extra, progress, known={"valid": result.best_valid_scores})
        if rank0:
            write_frame(out_dir / CURVE_FILE, valid_curve(encs["valid"], result.valid_curve))
            runs.finish(out_dir, ident, ["config.json", "best.pt", "results.json", "scores_valid.csv",
                                         "scores_test.csv", CURVE_FILE])
    return runs.plain(results) | {"run_dir": str(out_dir)}  # as a later read of results.json returns it


def load_trained(out_dir: str | Path, device: torch.device | None = None,
                 precision: str | None = None) -> tuple[CoLLM, LLMBundle, StageConfig]:
    """Rebuild a trained model from its finished folder (config.json + best.pt, checked) for scoring, in the precision
    it ran in, or in `precision` ("fp32", "bf16": the same weights, the frozen ones cast)."""
    out_dir = Path(out_dir)
    runs.require_finished(out_dir, "stage run", "run it (notebooks 03 / 04, stages.run_stage); a damaged run "
                                                "is retrained there")
    saved = read_json(out_dir / "config.json")
    raw = dict(saved["config"])
    # in the precision it ran in: resolved in its config.json, or (runs from before precision was recorded) its dtype
    ran = raw["llm"].get("precision", "bf16" if "bfloat16" in saved.get("llm", {}).get("dtype", "") else "fp32")
    raw["llm"] = LLMConfig(**{**raw["llm"], "lora_targets": tuple(raw["llm"]["lora_targets"]),
                              "precision": precision or ran})
    config = StageConfig(**raw)
    mf_dir = saved.get("mf_dir") if config.stage == 2 else None
    model, bundle = build_model(config, mf_dir=Path(mf_dir) if mf_dir else None, device=device)
    weights = runs.output(out_dir, "best.pt", "stage run")
    load_adapter_state(model, torch.load(weights, map_location="cpu", weights_only=True))
    model.eval()
    return model, bundle, config


@dataclass
class StageRun:
    """One stage run as the sweep runner sees it: the stage's settings and, for stage 2, the settings of the
    MF under it (so "mf.dim" can be swept like "stage.lr")."""

    stage: StageConfig
    mf: MFConfig | None = None


@dataclass
class TwoStages:
    """Stage 1, then stage 2 over it and the MF, as the sweep runner sees it: a setting of stage 1 ("stage1.lr") is
    judged by the model after both stages (Figure 3(a))."""

    stage1: StageConfig
    stage2: StageConfig
    mf: MFConfig


def sweep_scores(frame: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """The per-row scores of every setting of a stage sweep (sweep.run_sweep's frame, with "run_dir"), keyed by
    the setting's name (e.g. "stage.lr=3e-4": text, so a CSV reader keeps it exact)."""
    files = {name: Path(folder) / f"scores_{split}.csv" for name, folder in zip(frame["setting"], frame["run_dir"])}
    return score_rows(files, keys=("setting",))


def stage_summary(result: dict) -> dict:
    """The numbers a sweep or a table needs from a results.json: test / valid (valid_small sample) metrics, rows,
    best step."""
    test = result["test"]
    row = {"test_auc": test["all"]["auc"], "test_uauc": test["all"]["uauc"], "test_rows": test["rows"],
           "uauc_users": test["all"]["uauc_users"], "valid_auc": result["valid"]["all"]["auc"],
           "best_step": result["fit"]["best_step"], "train_seconds": result["fit"]["train_seconds"],
           "run_dir": runs.relative(result["run_dir"])}
    return row | {f"{part}_auc": test[part]["auc"] for part in ("warm", "cold") if part in test}
