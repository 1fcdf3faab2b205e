"""Whether faiss's GPU build runs on this machine's card, asked once per process before the first GPU index.

A faiss wheel without kernels for the card (faiss-gpu-cu12 1.13 has sm_70 and sm_80 only: an H100 aborts in
GpuIndexFlatL2.add with "CUDA error 209 no kernel image is available") fails with a C++ assertion, which kills the
process: no Python exception to catch, and the gpu main job would die in notebook 05 after an hour of training.
So a subprocess builds a 100-vector GPU flat index, adds and searches first; when it dies or errors, retrieval
uses CPU Faiss and says so once, naming the card, its compute capability and the fix (docs/gpu.md).
"""
from __future__ import annotations

import signal
import subprocess
import sys
from dataclasses import asdict, dataclass
from typing import Any

from . import logs

# What the probe runs: the calls that abort without kernels for the card (resources, a flat index, add, search)
PROBE = ("import faiss, numpy as np\n"
         "x = np.random.default_rng(0).random((100, 8), dtype='float32')\n"
         "index = faiss.GpuIndexFlatL2(faiss.StandardGpuResources(), 8)\n"
         "index.add(x)\n"
         "distances, found = index.search(x[:5], 3)\n"
         "assert (found[:, 0] == np.arange(5)).all(), found\n")
TIMEOUT = 180  # seconds: CUDA initialisation and a JIT of PTX kernels can take a minute on a new card
INSTALL = "pip uninstall -y faiss-gpu-cu12 faiss-cpu && pip install 'faiss-gpu>=1.15.1,<2'"


@dataclass(frozen=True)
class Probe:
    ok: bool
    card: str | None  # torch's name for GPU 0
    capability: str | None  # "9.0"
    detail: str  # "ok", or how the probe died

    def message(self, fallback: bool = True) -> str:
        """The one line a failed probe prints and records (`fallback`: retrieval goes on with CPU Faiss)."""
        where = f"{self.card or 'this GPU'} (compute capability {self.capability or 'unknown'})"
        then = "; retrieval uses CPU Faiss" if fallback else ""
        return (f"faiss GPU probe failed on {where}: {self.detail}{then}. For GPU retrieval install the official "
                f"build, with kernels for sm_70 to sm_90: {INSTALL} (docs/gpu.md)")

    def record(self) -> dict[str, Any]:
        return asdict(self)


_RESULT: Probe | None = None  # one probe per process


def _card() -> tuple[str | None, str | None]:
    import torch  # the card as torch names it: faiss has no device-name call

    if not torch.cuda.is_available():
        return None, None
    major, minor = torch.cuda.get_device_capability(0)
    return torch.cuda.get_device_name(0), f"{major}.{minor}"


def run_probe(timeout: float = TIMEOUT) -> Probe:
    """Run PROBE in a subprocess: ok when it exits 0; otherwise how it died (a signal, an error's last line)."""
    card, capability = _card()
    try:
        done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return Probe(False, card, capability, f"no answer within {timeout:.0f} s")
    if done.returncode == 0:
        return Probe(True, card, capability, "ok")
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    last = lines[-1].strip()[:300] if lines else "no message"
    if done.returncode < 0:
        name = signal.Signals(-done.returncode).name
        return Probe(False, card, capability, f"the probe process died of {name} (a C++ abort: a faiss build "
                                              f"without kernels for this card?); last line: {last}")
    return Probe(False, card, capability, f"exit status {done.returncode}: {last}")


def gpu_probe() -> Probe:
    """This process's probe, run on first use and remembered; a failure is said once (logs.say)."""
    global _RESULT
    if _RESULT is None:
        _RESULT = run_probe()
        if not _RESULT.ok:
            logs.say(_RESULT.message())
    return _RESULT
