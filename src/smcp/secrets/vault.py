"""The secret service: set, list, delete, resolve for an instance start, rotate the KEK.

Values go in once and come out only through `resolve`, which the runtime calls when
it starts an instance; nothing in the management API ever returns one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from smcp.domain import InvalidSpec, NotFound, SmcpError
from smcp.domain.models import SecretInfo
from smcp.domain.spec import ENV_NAME_RE
from smcp.secrets import crypto
from smcp.secrets.keyring import KeyRing
from smcp.store.secrets import Sealed, SealedSecret, Sealer

log = logging.getLogger(__name__)


class SecretTooLarge(SmcpError):
    code = "secret_too_large"
    status = 413


class InvalidSecret(SmcpError):
    code = "invalid_secret"
    status = 422


class Repo(Protocol):
    async def put(self, tenant: str, name: str, seal: Sealer) -> SecretInfo: ...
    async def list(self, tenant: str) -> list[SecretInfo]: ...
    async def delete(self, tenant: str, name: str) -> None: ...
    async def existing(self, tenant: str, names: Iterable[str]) -> set[str]: ...
    async def get_many(self, tenant: str, names: Iterable[str]) -> dict[str, SealedSecret]: ...
    async def get(self, secret_id: str) -> SealedSecret | None: ...
    async def not_wrapped_by(self, kek_version: int, *, limit: int) -> list[SealedSecret]: ...
    async def rewrap(self, secret_id: str, *, old_kek_version: int, wrapped_key: bytes, kek_version: int) -> bool: ...
    async def kek_usage(self) -> dict[int, int]: ...


class WrappedElsewhere(Protocol):
    """Data keys the ring's KEKs wrap outside the secrets table (the OAuth signing keys).

    Rotation re-wraps them with the secrets' data keys and counts them before it
    retires a KEK, so a KEK is never dropped while anything still needs it.
    """

    async def rewrap(self, keyring: KeyRing, target: int) -> int:
        """Re-wrap every data key not under KEK `target`; returns how many were."""
        ...

    async def kek_usage(self) -> dict[int, int]: ...


@dataclass
class RotationReport:
    active: int
    added: int | None
    rewrapped: int
    retired: list[int] = field(default_factory=list)
    versions: list[int] = field(default_factory=list)


@dataclass
class KeyRingStatus:
    source: str
    writable: bool
    active: int
    versions: list[int]
    data_keys: dict[int, int]


def check_name(name: str) -> None:
    if not ENV_NAME_RE.match(name):
        raise InvalidSecret(f"secret name {name!r} must be 1-128 of A-Z, a-z, 0-9 and '_', not starting with a digit")


class SecretVault:
    def __init__(
        self,
        repo: Repo,
        keyring: KeyRing,
        *,
        max_value_bytes: int = 64 * 1024,
        also: Sequence[WrappedElsewhere] = (),
    ) -> None:
        self._repo = repo
        self.keyring = keyring
        self._max = max_value_bytes
        self._also = tuple(also)
        # Held while sealing+storing a value and while rotation adds or retires a KEK,
        # so no value is ever sealed under a KEK that is being retired. Reads never take it.
        self._ring_lock = asyncio.Lock()
        self._rotation = asyncio.Lock()

    # -- management ---------------------------------------------------------------------
    async def set(self, tenant: str, name: str, value: bytes) -> SecretInfo:
        check_name(name)
        if len(value) > self._max:
            raise SecretTooLarge(f"secret value is {len(value)} bytes; the limit is {self._max}")
        if not value:
            raise InvalidSecret("secret value is empty")

        def seal(version: int) -> Sealed:
            kek_version, kek = self.keyring.active()
            env = crypto.seal(value, tenant=tenant, name=name, version=version, kek=kek, kek_version=kek_version)
            return Sealed(ciphertext=env.ciphertext, wrapped_key=env.wrapped_key, kek_version=env.kek_version)

        async with self._ring_lock:
            return await self._repo.put(tenant, name, seal)

    async def list(self, tenant: str) -> list[SecretInfo]:
        return await self._repo.list(tenant)

    async def delete(self, tenant: str, name: str) -> None:
        check_name(name)
        await self._repo.delete(tenant, name)

    async def require(self, tenant: str, names: Iterable[str]) -> None:
        """InvalidSpec (422) naming every secret of `names` the tenant has not set."""
        wanted = list(dict.fromkeys(names))
        missing = [n for n in wanted if n not in await self._repo.existing(tenant, wanted)]
        if missing:
            listed = ", ".join(repr(n) for n in missing)
            raise InvalidSpec(
                f"smcp.toml references secret{'s' if len(missing) > 1 else ''} {listed} that tenant {tenant!r} "
                f"has not set; set {'them' if len(missing) > 1 else 'it'} first with "
                f"`smcp secret set {missing[0]} --tenant {tenant}`",
                detail={"missing": missing},
            )

    # -- delivery -----------------------------------------------------------------------
    async def resolve(self, tenant: str, names: Iterable[str]) -> dict[str, bytes]:
        """Decrypted current values of `names` (for an instance start); NotFound if one is gone."""
        wanted = list(dict.fromkeys(names))
        rows = await self._repo.get_many(tenant, wanted)
        missing = [n for n in wanted if n not in rows]
        if missing:
            raise NotFound(f"secret {missing[0]!r} of tenant {tenant!r} no longer exists (set it again or redeploy)")
        return {name: await self._open(rows[name]) for name in wanted}

    async def _open(self, row: SealedSecret) -> bytes:
        # A rotation may retire the KEK between our read of the row and the unwrap; by
        # then the row has been re-wrapped, so read it again (bounded: rotations are rare).
        for _ in range(3):
            kek = self.keyring.get(row.kek_version)
            if kek is not None:
                return crypto.open_value(
                    row.ciphertext,
                    row.wrapped_key,
                    tenant=row.tenant,
                    name=row.name,
                    version=row.version,
                    kek=kek,
                    kek_version=row.kek_version,
                )
            fresh = await self._repo.get(row.id)
            if fresh is None:
                raise NotFound(f"secret {row.name!r} of tenant {row.tenant!r} no longer exists")
            row = fresh
        raise crypto.SecretUnreadable(f"secret {row.name!r}: its key-encryption key v{row.kek_version} is not in the key ring")

    # -- key rotation -------------------------------------------------------------------
    async def rotate(self, *, new_key: bool = True, batch: int = 100) -> RotationReport:
        """Make a new KEK active and re-wrap every data key under it, with no pause for readers.

        Order: (1) add the new KEK and make it active, so new values use it; (2) re-wrap
        old rows in batches, each row a compare-and-swap on its KEK version, then the
        data keys held elsewhere (`also`: the signing keys); (3) drop the old KEKs once
        nothing needs them. Until (3), both KEKs decrypt. With a read-only (inline)
        ring, (1) is the operator's edit and (3) is theirs too.
        """
        async with self._rotation:
            added = None
            async with self._ring_lock:
                if new_key and self.keyring.writable:
                    added = self.keyring.add_version()
                else:
                    self.keyring.reload()
                target, kek = self.keyring.active()
                if new_key and not self.keyring.writable and not await self._needs_rewrap(target):
                    # Nothing to re-wrap and no way to add a key here: say what to do instead.
                    self.keyring.add_version()  # raises Conflict with the operator's steps
            rewrapped = 0
            while True:
                rows = await self._repo.not_wrapped_by(target, limit=batch)
                if not rows:
                    break
                progressed = False
                for row in rows:
                    old = self.keyring.get(row.kek_version)
                    if old is None:
                        raise crypto.SecretUnreadable(
                            f"secret {row.name!r} of tenant {row.tenant!r} is wrapped by KEK v{row.kek_version}, "
                            "which is not in the key ring; restore that key before rotating"
                        )
                    wrapped = crypto.rewrap(
                        row.wrapped_key,
                        tenant=row.tenant,
                        name=row.name,
                        version=row.version,
                        old_kek=old,
                        old_kek_version=row.kek_version,
                        new_kek=kek,
                        new_kek_version=target,
                    )
                    if await self._repo.rewrap(
                        row.id, old_kek_version=row.kek_version, wrapped_key=wrapped, kek_version=target
                    ):
                        rewrapped += 1
                        progressed = True
                    await asyncio.sleep(0)  # let readers and the gateway run between rows
                if not progressed:
                    await asyncio.sleep(0.01)  # rows changed under us (set/delete); look again
            for other in self._also:
                rewrapped += await other.rewrap(self.keyring, target)
            async with self._ring_lock:
                usage = await self._kek_usage()
                unused = [v for v in self.keyring.versions if v != target and not usage.get(v)]
                retired = self.keyring.retire(unused)
            log.info("secrets: KEK v%d active; re-wrapped %d data keys; retired %s", target, rewrapped, retired)
            return RotationReport(
                active=target, added=added, rewrapped=rewrapped, retired=retired, versions=self.keyring.versions
            )

    async def status(self) -> KeyRingStatus:
        return KeyRingStatus(
            source=self.keyring.source,
            writable=self.keyring.writable,
            active=self.keyring.active_version,
            versions=self.keyring.versions,
            data_keys=await self._kek_usage(),
        )

    async def _kek_usage(self) -> dict[int, int]:
        usage = dict(await self._repo.kek_usage())
        for other in self._also:
            for version, count in (await other.kek_usage()).items():
                usage[version] = usage.get(version, 0) + count
        return usage

    async def _needs_rewrap(self, target: int) -> bool:
        if await self._repo.not_wrapped_by(target, limit=1):
            return True
        return any(v != target for v in await self._kek_usage())
