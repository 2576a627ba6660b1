"""The gateway as an OAuth resource server: metadata, challenges, and every way a token can be wrong."""

from __future__ import annotations

import base64
import json
import time
from datetime import timedelta

from joserfc import jwt
from joserfc.jwk import ECKey
from oauth_helpers import BASE, Flow, server_url

from smcp.auth.tokens import ACCESS_TOKEN_TYPE
from smcp.store import tables as t

ECHO = server_url("acme", "echo")


def _b64(obj: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def token_for(idp, user: str = "alice", resource: str = ECHO, **params: str) -> dict:
    flow = Flow(idp.http, idp.public_client, resource=resource)
    r = await flow.exchange(await flow.code(user, **params))
    assert r.status_code == 200, r.text
    return r.json()


def claims_of(token: str) -> dict:
    body = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))


async def test_protected_resource_metadata_at_the_path_suffixed_location(idp) -> None:
    r = await idp.http.get("/.well-known/oauth-protected-resource/t/acme/echo/mcp")
    assert r.status_code == 200
    doc = r.json()
    assert doc["resource"] == ECHO
    assert doc["authorization_servers"] == [BASE]
    assert doc["scopes_supported"] == ["mcp"]
    assert doc["bearer_methods_supported"] == ["header"]
    assert r.headers["access-control-allow-origin"] == "*"
    assert (await idp.http.get("/.well-known/oauth-protected-resource/t/ACME!/echo/mcp")).status_code == 404


async def test_401_without_credentials_points_at_the_metadata(idp) -> None:
    r = await idp.http.post("/t/acme/echo/mcp", json={})
    assert r.status_code == 401
    challenge = r.headers["www-authenticate"]
    assert challenge.startswith("Bearer ")
    assert f'resource_metadata="{BASE}/.well-known/oauth-protected-resource/t/acme/echo/mcp"' in challenge
    assert 'scope="mcp"' in challenge
    assert "error=" not in challenge  # RFC 6750 §3.1: no error code when no credentials were sent


async def test_a_valid_token_for_this_server_is_accepted(idp) -> None:
    tokens = await token_for(idp)
    claims = claims_of(tokens["access_token"])
    assert claims["aud"] == ECHO and claims["iss"] == BASE and claims["tenant"] == "acme"
    assert claims["exp"] - claims["iat"] == idp.settings.access_token_ttl_s
    r = await idp.http.post("/t/acme/echo/mcp", headers=bearer(tokens["access_token"]))
    assert r.status_code == 200, r.text
    assert r.json() == {
        "kind": "oauth",
        "subject": f"user:{claims['sub']}",
        "tenant": "acme",
        "role": "developer",
        "scopes": ["mcp"],
        "client_id": idp.public_client,
    }


async def _refused(idp, path: str, token: str, status: int = 401, error: str = "invalid_token") -> str:
    r = await idp.http.post(path, headers=bearer(token))
    assert r.status_code == status, r.text
    challenge = r.headers["www-authenticate"]
    assert f'error="{error}"' in challenge and "resource_metadata=" in challenge
    return r.json()["error_description"]


async def test_wrong_audience_is_refused(idp) -> None:
    token = (await token_for(idp))["access_token"]
    # The same tenant's other server: audience binding is exact, not per tenant.
    assert "another resource" in await _refused(idp, "/t/acme/files/mcp", token)


async def test_another_tenants_token_is_refused(idp) -> None:
    token = (await token_for(idp, "carol", resource=server_url("other", "echo")))["access_token"]
    assert "another resource" in await _refused(idp, "/t/acme/echo/mcp", token)


def _forge(idp, **overrides) -> str:
    """A token signed with the idp's real current key, with chosen claims."""
    now = int(time.time())
    claims = {
        "iss": BASE, "sub": "u", "aud": ECHO, "client_id": "c", "tenant": "acme", "scope": "mcp",
        "role": "developer", "gid": "g", "iat": now, "nbf": now, "exp": now + 60,
    }
    claims.update(overrides)
    return idp.oauth.keys.sign(claims, ACCESS_TOKEN_TYPE)


async def test_expired_token_is_refused(idp) -> None:
    token = (await token_for(idp))["access_token"]
    c = claims_of(token)
    expired = _forge(idp, sub=c["sub"], client_id=c["client_id"], gid=c["gid"], iat=c["iat"] - 600, nbf=c["iat"] - 600,
                     exp=int(time.time()) - 1)
    assert "expired" in await _refused(idp, "/t/acme/echo/mcp", expired)


async def test_bad_signature_is_refused(idp) -> None:
    token = (await token_for(idp))["access_token"]
    head, body, sig = token.split(".")
    # Same header and signature, but a payload changed to another server: the signature no longer matches.
    claims = claims_of(token) | {"aud": server_url("acme", "files")}
    assert "signed" in await _refused(idp, "/t/acme/files/mcp", f"{head}.{_b64(claims)}.{sig}")
    flipped = sig[:-2] + ("AA" if sig[-2:] != "AA" else "BB")
    assert await _refused(idp, "/t/acme/echo/mcp", f"{head}.{body}.{flipped}")


async def test_alg_none_is_refused(idp) -> None:
    token = (await token_for(idp))["access_token"]
    header = {"alg": "none", "typ": ACCESS_TOKEN_TYPE, "kid": json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))["kid"]}
    unsigned = f"{_b64(header)}.{token.split('.')[1]}."
    await _refused(idp, "/t/acme/echo/mcp", unsigned)
    await _refused(idp, "/t/acme/echo/mcp", unsigned + "AAAA")


