"""Upstream OpenID Connect login against a real OpenID Provider (panva's oidc-provider, on
Node): the whole flow to an access token the gateway accepts, and every way it must fail.

The browser is one httpx client with one cookie jar: requests to SMCP go to the in-process
node (the `idp` fixture), requests to the provider go over loopback. SMCP's own calls to the
provider (discovery, JWKS, token, userinfo) are real HTTP too; a few tests put a transport
in that path that swaps the ID token in the provider's token response for another genuine
one, to check that SMCP refuses a token minted for another client or by another issuer.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from html import unescape
from pathlib import Path

import httpx
import httpx2
import pytest
import sqlalchemy as sa
from joserfc import jwt
from joserfc.jwk import ECKey, OctKey, RSAKey
from mcp import Client as McpClient
from mcp.client.streamable_http import streamable_http_client
from oauth_helpers import BASE, Flow, hidden, query_of, server_url
from oidc_idp import OpenIdProvider, walk

from smcp.auth import oidc
from smcp.auth.oidc import OidcConfig, OidcConfigError, OidcError, UpstreamOidc
from smcp.auth.server import AuthorizationServer
from smcp.config import Settings
from smcp.store import tables as t
from tests.conftest import _host
from tests.harness import free_port, start_node

CALLBACK = f"{BASE}/oauth/oidc/callback"
SMCP_CLIENT = {"client_id": "smcp-test", "client_secret": "smcp-test-secret-0123456789", "redirect_uris": [CALLBACK]}
OTHER_APP = {"client_id": "other-app", "client_secret": "other-app-secret-0123456789", "redirect_uris": ["http://127.0.0.1:9/cb"]}
ACCOUNTS = {
    "alice": {"email": "Alice@Example.com", "email_verified": True, "name": "Alice"},
    # The same address, unverified: must never be taken for alice.
    "eve": {"email": "alice@example.com", "email_verified": False},
    # The same address, verified, but a different subject than the one alice is linked to.
    "alice2": {"email": "alice@example.com", "email_verified": True},
    "dave": {"email": "dave@example.com", "email_verified": True},
    "frank": {"email": "frank@other.org", "email_verified": True},
    "gina": {"email": "gina@example.com", "email_verified": True},
}
ALICE = "alice@example.com"
ECHO = server_url("acme", "echo")


def rsa_jwks(kid: str = "shared-1") -> dict:
    key = RSAKey.generate_key(2048, parameters={"kid": kid, "alg": "RS256", "use": "sig"})
    return {"keys": [key.as_dict(private=True)]}


@pytest.fixture(scope="module")
def shared_jwks() -> dict:
    return rsa_jwks()


@pytest.fixture(scope="module")
def provider(shared_jwks: dict) -> Iterator[OpenIdProvider]:
    p = OpenIdProvider.start(clients=[SMCP_CLIENT, OTHER_APP], accounts=ACCOUNTS, jwks=shared_jwks)
    yield p
    p.stop()


@pytest.fixture
def settings(tmp_path: Path, provider: OpenIdProvider) -> Settings:
    """Overrides conftest's: the same node, with upstream login pointing at the provider."""
    return Settings(
        data_dir=tmp_path / "data",
        admin_token="smcpadm_identity_tests",
        port=8787,
        auth_cache_ttl_s=0,
        oidc_issuer=provider.issuer,
        oidc_client_id=SMCP_CLIENT["client_id"],
        oidc_client_secret=SMCP_CLIENT["client_secret"],
        oidc_display_name="Test IdP",
        oidc_allow_insecure_issuer=True,
    )


class Router(httpx.AsyncBaseTransport):
    """SMCP in process, everything else (the provider) over loopback."""

    def __init__(self, smcp: httpx.AsyncBaseTransport) -> None:
        self.smcp = smcp
        self.net = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == "127.0.0.1" and request.url.port == 8787:
            return await self.smcp.handle_async_request(request)
        return await self.net.handle_async_request(request)

    async def aclose(self) -> None:
        await self.net.aclose()


