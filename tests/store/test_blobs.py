from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from smcp.store.blobs import BlobStore


def test_put_get_idempotent(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "blobs")
    data = b"hello bundle"
    digest = blobs.put(data)
    assert digest == hashlib.sha256(data).hexdigest()
    assert blobs.exists(digest) and blobs.get(digest) == data
    assert blobs.path(digest).parent.name == digest[:2]
    assert blobs.put(data) == digest
    # No temp files left behind.
    assert [p.name for p in blobs.path(digest).parent.iterdir()] == [digest]


def test_missing_blob(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    digest = "0" * 64
    assert not blobs.exists(digest)
    with pytest.raises(FileNotFoundError):
        blobs.get(digest)


@pytest.mark.parametrize("bad", ["../../etc/passwd", "A" * 64, "a" * 63, "a" * 65, "", "/" + "a" * 63, "g" * 64])
def test_digest_validation_blocks_path_injection(tmp_path: Path, bad: str) -> None:
    blobs = BlobStore(tmp_path)
    for op in (blobs.path, blobs.exists, blobs.get):
        with pytest.raises(ValueError):
            op(bad)
