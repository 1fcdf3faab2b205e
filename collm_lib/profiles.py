"""What each run profile runs: every setting of every step for "smoke", "cpu" and "gpu", in this one file.

A profile is a size. smoke: seconds, to check the plumbing (CI, nbval); cpu: seeded subsamples that a 2-core laptop
finishes (a real run of every step, its numbers noisy); gpu: the full data on one GPU. Each table
below holds, per profile, only the fields that differ from the dataclass defaults, with why. The dataclasses live
in configs.py (an encoder's outside the library where encoder_registry.py points), except the plans, which are only
sizes and live here (SweepPlan, ComparePlan); the functions at the end build them, keyword arguments replacing
fields:

    profiles.prepare(profile)           notebook 01: the datasets to build
    profiles.mf(profile, dataset)       notebook 02: the collaborative model (MF), with the dataset's adjustments
    profiles.encoder(profile, dataset, name)  notebook 07: any collaborative model by name (encoder_registry)
    profiles.stage(profile, stage)      notebooks 03 / 04: stage 1 (LoRA on text) and stage 2 (FECE on IDs)
    profiles.index(profile)             notebook 05: the Faiss index
    profiles.rerank(profile)            notebook 05: retrieve-then-rank and cold-id matching
    profiles.ctrl(profile)              notebook 06: the CTRL(DIN) baseline
    profiles.plan(profile)              notebooks 06, 08, 09: Table 1's seeds and other datasets, Figure 3's sweeps
    profiles.compare(profile)           notebook 07: the encoders compared, and stage 2's schedule over each

`profile` None stands for $COLLM_PROFILE, else "cpu" (settings.profile_name). A run's identity hashes its config,
so a value changed here makes new runs: tests/test_profiles.py holds every config to tests/expected/profiles.json
(its docstring says how to regenerate it after a deliberate change). docs/profiles.md tabulates the key sizes.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any

from . import encoder_registry, rules, settings
from .configs import CTRLConfig, IndexConfig, MFConfig, PrepareConfig, RerankConfig, StageConfig, TrainSettings
from .dataset_registry import DATASETS
from .paper import FIGURE3_LRS

# Notebook 01 (PrepareConfig): cpu and gpu build every dataset; smoke skips bookcrossing-multi, a second
# ~30-60 s BookCrossing build.
PREPARE: dict[str, dict[str, Any]] = {
    "smoke": dict(datasets=tuple(name for name in DATASETS if name != "bookcrossing-multi")),
    "cpu": {},
    "gpu": {},
}

# Notebook 02 (MFConfig): MF on these data is cheap, so cpu and gpu run the full protocol (up to 1000 epochs,
# patience 100); smoke runs 2 epochs, to check the plumbing.
MF: dict[str, dict[str, Any]] = {
    "smoke": dict(max_epochs=2, patience=1),
    "cpu": {},
    "gpu": {},
}
# Per dataset, over MF on cpu and gpu (not smoke): a BookCrossing / Amazon-substitute CPU epoch costs ~10-30x
# ML-1M's, and valid AUC stops moving early there.
MF_DATASET: dict[str, dict[str, Any]] = {
    "bookcrossing": {"patience": 5}, "bookcrossing-multi": {"patience": 5}, "amazon-book-msl": {"patience": 10}}
# Per dataset, at every profile: the model itself. BookCrossing's labels are mostly a user's habit (implicit 0s), and
# a bias-free dot product cannot carry it to books it has barely seen (90k items, 195k rows): valid AUC 0.51 without
# biases, 0.70 with them (docs/protocol.md §4).
MF_MODEL: dict[str, dict[str, Any]] = {"bookcrossing": {"bias": True}, "bookcrossing-multi": {"bias": True}}

# Notebook 07's collaborative models beside MF (docs/protocol.md §4), by name (encoder_registry.py; "mf-bias" is MF
# with biases: MF's tables above). They train as MF does (configs.TrainSettings); their valid AUC peaks within ~30
# epochs on ML-1M, so cpu and gpu stop after 20 epochs without a better one. smoke: 2 epochs of small models. An
# encoder without an entry here runs at its config's defaults on every profile.
ENCODER: dict[str, dict[str, dict[str, Any]]] = {
    # lr 1e-2: valid AUC 0.651 against 0.628 at 1e-3 (and 0.632 at d 256), ML-1M, 2026-12-06
    "lightgcn": {"smoke": dict(dim=8, max_epochs=2, patience=1), "cpu": dict(lr=1e-2, patience=20),
                 "gpu": dict(lr=1e-2, patience=20)},
    # the last 20 history items (~16 s an epoch on one core); lr 1e-2: valid AUC 0.680 (best at epoch 1) against
    # 0.664 at 3e-3 and 0.658 at 1e-3 (epoch 9), ML-1M, 2026-12-06
    "sasrec": {"smoke": dict(dim=8, max_len=10, max_epochs=2, patience=1), "cpu": dict(lr=1e-2, max_len=20, patience=4),
               "gpu": dict(lr=1e-2, max_len=20, patience=4)},
}


def steps() -> tuple[str, ...]:
    """The steps layers() knows: every encoder of the registry among them."""
    return ("prepare", *encoder_registry.names(), "stage1", "stage2", "index", "rerank", "ctrl", "compare", "plan")


@dataclass
class ComparePlan:
    """Notebook 07's plan (comparison.py): the collaborative models scored alone, those stage 2 runs over, and
    stage 2's schedule per encoder (StageConfig changes over the profile's stage 2)."""

    profile: str
    encoders: tuple[str, ...]
    stage2: tuple[str, ...]
    stage: dict[str, dict[str, Any]] = field(default_factory=dict)


# Notebook 07 (ComparePlan); without `encoders` (or with stage2=ALL): every encoder of the registry. smoke: stage 2
# over MF only (notebook 04's run): stage 2 over SASRec (the per-row history path) would add ~100 s to CI, and
# tests/test_encoders.py runs it over LightGCN and SASRec with a tiny LLM. cpu: stage 2 over the paper's MF (the
# main job's run) and over the encoder best on valid, MF with biases (valid AUC 0.734; SASRec 0.680, MF 0.677,
# LightGCN 0.651), both at the profile's stage-2 schedule: each costs ~27 bf16 minutes on 2 cores
# (docs/profiles.md), so the cpu budget covers two. gpu: all of them.
ALL = "all"
COMPARE: dict[str, dict[str, Any]] = {
    "smoke": dict(stage2=("mf",)),
    "cpu": dict(stage2=("mf", "mf-bias")),
    "gpu": dict(stage2=ALL),
}

# Notebooks 03 and 04 (StageConfig), both stages; StageConfig's defaults are the authors' schedule (batch 16,
# 10,000 steps), which no profile runs.
STAGE: dict[str, dict[str, Any]] = {
    "smoke": dict(train_rows=24, eval_rows=24, test_rows=40, batch_size=4, max_steps=4, eval_every=2,
                  warmup_steps=1, patience=2, score_batch_size=16),
    # ML-1M's whole test split (7,331 rows, UAUC over 224 users): comparable row for row with the gpu run and the
    # paper. Valid: a fixed sample of whole users of at least 2,000 rows (stage 1: 1,000), so that the kept step is
    # chosen on enough rows to tell evaluations apart (on 262 rows they jumped by 0.02-0.04 from one to the next);
    # each schedule runs to its end (patience beyond its evaluations). Train sizes per stage below. Times per
    # machine: docs/profiles.md.
    "cpu": dict(eval_rows=2000, test_rows=None, batch_size=8, warmup_steps=10, patience=100, score_batch_size=32),
    # all rows; fewer steps than the authors' 10,000 at batch 16 (530 at 64 is an epoch of ML-1M); scoring at 1024
    # ran 3,939 prompts/s on an H200
    "gpu": dict(batch_size=64, max_steps=800, eval_every=100, warmup_steps=80, patience=4, score_batch_size=1024),
}
# Per stage, over STAGE. On the H200, stage 1 still improved at step 800 and stage 2 peaked at its first evaluation
# (step 100): stage 1 gets room to plateau, stage 2 an evaluation every 20 steps while its curve moves.
STAGE_BY_STAGE: dict[str, dict[int, dict[str, Any]]] = {
    # One pass over 800 / 960 prompts: about an hour for the main job (docs/profiles.md). Stage 1 does not learn the
    # text task at this size (valid AUC 0.510 [0.456, 0.564] after 100 steps, test 0.505; nor at 150 steps on 1,200
    # prompts): it is evaluated once, at its end, on 1,000 valid rows, which with its test rows says so. Stage 2 is
    # evaluated at steps 60 and 120 on the 2,000 rows and keeps the better (it kept 120: valid AUC 0.718 against
    # 0.712 at 60). Halved (400 / 800 prompts, 50 / 100 steps) the job took 59 minutes, not 62, and stage 2 kept
    # step 50 at valid 0.665 and test AUC 0.641 against 0.705 here: the minutes saved were not worth it.
    "cpu": {1: dict(train_rows=800, max_steps=100, eval_every=100, eval_rows=1000),
            2: dict(train_rows=960, max_steps=120, eval_every=60)},
    "gpu": {1: dict(max_steps=2400), 2: dict(eval_every_early=20, early_until=300, patience=6)},
}

# Notebook 05's index (IndexConfig), also what the gpu re-rank retrieves with.
INDEX: dict[str, dict[str, Any]] = {
    "smoke": dict(kind="flat", use_gpu=False),  # exact search on CPU: the catalogues are tiny
    "cpu": dict(kind="ivf", nlist=2048, nprobe=16),  # tuned on the 2-core benchmark
    "gpu": dict(kind="auto", nlist=4096, nprobe=64, use_gpu="auto"),  # IVF from retrieval.EXACT_BELOW items
}

# Notebook 05 (RerankConfig); `index` holds IndexConfig's fields.
RERANK: dict[str, dict[str, Any]] = {
    "smoke": dict(ks=(5, 10), n_users=2, neighbor_curve=(1, 10), item_text="hashed", index=INDEX["smoke"]),
    # 20 users x 50 candidates and 1 user's whole catalogue: ~4,300 prompts, ~2.5 bf16 minutes with shared-prefix
    # scoring on 2 cores (a second whole-catalogue user cost 2.4 minutes of the main job's hour). Cold-item LLM
    # title vectors take > 9 min on 2 busy cores: hashed n-grams.
    # Cold matching on ~1,500 of the stage's 7,331 test rows (whole users, ~20 of them cold): each neighbour count
    # rescores the cold rows, ~43 % of them. The index by catalogue size ("auto"): ML-1M's 3,255 items get exact
    # search, faster there than HNSW or IVF and exact (retrieval.EXACT_BELOW; notebook 05's sweep shows all three).
    "cpu": dict(n_users=20, n_full_users=1, neighbor_curve=(1, 10), item_text="hashed", test_rows=1500,
                index=dict(kind="auto", use_gpu=False)),
    # every warm test user, 20 whole catalogues
    "gpu": dict(n_users=None, n_full_users=20, score_batch_size=256, index=INDEX["gpu"]),
}

# Notebook 06's CTRL(DIN) baseline (CTRLConfig). cpu keeps the defaults: 1500 aligned rows, ~5 min of LLM encoding
# on 2 cores.
CTRL: dict[str, dict[str, Any]] = {
    "smoke": dict(embed_dim=8, attention_hidden=(16, 8), mlp_hidden=(16, 8), proj_dim=16, align_rows=64,
                  align_epochs=2, max_epochs=2, patience=1, align_batch_size=32),
    "cpu": {},
    "gpu": dict(align_rows=None, align_epochs=10, align_batch_size=512, max_epochs=50, patience=5),  # every train row
}


@dataclass
class SweepPlan:
    """Notebooks 06, 08 and 09's plan (table1.py, figure3.py, reproduce.py): Table 1's seeds and the size of the other
    datasets' runs, the grids of Figure 3 and the other sweeps and the size of their points (ML-1M's Table 1 entries
    come from notebooks 02-04 at the profile's size)."""

    profile: str
    lrs: tuple[float, ...]  # LoRA (Figure 3a) and FECE (3b, ML-1M) learning rates
    dims: tuple[int, ...]  # MF embedding sizes d
    stage: dict[str, Any]  # StageConfig overrides over profiles.stage(profile, ...): other datasets' stages
    mf: dict[str, Any]  # MFConfig overrides for the MFs of the embedding-size sweep
    ctrl: dict[str, Any]  # CTRLConfig overrides over profiles.ctrl(profile)
    n_seeds: int = 1  # Table 1's seeds of MF and CTRL(DIN), each scored on the full test split
    # ... and of stage 2 on a dataset whose whole test split is scored (ML-1M at cpu and gpu), over one stage 1
    n_llm_seeds: int = 1
    jobs: int = 1  # processes making the MF and CTRL(DIN) seed replicates at once (each trains on one thread)
    # Figure 3's points: overrides over the profile's stage sizes (ML-1M) or over `stage` (the other datasets)
    sweep: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        rules.check_config(self)