class Swap(httpx.AsyncBaseTransport):
    """SMCP's path to the provider, able to replace the ID token in token responses and
    counting JWKS fetches."""

    def __init__(self) -> None:
        self.net = httpx.AsyncHTTPTransport()
        self.id_token: str | None = None
        self.jwks_fetches = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.net.handle_async_request(request)
        if request.url.path == "/jwks":
            self.jwks_fetches += 1
        if self.id_token is not None and request.method == "POST" and request.url.path == "/token":
            body = json.loads(await response.aread())
            assert response.status_code == 200, body
            return httpx.Response(200, json={**body, "id_token": self.id_token})
        return response


@pytest.fixture
async def sso(idp) -> AsyncIterator:
    """The node, with alice@example.com (no local password) a developer of acme."""
    await idp.store.users.create(ALICE, None)
    await idp.store.users.set_member("acme", ALICE, "developer")
    yield idp


async def new_browser(idp) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=Router(idp.transport), base_url=BASE, timeout=30)


@pytest.fixture
async def browser(sso) -> AsyncIterator[httpx.AsyncClient]:
    async with await new_browser(sso) as b:
        yield b


async def start(idp, browser: httpx.AsyncClient) -> tuple[Flow, str]:
    """SMCP's authorize → login page → "Sign in with Test IdP": returns the provider URL."""
    flow = Flow(browser, idp.public_client)
    page = await flow.authorize()
    assert page.status_code == 200 and "Sign in with Test IdP" in page.text, page.text
    r = await browser.post("/oauth/oidc/start", data={"request": hidden(page.text, "request"), "csrf": hidden(page.text, "csrf")})
    assert r.status_code == 303, r.text
    return flow, r.headers["location"]


async def link_count(idp) -> int:
    async with idp.store.db.read() as conn:
        return int(await conn.scalar(sa.select(sa.func.count()).select_from(t.user_identities)))


def error_text(page: httpx.Response) -> str:
    m = re.search(r"<p class=error>(.*?)</p>", page.text)
    assert m, page.text
    return unescape(m.group(1))


# --------------------------------------------------------------------------- the flow


async def test_full_flow_to_a_token_the_mcp_endpoint_accepts(sso, browser, provider) -> None:
    flow, upstream = await start(sso, browser)
    q = query_of(upstream)
    assert upstream.startswith(f"{provider.issuer}/auth?")
    assert q["client_id"] == "smcp-test" and q["redirect_uri"] == CALLBACK and q["scope"] == "openid email profile"
    assert q["code_challenge_method"] == "S256" and len(q["code_challenge"]) == 43 and q["nonce"] and q["state"]
    assert flow.state != q["state"]  # SMCP's own state towards the provider, not the client's

    callback = await walk(browser, upstream, stop_at=CALLBACK, account="alice")
    cq = query_of(callback)
    assert cq["iss"] == provider.issuer and cq["state"] == q["state"]  # RFC 9207 from the provider
    consent = await browser.get(callback)
    assert consent.status_code == 200, consent.text
    assert f"Signed in as <b>{ALICE}</b>" in consent.text and "Allow Test CLI" in consent.text
    assert "smcp_session" in consent.headers.get("set-cookie", "")

    done = await flow.consent(consent)
    assert done.status_code == 303, done.text
    back = query_of(done.headers["location"])
    assert back["state"] == flow.state and back["iss"] == BASE
    r = await flow.exchange(back["code"])
    assert r.status_code == 200, r.text
    access = r.json()["access_token"]

    user = await sso.store.users.require_by_name(ALICE)
    mcp = await browser.post("/t/acme/echo/mcp", headers={"authorization": f"Bearer {access}"})
    assert mcp.status_code == 200, mcp.text
    assert mcp.json()["subject"] == f"user:{user.id}" and mcp.json()["tenant"] == "acme"
    assert mcp.json()["role"] == "developer"

    # The link: (issuer, sub) → alice, with the email as last seen.
    links = await sso.store.oidc.links_of(user.id)
    assert [(x.issuer, x.subject, x.email) for x in links] == [(provider.issuer, "alice", ALICE)]

    # The session is the ordinary one: the next authorization goes straight to consent.
    page = await flow.authorize()
    assert "Allow Test CLI" in page.text and "name=password" not in page.text


async def test_second_login_uses_the_link_not_the_email(sso, provider) -> None:
    for _ in range(2):
        async with await new_browser(sso) as b:
            _, upstream = await start(sso, b)
            page = await b.get(await walk(b, upstream, stop_at=CALLBACK, account="alice"))
            assert page.status_code == 200 and f"Signed in as <b>{ALICE}</b>" in page.text
    assert await link_count(sso) == 1


