"""Persistence behind small repository classes: SQL via SQLAlchemy async, bundles as blobs.

    store = await Store.open(settings)
    principal = await store.api_keys.authenticate(token)
    revision = await store.servers.live_revision(tenant, server)
    await store.close()
"""

from __future__ import annotations

from pathlib import Path

from smcp.config import Settings
from smcp.store.api_keys import ApiKeyRepo
from smcp.store.blobs import BlobStore
from smcp.store.db import Database, create_engine, migrate
from smcp.store.identity import OAuthRepo, UserRepo
from smcp.store.oidc import OidcRepo
from smcp.store.secrets import SecretRepo
from smcp.store.sessions import EndedSessionRepo
from smcp.store.servers import ServerRepo
from smcp.store.tenants import TenantRepo


class Store:
    def __init__(self, db: Database, blobs: BlobStore, *, uid_base: int) -> None:
        self.db = db
        self.blobs = blobs
        self.tenants = TenantRepo(db, uid_base=uid_base)
        self.api_keys = ApiKeyRepo(db)
        self.servers = ServerRepo(db)
        self.secrets = SecretRepo(db)
        self.users = UserRepo(db)
        self.oauth = OAuthRepo(db)
        self.oidc = OidcRepo(db)
        self.ended_sessions = EndedSessionRepo(db)

    @classmethod
    async def open(cls, settings: Settings) -> Store:
        """Create data directories, connect, and bring the schema to head."""
        data_dir = Path(settings.data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        blob_root = data_dir / "blobs"
        blob_root.mkdir(parents=True, exist_ok=True)
        db = Database(create_engine(settings.db_url))
        try:
            await migrate(db)
        except BaseException:
            await db.dispose()
            raise
        return cls(db, BlobStore(blob_root), uid_base=settings.sandbox_uid_base)

    async def close(self) -> None:
        await self.api_keys.drain()
        await self.db.dispose()


__all__ = ["ApiKeyRepo", "BlobStore", "OAuthRepo", "OidcRepo", "ServerRepo", "Store", "TenantRepo", "UserRepo"]