# Notebooks 06, 08 and 09 (SweepPlan): Table 1's seeds and other datasets, Figure 3's grids and the size of their
# runs as overrides over STAGE / MF / CTRL; ML-1M's Table 1 entries are notebooks 02-04's runs at the sizes above, and
# so are Figure 3's ML-1M points (`sweep` empty): each point is a whole run, on the whole test split, and the setting
# equal to the main run's is that run. Seeds: docs/protocol.md §7.5.
PLAN: dict[str, dict[str, Any]] = {
    "smoke": dict(lrs=(1e-3,), dims=(32,),
                  stage=dict(train_rows=8, eval_rows=8, test_rows=16, batch_size=4, max_steps=2, eval_every=2,
                             warmup_steps=1, patience=1, score_batch_size=16),
                  mf=dict(max_epochs=2, patience=1), ctrl=dict(align_rows=32), n_seeds=2, jobs=2),
    # The book datasets' stages at ML-1M's schedule (the 160 prompts of before could not move a 135M model off its
    # prior), on 1,000 test rows of whole users; the three Figure 3 learning rates the budget holds (the paper's
    # ends and its best), the MF sizes' MFs at the profile's MF settings (d 256 is notebook 02's MF, so that point
    # is notebook 04's run); 5 seeds of MF and CTRL(DIN), 2 of CoLLM-FaissRet's stage 2 (stage 1 shared; each seed
    # is half an hour here). Every run beyond the main seed's and notebooks 03-04's is notebook 08's (ML-1M's seeds)
    # or 09's (the book datasets' LLM stages, Figure 3), outside the main job's hour (docs/profiles.md).
    "cpu": dict(lrs=(1e-4, 3e-4, 1e-3), dims=(64, 128, 256), stage=dict(test_rows=1000), mf={},
                ctrl=dict(align_rows=48), n_seeds=5, n_llm_seeds=2, jobs=2),
    # The paper's grids at the gpu sizes above; 5 seeds of the cheap models and 3 of the LLM stages.
    "gpu": dict(lrs=FIGURE3_LRS, dims=(64, 128, 256), stage={}, mf={}, ctrl={}, n_seeds=5, n_llm_seeds=3, jobs=4),
}


