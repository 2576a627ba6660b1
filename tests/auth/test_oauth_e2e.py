"""OAuth end to end against a running node: the Python `mcp` SDK's OAuth client provider
discovers, registers (DCR), has a person (httpx driving the HTML forms) sign in and consent,
exchanges the code, calls tools through the gateway on a sandboxed server, then refreshes.
The same with a client ID metadata document instead of registration: the client_id is an
https URL on a real TLS server (a throwaway CA, on loopback), which a node started with
SMCP_CIMD_ALLOW_PRIVATE_ADDRESSES and SMCP_CIMD_CA_FILE fetches.
And the hosted server never sees the client's token."""

from __future__ import annotations

import base64
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import httpx2
import orjson
import pytest
from cimd_host import MetadataHost, make_pki
from mcp import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import (
    AuthorizationCodeResult,
    OAuthClientInformationFull,
    OAuthClientMetadata,
    OAuthToken,
)
from oauth_helpers import hidden, pkce

from tests.conftest import Hosted, _host
from tests.harness import Node, start_node

USER, PASSWORD = "erin", "erin's long password"
REDIRECT = "http://127.0.0.1:45871/callback"


def ensure_member(node: Node, tenant: str) -> None:
    with node.api() as api:
        r = api.post("/users", json={"name": USER, "password": PASSWORD})
        assert r.status_code in (201, 409), r.text
        r = api.put(f"/tenants/{tenant}/members", json={"user": USER, "role": "developer"})
        assert r.status_code == 200, r.text


class Person:
    """A browser and its user: follows the authorization URL, signs in, allows."""

    def __init__(self) -> None:
        self.http = httpx.AsyncClient(timeout=30)
        self.result: AuthorizationCodeResult | None = None
        self.consent_page = ""

    async def visit(self, url: str) -> None:
        page = await self.http.get(url)
        assert page.status_code == 200, page.text
        if "name=password" in page.text:
            page = await self.http.post(
                urljoin(url, "/oauth/login"),
                data={"request": hidden(page.text, "request"), "csrf": hidden(page.text, "csrf"), "username": USER, "password": PASSWORD},
            )
            assert page.status_code == 200, page.text
        self.consent_page = page.text
        done = await self.http.post(
            urljoin(url, "/oauth/consent"),
            data={"request": hidden(page.text, "request"), "csrf": hidden(page.text, "csrf"), "decision": "approve"},
        )
        assert done.status_code == 303, done.text
        q = {k: v[0] for k, v in parse_qs(urlsplit(done.headers["location"]).query).items()}
        self.result = AuthorizationCodeResult(code=q["code"], state=q.get("state"), iss=q.get("iss"))

    async def callback(self) -> AuthorizationCodeResult:
        assert self.result is not None
        return self.result


def urljoin(url: str, path: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{path}"


class Memory:
    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client = client_info


async def test_sdk_oauth_flow_then_tools_then_refresh(node: Node, demo: Hosted) -> None:
    ensure_member(node, demo.tenant)
    person, memory = Person(), Memory()
    provider = OAuthClientProvider(
        demo.url,
        OAuthClientMetadata(
            redirect_uris=[REDIRECT],
            client_name="SDK e2e",
            grant_types=["authorization_code", "refresh_token"],
            token_endpoint_auth_method="none",
        ),
        memory,
        redirect_handler=person.visit,
        callback_handler=person.callback,
    )
    http = httpx2.AsyncClient(auth=provider, timeout=30)
    async with Client(streamable_http_client(demo.url, http_client=http), mode="legacy") as client:
        tools = {t.name for t in (await client.list_tools()).tools}
        assert "echo" in tools
        assert (await client.call_tool("echo", {"text": "via oauth"})).content[0].text == "via oauth"
    assert memory.client is not None and memory.client.client_id.startswith("smcp_c_")  # DCR
    assert "SDK e2e" in person.consent_page and demo.url in person.consent_page
    first = memory.tokens
    assert first is not None and first.refresh_token

    # Expire the access token locally: the provider refreshes (rotation) and goes on.
    provider.context.token_expiry_time = time.time() - 1
    http = httpx2.AsyncClient(auth=provider, timeout=30)
    async with Client(streamable_http_client(demo.url, http_client=http), mode="legacy") as client:
        assert (await client.call_tool("add", {"a": 1, "b": 2})).content[0].text.startswith("3")
    second = memory.tokens
    assert second is not None and second.access_token != first.access_token and second.refresh_token != first.refresh_token

    # The token is bound to this one server: another tenant's server refuses it at the gateway.
    async with httpx.AsyncClient(timeout=30) as plain:
        r = await plain.post(node.mcp_url("mallory", "probe"), json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
                             headers={"authorization": f"Bearer {second.access_token}", "accept": "application/json, text/event-stream"})
    assert r.status_code == 401 and 'error="invalid_token"' in r.headers["www-authenticate"]


DOCUMENT_NAME = "Metadata Document App"


@pytest.fixture(scope="module")
def cimd_node() -> Iterator[tuple[Node, Hosted, MetadataHost]]:
    """A node of its own (the shared one keeps the production address rules) that may fetch
    client metadata documents from loopback and trusts a throwaway CA; the demo server
    hosted on it; and the HTTPS server holding the document at https://localhost:<port>/client.json."""
    if shutil.which("bwrap") is None:
        pytest.fail("bubblewrap is required (make test installs it)")
    base = Path(tempfile.mkdtemp(prefix="smcp-cimd-test-"))
    base.chmod(0o711)  # sandbox uids traverse it to their bundles (see tests/conftest.py)
    pki = make_pki(base / "pki")

    def document(url: str) -> dict:
        return {
            "client_id": url,
            "client_name": DOCUMENT_NAME,
            "redirect_uris": [REDIRECT],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
        }

    try:
        with MetadataHost(pki, document) as host:
            n = start_node(base / "data", cimd_allow_private_addresses="true", cimd_ca_file=str(pki.ca_file))
            try:
                yield n, _host(n, "acme", "demo"), host
            finally:
                n.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)


