"""An in-process node for the identity tests: store, authorization server, management API
and gateway (with a runtime double: these tests never start an instance)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from oauth_helpers import BASE, PASSWORD, REDIRECT, make_spec
from starlette.applications import Starlette
from starlette.routing import Mount

from smcp.app import _authorization_server
from smcp.auth import passwords
from smcp.auth.cache import CachedAuthenticator
from smcp.auth.registration import client_from_metadata
from smcp.auth.server import AuthorizationServer
from smcp.config import Settings
from smcp.domain import Principal
from smcp.control import create_control_app
from smcp.gateway.asgi import header_map, respond_json
from smcp.gateway.authn import Authenticator
from smcp.store import Store

ADMIN = "smcpadm_identity_tests"


class NoRuntime:
    """Runtime double: nothing runs; the control plane's reads see no instances or logs."""

    async def prepare(self, *args: Any, **kwargs: Any) -> str | None:
        return None

    async def connect(self, revision: Any, *, session: str) -> Any:
        raise RuntimeError("no instances in identity tests")

    def instances(self, tenant: str, server: str | None = None) -> list[Any]:
        return []

    def logs(self, tenant: str, server: str, *, limit: int = 200) -> list[Any]:
        return []

    async def stop_server(self, tenant: str, server: str) -> None:
        pass

    async def aclose(self) -> None:
        pass


class AuthnOnlyGateway:
    """The gateway's authentication step alone, called exactly as gateway/streamable.py calls
    it; a request that passes gets its principal back as JSON. (The real gateway, with real
    instances, is exercised by tests/auth/test_oauth_e2e.py against a running node.)"""

    def __init__(self, settings: Settings, authn: Authenticator) -> None:
        self._s = settings
        self._authn = authn

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        _, _, tenant, server, _ = scope["path"].split("/")
        resource_url = self._s.server_url(tenant, server)
        principal = await self._authn.authenticate(header_map(scope), resource_url=resource_url)
        if not isinstance(principal, Principal):
            await respond_json(send, principal.status, principal.body, headers=principal.headers)
            return
        await respond_json(
            send,
            200,
            {"kind": principal.kind, "subject": principal.subject, "tenant": principal.tenant, "role": principal.role,
             "scopes": sorted(principal.scopes), "client_id": principal.client_id},
        )


@dataclass
class Node:
    settings: Settings
    store: Store
    oauth: AuthorizationServer
    authn: Authenticator
    http: httpx.AsyncClient  # browser-like: keeps cookies
    api: httpx.AsyncClient  # management API with the admin token
    public_client: str  # a pre-registered public client of tenant acme
    transport: httpx.ASGITransport


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", admin_token=ADMIN, port=8787, auth_cache_ttl_s=0)


@pytest.fixture
async def idp(settings: Settings) -> AsyncIterator[Node]:
    store = await Store.open(settings)
    try:
        oauth = await _authorization_server(settings, store)
        authn = Authenticator(CachedAuthenticator(store.api_keys.authenticate, 0), oauth.tokens)
        gateway = AuthnOnlyGateway(settings, authn)
        rest = Starlette(routes=[Mount("/api/v1", app=create_control_app(settings, store, NoRuntime())), *oauth.routes()])  # type: ignore[arg-type]

        async def app(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http" and scope["path"].startswith("/t/"):
                await gateway(scope, receive, send)
            else:
                await rest(scope, receive, send)

        for tenant in ("acme", "other"):
            await store.tenants.create(tenant)
            for server in ("echo", "files"):
                await store.servers.create_revision(tenant, server, make_spec(server), bundle_digest="a" * 64, build_key=None)
        pw = passwords.hash_password(PASSWORD)
        for name, tenant, role in (("alice", "acme", "developer"), ("bob", "acme", "auditor"), ("carol", "other", "owner")):
            await store.users.create(name, pw)
            await store.users.set_member(tenant, name, role)
        client, _ = client_from_metadata(
            {
                "redirect_uris": [REDIRECT],
                "token_endpoint_auth_method": "none",
                "client_name": "Test CLI",
                "grant_types": ["authorization_code", "refresh_token"],
            },
            kind="registered",
            tenant=None,
        )
        await store.oauth.create_client(client)
        transport = httpx.ASGITransport(app=app)
        async with (
            httpx.AsyncClient(transport=transport, base_url=BASE) as http,
            httpx.AsyncClient(transport=transport, base_url=BASE + "/api/v1", headers={"authorization": f"Bearer {ADMIN}"}) as api,
        ):
            yield Node(settings, store, oauth, authn, http, api, client.client_id, transport)
    finally:
        await store.close()
