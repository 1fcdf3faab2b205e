"""The one place that reads the library's environment variables ($COLLM_*) and torchrun's (RANK, WORLD_SIZE,
LOCAL_RANK): paths, device, precision (bf16 / fp32), seeds, run profile, your dataset folders.

Everything else in the library takes these values as arguments, so a notebook or a test can
override any of them without touching environment variables. Elsewhere, only model_source.py reads the environment
(Hugging Face's HF_HUB_CACHE, HF_HOME, HF_HUB_OFFLINE, TRANSFORMERS_OFFLINE, at call time), and these set variables
for this process and the ones it starts: cli.py (--no-progress: COLLM_PROGRESS=0), runner.py (the notebook kernels'
KERNEL_ENV; COLLM_WORK_DIR and COLLM_REPLAY for a replay) and data, through add_dataset_folder (COLLM_DATASETS).

torch is imported by the functions that need it (device, precision, seeds), not with the module: the configuration
layer (configs, rules, profiles, params, `collm config`) reads paths and profiles without loading it.
"""
from __future__ import annotations

import errno
import functools
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
PROFILES = ("smoke", "cpu", "gpu")


def data_dir(explicit: str | os.PathLike | None = None) -> Path:
    """Where raw datasets live: the argument, else $COLLM_DATA_DIR, else <repo>/data/raw.

    Each dataset is a sub-folder named as in ../shared/data (ml-1m-collm, ml-1m-raw,
    bookcrossing-raw, amazon-book, amazon-book-msl).
    """
    if explicit is not None:
        return Path(explicit).expanduser().resolve()
    env = os.environ.get("COLLM_DATA_DIR")
    return Path(env).expanduser().resolve() if env else REPO_ROOT / "data" / "raw"


def work_dir(explicit: str | os.PathLike | None = None) -> Path:
    """Where processed data, checkpoints and run outputs go: argument, $COLLM_WORK_DIR, <repo>/data."""
    if explicit is not None:
        return Path(explicit).expanduser().resolve()
    env = os.environ.get("COLLM_WORK_DIR")
    return Path(env).expanduser().resolve() if env else REPO_ROOT / "data"


class NotWritable(OSError):
    """A folder the library must write to is a file, or cannot be written; the message names it and the fix."""


WORK_DIR_FIX = "set $COLLM_WORK_DIR to a folder you can write to"


def require_writable(path: str | os.PathLike, what: str, fix: str) -> Path:
    """`path` resolved, once checked to be a folder this process can write in (when missing, its nearest existing
    parent: the folder is made when first written); else NotWritable naming `what`, the path and the `fix`.
    Called before a run starts: a read-only folder is then one clear error, not a traceback half-way through."""
    path = Path(path).expanduser().resolve()
    existing = path
    while not existing.exists():
        existing = existing.parent
    where = "it" if existing == path else f"its parent {existing}"
    if not existing.is_dir():
        problem = f"{where} is a file, not a folder"
    elif os.statvfs(existing).f_flag & os.ST_RDONLY:
        problem = f"{where} is on a read-only file system"
    elif not os.access(existing, os.W_OK | os.X_OK):
        problem = f"{where} is not writable by this user"
    else:
        return path
    raise NotWritable(f"{what} {path}: {problem}; {fix}")


def require_space(folder: str | os.PathLike, needed: int, what: str) -> None:
    """NotWritable naming `what`, the folder, the bytes needed and free, when the file system of `folder` (or of its
    nearest existing parent) has less than `needed` bytes free: checked before a long write of known size."""
    existing = Path(folder).expanduser().resolve()
    while not existing.exists():
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    if free < needed:
        raise NotWritable(f"{what} needs {needed / 2**20:,.0f} MiB in {folder}, and its disk has {free / 2**20:,.0f} "
                          "MiB free; free some space there, or point the folder elsewhere ($COLLM_WORK_DIR, "
                          "$COLLM_CACHE_DIR)")