async def test_login_page_without_upstream_login_has_no_button(idp) -> None:
    idp.oauth.oidc = None
    page = await Flow(idp.http, idp.public_client).authorize()
    assert page.status_code == 200 and "Sign in with" not in page.text and "/oauth/oidc/start" not in page.text
    r = await idp.http.post("/oauth/oidc/start", data={"request": "x", "csrf": "y"})
    assert r.status_code == 404
    assert (await idp.http.get("/oauth/oidc/callback?state=x&code=y")).status_code == 404


async def test_start_is_csrf_protected(sso, browser) -> None:
    page = await Flow(browser, sso.public_client).authorize()
    r = await browser.post("/oauth/oidc/start", data={"request": hidden(page.text, "request"), "csrf": "forged"})
    assert r.status_code == 403 and "location" not in r.headers
    r = await browser.post(
        "/oauth/oidc/start",
        data={"request": hidden(page.text, "request"), "csrf": hidden(page.text, "csrf")},
        headers={"origin": "https://evil.example"},
    )
    assert r.status_code == 403


# ------------------------------------------------------------- state, replay, binding


async def test_replayed_callback_is_refused(sso, browser) -> None:
    _, upstream = await start(sso, browser)
    callback = await walk(browser, upstream, stop_at=CALLBACK)
    assert (await browser.get(callback)).status_code == 200
    again = await browser.get(callback)
    assert again.status_code == 400 and "already used" in error_text(again)


async def test_state_mismatch_is_refused_and_does_not_burn_the_login(sso, browser) -> None:
    _, upstream = await start(sso, browser)
    callback = await walk(browser, upstream, stop_at=CALLBACK)
    forged = re.sub(r"state=[^&]+", "state=forged-state", callback)
    r = await browser.get(forged)
    assert r.status_code == 400 and "already used or has expired" in error_text(r)
    r = await browser.get(re.sub(r"[?&]state=[^&]+", "", callback))
    assert r.status_code == 400 and "no state" in error_text(r)
    assert (await browser.get(callback)).status_code == 200


async def test_callback_in_another_browser_is_refused(sso, browser) -> None:
    _, upstream = await start(sso, browser)
    callback = await walk(browser, upstream, stop_at=CALLBACK)
    async with await new_browser(sso) as stranger:
        r = await stranger.get(callback)
        assert r.status_code == 400 and "another browser" in error_text(r)
        assert "smcp_session" not in r.headers.get("set-cookie", "")
    assert (await browser.get(callback)).status_code == 200


async def test_expired_login_is_refused(sso, browser) -> None:
    _, upstream = await start(sso, browser)
    callback = await walk(browser, upstream, stop_at=CALLBACK)
    async with sso.store.db.write() as conn:
        await conn.execute(t.oidc_logins.update().values(expires_at=t.utcnow().replace(year=2000)))
    r = await browser.get(callback)
    assert r.status_code == 400 and "expired" in error_text(r)


async def test_nonce_mismatch_is_refused(sso, browser) -> None:
    _, upstream = await start(sso, browser)
    # The browser's request to the provider is altered: the provider then signs an ID token
    # with another nonce than the one SMCP stored for this login.
    tampered = re.sub(r"nonce=[^&]+", "nonce=someone-elses-nonce", upstream)
    r = await browser.get(await walk(browser, tampered, stop_at=CALLBACK))
    assert r.status_code == 400 and "nonce" in error_text(r)
    assert "smcp_session" not in r.headers.get("set-cookie", "")
    assert await link_count(sso) == 0


async def test_iss_parameter_from_another_issuer_is_refused(sso, browser) -> None:
    _, upstream = await start(sso, browser)
    callback = await walk(browser, upstream, stop_at=CALLBACK)
    r = await browser.get(re.sub(r"iss=[^&]+", "iss=https%3A%2F%2Fevil.example", callback))
    assert r.status_code == 400 and "another identity provider" in error_text(r)


async def test_missing_iss_parameter_is_refused_when_the_provider_promises_it(sso, browser) -> None:
    _, upstream = await start(sso, browser)
    callback = await walk(browser, upstream, stop_at=CALLBACK)
    r = await browser.get(re.sub(r"&?iss=[^&]+", "", callback))
    assert r.status_code == 400 and "lacks the issuer" in error_text(r)


