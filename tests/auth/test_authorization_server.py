"""The authorization server: metadata, authorize (PKCE, redirect URIs, resource), login and
consent (CSRF, no open redirects), token (codes, refresh rotation, reuse), revocation, DCR."""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest
from oauth_helpers import BASE, REDIRECT, Flow, hidden, pkce, query_of, server_url

from smcp.auth.tokens import sha256_hex
from smcp.store import Store

ECHO = server_url("acme", "echo")


async def test_metadata(idp) -> None:
    r = await idp.http.get("/.well-known/oauth-authorization-server")
    assert r.status_code == 200
    doc = r.json()
    assert doc["issuer"] == BASE
    assert doc["authorization_endpoint"] == f"{BASE}/oauth/authorize"
    assert doc["token_endpoint"] == f"{BASE}/oauth/token"
    assert doc["registration_endpoint"] == f"{BASE}/oauth/register"
    assert doc["revocation_endpoint"] == f"{BASE}/oauth/revoke"
    assert doc["jwks_uri"] == f"{BASE}/oauth/jwks"
    assert doc["code_challenge_methods_supported"] == ["S256"]
    assert doc["response_types_supported"] == ["code"]
    assert doc["authorization_response_iss_parameter_supported"] is True
    assert doc["client_id_metadata_document_supported"] is True
    assert set(doc["grant_types_supported"]) == {"authorization_code", "refresh_token"}


async def test_code_flow_returns_state_and_iss_and_tokens(idp) -> None:
    flow = Flow(idp.http, idp.public_client)
    page = await flow.authorize()
    assert page.status_code == 200 and "Sign in" in page.text
    assert page.headers["x-frame-options"] == "DENY" and "frame-ancestors 'none'" in page.headers["content-security-policy"]
    consent = await flow.login(page)
    assert consent.status_code == 200
    # The consent page says who, which tenant, which server and what scopes.
    for text in ("Test CLI", "acme", "echo", ECHO, "<code>mcp</code>", "alice", "127.0.0.1"):
        assert text in consent.text, text
    done = await flow.consent(consent)
    assert done.status_code == 303
    location = done.headers["location"]
    assert location.startswith(REDIRECT + "?")
    q = query_of(location)
    assert q["state"] == flow.state and q["iss"] == BASE and q["code"]
    r = await flow.exchange(q["code"])
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    body = r.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 300 and body["scope"] == "mcp"
    assert body["refresh_token"].startswith("smcp_rt_")


async def test_second_authorization_skips_login_with_the_session_cookie(idp) -> None:
    flow = Flow(idp.http, idp.public_client)
    await flow.code()
    page = await flow.authorize()
    assert "name=password" not in page.text and "Allow Test CLI" in page.text


async def _redirect_error(flow: Flow, **params) -> dict[str, str]:
    r = await flow.authorize(**params)
    assert r.status_code == 303, r.text
    assert r.headers["location"].startswith(REDIRECT + "?")
    q = query_of(r.headers["location"])
    assert q["iss"] == BASE and q["state"] == flow.state
    return q


async def test_pkce_is_required_and_only_s256(idp) -> None:
    flow = Flow(idp.http, idp.public_client)
    assert (await _redirect_error(flow, code_challenge=None, code_challenge_method=None))["error"] == "invalid_request"
    q = await _redirect_error(flow, code_challenge_method="plain")
    assert q["error"] == "invalid_request" and "S256" in q["error_description"]
    assert (await _redirect_error(flow, code_challenge_method=None))["error"] == "invalid_request"
    assert (await _redirect_error(flow, code_challenge="short"))["error"] == "invalid_request"


async def test_resource_is_required_and_must_be_a_hosted_server(idp) -> None:
    flow = Flow(idp.http, idp.public_client)
    assert (await _redirect_error(flow, resource=None))["error"] == "invalid_target"
    for bad in (server_url("acme", "nope"), ECHO + "/", ECHO.upper(), "https://evil.example/t/acme/echo/mcp", BASE):
        assert (await _redirect_error(flow, resource=bad))["error"] == "invalid_target", bad
    assert (await _redirect_error(flow, scope="mcp admin"))["error"] == "invalid_scope"
    assert (await _redirect_error(flow, response_type="token"))["error"] == "unsupported_response_type"