def no_space(err: BaseException) -> str | None:
    """The message for an error that is a full disk (ENOSPC or EDQUOT anywhere in its chain, or torch's "unexpected
    pos" of a checkpoint cut short), naming the file and the fix; None for any other error."""
    chain, seen = err, []
    while chain is not None and chain not in seen:
        seen.append(chain)
        if getattr(chain, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or "unexpected pos" in str(chain):
            name = getattr(chain, "filename", None)
            return (f"the disk is full{f' writing {name}' if name else ''}; free some space (or set "
                    "$COLLM_WORK_DIR / $COLLM_CACHE_DIR to a folder on a larger disk) and run the same command "
                    "again: finished runs are kept, an interrupted one resumes")
        chain = chain.__cause__ or chain.__context__
    return None


def figures_dir(explicit: str | os.PathLike | None = None) -> Path:
    """Where figures and tables are written: argument, $COLLM_FIGURES_DIR, <repo>/figures."""
    if explicit is not None:
        return Path(explicit).expanduser().resolve()
    env = os.environ.get("COLLM_FIGURES_DIR")
    return Path(env).expanduser().resolve() if env else REPO_ROOT / "figures"


def cache_dir() -> Path:
    """Model cache (safetensors copy of the embedded GGUF model): $COLLM_CACHE_DIR or ~/.cache/collm."""
    env = os.environ.get("COLLM_CACHE_DIR")
    return Path(env).expanduser().resolve() if env else Path.home() / ".cache" / "collm"


DATASETS_ENV = "COLLM_DATASETS"  # your dataset folders known by name (os.pathsep-separated)


def dataset_folders() -> list[Path]:
    """The folders listed in $COLLM_DATASETS, resolved (collm_lib.data.own_datasets checks them)."""
    return [Path(p).expanduser().resolve() for p in os.environ.get(DATASETS_ENV, "").split(os.pathsep) if p]


def add_dataset_folder(folder: str | os.PathLike) -> None:
    """Append `folder` to $COLLM_DATASETS: its name works from then on, in this process and the ones it starts."""
    os.environ[DATASETS_ENV] = os.pathsep.join(p for p in (os.environ.get(DATASETS_ENV, ""), str(folder)) if p)


def quiet(progress: bool = True) -> bool:
    """Whether progress bars stay off: when the caller says so, or $COLLM_PROGRESS=0 (the main job sets it for
    the notebooks it executes, so committed notebooks hold results, not progress text)."""
    return not progress or os.environ.get("COLLM_PROGRESS") == "0"


def shown(path: str | os.PathLike) -> str:
    """`path` as a reader should see it in printed output and committed files: inside the repository relative to
    it (data/runs/..., figures/...), inside the work dir as "<work dir>/...", next to the repository relative to it
    (../shared/data), under the home folder as "~/..."; anything else as is."""
    path = Path(path).expanduser().resolve()
    if path.is_relative_to(REPO_ROOT):
        return str(path.relative_to(REPO_ROOT))
    if path.is_relative_to(work_dir()):
        return f"<work dir>/{path.relative_to(work_dir())}"
    beside = REPO_ROOT.parent  # not when that is the home folder or "/": every path would be "../..."
    if beside not in (Path.home(), Path(beside.anchor)) and path.is_relative_to(beside):
        return os.path.relpath(path, REPO_ROOT)
    if path.is_relative_to(Path.home()):
        return f"~/{path.relative_to(Path.home())}"
    return str(path)


def profile_name(explicit: str | None = None) -> str:
    """Run profile: the argument, else $COLLM_PROFILE, else "cpu" (a real run on a laptop)."""
    name = explicit or os.environ.get("COLLM_PROFILE") or "cpu"
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {PROFILES}")
    return name


def replaying() -> bool:
    """True while bundles are replayed into the notebooks ($COLLM_REPLAY=1, set by the runner's --replay): finished
    runs come from the bundles, and starting any run is an error (runs.begin)."""
    return os.environ.get("COLLM_REPLAY") == "1"


def device(explicit: str | None = None) -> torch.device:
    """GPU when present, CPU otherwise; $COLLM_DEVICE or the argument forces one (ValueError for one this machine
    lacks, naming where it came from)."""
    import torch

    name = explicit or os.environ.get("COLLM_DEVICE")
    if name:
        problem = device_problem(name)
        if problem:
            where = "device" if explicit else "$COLLM_DEVICE"
            fix = "" if explicit else "; unset it, or set it to a device this machine has"
            raise ValueError(f"{where} {name!r} is not {problem}{fix}")
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def device_problem(name: Any) -> str | None:
    """None when `name` is a device this machine has and runs use (cpu, an existing CUDA GPU, Apple's mps where
    present); else what to give instead. "meta" holds no data, and xpu and other back ends are not supported."""
    import torch

    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        return "a torch device such as 'cpu', 'cuda' or 'cuda:1'"
    if dev.type == "cuda" and (dev.index or 0) >= torch.cuda.device_count():
        return f"a device this machine has: it has {torch.cuda.device_count()} CUDA GPU(s); 'cpu' works everywhere"
    if dev.type == "mps" and not torch.backends.mps.is_available():
        return "a device this machine has: it has no Apple GPU (mps); 'cpu' works everywhere"
    if dev.type not in ("cpu", "cuda", "mps"):
        return f"a device runs can use: 'cpu', 'cuda' (or 'cuda:N'), 'mps' on Apple machines, not {dev.type!r}"
    return None


def lock_file(path: Path) -> Path:
    """`path` for a FileLock, refused when it is a folder or a link (a lock could never be taken, or would be taken
    on another file): NotWritable naming it and the fix."""
    if path.is_symlink() or path.exists() and not path.is_file():
        raise NotWritable(f"lock file {path} is a {'link' if path.is_symlink() else 'folder'}, not a file: remove it "
                          "(no process holds a lock there) and run again")
    return path


RESOLVED_PRECISIONS = ("bf16", "fp32")  # what "auto" resolves to: what runs, bundles and Runtime record
PRECISIONS = ("auto", *RESOLVED_PRECISIONS)
PRECISION_ENV = "COLLM_PRECISION"  # auto | bf16 | fp32: what LLMConfig.precision "auto" means on this machine


@functools.cache
def bf16_units() -> bool:
    """Whether this CPU has bf16 matrix units (AMX-BF16 or AVX-512 BF16), as torch's cpuinfo reads them. Without
    them torch still runs bf16, emulated: on an AVX2-only EPYC a 2048 x 2048 bf16 matmul ran at about 1 GFLOP/s against
    fp32's 130, scoring 6.5x and LoRA training 35x slower than fp32 (benchmarks/results/llm_cpu.json)."""
    import torch

    try:
        caps = torch.cpu.get_capabilities()
    except (AttributeError, RuntimeError):  # an older or other torch build: no way to tell, so no bf16
        return False
    return bool(caps.get("amx_bf16") or caps.get("avx512_bf16"))


def precision(dev: torch.device, requested: str | None = None) -> str:
    """"bf16" or "fp32" for the LLM on `dev`: `requested` (an LLMConfig.precision) unless "auto" or None, then
    $COLLM_PRECISION unless "auto" or unset, then auto: bf16 on a GPU and on a CPU with bf16 matrix units
    (bf16_units), fp32 elsewhere. bf16 means the GPU's scheme: frozen weights in bf16, trainable ones (LoRA, FECE,
    MF) in fp32, matmuls under bf16 autocast."""
    for source, value in (("precision", requested), (f"${PRECISION_ENV}", os.environ.get(PRECISION_ENV))):
        if value and value not in PRECISIONS:
            raise ValueError(f"{source} {value!r}: choose one of {PRECISIONS}")
        if value and value != "auto":
            return value
    if dev.type == "cuda":
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"  # pre-Ampere cards: fp32
    return "bf16" if bf16_units() else "fp32"


def precision_note(dev: torch.device, requested: str | None = None) -> str:
    """One line saying which precision the LLM runs in here and why (notebooks print it, results record it)."""
    chosen = precision(dev, requested)
    asked = requested if requested and requested != "auto" else os.environ.get(PRECISION_ENV)
    if asked and asked != "auto":
        why = "as requested" + ("" if requested and requested != "auto" else f" by ${PRECISION_ENV}")
        if chosen == "bf16" and dev.type == "cpu" and not bf16_units():
            why += "; this CPU has no bf16 matrix units, so bf16 is emulated and slower than fp32"
    elif dev.type == "cuda":
        why = "a GPU with bf16" if chosen == "bf16" else "a GPU without bf16 support"
    elif chosen == "bf16":
        why = "this CPU has bf16 matrix units, AMX-BF16 or AVX-512 BF16"
    else:
        why = "no bf16 matrix units on this CPU, AMX-BF16 or AVX-512 BF16: bf16 would be slower"
    return f"{chosen} ({why})"


@dataclass(frozen=True)
class Runtime:
    """Where the LLM runs and in which precision, resolved once (runtime()) when it loads and carried with it
    (llm.LLMBundle.runtime, model.CoLLM.runtime) to whatever trains or scores it: nothing downstream re-derives
    precision from the weights' dtype or the environment."""

    device: torch.device
    precision: str  # "bf16" or "fp32" (precision())
    note: str  # which, and why (precision_note)

    @property
    def dtype(self) -> torch.dtype:
        """The frozen weights' dtype and autocast's."""
        import torch

        return torch.bfloat16 if self.precision == "bf16" else torch.float32

    def autocast(self) -> torch.autocast:
        """bf16 autocast in bf16 (LoRA, FECE and the encoder, kept in fp32, run their matmuls in bf16 too); a no-op
        in fp32."""
        import torch

        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")

    @property
    def score_tolerance(self) -> dict[str, float]:
        """How far a row's logit may move when it is scored again in another batch (np.allclose's atol, rtol): in
        bf16 a logit of ~+-20 moves by ~1e-2 with the group of rows around it (scoring.py)."""
        return {"atol": 0.25, "rtol": 1e-2} if self.precision == "bf16" else {"atol": 1e-3, "rtol": 1e-3}


def runtime(dev: torch.device | str | None = None, requested: str | None = None) -> Runtime:
    """The Runtime of an LLM on `dev` (a device, or what device() makes of a name or None) at the `requested`
    precision (an LLMConfig.precision; precision() resolves "auto" and None)."""
    import torch

    dev = dev if isinstance(dev, torch.device) else device(dev)
    return Runtime(dev, precision(dev, requested), precision_note(dev, requested))


def set_seed(seed: int) -> int:
    """Seed python, numpy and torch (all devices); returns the seed so callers can record it."""
    random.seed(seed)
    import torch

    np.random.seed(seed)
    torch.manual_seed(seed)
    return seed


def distributed() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) as set by torchrun; (0, 1, 0) otherwise."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)))