async def test_provider_error_access_denied_is_shown_cleanly(sso, browser) -> None:
    _, upstream = await start(sso, browser)
    callback = await walk(browser, upstream, stop_at=CALLBACK, deny=True)
    assert query_of(callback)["error"] == "access_denied"
    r = await browser.get(callback)
    assert r.status_code == 403 and "Sign-in cancelled" in r.text
    assert "cancelled or refused at Test IdP" in error_text(r) and "declined" in error_text(r)
    assert await link_count(sso) == 0


# ------------------------------------------------------------- ID tokens that must fail


async def swapped(idp, browser, *, id_token_for) -> tuple[httpx.Response, Swap]:
    """A login whose token response carries, instead of the real ID token, the one that
    `id_token_for(nonce)` gets (a genuine token, with this login's nonce)."""
    swap = Swap()
    idp.oauth.oidc = UpstreamOidc(idp.oauth.oidc.config, transport=swap)
    _, upstream = await start(idp, browser)
    swap.id_token = await id_token_for(query_of(upstream)["nonce"])
    return await browser.get(await walk(browser, upstream, stop_at=CALLBACK)), swap


async def swapped_from_another_provider(idp, browser, jwks) -> tuple[httpx.Response, Swap]:
    """`swapped`, with a genuine ID token for SMCP's client from a second provider
    signing with `jwks`."""
    other = OpenIdProvider.start(clients=[SMCP_CLIENT], accounts=ACCOUNTS, jwks=jwks)
    try:
        async def from_other(nonce: str) -> str:
            return await other.id_token("smcp-test", nonce=nonce, account="alice")

        return await swapped(idp, browser, id_token_for=from_other)
    finally:
        other.stop()


async def test_id_token_for_another_audience_is_refused(sso, browser, provider) -> None:
    async def other_app(nonce: str) -> str:
        return await provider.id_token("other-app", nonce=nonce, account="alice")

    r, _ = await swapped(sso, browser, id_token_for=other_app)
    assert r.status_code == 502 and "issued for another application" in error_text(r)
    assert await link_count(sso) == 0


async def test_id_token_from_another_issuer_with_the_same_keys_is_refused(sso, browser, shared_jwks) -> None:
    # A second provider with the same signing key: its token verifies, but names itself.
    r, _ = await swapped_from_another_provider(sso, browser, shared_jwks)
    assert r.status_code == 502 and "issued by another identity provider" in error_text(r)
    assert await link_count(sso) == 0


async def test_id_token_signed_with_an_unpublished_key_is_refused_after_one_refetch(sso, browser, monkeypatch) -> None:
    monkeypatch.setattr(oidc, "JWKS_REFETCH_MIN_S", 0.0)
    r, swap = await swapped_from_another_provider(sso, browser, rsa_jwks("stranger-1"))
    assert r.status_code == 502 and "key the identity provider does not publish" in error_text(r)
    assert swap.jwks_fetches == 2  # the cached set, then one refetch for the unknown kid
    assert await link_count(sso) == 0


async def test_id_token_with_a_known_kid_but_another_key_is_refused(sso, browser) -> None:
    r, _ = await swapped_from_another_provider(sso, browser, rsa_jwks("shared-1"))
    assert r.status_code == 502 and "signature does not verify" in error_text(r)


async def test_a_new_signing_key_is_found_by_one_refetch(sso, browser) -> None:
    swap = Swap()
    upstream_oidc = UpstreamOidc(sso.oauth.oidc.config, transport=swap)
    await upstream_oidc.metadata()
    upstream_oidc._keys = (time.monotonic() - 60, [])  # fetched a minute ago, before the provider's key rotation
    sso.oauth.oidc = upstream_oidc
    _, upstream = await start(sso, browser)
    r = await browser.get(await walk(browser, upstream, stop_at=CALLBACK))
    assert r.status_code == 200, r.text
    assert swap.jwks_fetches == 1


# ------------------------------------------------------------------------------ mapping


