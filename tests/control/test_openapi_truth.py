"""The management API's OpenAPI document tells the truth about the running API.

Schemathesis generates requests from /api/v1/openapi.json and checks every answer
against it: statuses, content types, headers and bodies, and that what the schema
allows is accepted and what it forbids is refused. The smaller tests pin each way the
two once disagreed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema_rs  # schemathesis validates with it and installs it
import pytest

from tests.harness import Node, own_node

HERE = Path(__file__).resolve().parent
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
JSON = "application/json"


@pytest.fixture(scope="module")
def live() -> Iterator[Node]:
    with own_node("smcp-openapi-") as node:
        node.create_tenant("acme")
        yield node


def test_schemathesis_finds_no_disagreement(live: Node, tmp_path: Path) -> None:
    assert SCHEMATHESIS.exists(), "schemathesis is in the dev extras: pip install -e '.[dev]'"
    # Every check, none excluded: what the schema cannot state about one operation is in
    # schemathesis.toml. Seeded and deterministic, so a failure reproduces.
    command = [
        str(SCHEMATHESIS),
        "--config-file", str(HERE / "schemathesis.toml"),
        "run", f"{live.base_url}/api/v1/openapi.json",
        "--header", f"Authorization: Bearer {live.admin_token}",
        "--checks", "all",
        "--seed", "20240601",
        "--generation-deterministic",
        "--max-examples", "10",
        "--workers", "1",
        "--request-timeout", "10",
        "--no-color",
    ]  # fmt: skip
    # cwd: schemathesis keeps its crash files in ./.schemathesis
    run = subprocess.run(
        command,
        cwd=tmp_path,
        env={**os.environ, "SCHEMATHESIS_HOOKS": str(HERE / "schemathesis_hooks.py")},
        capture_output=True,
        text=True,
        timeout=180,
    )
    output = f"{run.stdout}\n{run.stderr}"
    assert run.returncode == 0, f"schemathesis exited {run.returncode}:\n{output}"


def test_unmatched_api_paths_are_json_404s(live: Node) -> None:
    headers = {"authorization": f"Bearer {live.admin_token}"}
    # A newline in a path segment: Starlette's Mount at /api/v1 does not match it.
    for method, path in [
        ("GET", "/api/v1/tenants/a%0Ab/secrets"),
        ("DELETE", "/api/v1/tenants/acme/servers/x%0A%12"),
        ("POST", "/api/v1/tenants/%0A/keys"),
        ("GET", "/api/v1/no/such/route"),
    ]:
        r = httpx.request(method, live.base_url + path, headers=headers)
        assert (r.status_code, r.headers["content-type"]) == (404, JSON), (method, path, r.text)
        assert r.json()["error"]["code"] == "not_found"
    # Outside the management API the node's 404 is what it was.
    r = httpx.get(live.base_url + "/no%0Asuch", headers=headers)
    assert r.status_code == 404 and r.headers["content-type"].startswith("text/plain")


async def _openapi(client: httpx.AsyncClient) -> dict[str, Any]:
    r = await client.get("/openapi.json")
    assert r.status_code == 200
    return r.json()


def _concrete(template: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", template)


async def test_405_allow_names_every_method_of_the_path(client: httpx.AsyncClient) -> None:
    doc = await _openapi(client)
    for template, operations in doc["paths"].items():
        r = await client.request("OPTIONS", _concrete(template))
        assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed", (template, r.text)
        allowed = {m.strip() for m in r.headers["allow"].split(",")}
        assert allowed == {m.upper() for m in operations}, template


async def test_a_body_that_is_not_utf8_is_a_documented_400(client: httpx.AsyncClient) -> None:
    doc = await _openapi(client)
    taking_json = [
        (method, template, operation)
        for template, operations in doc["paths"].items()
        for method, operation in operations.items()
        if JSON in operation.get("requestBody", {}).get("content", {})
    ]
    assert len(taking_json) >= 6
    for method, template, operation in taking_json:
        r = await client.request(method, _concrete(template), content=b'{"name": "\xff"}', headers={"content-type": JSON})
        assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request", (method, template, r.text)
        documented = operation["responses"].get("400", {})
        assert documented.get("content", {}).get(JSON, {}).get("schema") == {"$ref": "#/components/schemas/Error"}, (
            method,
            template,
        )


def _body_schema(doc: dict[str, Any], method: str, path: str) -> jsonschema_rs.Draft202012Validator:
    schema = doc["paths"][path][method]["requestBody"]["content"][JSON]["schema"]
    name = schema["$ref"].rsplit("/", 1)[1]
    return jsonschema_rs.Draft202012Validator(doc["components"]["schemas"][name])


async def _agree(
    client: httpx.AsyncClient, method: str, template: str, path: str, bodies: list[dict[str, Any]]
) -> None:
    """The documented body schema allows exactly the bodies the API accepts."""
    doc = await _openapi(client)
    schema = _body_schema(doc, method, template)
    documented = doc["paths"][template][method]["responses"]
    for body in bodies:
        r = await client.request(method.upper(), path, json=body)
        accepted = r.status_code in (200, 201)
        assert schema.is_valid(body) == accepted, (body, r.status_code, r.text)
        assert str(r.status_code) in documented, (body, r.status_code)


async def test_the_secret_schema_is_what_the_api_accepts(client: httpx.AsyncClient) -> None:
    assert (await client.post("/tenants", json={"name": "acme"})).status_code == 201
    bodies: list[dict[str, Any]] = [
        {},
        {"value": None},
        {"value": None, "value_base64": None},
        {"value": "x", "value_base64": "eA=="},
        {"value": ""},
        {"value_base64": ""},
        {"value_base64": "eA"},
        {"value_base64": "eA==="},
        {"value_base64": "!!!!"},
        {"value": "x", "extra": 1},
        {"value": "x"},
        {"value_base64": "eA=="},
        {"value_base64": "AP8="},
        {"value": None, "value_base64": "eHl6"},
        {"value": "text", "value_base64": None},
    ]
    await _agree(client, "put", "/tenants/{tenant}/secrets/{name}", "/tenants/acme/secrets/TOKEN", bodies)


async def test_the_user_schema_is_what_the_api_accepts(client: httpx.AsyncClient) -> None:
    bodies = [
        {"name": "dave", "password": ""},
        {"name": "dave", "password": "9 chars!!"},
        {"name": "Dave", "password": "long enough password"},
        {"name": "dave", "password": "10 chars!!"},
        {"name": "erin", "password": "long enough password"},
    ]
    await _agree(client, "post", "/users", "/users", bodies)


async def test_the_oauth_client_schema_is_what_the_api_accepts(client: httpx.AsyncClient) -> None:
    assert (await client.post("/tenants", json={"name": "acme"})).status_code == 201

    def app(**fields: Any) -> dict[str, Any]:
        return {"client_name": "App", "redirect_uris": ["https://app.example/cb"], **fields}

    bodies = [
        app(),
        app(redirect_uris=["http://localhost:8080/cb", "http://[::1]/cb", "com.example.app:/cb"]),
        app(redirect_uris=["https://app.example/cb?next=%2F"]),
        app(redirect_uris=[]),
        app(redirect_uris=["ftp://app.example/cb"]),
        app(redirect_uris=["http://app.example/cb"]),
        app(redirect_uris=["https://app.example/cb#top"]),
        app(redirect_uris=["https:///cb"]),
        app(redirect_uris=["https://user@app.example/cb"]),
        app(redirect_uris=["https://app.example/c b"]),
        app(redirect_uris=["https://app.example/" + "a" * 2000]),
        app(grant_types=[]),
        app(grant_types=["authorization_code"]),
        app(grant_types=["refresh_token"]),
        app(grant_types=["authorization_code", "implicit"]),
        app(token_endpoint_auth_method=""),
        app(token_endpoint_auth_method="client_secret_post"),
        app(token_endpoint_auth_method="private_key_jwt"),
    ]
    await _agree(client, "post", "/tenants/{tenant}/oauth-clients", "/tenants/acme/oauth-clients", bodies)