async def test_redirect_uri_must_match_exactly_and_is_never_redirected_to_otherwise(idp) -> None:
    flow = Flow(idp.http, idp.public_client)
    for bad in ("https://evil.example/callback", REDIRECT + "?next=https://evil.example", REDIRECT + "/", REDIRECT.replace("33418", "33419"),
                "http://127.0.0.1:33418/Callback"):
        r = await flow.authorize(redirect_uri=bad)
        assert r.status_code == 400 and "location" not in r.headers, bad
        assert "not registered" in r.text
    # Errors before the client is known are shown, not redirected, too.
    r = await flow.authorize(client_id="nobody")
    assert r.status_code == 400 and "location" not in r.headers


async def test_login_and_membership(idp) -> None:
    flow = Flow(idp.http, idp.public_client)
    page = await flow.authorize()
    r = await flow.login(page, password="wrong password!")
    assert r.status_code == 401 and "Wrong user name or password" in r.text
    r = await flow.login(page, user="nobody")
    assert r.status_code == 401
    # carol is not a member of acme; bob is an auditor, who may not use MCP servers.
    assert (await flow.login(page, user="carol")).status_code == 403
    assert (await flow.login(page, user="bob")).status_code == 403


async def test_consent_is_csrf_protected(idp) -> None:
    flow = Flow(idp.http, idp.public_client)
    consent = await flow.login(await flow.authorize())
    request, csrf = hidden(consent.text, "request"), hidden(consent.text, "csrf")
    post = idp.http.post
    # Wrong CSRF token.
    r = await post("/oauth/consent", data={"request": request, "csrf": "x" * 32, "decision": "approve"})
    assert r.status_code == 403 and "location" not in r.headers
    # A cross-site form post: the browser sends the cookies, and the Origin.
    r = await post("/oauth/consent", data={"request": request, "csrf": csrf, "decision": "approve"},
                   headers={"origin": "https://evil.example"})
    assert r.status_code == 403
    # No CSRF cookie (another browser): the form's token alone is not enough.
    async with httpx.AsyncClient(transport=idp.transport, base_url=BASE) as stranger:
        stranger.cookies.set("smcp_session", idp.http.cookies.get("smcp_session"))
        r = await stranger.post("/oauth/consent", data={"request": request, "csrf": csrf, "decision": "approve"})
        assert r.status_code == 403
    # A tampered request (another redirect_uri) fails its signature.
    head, body, sig = request.split(".")
    r = await post("/oauth/consent", data={"request": f"{head}.{body[:-4]}AAAA.{sig}", "csrf": csrf, "decision": "approve"})
    assert r.status_code == 400 and "location" not in r.headers
    # The untouched form still works.
    r = await post("/oauth/consent", data={"request": request, "csrf": csrf, "decision": "approve"})
    assert r.status_code == 303 and r.headers["location"].startswith(REDIRECT)


async def test_login_is_csrf_protected(idp) -> None:
    flow = Flow(idp.http, idp.public_client)
    page = await flow.authorize()
    r = await idp.http.post("/oauth/login", data={"request": hidden(page.text, "request"), "csrf": "forged",
                                                    "username": "alice", "password": "x"})
    assert r.status_code == 403


async def test_consent_without_a_session_is_refused(idp) -> None:
    flow = Flow(idp.http, idp.public_client)
    consent = await flow.login(await flow.authorize())
    idp.http.cookies.delete("smcp_session")
    r = await flow.consent(consent)
    assert r.status_code == 401 and "location" not in r.headers


async def test_deny_returns_access_denied(idp) -> None:
    flow = Flow(idp.http, idp.public_client)
    consent = await flow.login(await flow.authorize())
    r = await flow.consent(consent, decision="deny")
    q = query_of(r.headers["location"])
    assert q["error"] == "access_denied" and q["state"] == flow.state and q["iss"] == BASE


async def test_code_exchange_checks(idp) -> None:
    flow = Flow(idp.http, idp.public_client)
    code = await flow.code()
    good_verifier = flow.verifier
    # Missing or wrong verifier, wrong redirect_uri or resource: refused, and the code stays unspent.
    assert (await flow.exchange(code, code_verifier=None)).json()["error"] == "invalid_request"
    flow.verifier = pkce()[0]
    assert (await flow.exchange(code)).json()["error"] == "invalid_grant"
    flow.verifier = good_verifier
    assert (await flow.exchange(code, redirect_uri="http://127.0.0.1:1/x")).json()["error"] == "invalid_grant"
    assert (await flow.exchange(code, resource=server_url("acme", "files"))).json()["error"] == "invalid_grant"
    other = Flow(idp.http, "no-such-client")
    r = await other.exchange(code)
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    assert (await flow.exchange(code)).status_code == 200


