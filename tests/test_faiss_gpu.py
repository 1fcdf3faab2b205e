"""A faiss build without kernels for the card aborts the process (a C++ assertion, no Python exception): the
probe asks in a subprocess first, and retrieval falls back to CPU Faiss, saying so and recording why."""
from __future__ import annotations

import importlib.util
import re
import struct
from pathlib import Path

import numpy as np
import pytest

faiss = pytest.importorskip("faiss", reason="pip install faiss-cpu to run the retrieval tests")

from collm_lib import faiss_gpu  # noqa: E402
from collm_lib.retrieval import IndexConfig, VectorIndex  # noqa: E402

H100 = ("NVIDIA H100 80GB HBM3", "9.0")
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def one_gpu(monkeypatch):
    """faiss sees one GPU of compute capability 9.0, and no probe has run in this process yet."""
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1)
    monkeypatch.setattr(faiss_gpu, "_card", lambda: H100)
    monkeypatch.setattr(faiss_gpu, "_RESULT", None)


def test_a_probe_that_aborts_falls_back_to_cpu_faiss_with_one_line_and_a_record(one_gpu, monkeypatch, capsys):
    monkeypatch.setattr(faiss_gpu, "PROBE", "import os; os.abort()")  # what a missing sm_90 kernel does
    vectors = np.random.default_rng(0).random((50, 8), dtype=np.float32)
    index = VectorIndex(IndexConfig(kind="flat", metric="l2")).build(vectors)
    again = VectorIndex(IndexConfig(kind="flat", metric="l2")).build(vectors)  # the probe ran once for the process
    said = capsys.readouterr().out
    line = ("faiss GPU probe failed on NVIDIA H100 80GB HBM3 (compute capability 9.0): the probe process died of "
            "SIGABRT")
    assert said.count(line) == 1 and "pip install 'faiss-gpu>=1.15.1,<2'" in said
    for made in (index, again):
        record = made.describe()
        assert made.gpu_index is None and record["backend"] == "cpu"
        assert any(note.startswith(line) for note in record["notes"])
    found = index.search(vectors[:3], 1)[1]
    assert found[:, 0].tolist() == [0, 1, 2] and index.last_backend == "cpu"
    with pytest.raises(RuntimeError, match=re.escape(f"use_gpu=True, but {line}")) as refused:
        VectorIndex(IndexConfig(kind="flat", use_gpu=True)).build(vectors)
    assert "retrieval uses CPU Faiss" not in str(refused.value)


def test_the_probe_tells_an_error_from_a_crash_and_a_hang(one_gpu, monkeypatch):
    monkeypatch.setattr(faiss_gpu, "PROBE", "raise SystemExit('no CUDA device')")
    assert faiss_gpu.run_probe() == faiss_gpu.Probe(False, *H100, "exit status 1: no CUDA device")
    monkeypatch.setattr(faiss_gpu, "PROBE", "import time; time.sleep(30)")
    assert faiss_gpu.run_probe(timeout=1).detail == "no answer within 1 s"
    monkeypatch.setattr(faiss_gpu, "PROBE", "pass")
    assert faiss_gpu.run_probe().ok


def _fatbin(entries: list[tuple[int, int]]) -> bytes:
    """A fatbin container as nvcc lays it out: header (magic, version, header size, body size), then per entry a
    header (kind, version, header size, payload size, ..., arch at byte 28) and its payload."""
    body = b"".join(struct.pack("<HHIQ", kind, 1, 64, 16) + bytes(12) + struct.pack("<I", arch) + bytes(32)
                    + bytes(16) for kind, arch in entries)
    return struct.pack("<IHHQ", 0xBA55ED50, 1, 16, len(body)) + body


def test_the_architecture_script_reads_sass_and_ptx_from_fatbins(tmp_path):
    """What benchmarks/results/faiss_gpu_archs.txt was printed by: two containers in one library, among other bytes."""
    spec = importlib.util.spec_from_file_location("faiss_archs", ROOT / "scripts" / "faiss_archs.py")
    archs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(archs)
    library = b"\x7fELF" + bytes(100) + _fatbin([(2, 70), (2, 80)]) + bytes(50) + _fatbin([(2, 90), (1, 90)])
    assert archs.fatbin_archs(library) == {("SASS", 70), ("SASS", 80), ("SASS", 90), ("PTX", 90)}
    (tmp_path / "libfaiss.so").write_bytes(library)
    assert archs.describe(tmp_path / "libfaiss.so").endswith("libfaiss.so: SASS sm_70 sm_80 sm_90; PTX compute_90")
    (tmp_path / "cpu.so").write_bytes(bytes(200))
    assert archs.describe(tmp_path / "cpu.so").endswith("no CUDA fatbin (a CPU build)")
    recorded = (ROOT / "benchmarks" / "results" / "faiss_gpu_archs.txt").read_text()
    assert "faiss/libfaiss.so: SASS sm_70 sm_75 sm_80 sm_86 sm_89 sm_90; PTX compute_90" in recorded