def _table(table: dict[str, Any], profile: str | None) -> tuple[str, dict[str, Any]]:
    """The profile's name and a copy of its entry (callers may change what they get)."""
    name = settings.profile_name(profile)
    return name, copy.deepcopy(table[name])


def prepare(profile: str | None = None, **overrides: Any) -> PrepareConfig:
    """Notebook 01's PrepareConfig of the profile, `overrides` replacing fields."""
    return dataclasses.replace(PrepareConfig(**_table(PREPARE, profile)[1]), **overrides)


def layers(step: str, profile: str | None = None, dataset: str | None = None) -> list[tuple[str, dict[str, Any]]]:
    """The tables a step's config is built from, in order, a later one winning: (where, its fields), over the
    dataclass defaults and under the caller's keyword arguments. Steps: steps(); `dataset` matters to "mf" and its
    variants. `collm config` (config_sources) shows each value's source from them."""
    name = settings.profile_name(profile)
    if step in ("stage1", "stage2"):
        number = int(step[-1])
        return [(f"profiles.STAGE[{name!r}]", copy.deepcopy(STAGE[name])),
                (f"profiles.STAGE_BY_STAGE[{name!r}][{number}]",
                 copy.deepcopy(STAGE_BY_STAGE.get(name, {}).get(number, {})))]
    if step in encoder_registry.ENCODERS:
        found = []
        if encoder_registry.kind(step) == "mf":
            per_dataset = dict(MF_DATASET.get(dataset, {})) if name != "smoke" else {}
            found = [(f"profiles.MF[{name!r}]", copy.deepcopy(MF[name])),
                     (f"profiles.MF_DATASET[{dataset!r}]", per_dataset),
                     (f"profiles.MF_MODEL[{dataset!r}]", dict(MF_MODEL.get(dataset, {})))]
        if step in ENCODER:
            found.append((f"profiles.ENCODER[{step!r}][{name!r}]", _table(ENCODER[step], name)[1]))
        fixed = encoder_registry.info(step).fixed
        return found + ([(f"the encoder name {step}", dict(fixed))] if fixed else [])
    tables = {"prepare": PREPARE, "index": INDEX, "rerank": RERANK, "ctrl": CTRL, "compare": COMPARE, "plan": PLAN}
    if step not in tables:
        raise ValueError(f"step {step!r}: choose one of {', '.join(steps())}")
    return [(f"profiles.{step.upper()}[{name!r}]", _table(tables[step], name)[1])]