async def test_foreign_key_and_wrong_issuer_are_refused(idp) -> None:
    kid = idp.oauth.keys._current[0]
    stranger = ECKey.generate_key("P-256", parameters={"kid": kid})
    now = int(time.time())
    forged = jwt.encode({"alg": "ES256", "kid": kid, "typ": ACCESS_TOKEN_TYPE},
                        {"iss": BASE, "aud": ECHO, "sub": "u", "tenant": "acme", "scope": "mcp", "role": "owner",
                         "client_id": "c", "gid": "g", "iat": now, "exp": now + 60}, stranger)
    await _refused(idp, "/t/acme/echo/mcp", forged)
    assert "issuer" in await _refused(idp, "/t/acme/echo/mcp", _forge(idp, iss="https://evil.example"))


async def test_other_jwt_types_from_the_same_key_are_not_access_tokens(idp) -> None:
    # The login-session and authorization-request JWTs share the signing key but not the type.
    now = int(time.time())
    session = idp.oauth.keys.sign({"iss": BASE, "aud": ECHO, "sub": "u", "exp": now + 60}, "smcp-session+jwt")
    await _refused(idp, "/t/acme/echo/mcp", session)


async def test_missing_scope_gets_403_insufficient_scope_for_step_up(idp) -> None:
    tokens = await token_for(idp)
    c = claims_of(tokens["access_token"])
    narrow = _forge(idp, sub=c["sub"], client_id=c["client_id"], gid=c["gid"], scope="offline_access")
    r = await idp.http.post("/t/acme/echo/mcp", headers=bearer(narrow))
    assert r.status_code == 403
    challenge = r.headers["www-authenticate"]
    assert 'error="insufficient_scope"' in challenge and 'scope="mcp"' in challenge and "resource_metadata=" in challenge


async def test_revoked_grant_ends_its_access_tokens(idp) -> None:
    tokens = await token_for(idp)
    headers = bearer(tokens["access_token"])
    assert (await idp.http.post("/t/acme/echo/mcp", headers=headers)).status_code == 200
    r = await idp.http.post("/oauth/revoke", data={"token": tokens["refresh_token"], "client_id": idp.public_client})
    assert r.status_code == 200
    assert "revoked" in await _refused(idp, "/t/acme/echo/mcp", tokens["access_token"])


async def test_verified_tokens_are_cached(idp, monkeypatch) -> None:
    token = (await token_for(idp))["access_token"]
    calls = []
    real = idp.oauth.keys.verify
    monkeypatch.setattr(idp.oauth.keys, "verify", lambda *a: calls.append(1) or real(*a))
    for _ in range(5):
        assert (await idp.http.post("/t/acme/echo/mcp", headers=bearer(token))).status_code == 200
    assert len(calls) == 1
    # The audience is still checked on every use, cached or not.
    assert (await idp.http.post("/t/acme/files/mcp", headers=bearer(token))).status_code == 401


async def test_signing_keys_rotate_with_overlap(idp) -> None:
    old = (await token_for(idp))["access_token"]
    old_kid = idp.oauth.keys._current[0]
    # Age the current key just past the rotation period, then issue again.
    aged = t.utcnow() - timedelta(seconds=idp.settings.signing_key_rotate_s + 60)
    async with idp.store.db.write() as conn:
        await conn.execute(t.oauth_signing_keys.update().values(created_at=aged))
    await idp.oauth.keys.reload()
    new = (await token_for(idp))["access_token"]
    new_kid = json.loads(base64.urlsafe_b64decode(new.split(".")[0] + "=="))["kid"]
    assert new_kid != old_kid
    kids = {k["kid"] for k in (await idp.http.get("/oauth/jwks")).json()["keys"]}
    assert {old_kid, new_kid} <= kids
    for k in (await idp.http.get("/oauth/jwks")).json()["keys"]:
        assert "d" not in k and k["alg"] == "ES256"  # public halves only
    for token in (old, new):
        assert (await idp.http.post("/t/acme/echo/mcp", headers=bearer(token))).status_code == 200


async def test_api_keys_keep_working_with_roles_and_server_lists(idp) -> None:
    _, viewer = await idp.store.api_keys.create("acme", "v")
    _, auditor = await idp.store.api_keys.create("acme", "a", role="auditor")
    _, limited = await idp.store.api_keys.create("acme", "l", role="developer", servers=("echo",))
    assert (await idp.http.post("/t/acme/echo/mcp", headers=bearer(viewer))).json()["kind"] == "api_key"
    r = await idp.http.post("/t/acme/echo/mcp", headers=bearer(auditor))
    assert r.status_code == 403 and "auditor" in r.json()["error_description"]
    assert (await idp.http.post("/t/acme/echo/mcp", headers=bearer(limited))).status_code == 200
    assert (await idp.http.post("/t/acme/files/mcp", headers=bearer(limited))).status_code == 403
    r = await idp.http.post("/t/acme/echo/mcp", headers=bearer("smcp_000000000000_nope"))
    assert r.status_code == 401 and 'error="invalid_token"' in r.headers["www-authenticate"]


async def test_keys_older_than_any_token_they_signed_are_dropped(idp) -> None:
    old_kid = idp.oauth.keys._current[0]
    ancient = t.utcnow() - timedelta(days=365)
    async with idp.store.db.write() as conn:
        await conn.execute(t.oauth_signing_keys.update().values(created_at=ancient))
    await idp.oauth.keys.rotate_if_due(force_check=True)
    kids = {k["kid"] for k in (await idp.http.get("/oauth/jwks")).json()["keys"]}
    assert old_kid not in kids and len(kids) == 1