async def test_replayed_code_revokes_everything_issued_from_it(idp) -> None:
    flow = Flow(idp.http, idp.public_client)
    code = await flow.code()
    first = await flow.exchange(code)
    assert first.status_code == 200
    replay = await flow.exchange(code)
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    assert "already used" in replay.json()["error_description"]
    tokens = first.json()
    assert (await flow.refresh(tokens["refresh_token"])).json()["error"] == "invalid_grant"
    r = await idp.http.post("/t/acme/echo/mcp", headers={"authorization": f"Bearer {tokens['access_token']}"})
    assert r.status_code == 401


async def test_expired_code_is_refused(idp) -> None:
    from smcp.store import tables as t

    flow = Flow(idp.http, idp.public_client)
    code = await flow.code()
    async with idp.store.db.write() as conn:
        await conn.execute(t.oauth_codes.update().values(expires_at=t.utcnow()))
    assert "expired" in (await flow.exchange(code)).json()["error_description"]


async def test_refresh_rotates_and_reuse_revokes_the_family(idp) -> None:
    flow = Flow(idp.http, idp.public_client)
    tokens = await flow.tokens()
    r1 = await flow.refresh(tokens["refresh_token"])
    assert r1.status_code == 200
    rotated = r1.json()
    assert rotated["refresh_token"] != tokens["refresh_token"]
    r2 = await flow.refresh(rotated["refresh_token"])
    assert r2.status_code == 200
    latest = r2.json()
    # The first refresh token comes back: someone else has it. Everything in the family dies.
    reuse = await flow.refresh(tokens["refresh_token"])
    assert reuse.status_code == 400 and reuse.json()["error"] == "invalid_grant"
    assert (await flow.refresh(latest["refresh_token"])).json()["error"] == "invalid_grant"
    r = await idp.http.post("/t/acme/echo/mcp", headers={"authorization": f"Bearer {latest['access_token']}"})
    assert r.status_code == 401
    # Refresh tokens are stored only as hashes.
    from smcp.store import tables as t

    async with idp.store.db.read() as conn:
        stored = set((await conn.execute(t.oauth_refresh_tokens.select())).scalars())
    assert sha256_hex(latest["refresh_token"]) in stored and latest["refresh_token"] not in stored


async def test_refresh_checks_client_scope_and_resource(idp) -> None:
    flow = Flow(idp.http, idp.public_client)
    tokens = await flow.tokens()
    rt = tokens["refresh_token"]
    assert (await flow.refresh(rt, scope="mcp offline_access")).json()["error"] == "invalid_grant"
    assert (await flow.refresh(rt, resource=server_url("acme", "files"))).json()["error"] == "invalid_grant"
    assert (await flow.refresh(rt, resource=ECHO)).status_code == 200


async def test_concurrent_refreshes_cannot_both_win(idp) -> None:
    flow = Flow(idp.http, idp.public_client)
    tokens = await flow.tokens()
    results = await asyncio.gather(*(flow.refresh(tokens["refresh_token"]) for _ in range(6)))
    statuses = sorted(r.status_code for r in results)
    assert statuses == [200, 400, 400, 400, 400, 400], statuses
    # The losers look like reuse: the whole family is revoked, the winner's token too.
    winner = next(r for r in results if r.status_code == 200).json()
    assert (await flow.refresh(winner["refresh_token"])).json()["error"] == "invalid_grant"


async def test_concurrent_refreshes_across_two_nodes(idp) -> None:
    """Two stores (two engines, two connection pools) on one database, as two nodes would be."""
    flow = Flow(idp.http, idp.public_client)
    tokens = await flow.tokens()
    second = await Store.open(idp.settings)
    try:
        from smcp.auth.tokens import expiry

        async def attempt(store: Store, i: int):
            return await store.oauth.rotate_refresh(
                sha256_hex(tokens["refresh_token"]), lambda g: None, new_hash=f"{i:064x}", new_expires_at=expiry(60)
            )

        outcomes = await asyncio.gather(*(attempt(idp.store if i % 2 else second, i) for i in range(8)))
    finally:
        await second.close()
    winners = [o for o in outcomes if not isinstance(o, str)]
    assert len(winners) == 1, outcomes
    assert all(o in ("replayed", "revoked") for o in outcomes if isinstance(o, str))