def jwt_claims(token: str) -> dict:
    payload = token.split(".")[1]
    return orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


async def test_sdk_oauth_flow_with_a_client_metadata_document_then_refresh(cimd_node: tuple[Node, Hosted, MetadataHost]) -> None:
    node, demo, host = cimd_node
    ensure_member(node, demo.tenant)
    person, memory = Person(), Memory()
    sent: list[str] = []  # every request the SDK's client sends, its own OAuth requests included

    async def record(request: httpx2.Request) -> None:
        sent.append(f"{request.method} {request.url.path}")

    provider = OAuthClientProvider(
        demo.url,
        OAuthClientMetadata(
            redirect_uris=[REDIRECT],
            client_name="SDK e2e (never sent: the document names the client)",
            grant_types=["authorization_code", "refresh_token"],
            token_endpoint_auth_method="none",
        ),
        memory,
        redirect_handler=person.visit,
        callback_handler=person.callback,
        client_metadata_url=host.url,
    )
    http = httpx2.AsyncClient(auth=provider, timeout=30, event_hooks={"request": [record]})
    async with Client(streamable_http_client(demo.url, http_client=http), mode="legacy") as client:
        tools = {t.name for t in (await client.list_tools()).tools}
        assert "echo" in tools
        assert (await client.call_tool("echo", {"text": "via cimd"})).content[0].text == "via cimd"
    # CIMD, not DCR: the URL is the client_id, and nothing was registered.
    assert memory.client is not None and memory.client.client_id == host.url
    assert "POST /oauth/token" in sent and not any(r.endswith("/oauth/register") for r in sent), sent
    # The authorization server fetched the document (over TLS, SNI and Host the URL's name),
    # once: authorize, sign-in, consent and token were served from its cache.
    assert host.documents_served() == 1 and set(host.sni) == {"localhost"}
    assert {h.host_header for h in host.hits} == {f"localhost:{host.port}"}
    # What the person consented to came from the document.
    assert DOCUMENT_NAME in person.consent_page and host.url in person.consent_page and demo.url in person.consent_page
    first = memory.tokens
    assert first is not None and first.refresh_token
    assert jwt_claims(first.access_token)["client_id"] == host.url

    # Expire the access token locally: the provider refreshes (rotation) and goes on.
    provider.context.token_expiry_time = time.time() - 1
    sent.clear()
    http = httpx2.AsyncClient(auth=provider, timeout=30, event_hooks={"request": [record]})
    async with Client(streamable_http_client(demo.url, http_client=http), mode="legacy") as client:
        assert (await client.call_tool("add", {"a": 1, "b": 2})).content[0].text.startswith("3")
    second = memory.tokens
    assert second is not None and second.access_token != first.access_token and second.refresh_token != first.refresh_token
    assert jwt_claims(second.access_token)["client_id"] == host.url
    assert "POST /oauth/token" in sent and not any("/oauth/authorize" in r or "/oauth/register" in r for r in sent), sent

    # On the node: no client record at all, one grant, held by the document's URL.
    with sqlite3.connect(f"file:{node.data_dir / 'smcp.db'}?mode=ro", uri=True) as db:
        assert db.execute("select count(*) from oauth_clients").fetchone() == (0,)
        assert db.execute("select client_id, revoked_at from oauth_grants").fetchall() == [(host.url, None)]


def token_via_forms(node: Node, resource: str) -> str:
    """DCR + authorize + login + consent + token, all with plain httpx (no SDK)."""
    with httpx.Client(base_url=node.base_url, timeout=30) as http:
        client_id = http.post("/oauth/register", json={"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none",
                                                       "grant_types": ["authorization_code"]}).json()["client_id"]
        verifier, challenge = pkce()
        page = http.get("/oauth/authorize", params={"response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT,
                                                    "state": "s", "code_challenge": challenge, "code_challenge_method": "S256",
                                                    "resource": resource})
        page = http.post("/oauth/login", data={"request": hidden(page.text, "request"), "csrf": hidden(page.text, "csrf"),
                                               "username": USER, "password": PASSWORD})
        done = http.post("/oauth/consent", data={"request": hidden(page.text, "request"), "csrf": hidden(page.text, "csrf"),
                                                 "decision": "approve"})
        code = parse_qs(urlsplit(done.headers["location"]).query)["code"][0]
        r = http.post("/oauth/token", data={"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
                                            "client_id": client_id, "code_verifier": verifier, "resource": resource})
        assert r.status_code == 200, r.text
        return r.json()["access_token"]


def test_hosted_server_never_sees_the_clients_token(node: Node, probe: Hosted) -> None:
    from tests.e2e.probe_client import ProbeSession

    ensure_member(node, probe.tenant)
    token = token_via_forms(node, probe.url)
    session = ProbeSession(replace(probe, key=token))
    try:
        seen = [session.ok("env"), session.ok("proc1_environ"), session.ok("list_pids")]
    finally:
        session.close()
    text = repr(seen)
    assert token not in text and token.split(".")[2] not in text
    assert "authorization" not in text.lower() and "bearer" not in text.lower()
