"""`collm doctor`: what this machine will do with a profile, before anyone waits an hour for it.

    collm doctor [--profile cpu] [--json]

Python and torch, the device and its precision (bf16 units on the CPU, or the GPU's), the faiss build and, on a
GPU, the probe that tells whether its kernels run on the card (faiss_gpu.py), memory and disk beside what the
profile needs, the embedded model, the data folders, and the main job's estimated time: the measured time on this
project's reference CPU scaled by a 1-second matmul benchmark of this machine. Exit status 1 when the profile
cannot run here (each reason printed).
"""
from __future__ import annotations

import importlib.util
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from . import faiss_gpu, settings
from .data import DATASETS
from .io import cpu_name

# The cpu main job from an empty work dir on the reference CPU (README; docs/profiles.md): a 2-core AMD EPYC
# (Zen 4, AVX512-BF16) in bf16, 2026-12-07; its bf16 rate is matmul_gflops' on a quiet machine that day (430).
# In fp32 the reference is the project's AVX2-only 2-core EPYC (fp32 matmuls at about 130 GFLOP/s), where the job
# trains 2.6x and scores 3.8x slower than the bf16 one (README): about 3.2x over the whole job, derived, not
# measured as one job at these sizes.
REFERENCE = {"cpu": "AMD EPYC (Zen 4), 2 cores, bf16", "main_job_seconds": {"cpu": 3590},
             "gflops": {"bf16": 430.0, "fp32": 130.0}}
FP32_FACTOR = 3.2
NEEDS = {  # what a profile's main job needs: free disk in the work dir (runs, processed data, the model's copy)
    "smoke": {"disk_gib": 2, "memory_gib": 4}, "cpu": {"disk_gib": 4, "memory_gib": 8},
    "gpu": {"disk_gib": 8, "memory_gib": 16}}
REQUIRED_DATA = ("ml-1m",)  # notebooks 02-06 train on it; the other datasets are prepared when present


def matmul_gflops(dtype: torch.dtype, size: int = 1024, seconds: float = 0.5) -> float:
    """This machine's rate for a size x size matmul in `dtype` (best of repeated timings, about `seconds` long)."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b  # warm-up: first call allocates and picks the kernel
    best, end = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def _faiss() -> dict[str, Any]:
    if importlib.util.find_spec("faiss") is None:
        return {"installed": False, "build": None}
    import faiss

    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    out = {"installed": True, "version": faiss.__version__,
           "build": "GPU" if hasattr(faiss, "StandardGpuResources") else "CPU", "gpus": gpus}
    if gpus:
        out["probe"] = faiss_gpu.gpu_probe().record()
    return out


def _estimate(profile: str, device: torch.device, precision: str) -> dict[str, Any]:
    """The main job's seconds on this machine, or why there is no estimate."""
    reference = REFERENCE["main_job_seconds"].get(profile)
    if device.type != "cpu" or reference is None:
        return {"seconds": None, "why": f"no measured {profile} main job on a {device.type.upper()} to scale from"}
    here = matmul_gflops(torch.bfloat16 if precision == "bf16" else torch.float32)
    # fp32 here: the reference's fp32 time (FP32_FACTOR), scaled by fp32 rates; bf16: by bf16 rates
    factor = FP32_FACTOR if precision == "fp32" else 1.0
    seconds = reference * factor * REFERENCE["gflops"][precision] / here
    return {"seconds": round(seconds), "matmul_gflops": round(here, 1), "precision": precision,
            "basis": f"{reference} s measured on the reference CPU ({REFERENCE['cpu']})"
                     + (f", {FP32_FACTOR}x for fp32 on an AVX2 EPYC" if precision == "fp32" else "")
                     + ", scaled by this machine's matmul rate"}


