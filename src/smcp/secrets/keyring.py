"""The key ring: versioned key-encryption keys (KEKs), one of them active.

    {"format": 1, "active": 2, "keys": {"1": "<base64, 32 bytes>", "2": "…"}}

New secrets are wrapped with the active KEK; older KEKs stay in the ring only until
every data key they wrap has been re-wrapped (see SecretVault.rotate). The ring
comes from settings.secrets_keyring (inline JSON or one bare base64 key: read-only
here) or from a file (default data_dir/keyring.json), created 0600 on first use and
refused if anyone but its owner may read it. File updates are atomic (write a
sibling, fsync, rename), so a crash leaves the old ring or the new one, never half.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import stat
from pathlib import Path

from smcp.config import Settings
from smcp.domain import Conflict, SmcpError
from smcp.secrets.crypto import KEY_BYTES


class KeyRingError(SmcpError):
    code = "keyring_error"
    status = 500


def _decode_key(text: str, where: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise KeyRingError(f"{where}: a key is not valid base64") from None
    if len(key) != KEY_BYTES:
        raise KeyRingError(f"{where}: a key must be {KEY_BYTES} bytes, got {len(key)}")
    return key


def _parse(text: str, where: str) -> tuple[int, dict[int, bytes]]:
    text = text.strip()
    if not text.startswith("{"):  # one bare key: version 1
        return 1, {1: _decode_key(text, where)}
    try:
        raw = json.loads(text)
        active = int(raw["active"])
        keys = {int(v): _decode_key(k, where) for v, k in dict(raw["keys"]).items()}
    except KeyRingError:
        raise
    except (ValueError, KeyError, TypeError):
        raise KeyRingError(f"{where}: expected {{\"active\": N, \"keys\": {{\"N\": \"<base64>\"}}}}") from None
    if active not in keys or any(v < 1 for v in keys):
        raise KeyRingError(f"{where}: the active version must be one of the keys (versions start at 1)")
    return active, keys


class KeyRing:
    def __init__(self, active: int, keys: dict[int, bytes], *, path: Path | None = None, source: str) -> None:
        self._active = active
        self._keys = dict(keys)
        self._path = path
        self.source = source

    # -- opening ------------------------------------------------------------------------
    @classmethod
    def from_settings(cls, settings: Settings) -> KeyRing:
        if settings.secrets_keyring is not None:
            active, keys = _parse(settings.secrets_keyring.get_secret_value(), "SMCP_SECRETS_KEYRING")
            return cls(active, keys, source="SMCP_SECRETS_KEYRING")
        path = settings.secrets_keyring_file or (Path(settings.data_dir) / "keyring.json")
        return cls.open_file(path)

    @classmethod
    def open_file(cls, path: Path) -> KeyRing:
        path = Path(path)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            ring = cls(1, {1: os.urandom(KEY_BYTES)}, path=path, source=str(path))
            try:
                ring._write(exclusive=True)
            except FileExistsError:  # another process created it first: use theirs
                return cls.open_file(path)
            return ring
        active, keys = cls._read(path)
        return cls(active, keys, path=path, source=str(path))

    @staticmethod
    def _read(path: Path) -> tuple[int, dict[int, bytes]]:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise KeyRingError(f"{path} is not a regular file")
            if st.st_mode & 0o077:
                raise KeyRingError(
                    f"{path} may be read by others (mode {stat.S_IMODE(st.st_mode):o}); run chmod 600 on it"
                )
            with os.fdopen(fd, "r", closefd=False) as f:
                text = f.read()
        finally:
            os.close(fd)
        return _parse(text, str(path))

    def _write(self, *, exclusive: bool = False) -> None:
        assert self._path is not None
        body = json.dumps(
            {
                "format": 1,
                "active": self._active,
                "keys": {str(v): base64.b64encode(k).decode() for v, k in sorted(self._keys.items())},
            },
            indent=2,
        ).encode()
        target = self._path if exclusive else self._path.with_name(f".{self._path.name}.tmp")
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | (os.O_EXCL if exclusive else os.O_TRUNC)
        fd = os.open(target, flags, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, body + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        if not exclusive:
            os.replace(target, self._path)

    # -- use ----------------------------------------------------------------------------
    @property
    def active_version(self) -> int:
        return self._active

    @property
    def versions(self) -> list[int]:
        return sorted(self._keys)

    @property
    def writable(self) -> bool:
        return self._path is not None

    def active(self) -> tuple[int, bytes]:
        return self._active, self._keys[self._active]

    def get(self, version: int) -> bytes | None:
        key = self._keys.get(version)
        if key is None and self._path is not None:
            # Another process (or a restart mid-rotation) may have changed the file.
            self.reload()
            key = self._keys.get(version)
        return key

    def reload(self) -> None:
        if self._path is not None and self._path.exists():
            self._active, self._keys = self._read(self._path)

    # -- rotation -----------------------------------------------------------------------
    def add_version(self) -> int:
        """Generate a new KEK, make it active and persist the ring; returns its version."""
        if self._path is None:
            raise Conflict(
                f"the key ring comes from {self.source} and cannot be changed here: add a new key to it, "
                "make it active, restart, then run `smcp keys rotate` to re-wrap the data keys"
            )
        version = max(self._keys) + 1
        self._keys[version] = os.urandom(KEY_BYTES)
        self._active = version
        self._write()
        return version

    def retire(self, versions: list[int]) -> list[int]:
        """Drop KEKs no data key needs any more (never the active one); returns those dropped."""
        doomed = [v for v in versions if v in self._keys and v != self._active]
        if doomed and self._path is not None:
            for v in doomed:
                del self._keys[v]
            self._write()
            return doomed
        return []
