"""Every built-in config dataclass, in one torch-free module: what a run of each step is made of, each field with its
default and why. rules.py holds each field's rule (checked as a config is built), profiles.py each profile's values,
`collm config --profile P --step S` the merged values and where each came from. The modules that run a config
import it from here (`from collm_lib.train import StageConfig` works as before), and a run's identity hashes the
config's field values, not where the class lives.

    LLMConfig      the LLM and its LoRA (llm.py)             StageConfig    a stage's training (train.py, stages.py)
    TrainSettings  how every collaborative model trains       MFConfig, LightGCNConfig, SASRecConfig (encoders.py)
    IndexConfig    the Faiss index (retrieval.py)             MatchingConfig cold-id matching (matching.py)
    RerankConfig   retrieve-then-rank (rerank.py)             CTRLConfig     the CTRL(DIN) baseline (ctrl.py)
    PrepareConfig  the datasets notebook 01 builds (data/prepare.py)

An encoder outside the library may keep its config in its own module (encoder_registry.py; tests/toy_encoder.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from . import rules
from .dataset_registry import DATASETS

DEFAULT_MODEL = "smollm2-135m"  # the embedded SmolLM2-135M-Instruct (model_source.py, llm.py)


@dataclass
class LLMConfig:
    model: str = DEFAULT_MODEL  # "smollm2-135m" (embedded), a causal-LM folder, or a Hub id "org/name[@revision]"
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_targets: tuple[str, ...] = ("q_proj", "v_proj")  # module names, or ("all-linear",)
    device: str | None = None  # None: GPU when present (settings.device)
    # auto: bf16 on a GPU or a CPU with bf16 matrix units (AMX / AVX-512 BF16), fp32 elsewhere ($COLLM_PRECISION
    # overrides auto); bf16: frozen weights bf16, LoRA / FECE / MF fp32, autocast. A run records the resolved one.
    precision: str = "auto"

    def __post_init__(self) -> None:
        # lora_targets="all-linear" (a str) would otherwise be iterated as its letters
        if isinstance(self.lora_targets, str):
            self.lora_targets = (self.lora_targets,)
        self.lora_targets = tuple(self.lora_targets)
        rules.check_config(self)  # a bad value fails here, before any run folder is made


@dataclass
class StageConfig:  # each profile's values: collm_lib/profiles.py
    stage: int = 1  # 1: LoRA on text prompts; 2: FECE mapping on ID prompts
    dataset: str = "ml-1m"
    template: str | None = None  # None: movie_/book_ text (stage 1) or id (stage 2)
    max_history: int = 10
    lr: float = 1e-3
    min_lr: float = 8e-5  # cosine floor
    weight_decay: float = 1e-3  # matrices only
    warmup_steps: int = 200
    batch_size: int = 16  # per process
    grad_accum: int = 1
    # optimizer steps to train for, each of batch_size x grad_accum prompts per process; the lr decays to min_lr over
    # them, and patience may stop sooner (StageConfig's own 10,000 at batch 16 is the authors'; no profile runs it)
    max_steps: int = 10_000
    eval_every: int = 50
    eval_every_early: int = 0  # >0: also evaluate every this many steps up to step early_until, where the curve moves
    early_until: int = 0
    patience: int = 20  # evaluations without improvement
    train_rows: int | None = None  # seeded sample of this many train rows, row by row (None: all)
    # seeded sample of valid_small, taken as whole users until it holds at least this many rows, so it can hold more
    # (cpu's 256 gives 262 on ML-1M at seed 2023); None: all
    eval_rows: int | None = None
    # seeded sample of test, taken as whole users (UAUC needs them) until it holds at least this many rows, so it can
    # hold more (400 gives 455 on ML-1M at seed 2023); None: all
    test_rows: int | None = None
    score_batch_size: int = 64
    unfreeze_mf: bool = False
    # stage 2: the prompt before the first ID slot (~75 % of ML-1M's tokens) runs forward-only, its keys/values
    # feeding the rest. Exact: the LLM is frozen and no gradient reaches those tokens. Only with LoRA dropout
    # active do the dropout draws differ (same distribution, other random order), as with any batch change.
    prefix_no_grad: bool = True
    seed: int = 2023
    llm: LLMConfig = field(default_factory=LLMConfig)

    def __post_init__(self) -> None:
        rules.check_config(self)  # a bad value fails here, before any run folder is made


@dataclass
class TrainSettings:
    """How every collaborative model trains: BCE-with-logits on the explicit 0/1 labels (no negative sampling),
    Adam with weight decay, early stopping on valid AUC checked every epoch, best weights kept."""

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
        rules.check_config(self)  # a bad value fails here, before any run folder is made


@dataclass
class MFConfig(TrainSettings):  # each profile's values, and each dataset's: collm_lib/profiles.py
    dim: int = 256  # embedding size d (the paper sweeps 64, 128, 256; docs/protocol.md §4)
    bias: bool = False  # user, item and global biases (docs/protocol.md §4; on for BookCrossing: profiles.MF_MODEL)


@dataclass
class LightGCNConfig(TrainSettings):
    dim: int = 64  # embedding size (LightGCN's and CoLLM's default)
    layers: int = 2  # propagation steps (CoLLM's ML-1M LightGCN uses 2)


@dataclass
class SASRecConfig(TrainSettings):
    dim: int = 64  # hidden size (CoLLM's SASRec: 64)
    layers: int = 2  # self-attention blocks
    heads: int = 1
    max_len: int = 50  # history items read per row
    dropout: float = 0.2


KINDS = ("auto", "flat", "ivf", "hnsw")  # IndexConfig.kind (retrieval.py: "auto" picks by catalogue size)
METRICS = ("ip", "l2")


@dataclass
class IndexConfig:  # each profile's values: collm_lib/profiles.py
    kind: Literal["auto", "flat", "ivf", "hnsw"] = "flat"  # flat = exact; ivf / hnsw = approximate; auto: by size
    metric: Literal["ip", "l2"] = "ip"  # ip on L2-normalised vectors is cosine similarity
    nlist: int = 1024  # IVF lists; capped at n/39 so small catalogues still train sensibly
    nprobe: int = 16  # IVF lists visited per query: the recall / speed knob
    train_points_per_list: int = 64  # IVF k-means sample per list (faiss default 256; 64 trains 4x faster)
    hnsw_m: int = 32  # HNSW graph degree
    ef_construction: int = 64  # HNSW build beam width
    ef_search: int = 128  # HNSW search beam width: the recall / speed knob
    use_gpu: Literal["auto"] | bool = "auto"  # "auto": GPU when faiss sees one; True: require one
    seed: int = 2023  # IVF k-means sampling and initialisation

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"IndexConfig.kind={self.kind!r}; choose one of {KINDS}")
        if self.metric not in METRICS:
            raise ValueError(f"IndexConfig.metric={self.metric!r}; choose one of {METRICS}")
        if self.use_gpu not in ("auto", True, False):
            raise ValueError(f"IndexConfig.use_gpu={self.use_gpu!r}; choose 'auto', True or False")
        rules.check_config(self)  # the sizes, by type and range


@dataclass(frozen=True)
class MatchingConfig:
    """Cold-id matching settings (the matching fields of rerank.RerankConfig, which builds one: `config.matching`)."""

    n_neighbors: int = 10  # warm neighbours a cold id borrows from
    neighbor_curve: tuple[int, ...] = (1, 5, 10, 20, 50)  # cold AUC vs number of neighbours
    weighting: Literal["uniform", "similarity"] = "uniform"  # how borrowed neighbour vectors are averaged
    item_text: Literal["llm", "hashed"] = "llm"  # cold-item title representation: frozen LLM or char n-grams
    score_batch_size: int = 16
    test_rows: int | None = None  # seeded sample of whole users of the stage's test rows (None: all of them)
    seed: int = 2023

    @classmethod
    def of(cls, config: Any) -> "MatchingConfig":
        """`config` itself, or the matching fields of any config holding them (rerank.RerankConfig)."""
        if isinstance(config, cls):
            return config
        return cls(**{f: getattr(config, f) for f in cls.__dataclass_fields__})


@dataclass
class RerankConfig:  # each profile's values: collm_lib/profiles.py
    ks: tuple[int, ...] = (10, 20, 50)  # cut-offs; the largest is how many candidates the LLM scores per user
    n_users: int | None = 20  # seeded sample of warm test users with a test positive (None: all)
    n_full_users: int = 0  # users (first of that sample) whose whole catalogue the LLM scores
    n_neighbors: int = 10  # warm neighbours a cold id borrows from
    neighbor_curve: tuple[int, ...] = (1, 5, 10, 20, 50)  # cold AUC vs number of neighbours
    weighting: Literal["uniform", "similarity"] = "uniform"  # how borrowed neighbour vectors are averaged
    item_text: Literal["llm", "hashed"] = "llm"  # cold-item title representation: frozen LLM or char n-grams
    index: IndexConfig = field(default_factory=IndexConfig)  # top-K retrieval index
    score_batch_size: int = 16
    test_rows: int | None = None  # cold matching: seeded sample of whole users of the stage's test rows (None: all)
    shared_prefix: bool = True  # rows sharing a history share its pass (scoring.prefix_groups); False: full prompts
    seed: int = 2023

    def __post_init__(self) -> None:
        rules.check_config(self)  # a bad value fails here, before any run folder is made

    @property
    def matching(self):
        """Cold-id matching's settings (matching.MatchingConfig): the fields above, so a run's identity, which hashes
        this config's fields, is the same as before matching had a config of its own."""
        return MatchingConfig.of(self)