def _merged(found: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for _, fields in found:
        merged |= fields
    return merged


def mf(profile: str | None = None, dataset: str | None = None, **overrides: Any) -> MFConfig:
    """The profile's MFConfig; with `dataset`, its MF_DATASET entry (not on smoke) and MF_MODEL entry; then
    `overrides`."""
    return MFConfig(**_merged(layers("mf", profile, dataset)) | overrides)


def encoder(profile: str | None = None, dataset: str | None = None, name: str = "mf",
            **overrides: Any) -> TrainSettings:
    """The profile's config of the collaborative model `name` (encoder_registry.names()): its registry entry's
    config class over layers(name) (mf(...) for "mf", with biases for "mf-bias"), then `overrides`."""
    config = encoder_registry.config_class(name)  # an unknown name: ValueError naming the choices
    return config(**_merged(layers(name, profile, dataset)) | overrides)


def stage(profile: str | None, stage: int, **overrides: Any) -> StageConfig:
    """The profile's StageConfig of `stage` (1 or 2), `overrides` replacing fields."""
    if stage not in (1, 2):
        StageConfig(stage=stage)  # raises: StageConfig's rule names the problem
    return StageConfig(**{"stage": stage} | _merged(layers(f"stage{stage}", profile)) | overrides)


def index(profile: str | None = None, **overrides: Any) -> IndexConfig:
    """The profile's IndexConfig, `overrides` replacing fields."""
    return IndexConfig(**_table(INDEX, profile)[1] | overrides)


def rerank(profile: str | None = None, **overrides: Any) -> RerankConfig:
    """The profile's RerankConfig, `overrides` replacing fields (`index`: an IndexConfig)."""
    base = _table(RERANK, profile)[1]
    return dataclasses.replace(RerankConfig(**base | {"index": IndexConfig(**base["index"])}), **overrides)


def ctrl(profile: str | None = None, **overrides: Any) -> CTRLConfig:
    """The profile's CTRLConfig, `overrides` replacing fields."""
    return dataclasses.replace(CTRLConfig(**_table(CTRL, profile)[1]), **overrides)


def compare(profile: str | None = None, **overrides: Any) -> ComparePlan:
    """The profile's ComparePlan (notebook 07), `overrides` replacing fields."""
    name, base = _table(COMPARE, profile)
    every = encoder_registry.names()
    base = {"encoders": every} | {k: every if v == ALL else v for k, v in base.items()}
    return dataclasses.replace(ComparePlan(name, **base), **overrides)


def plan(profile: str | None = None, **overrides: Any) -> SweepPlan:
    """The profile's SweepPlan, `overrides` replacing fields."""
    name, base = _table(PLAN, profile)
    return dataclasses.replace(SweepPlan(name, **base), **overrides)
