"""Content-addressed blob store on the local filesystem.

A blob's name is the SHA-256 of its bytes, so writes are idempotent and a blob never
changes once visible. Writes go to a temp file that is fsynced and renamed into
place, so a crash leaves either the whole blob or nothing under its name.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

_DIGEST_RE = re.compile(r"^[0-9a-f]{64}$")


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @staticmethod
    def digest_of(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()

    @staticmethod
    def validate_digest(digest: str) -> str:
        # The digest becomes a path: anything but 64 lowercase hex is refused outright.
        if not isinstance(digest, str) or not _DIGEST_RE.match(digest):
            raise ValueError(f"not a sha256 hex digest: {digest!r}")
        return digest

    def path(self, digest: str) -> Path:
        digest = self.validate_digest(digest)
        # Two-level fan-out keeps directories small.
        return self.root / digest[:2] / digest

    def exists(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def get(self, digest: str) -> bytes:
        """The blob's bytes; FileNotFoundError if absent."""
        return self.path(digest).read_bytes()

    def put(self, data: bytes) -> str:
        digest = self.digest_of(data)
        target = self.path(digest)
        if target.is_file():
            return digest
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o444)
            os.replace(tmp, target)  # atomic; a concurrent put of the same bytes is harmless
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_dir(target.parent)
        return digest


def _fsync_dir(path: Path) -> None:
    # Makes the rename itself durable; not every platform can open a directory.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