@dataclass
class CTRLConfig:  # each profile's values: collm_lib/profiles.py
    embed_dim: int = 32  # id embedding size (users and items)
    attention_hidden: tuple[int, ...] = (80, 40)  # DIN's local activation unit
    mlp_hidden: tuple[int, ...] = (200, 80)  # the click head before the final logit
    proj_dim: int = 128  # shared space of the two projection heads (phase 1)
    max_history: int = 10
    lr: float = 1e-3  # phase 2 (Adam)
    weight_decay: float = 1e-5
    batch_size: int = 256
    max_epochs: int = 30  # phase 2
    patience: int = 3  # phase 2: epochs without a better valid AUC
    align_lr: float = 1e-3  # phase 1 (Adam)
    align_batch_size: int = 256  # in-batch negatives per step
    align_epochs: int = 20
    align_rows: int | None = 1500  # seeded sample of train rows that get LLM encodings; None: all
    align_seed: int = 2023  # that sample's seed, apart from `seed`: seed replicates reuse the cached encodings
    temperature: float = 0.1  # InfoNCE
    template: str | None = None  # None: movie_text / book_text by dataset
    encoder: str = "smollm2-135m"  # names the text encoder in the run identity and encoding cache (run_ctrl: an LLM's)
    seed: int = 2023
    device: str | None = None  # None: settings.device()
    cpu_threads: int | None = 1  # torch threads on CPU (shared machine); None: leave as is
    eval_batch_size: int = 8192

    def __post_init__(self) -> None:
        rules.check_config(self)  # a bad value fails here, before any run folder is made


@dataclass
class PrepareConfig:  # each profile's values: collm_lib/profiles.py (notebook 01, data/prepare.py)
    datasets: tuple[str, ...] = field(default_factory=lambda: tuple(DATASETS))
    rebuild: bool = False  # True: ignore processed caches and build from the raw files again

    def __post_init__(self) -> None:
        rules.check_config(self)