def report(profile: str | None = None, data_dir: str | None = None) -> dict[str, Any]:
    """Everything `collm doctor` shows, with "problems": why `profile` cannot run here ([] when it can)."""
    profile = settings.profile_name(profile)
    device, problems = settings.device(), []
    precision = settings.precision(device)
    cuda = {"available": torch.cuda.is_available(), "build": torch.version.cuda}
    if cuda["available"]:
        free, total = torch.cuda.mem_get_info(0)
        major, minor = torch.cuda.get_device_capability(0)
        cuda |= {"card": torch.cuda.get_device_name(0), "capability": f"{major}.{minor}",
                 "memory_free_gib": round(free / 2**30, 1), "memory_gib": round(total / 2**30, 1),
                 "bf16": torch.cuda.is_bf16_supported()}
    elif profile == "gpu":
        problems.append("the gpu profile needs a CUDA GPU, and torch sees none: use --profile cpu")
    faiss = _faiss()
    if not faiss["installed"]:
        problems.append('faiss is not installed: pip install -e ".[faiss]" (CPU) or ".[gpu]"')
    needs = NEEDS[profile]
    work = settings.work_dir()
    existing = next(p for p in (work, *work.parents) if p.exists())
    disk = shutil.disk_usage(existing).free / 2**30
    if disk < needs["disk_gib"]:
        problems.append(f"{disk:.1f} GiB free in {existing}, the {profile} main job needs {needs['disk_gib']} GiB: "
                        "free some or set $COLLM_WORK_DIR")
    memory = _memory_gib()
    if memory is not None and memory < needs["memory_gib"]:
        problems.append(f"{memory:.1f} GiB of memory available, the {profile} main job needs {needs['memory_gib']}")
    from .embedded import gguf_path

    try:
        model = str(gguf_path())
    except FileNotFoundError as err:
        model = None
        problems.append(str(err))
    root = settings.data_dir(data_dir)
    data = {name: (root / info.folder).is_dir() for name, info in DATASETS.items()}
    problems += [f"no raw data for {name} in {root / DATASETS[name].folder}: see docs/protocol.md (data) or set "
                 "$COLLM_DATA_DIR" for name in REQUIRED_DATA if not data[name]]
    return {
        "profile": profile, "python": platform.python_version(), "torch": torch.__version__,
        "cpu": {"name": cpu_name(), "cores": os.cpu_count(), "bf16_units": settings.bf16_units()},
        "device": str(device), "precision": precision, "cuda": cuda, "faiss": faiss,
        "memory_available_gib": None if memory is None else round(memory, 1),
        "disk_free_gib": round(disk, 1), "needs": needs, "embedded_model": model,
        "data_dir": str(root), "data": data, "estimate": _estimate(profile, device, precision),
        "problems": problems,
    }


def lines(found: dict[str, Any]) -> list[str]:
    """The report as a reader sees it."""
    cpu, cuda, faiss, estimate = found["cpu"], found["cuda"], found["faiss"], found["estimate"]
    out = [f"profile {found['profile']}: python {found['python']}, torch {found['torch']} (CUDA build "
           f"{cuda['build'] or 'none'})",
           f"cpu: {cpu['name']}, {cpu['cores']} cores, bf16 units {'yes' if cpu['bf16_units'] else 'no'}",
           f"device: {found['device']}, precision {found['precision']}"
           + (f"; GPU {cuda['card']} (compute capability {cuda['capability']}), {cuda['memory_free_gib']} of "
              f"{cuda['memory_gib']} GiB free" if cuda["available"] else "")]
    if faiss["installed"]:
        probe = faiss.get("probe")
        out.append(f"faiss {faiss['version']} ({faiss['build']} build, {faiss['gpus']} GPU(s))"
                   + (f"; GPU probe: {'ok' if probe['ok'] else probe['detail']}" if probe else ""))
    out.append(f"memory available {found['memory_available_gib']} GiB, disk free {found['disk_free_gib']} GiB "
               f"(the {found['profile']} main job needs {found['needs']['memory_gib']} and "
               f"{found['needs']['disk_gib']} GiB)")
    out.append(f"embedded model: {found['embedded_model'] or 'missing'}")
    out.append(f"data in {found['data_dir']}: " + ", ".join(f"{n} {'found' if ok else 'missing'}"
                                                            for n, ok in found["data"].items()))
    if estimate["seconds"] is not None:
        out.append(f"main job estimate: about {estimate['seconds'] / 60:.0f} min ({estimate['basis']}; this "
                   f"machine's {estimate['precision']} matmul: {estimate['matmul_gflops']} GFLOP/s)")
    else:
        out.append(f"main job estimate: none ({estimate['why']})")
    out += [f"CANNOT RUN: {p}" for p in found["problems"]] or ["ready: the profile can run here"]
    return out