async def test_unknown_user_is_refused_without_auto_provisioning(sso, browser) -> None:
    _, upstream = await start(sso, browser)
    r = await browser.get(await walk(browser, upstream, stop_at=CALLBACK, account="dave"))
    assert r.status_code == 403 and "dave@example.com" in error_text(r) and "not an SMCP user" in error_text(r)
    assert "smcp_session" not in r.headers.get("set-cookie", "")
    assert await link_count(sso) == 0 and await sso.store.users.credentials("dave@example.com") is None


async def test_unverified_email_is_not_linked_by_email(sso, browser) -> None:
    _, upstream = await start(sso, browser)
    r = await browser.get(await walk(browser, upstream, stop_at=CALLBACK, account="eve"))
    assert r.status_code == 403 and "no verified email" in error_text(r)
    assert "smcp_session" not in r.headers.get("set-cookie", "")
    assert await link_count(sso) == 0


async def test_a_linked_user_is_not_taken_over_by_another_subject_with_the_same_email(sso, provider) -> None:
    async with await new_browser(sso) as b:
        _, upstream = await start(sso, b)
        assert (await b.get(await walk(b, upstream, stop_at=CALLBACK, account="alice"))).status_code == 200
    async with await new_browser(sso) as b:
        _, upstream = await start(sso, b)
        r = await b.get(await walk(b, upstream, stop_at=CALLBACK, account="alice2"))
    assert r.status_code == 403 and "already linked to another Test IdP account" in error_text(r)
    assert await link_count(sso) == 1


async def test_auto_provisioning_creates_and_links_a_user_without_tenant_access(sso, browser) -> None:
    sso.oauth.oidc = UpstreamOidc(replace(sso.oauth.oidc.config, auto_provision=True))
    _, upstream = await start(sso, browser)
    r = await browser.get(await walk(browser, upstream, stop_at=CALLBACK, account="gina"))
    # Signed in as a new user, who belongs to no tenant yet: the login page says so.
    assert r.status_code == 403 and "gina@example.com has no access to tenant acme" in r.text
    user = await sso.store.users.require_by_name("gina@example.com")
    assert [x.subject for x in await sso.store.oidc.links_of(user.id)] == ["gina"]
    found = await sso.store.users.credentials("gina@example.com")
    assert found is not None and found[1] is None  # no local password

    await sso.store.users.set_member("acme", "gina@example.com", "viewer")
    async with await new_browser(sso) as b:
        _, upstream = await start(sso, b)
        page = await b.get(await walk(b, upstream, stop_at=CALLBACK, account="gina"))
    assert page.status_code == 200 and "Signed in as <b>gina@example.com</b>" in page.text
    assert await link_count(sso) == 1


async def test_a_disabled_user_is_refused_and_nothing_is_linked(sso, browser) -> None:
    async with sso.store.db.write() as conn:
        await conn.execute(t.users.update().where(t.users.c.name == ALICE).values(disabled_at=t.utcnow()))
    _, upstream = await start(sso, browser)
    r = await browser.get(await walk(browser, upstream, stop_at=CALLBACK, account="alice"))
    assert r.status_code == 403 and "disabled" in error_text(r)
    assert "smcp_session" not in r.headers.get("set-cookie", "")
    assert await link_count(sso) == 0


async def test_email_domain_allowlist(sso, browser) -> None:
    sso.oauth.oidc = UpstreamOidc(replace(sso.oauth.oidc.config, allowed_email_domains=frozenset({"example.com"})))
    await sso.store.users.create("frank@other.org", None)
    await sso.store.users.set_member("acme", "frank@other.org", "developer")
    _, upstream = await start(sso, browser)
    r = await browser.get(await walk(browser, upstream, stop_at=CALLBACK, account="frank"))
    assert r.status_code == 403 and "domain allowed here" in error_text(r)
    assert await link_count(sso) == 0
    async with await new_browser(sso) as b:
        _, upstream = await start(sso, b)
        assert (await b.get(await walk(b, upstream, stop_at=CALLBACK, account="alice"))).status_code == 200


# ------------------------------------------------------------------ provider configuration


async def test_discovery_issuer_mismatch_is_refused(sso, browser, provider) -> None:
    # The configured issuer differs from the one the provider's discovery document names
    # (a trailing slash): discovery is refused, and no login starts.
    sso.oauth.oidc = UpstreamOidc(replace(sso.oauth.oidc.config, issuer=provider.issuer + "/"))
    page = await Flow(browser, sso.public_client).authorize()
    r = await browser.post("/oauth/oidc/start", data={"request": hidden(page.text, "request"), "csrf": hidden(page.text, "csrf")})
    assert r.status_code == 502 and "location" not in r.headers
    assert f"names the issuer '{provider.issuer}'" in error_text(r)
    async with sso.store.db.read() as conn:
        assert await conn.scalar(sa.select(sa.func.count()).select_from(t.oidc_logins)) == 0


