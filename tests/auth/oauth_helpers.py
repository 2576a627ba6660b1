"""Helpers for the identity tests: an in-process node, PKCE, and an HTML-form driver."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from dataclasses import dataclass
from html import unescape
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from smcp.domain import parse_spec

BASE = "http://127.0.0.1:8787"
REDIRECT = "http://127.0.0.1:33418/callback"
PASSWORD = "correct horse battery"


def make_spec(name: str):
    return parse_spec(f'name = "{name}"\nruntime = "python"\nentrypoint = "server.py"\n')


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def server_url(tenant: str, server: str) -> str:
    return f"{BASE}/t/{tenant}/{server}/mcp"


def hidden(html: str, name: str) -> str:
    m = re.search(rf'name={name} value="([^"]*)"', html)
    assert m, f"no hidden field {name!r} in page:\n{html[:2000]}"
    return unescape(m.group(1))


def query_of(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


@dataclass
class Flow:
    """Drives /oauth/authorize → login → consent like a browser would (cookies kept)."""

    http: httpx.AsyncClient
    client_id: str
    redirect_uri: str = REDIRECT
    resource: str = server_url("acme", "echo")
    verifier: str = ""
    state: str = ""

    def params(self, **overrides: Any) -> dict[str, str]:
        self.verifier, challenge = pkce()
        self.state = secrets.token_urlsafe(8)
        params = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": self.redirect_uri,
            "state": self.state,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "resource": self.resource,
            "scope": "mcp",
        }
        params.update(overrides)
        return {k: v for k, v in params.items() if v is not None}

    async def authorize(self, **overrides: Any) -> httpx.Response:
        return await self.http.get("/oauth/authorize", params=self.params(**overrides))

    async def login(self, page: httpx.Response, user: str = "alice", password: str = PASSWORD) -> httpx.Response:
        return await self.http.post(
            "/oauth/login",
            data={"request": hidden(page.text, "request"), "csrf": hidden(page.text, "csrf"), "username": user, "password": password},
        )

    async def consent(self, page: httpx.Response, decision: str = "approve") -> httpx.Response:
        return await self.http.post(
            "/oauth/consent",
            data={"request": hidden(page.text, "request"), "csrf": hidden(page.text, "csrf"), "decision": decision},
        )

    async def code(self, user: str = "alice", **overrides: Any) -> str:
        page = await self.authorize(**overrides)
        assert page.status_code == 200, page.text
        if "name=password" in page.text:
            page = await self.login(page, user)
            assert page.status_code == 200, page.text
        done = await self.consent(page)
        assert done.status_code == 303, done.text
        q = query_of(done.headers["location"])
        assert q["state"] == self.state and q["iss"] == BASE, q
        return q["code"]

    async def exchange(self, code: str, **extra: str) -> httpx.Response:
        data = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.redirect_uri,
            "client_id": self.client_id,
            "code_verifier": self.verifier,
            "resource": self.resource,
            **extra,
        }
        return await self.http.post("/oauth/token", data={k: v for k, v in data.items() if v is not None})

    async def tokens(self, user: str = "alice") -> dict[str, Any]:
        r = await self.exchange(await self.code(user))
        assert r.status_code == 200, r.text
        return r.json()

    async def refresh(self, refresh_token: str, **extra: str) -> httpx.Response:
        return await self.http.post(
            "/oauth/token",
            data={"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": self.client_id, **extra},
        )
