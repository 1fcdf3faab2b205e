"""Which GPU architectures a faiss wheel has kernels for, read from the CUDA fatbins inside its shared libraries
(no CUDA toolkit, no GPU): SASS (sm_XX, runs on that architecture family) and PTX (compute_XX, JIT-compiled by the
driver for newer cards).

    python scripts/faiss_archs.py faiss_gpu-1.15.1-...whl [faiss_gpu_cu12-...whl ...]   # or an installed .so

A card of compute capability X.Y runs a wheel that has SASS for X.y with y <= Y, or PTX of an architecture <= X.Y.
docs/gpu.md cites what this printed for the pinned wheel and the one it replaced
(benchmarks/results/faiss_gpu_archs.txt).
"""
from __future__ import annotations

import struct
import sys
import zipfile
from pathlib import Path

FATBIN_MAGIC = struct.pack("<I", 0xBA55ED50)  # a fatbin container: header (magic, version, size) then entries
KINDS = {1: "PTX", 2: "SASS"}


def fatbin_archs(data: bytes) -> set[tuple[str, int]]:
    """{(kind, arch)} of every entry of every fatbin container in `data` (a shared library's bytes)."""
    found, start = set(), data.find(FATBIN_MAGIC)
    while start >= 0:
        _, _, header_size, body = struct.unpack_from("<IHHQ", data, start)
        entry, end = start + header_size, min(start + header_size + body, len(data))
        while entry + 32 <= end:
            kind, _, entry_header, size = struct.unpack_from("<HHIQ", data, entry)
            arch = struct.unpack_from("<I", data, entry + 28)[0]
            if kind not in KINDS or entry_header < 32 or not 10 <= arch <= 200:
                break  # not an entry header: the container ends here
            found.add((KINDS[kind], arch))
            entry += entry_header + size
        start = data.find(FATBIN_MAGIC, max(end, start + 4))
    return found


def libraries(path: Path) -> dict[str, bytes]:
    """{name: bytes} of the shared libraries of a wheel, or of the one library given."""
    if path.suffix == ".whl":
        with zipfile.ZipFile(path) as wheel:
            return {n: wheel.read(n) for n in wheel.namelist() if ".so" in Path(n).name}
    return {path.name: path.read_bytes()}


def describe(path: Path) -> str:
    lines = [f"{path.name}:"]
    for name, data in sorted(libraries(path).items()):
        archs = fatbin_archs(data)
        if archs:
            sass = " ".join(f"sm_{a}" for k, a in sorted(archs) if k == "SASS")
            ptx = " ".join(f"compute_{a}" for k, a in sorted(archs) if k == "PTX")
            lines.append(f"  {name}: SASS {sass or 'none'}; PTX {ptx or 'none'}")
    if len(lines) == 1:
        lines.append("  no CUDA fatbin (a CPU build)")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    print("\n".join(describe(Path(p)) for p in sys.argv[1:]))