async def test_unreachable_provider_gives_a_page_not_a_500(sso, browser) -> None:
    sso.oauth.oidc = UpstreamOidc(replace(sso.oauth.oidc.config, issuer="http://127.0.0.1:9", timeout_s=2))
    page = await Flow(browser, sso.public_client).authorize()
    r = await browser.post("/oauth/oidc/start", data={"request": hidden(page.text, "request"), "csrf": hidden(page.text, "csrf")})
    assert r.status_code == 502 and "cannot be reached" in error_text(r)


def test_http_issuer_is_refused_without_the_insecure_setting(tmp_path: Path, provider: OpenIdProvider) -> None:
    base = {"data_dir": tmp_path, "oidc_client_id": "smcp-test", "oidc_client_secret": "s"}
    with pytest.raises(OidcConfigError, match="SMCP_OIDC_ALLOW_INSECURE_ISSUER"):
        UpstreamOidc.from_settings(Settings(oidc_issuer=provider.issuer, **base))
    # Even with it, only loopback may be plain http.
    with pytest.raises(OidcConfigError, match="https"):
        UpstreamOidc.from_settings(Settings(oidc_issuer="http://idp.example", oidc_allow_insecure_issuer=True, **base))
    assert UpstreamOidc.from_settings(Settings(oidc_issuer="https://idp.example", **base)) is not None
    assert UpstreamOidc.from_settings(Settings(data_dir=tmp_path)) is None  # off without an issuer


def test_configuration_is_checked_at_start(tmp_path: Path) -> None:
    base = {"data_dir": tmp_path, "oidc_issuer": "https://idp.example"}
    with pytest.raises(OidcConfigError, match="CLIENT_ID"):
        UpstreamOidc.from_settings(Settings(**base))
    with pytest.raises(OidcConfigError, match="openid"):
        UpstreamOidc.from_settings(Settings(**base, oidc_client_id="c", oidc_scopes="email profile"))
    with pytest.raises(OidcConfigError, match="not both"):
        UpstreamOidc.from_settings(Settings(**base, oidc_client_id="c", oidc_client_secret="a",
                                            oidc_client_secret_file=tmp_path / "s"))
    with pytest.raises(OidcConfigError, match="cannot read"):
        UpstreamOidc.from_settings(Settings(**base, oidc_client_id="c", oidc_client_secret_file=tmp_path / "missing"))
    (tmp_path / "secret").write_text("from-a-file\n")
    upstream = UpstreamOidc.from_settings(Settings(**base, oidc_client_id="c", oidc_client_secret_file=tmp_path / "secret"))
    assert upstream is not None and upstream.config.client_secret == "from-a-file"
    with pytest.raises(OidcConfigError):
        AuthorizationServer(Settings(**{**base, "oidc_issuer": "ftp://idp.example"}, oidc_client_id="c"), None, None, None)  # type: ignore[arg-type]


# ------------------------------------------------------------------- on a running node