async def test_revocation_endpoint(idp) -> None:
    flow = Flow(idp.http, idp.public_client)
    tokens = await flow.tokens()
    # Unknown tokens and tokens of another client: 200 and no effect (RFC 7009 §2.2).
    assert (await idp.http.post("/oauth/revoke", data={"token": "nonsense", "client_id": idp.public_client})).status_code == 200
    reg = await idp.http.post("/oauth/register", json={"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none"})
    other = reg.json()["client_id"]
    await idp.http.post("/oauth/revoke", data={"token": tokens["refresh_token"], "client_id": other})
    assert (await idp.http.post("/t/acme/echo/mcp", headers={"authorization": f"Bearer {tokens['access_token']}"})).status_code == 200
    # Revoking the access token ends the grant.
    r = await idp.http.post("/oauth/revoke", data={"token": tokens["access_token"], "token_type_hint": "access_token",
                                                     "client_id": idp.public_client})
    assert r.status_code == 200
    assert (await idp.http.post("/t/acme/echo/mcp", headers={"authorization": f"Bearer {tokens['access_token']}"})).status_code == 401
    assert (await flow.refresh(tokens["refresh_token"])).json()["error"] == "invalid_grant"


async def test_dynamic_registration_public_and_confidential(idp) -> None:
    r = await idp.http.post("/oauth/register", json={
        "redirect_uris": [REDIRECT], "client_name": "Dyn", "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code", "refresh_token"]})
    assert r.status_code == 201, r.text
    pub = r.json()
    assert "client_secret" not in pub and pub["redirect_uris"] == [REDIRECT]
    assert (await Flow(idp.http, pub["client_id"]).tokens())["refresh_token"]

    r = await idp.http.post("/oauth/register", json={"redirect_uris": [REDIRECT], "client_name": "Conf"})
    conf = r.json()
    assert conf["token_endpoint_auth_method"] == "client_secret_basic" and conf["client_secret"]
    flow = Flow(idp.http, conf["client_id"])
    code = await flow.code()
    assert (await flow.exchange(code)).status_code == 401  # no secret
    assert (await flow.exchange(code, client_secret="wrong")).status_code == 401
    r = await idp.http.post("/oauth/token", auth=(conf["client_id"], conf["client_secret"]), data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "code_verifier": flow.verifier})
    assert r.status_code == 200, r.text
    assert "refresh_token" not in r.json()  # registered for authorization_code only


@pytest.mark.parametrize(
    "doc",
    [
        {"redirect_uris": ["http://evil.example/cb"]},
        {"redirect_uris": ["https://ok.example/cb#frag"]},
        {"redirect_uris": []},
        {"redirect_uris": [REDIRECT], "grant_types": ["implicit"]},
        {"redirect_uris": [REDIRECT], "response_types": ["token"]},
        {"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "private_key_jwt"},
        # Found by tests/auth/test_fuzz_oauth.py: these were a 500 (unhashable values).
        {"redirect_uris": [REDIRECT], "grant_types": [["authorization_code"]]},
        {"redirect_uris": [REDIRECT], "token_endpoint_auth_method": ["none"]},
    ],
)
async def test_dynamic_registration_refuses_bad_metadata(idp, doc) -> None:
    r = await idp.http.post("/oauth/register", json=doc)
    assert r.status_code == 400 and r.json()["error"] in ("invalid_redirect_uri", "invalid_client_metadata")


async def test_dynamic_registration_can_be_turned_off(idp) -> None:
    idp.oauth.s.oauth_dynamic_registration = False
    assert "registration_endpoint" not in (await idp.http.get("/.well-known/oauth-authorization-server")).json()
    assert (await idp.http.post("/oauth/register", json={"redirect_uris": [REDIRECT]})).status_code == 403


async def test_tenant_bound_client_gets_only_its_tenants_servers(idp) -> None:
    r = await idp.api.post("/tenants/other/oauth-clients", json={"client_name": "Other's app", "redirect_uris": [REDIRECT]})
    assert r.status_code == 201, r.text
    flow = Flow(idp.http, r.json()["client_id"])
    assert (await _redirect_error(flow))["error"] == "invalid_target"
    flow.resource = server_url("other", "echo")
    assert (await flow.tokens("carol"))["access_token"]


async def test_secrets_never_reach_the_database_in_clear(idp) -> None:
    flow = Flow(idp.http, idp.public_client)
    code = await flow.code()
    db = idp.settings.data_dir / "smcp.db"
    raw = b"".join(p.read_bytes() for p in (db, db.with_name("smcp.db-wal")) if p.exists())
    assert code.encode() not in raw
    assert re.search(rb"smcp_rt_", raw) is None
