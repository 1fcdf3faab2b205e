"""The method wired once: a collaborative model (encoder), stage 1 (LoRA on text prompts) and stage 2 (FECE on ID
prompts, over stage 1's LoRA and the encoder), each step a function of a frozen RunContext that returns its run,
made unless finished (found by identity: docs/runs.md).

    ctx = RunContext(splits, profile="cpu", seed=2023)
    first = pipeline.stage1(ctx)                                  # notebook 03
    enc = pipeline.encoder(ctx)                                   # notebook 02 (the profile's MF), or any encoder:
    enc = pipeline.encoder(ctx, ctx.encoder_config("sasrec"))     # notebook 07
    second = pipeline.stage2(ctx, first["run_dir"], enc)          # notebook 04

Without a config a step runs the profile's (profiles.py) for the context's dataset, seed and LLM. `collm reproduce`,
`collm stages`, notebook 07's comparison, Table 1's seeds and the sweeps of Figure 3 call these; notebooks 03 and 04
show the same calls to stages.run_stage cell by cell.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from . import encoders, profiles, runs
from .configs import LLMConfig, StageConfig, TrainSettings
from .data import Splits
from .stages import StageRun, TwoStages, run_stage, stage_dir, stage_identity, stage_summary


@dataclass(frozen=True)
class RunContext:
    """What the steps of one pipeline share: the data, the profile (None: $COLLM_PROFILE, else cpu), the seed, the
    LLM and whether progress bars show."""

    splits: Splits
    profile: str | None = None
    seed: int = 2023
    llm: LLMConfig = field(default_factory=LLMConfig)
    progress: bool = True

    def stage_config(self, stage: int, **changes: Any) -> StageConfig:
        """The profile's StageConfig of `stage` for this dataset, seed and LLM, `changes` replacing fields."""
        return profiles.stage(self.profile, stage, **{"dataset": self.splits.name, "seed": self.seed,
                                                      "llm": self.llm} | changes)

    def encoder_config(self, name: str = "mf", **changes: Any) -> TrainSettings:
        """The profile's config of encoder `name` (encoder_registry) for this dataset and seed, `changes` replacing
        fields."""
        return profiles.encoder(self.profile, self.splits.name, name, **{"seed": self.seed} | changes)


def encoder(ctx: RunContext, config: TrainSettings | None = None) -> Path:
    """The finished run folder of the collaborative model `config` (default: the profile's MF), trained unless
    finished."""
    return encoders.ensure(ctx.splits, config or ctx.encoder_config(), progress=ctx.progress)


def stage1(ctx: RunContext, config: StageConfig | None = None, out_dir: str | Path | None = None) -> dict:
    """Stage 1's results (results.json with "run_dir"), trained unless finished; default config: the profile's."""
    return run_stage(ctx.splits, config or ctx.stage_config(1), out_dir, progress=ctx.progress)


def stage2(ctx: RunContext, stage1_dir: str | Path, encoder_dir: str | Path, config: StageConfig | None = None,
           out_dir: str | Path | None = None) -> dict:
    """Stage 2's results over the finished stage-1 run and encoder run, trained unless finished; default config:
    the profile's."""
    return run_stage(ctx.splits, config or ctx.stage_config(2), out_dir, stage1_dir=stage1_dir, mf_dir=encoder_dir,
                     progress=ctx.progress)


def folders(ctx: RunContext) -> dict[str, Path]:
    """The folders of the profile's three runs ({"mf", "stage1", "stage2"}: notebooks 02-04): the MF trained unless
    finished, the stage folders named whether or not they ran (stage 2's needs a finished stage 1, whose fingerprint
    is part of its identity)."""
    mf = encoder(ctx)
    first = stage_dir(ctx.splits, ctx.stage_config(1))
    return {"mf": mf, "stage1": first, "stage2": stage_dir(ctx.splits, ctx.stage_config(2), first, mf)}


def two_stage_fns(splits: Splits, progress: bool = True
                  ) -> tuple[Callable[[TwoStages, Path], dict], Callable[[TwoStages], dict]]:
    """(run_fn, upstream_fn) for sweep.run_sweep over TwoStages configs: stage 1, the MF and stage 2 over both, each
    in its identity folder (a setting equal to notebooks 03-04's is their runs). The summary is stage 2's
    (stage_summary), with stage 1's valid AUC and folder beside it; the upstream is stage 1's inputs (the MF's and
    stage 2's settings are in the config itself)."""
    ctx = RunContext(splits, progress=progress)

    def run(config: TwoStages, out_dir: Path) -> dict:
        first = stage1(ctx, config.stage1)
        second = stage2(ctx, first["run_dir"], encoder(ctx, config.mf), config.stage2)
        return stage_summary(second) | {"stage1_valid_auc": first["valid"]["all"]["auc"],
                                        "stage1_run_dir": runs.relative(first["run_dir"])}

    def upstream(config: TwoStages) -> dict:
        return stage_identity(splits, config.stage1)[1]

    return run, upstream


def sweep_fns(splits: Splits, stage1_dir: str | Path | None = None, progress: bool = True
              ) -> tuple[Callable[[StageRun, Path], dict], Callable[[StageRun], dict]]:
    """(run_fn, upstream_fn) for sweep.run_sweep over StageRun configs: stage 2 sits on `stage1_dir`'s LoRA and on
    the MF of its `mf` settings (trained first when missing); upstream_fn gives the inputs' fingerprints, so a
    setting reruns when its stage 1 or MF changed.

    Each setting's stage run lives in its identity folder (stage_dir), not in the sweep's folder, which keeps only
    the setting's record: a setting equal to a main run (notebook 03/04's, Table 1's) or to another sweep's point
    is that very run, trained once ("run_dir" in the summary says where)."""
    ctx = RunContext(splits, progress=progress)

    def mf_dir(config: StageRun) -> Path | None:
        if config.stage.stage != 2:
            return None
        if config.mf is None:
            raise ValueError("a stage-2 StageRun needs its MF settings (StageRun.mf)")
        return encoder(ctx, config.mf)

    def run(config: StageRun, out_dir: Path) -> dict:
        if config.stage.stage == 1:
            return stage_summary(stage1(ctx, config.stage))
        return stage_summary(stage2(ctx, stage1_dir, mf_dir(config), config.stage))

    def upstream(config: StageRun) -> dict:
        return stage_identity(splits, config.stage, stage1_dir, mf_dir(config))[1]

    return run, upstream