async def test_end_to_end_on_a_running_node_with_a_hosted_server(tmp_path: Path) -> None:
    """`smcp serve` configured through SMCP_OIDC_* variables, a sandboxed demo server, the
    provider, and a browser over real HTTP: sign in upstream, consent, call a tool."""
    if shutil.which("bwrap") is None:
        pytest.fail("bubblewrap is required (make test installs it)")
    idp_port = free_port()
    base = Path(tempfile.mkdtemp(prefix="smcp-test-"))
    base.chmod(0o711)  # sandbox uids must traverse to their bundles
    node = start_node(
        base / "data",
        oidc_issuer=f"http://127.0.0.1:{idp_port}",
        oidc_client_id=SMCP_CLIENT["client_id"],
        oidc_client_secret_file=str(_secret_file(base)),
        oidc_allow_insecure_issuer="true",
        oidc_display_name="Test IdP",
    )
    callback = f"{node.base_url}/oauth/oidc/callback"
    upstream_idp = OpenIdProvider.start(clients=[{**SMCP_CLIENT, "redirect_uris": [callback]}], accounts=ACCOUNTS, port=idp_port)
    try:
        demo = _host(node, "acme", "demo")
        with node.api() as api:
            assert api.post("/users", json={"name": ALICE, "password": "a long enough password"}).status_code == 201
            assert api.put("/tenants/acme/members", json={"user": ALICE, "role": "developer"}).status_code == 200
            client_id = api.post("/tenants/acme/oauth-clients", json={"client_name": "E2E", "redirect_uris": [E2E_REDIRECT]}).json()["client_id"]
        async with httpx.AsyncClient(base_url=node.base_url, timeout=30) as browser:
            flow = Flow(browser, client_id, redirect_uri=E2E_REDIRECT, resource=demo.url)
            page = await flow.authorize()
            assert "Sign in with Test IdP" in page.text, page.text
            r = await browser.post("/oauth/oidc/start", data={"request": hidden(page.text, "request"), "csrf": hidden(page.text, "csrf")})
            assert r.status_code == 303, r.text
            consent = await browser.get(await walk(browser, r.headers["location"], stop_at=callback, account="alice"))
            assert consent.status_code == 200 and f"Signed in as <b>{ALICE}</b>" in consent.text, consent.text
            done = await flow.consent(consent)
            token = await flow.exchange(query_of(done.headers["location"])["code"])
            assert token.status_code == 200, token.text
        access = token.json()["access_token"]
        http = httpx2.AsyncClient(headers={"authorization": f"Bearer {access}"}, timeout=30)
        async with McpClient(streamable_http_client(demo.url, http_client=http), mode="legacy") as mcp:
            assert (await mcp.call_tool("echo", {"text": "signed in upstream"})).content[0].text == "signed in upstream"
    finally:
        upstream_idp.stop()
        node.stop()
        shutil.rmtree(base, ignore_errors=True)


E2E_REDIRECT = "http://127.0.0.1:45872/callback"


def _secret_file(base: Path) -> Path:
    path = base / "oidc-client-secret"
    path.write_text(SMCP_CLIENT["client_secret"] + "\n")
    return path


# ----------------------------------------------- ID token rules, one by one (signed here)
# The provider above never sends a bad token on its own; these sign tokens with a key its
# (mock) JWKS publishes, to check each rule of validate_id_token in isolation.

ISSUER = "https://idp.example"


