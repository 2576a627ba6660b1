"""A real OpenID Provider for the upstream-login tests (tests/auth/idp/provider.mjs, panva's
oidc-provider on Node 22), and a browser that walks through it."""

from __future__ import annotations

import json
import os
import secrets
import select
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
from oauth_helpers import pkce

ROOT = Path(__file__).resolve().parents[2]
NODE = ROOT / "node_modules" / ".bin" / "node"
SCRIPT = Path(__file__).resolve().parent / "idp" / "provider.mjs"


@dataclass
class OpenIdProvider:
    """One running provider: `issuer` is http://127.0.0.1:<port>."""

    proc: subprocess.Popen[bytes]
    log: Any  # its stderr, a temporary file
    issuer: str
    port: int
    clients: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def start(
        cls,
        *,
        clients: list[dict[str, Any]],
        accounts: dict[str, dict[str, Any]],
        jwks: dict[str, Any] | None = None,
        port: int | None = None,
    ) -> OpenIdProvider:
        if not NODE.exists():
            raise RuntimeError("node_modules/.bin/node is missing: run `make node-deps` (npm ci)")
        config: dict[str, Any] = {"clients": clients, "accounts": accounts}
        if jwks is not None:
            config["jwks"] = jwks
        if port is not None:
            config["port"] = port
        log = tempfile.TemporaryFile()  # noqa: SIM115 -- lives as long as the provider; closed in stop()
        proc = subprocess.Popen(
            [str(NODE), str(SCRIPT)],
            env={**os.environ, "IDP_CONFIG": json.dumps(config), "NODE_ENV": "test"},
            stdout=subprocess.PIPE,
            stderr=log,
            cwd=ROOT,
        )
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        line = proc.stdout.readline() if ready else b""
        if not line:
            proc.kill()
            code = proc.wait()
            log.seek(0)
            raise RuntimeError(f"the OpenID provider did not start (exit {code}):\n{log.read().decode(errors='replace')[-3000:]}")
        info = json.loads(line)
        return cls(proc, log, info["issuer"], info["port"], {c["client_id"]: c for c in clients})

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.log.close()

    async def id_token(self, client_id: str, *, nonce: str, account: str, scope: str = "openid email") -> str:
        """A genuine ID token from this provider, got by acting as `client_id` directly."""
        client = self.clients[client_id]
        redirect = client["redirect_uris"][0]
        verifier, challenge = pkce()
        params = {
            "response_type": "code", "client_id": client_id, "redirect_uri": redirect, "scope": scope,
            "state": secrets.token_urlsafe(8), "nonce": nonce, "code_challenge": challenge, "code_challenge_method": "S256",
        }
        async with httpx.AsyncClient(timeout=30) as browser:
            location = await walk(browser, f"{self.issuer}/auth?{urlencode(params)}", stop_at=redirect, account=account)
            code = parse_qs(urlsplit(location).query)["code"][0]
            r = await browser.post(
                f"{self.issuer}/token",
                data={"grant_type": "authorization_code", "code": code, "redirect_uri": redirect, "code_verifier": verifier},
                auth=(client_id, client["client_secret"]),
            )
        assert r.status_code == 200, r.text
        return r.json()["id_token"]


async def walk(browser: httpx.AsyncClient, url: str, *, stop_at: str, account: str = "alice", deny: bool = False,
               max_hops: int = 12) -> str:
    """Follow the provider's redirects like a browser whose user signs in as `account` and
    consents (or declines, with `deny`); returns the first Location that leads to `stop_at`."""
    for _ in range(max_hops):
        if url.startswith(stop_at):
            return url
        parts = urlsplit(url)
        if parts.path.startswith("/interaction/"):
            url += ("&" if parts.query else "?") + urlencode({"account": account, **({"deny": "1"} if deny else {})})
        r = await browser.get(url)
        assert r.status_code in (302, 303), f"{url} answered {r.status_code}: {r.text[:500]}"
        location = r.headers["location"]
        url = location if location.startswith("http") else f"{parts.scheme}://{parts.netloc}{location}"
    raise AssertionError(f"no redirect to {stop_at} after {max_hops} hops")
