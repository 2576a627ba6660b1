"""The authorization server's endpoints take anything a browser or client can send.

Random forms, queries and JSON (right field names with wrong values, garbage, odd
content types, repeated fields) get a status below 500 and, from the endpoints that
answer in JSON, an OAuth error object. The requests are drawn from a seeded generator,
so every run sends the same ones; `SMCP_FUZZ_SEED` picks others.
"""

from __future__ import annotations

import json
import random
from typing import Any
from urllib.parse import urlencode

import pytest
from oauth_helpers import REDIRECT, server_url

from tests.fuzzing import fuzz_cases, fuzz_seed

SEED = fuzz_seed()
CASES = fuzz_cases(400)

GARBAGE = ["", " ", "\x00", "é", "a" * 5000, "%zz", "null", "[]", "{}", "-1", "1e999", "../../etc/passwd",
           "javascript:alert(1)", "http://", "https://evil.example/cb", "\ud800".encode("utf-8", "surrogatepass").decode("latin-1")]
FIELDS: dict[str, list[str]] = {
    "grant_type": ["authorization_code", "refresh_token", "client_credentials", "password", "urn:ietf:params:oauth:grant-type:device_code"],
    "code": ["x" * 43],
    "code_verifier": ["v" * 43, "short"],
    "code_challenge": ["c" * 43],
    "code_challenge_method": ["S256", "plain"],
    "redirect_uri": [REDIRECT, "http://127.0.0.1:1/cb", "http://localhost/cb#frag"],
    "client_id": ["cli", "https://client.example/metadata.json", "http://127.0.0.1/meta.json"],
    "client_secret": ["s"],
    "refresh_token": ["r" * 40],
    "resource": [server_url("acme", "echo"), server_url("other", "files"), "https://elsewhere.example/mcp"],
    "scope": ["mcp", "openid", "mcp mcp"],
    "state": ["s1"],
    "response_type": ["code", "token", "code id_token"],
    "token": ["t" * 30],
    "token_type_hint": ["access_token", "refresh_token", "id_token"],
    "username": ["alice", "nobody"],
    "password": ["wrong"],
    "decision": ["approve", "deny"],
    "csrf": ["x"],
    "request": ["eyJhbGciOiJub25lIn0.e30."],
}
JSON_FIELDS = ["redirect_uris", "client_name", "grant_types", "response_types", "token_endpoint_auth_method",
               "client_uri", "logo_uri", "scope", "software_id", "jwks_uri", "contacts"]


def _value(rng: random.Random, name: str) -> str:
    choices = FIELDS.get(name, [])
    return rng.choice(choices) if choices and rng.random() < 0.6 else rng.choice(GARBAGE)


def _json_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(7 if depth < 3 else 4)
    if kind == 0:
        return rng.choice(GARBAGE)
    if kind == 1:
        return rng.choice([None, True, False, 0, -1, 2**70, 1.5])
    if kind == 2:
        return rng.choice([REDIRECT, "http://127.0.0.1:9/cb", "none", "authorization_code", "client_secret_basic"])
    if kind == 3:
        return [REDIRECT]
    if kind == 4:
        return [_json_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(JSON_FIELDS): _json_value(rng, depth + 1) for _ in range(rng.randrange(4))}


def _form(rng: random.Random) -> list[tuple[str, str]]:
    names = rng.sample(sorted(FIELDS), rng.randrange(1, 7))
    pairs = [(name, _value(rng, name)) for name in names]
    if rng.random() < 0.2:
        pairs.append((pairs[0][0], _value(rng, pairs[0][0])))  # a repeated field
    return pairs


def _check(r: Any, what: str, json_errors: bool) -> None:
    assert r.status_code < 500, f"{what}: {r.status_code} {r.text[:300]}"
    if json_errors and r.status_code >= 400 and r.status_code != 405:
        body = r.json()
        assert isinstance(body.get("error"), str), f"{what}: {r.text[:300]}"


@pytest.mark.asyncio
async def test_oauth_endpoints_answer_anything_clearly(idp: Any) -> None:
    rng = random.Random(SEED)
    http = idp.http
    for case in range(CASES):
        endpoint = rng.choice(["token", "register", "revoke", "authorize", "login", "consent"])
        what = f"case {case} ({endpoint})"
        if endpoint == "register":
            body = {rng.choice(JSON_FIELDS): _json_value(rng) for _ in range(rng.randrange(6))}
            if rng.random() < 0.3:
                body["redirect_uris"] = [REDIRECT]
            content = json.dumps(body).encode() if rng.random() < 0.9 else rng.choice(GARBAGE).encode("utf-8", "surrogatepass")
            kind = rng.choice(["application/json"] * 4 + ["text/plain", "application/x-www-form-urlencoded"])
            _check(await http.post("/oauth/register", content=content, headers={"content-type": kind}), what, json_errors=True)
        elif endpoint == "authorize":
            _check(await http.get("/oauth/authorize", params=_form(rng)), what, json_errors=False)
        else:
            form = _form(rng)
            kind = "application/x-www-form-urlencoded" if rng.random() < 0.85 else rng.choice(["application/json", "text/plain"])
            content = urlencode(form).encode() if kind == "application/x-www-form-urlencoded" else json.dumps(dict(form)).encode()
            r = await http.post(f"/oauth/{endpoint}", content=content, headers={"content-type": kind})
            _check(r, what, json_errors=endpoint in ("token", "revoke"))