class Published:
    """Discovery, JWKS, token and userinfo answers of a provider whose key the test holds."""

    def __init__(self) -> None:
        self.key = RSAKey.generate_key(2048, parameters={"kid": "k1", "alg": "RS256", "use": "sig"})
        self.token_response: dict = {}
        self.userinfo: dict = {}

    def handler(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/.well-known/openid-configuration":
            return httpx.Response(200, json={
                "issuer": ISSUER, "authorization_endpoint": f"{ISSUER}/auth", "token_endpoint": f"{ISSUER}/token",
                "jwks_uri": f"{ISSUER}/jwks", "userinfo_endpoint": f"{ISSUER}/me", "response_types_supported": ["code"],
                "id_token_signing_alg_values_supported": ["RS256", "HS256", "none"],
            })
        if request.url.path == "/jwks":
            return httpx.Response(200, json={"keys": [self.key.as_dict(private=False)]})
        if request.url.path == "/token":
            return httpx.Response(200, json=self.token_response)
        if request.url.path == "/me":
            return httpx.Response(200, json=self.userinfo)
        return httpx.Response(404)

    def sign(self, header: dict | None = None, **claims) -> str:
        now = int(time.time())
        body = {"iss": ISSUER, "aud": "smcp", "sub": "u1", "nonce": "n", "iat": now, "exp": now + 300, **claims}
        head = {"alg": "RS256", "kid": "k1", **(header or {})}
        return jwt.encode({k: v for k, v in head.items() if v is not None}, {k: v for k, v in body.items() if v is not None},
                          self.key, algorithms=["RS256"])


def published() -> tuple[Published, UpstreamOidc]:
    pub = Published()
    config = OidcConfig(issuer=ISSUER, client_id="smcp", client_secret="s", redirect_uri=CALLBACK)
    return pub, UpstreamOidc(config, transport=httpx.MockTransport(pub.handler))


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def refused(upstream: UpstreamOidc, token: str, fragment: str, **kw) -> None:
    with pytest.raises(OidcError) as exc:
        await upstream.validate_id_token(token, nonce="n", **kw)
    assert fragment in exc.value.message, exc.value.message


async def test_id_token_rules() -> None:
    pub, upstream = published()
    assert (await upstream.validate_id_token(pub.sign(), nonce="n"))["sub"] == "u1"
    now = int(time.time())
    await refused(upstream, pub.sign(aud=["smcp", "other"]), "azp")  # several audiences need azp
    assert await upstream.validate_id_token(pub.sign(aud=["smcp", "other"], azp="smcp"), nonce="n")
    await refused(upstream, pub.sign(azp="other"), "azp")
    await refused(upstream, pub.sign(exp=now - 120), "expired")
    assert await upstream.validate_id_token(pub.sign(exp=now - 30), nonce="n")  # within the leeway
    await refused(upstream, pub.sign(iat=now + 600), "iat")
    await refused(upstream, pub.sign(iat=now - 3600), "iat")
    await refused(upstream, pub.sign(iat=None), "iat")
    await refused(upstream, pub.sign(nbf=now + 600), "not valid yet")
    await refused(upstream, pub.sign(sub=None), "sub")
    await refused(upstream, pub.sign(sub="x" * 256), "sub")
    await refused(upstream, pub.sign(nonce=None), "nonce")
    await refused(upstream, "not.a-token", "malformed")


async def test_id_token_algorithms_and_keys() -> None:
    pub, upstream = published()
    good = pub.sign()
    head, body, _ = good.split(".")
    # alg none, even though this provider (foolishly) lists it.
    none = _b64url(json.dumps({"alg": "none", "kid": "k1"}).encode())
    await refused(upstream, f"{none}.{body}.", "'none'")
    # HS256 keyed with the client secret: listed, still refused.
    hs = jwt.encode({"alg": "HS256", "kid": "k1"}, {"iss": ISSUER, "aud": "smcp", "sub": "u1", "nonce": "n",
                                                      "iat": int(time.time()), "exp": int(time.time()) + 60},
                    OctKey.import_key("s" * 32), algorithms=["HS256"])
    await refused(upstream, hs, "'HS256'")
    # An algorithm the provider does not list.
    es = jwt.encode({"alg": "ES256", "kid": "k1"}, {"sub": "u1"}, ECKey.generate_key("P-256"), algorithms=["ES256"])
    await refused(upstream, es, "'ES256'")
    # A body changed under the signature.
    forged = _b64url(json.dumps({**json.loads(base64.urlsafe_b64decode(body + "==")), "sub": "admin"}).encode())
    await refused(upstream, f"{head}.{forged}.{good.split('.')[2]}", "signature does not verify")
    # No kid: fine while the JWKS has one RSA key.
    assert await upstream.validate_id_token(pub.sign(header={"kid": None}), nonce="n")


async def test_at_hash_and_userinfo_substitution() -> None:
    pub, upstream = published()
    access = "an-access-token"
    at_hash = _b64url(hashlib.sha256(access.encode()).digest()[:16])
    assert await upstream.validate_id_token(pub.sign(at_hash=at_hash), nonce="n", access_token=access)
    await refused(upstream, pub.sign(at_hash=at_hash), "at_hash", access_token="another-access-token")

    # The code exchange: email comes from userinfo, which must be about the same subject.
    pub.token_response = {"id_token": pub.sign(), "access_token": access, "token_type": "Bearer"}
    pub.userinfo = {"sub": "u1", "email": "U1@Example.com", "email_verified": True}
    identity = await upstream.redeem("code", code_verifier="v" * 43, nonce="n")
    assert identity.subject == "u1" and identity.email == "u1@example.com" and upstream.username_for(identity) == "u1@example.com"
    pub.userinfo = {"sub": "someone-else", "email": "boss@example.com", "email_verified": True}
    with pytest.raises(OidcError, match="another subject"):
        await upstream.redeem("code", code_verifier="v" * 43, nonce="n")
    pub.token_response = {"access_token": access, "token_type": "Bearer"}
    with pytest.raises(OidcError, match="no ID token"):
        await upstream.redeem("code", code_verifier="v" * 43, nonce="n")
