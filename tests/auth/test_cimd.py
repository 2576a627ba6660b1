"""Client ID metadata documents: fetched with an SSRF guard, validated, cached; and used in a flow."""

from __future__ import annotations

from pathlib import Path

import httpx
import orjson
import pytest
from cimd_host import MetadataHost, make_pki
from oauth_helpers import Flow

from smcp.app import _authorization_server
from smcp.auth.cimd import (
    ClientMetadataError,
    ClientMetadataFetcher,
    check_url,
    is_private_address,
    is_public_address,
    tls_context,
)
from smcp.auth.errors import OAuthError
from smcp.config import Settings
from smcp.store import Store

URL = "https://app.example/oauth/client.json"
REDIRECT = "http://127.0.0.1:40111/cb"
DOC = {"client_id": URL, "client_name": "Example App", "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none",
       "grant_types": ["authorization_code", "refresh_token"]}


def fetcher(handler, addresses=("93.184.215.14",), **kw) -> tuple[ClientMetadataFetcher, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    async def resolver(host: str, port: int) -> list[str]:
        return list(addresses)

    return ClientMetadataFetcher(resolver=resolver, transport=httpx.MockTransport(record), **kw), seen


@pytest.mark.parametrize(
    "address,public",
    [
        ("93.184.215.14", True), ("2606:4700::1111", True),
        ("127.0.0.1", False), ("10.1.2.3", False), ("172.16.0.1", False), ("192.168.1.1", False),
        ("169.254.169.254", False), ("100.64.0.1", False), ("0.0.0.0", False), ("::1", False), ("fe80::1", False),
        ("fd00::1", False), ("::ffff:127.0.0.1", False), ("64:ff9b::a9fe:a9fe", False), ("64:ff9b::5db8:d70e", True),
        ("64:ff9b:1::1", False), ("2001:0:4136:e378:8000:63bf:3fff:fdd2", False), ("2002:7f00:1::", False),
        ("2002:5db8:d70e::", True), ("224.0.0.1", False), ("not-an-ip", False),
    ],
)
def test_public_address_classification(address: str, public: bool) -> None:
    assert is_public_address(address) is public


@pytest.mark.parametrize(
    "url",
    ["http://app.example/c.json", "https://app.example", "https://app.example/", "https://u:p@app.example/c.json",
     "https://app.example/a/../c.json", "https://app.example/c.json#x", "ftp://app.example/c.json"],
)
def test_client_id_url_rules(url: str) -> None:
    with pytest.raises(ClientMetadataError):
        check_url(url)


async def test_fetches_pinned_to_the_checked_address_with_sni() -> None:
    f, seen = fetcher(lambda r: httpx.Response(200, json=DOC, headers={"cache-control": "max-age=60"}))
    client = await f.get(URL)
    assert client.client_id == URL and client.client_name == "Example App" and client.redirect_uris == (REDIRECT,)
    req = seen[0]
    assert req.url.host == "93.184.215.14" and req.headers["host"] == "app.example"
    assert req.extensions["sni_hostname"] == "app.example"
    await f.get(URL)
    assert len(seen) == 1  # cached


@pytest.mark.parametrize("address", ["127.0.0.1", "10.0.0.5", "::ffff:169.254.169.254", "64:ff9b::a9fe:a9fe"])
async def test_private_addresses_are_refused_before_connecting(address: str) -> None:
    f, seen = fetcher(lambda r: httpx.Response(200, json=DOC), addresses=("93.184.215.14", address))
    with pytest.raises(ClientMetadataError, match="non-public"):
        await f.get(URL)
    assert seen == []


PRIVATE = ("127.0.0.1", "::1", "10.0.0.5", "172.16.0.1", "192.168.1.1", "100.64.0.1", "fd00::1", "::ffff:10.0.0.5")
NEVER = ("169.254.169.254", "fe80::1", "0.0.0.0", "::", "224.0.0.1", "ff02::1", "64:ff9b::a9fe:a9fe", "::ffff:169.254.169.254")


@pytest.mark.parametrize("address", PRIVATE)
async def test_private_addresses_are_fetched_only_when_the_setting_allows_them(address: str) -> None:
    assert Settings().cimd_allow_private_addresses is False  # the default
    f, seen = fetcher(lambda r: httpx.Response(200, json=DOC), addresses=(address,))
    with pytest.raises(ClientMetadataError, match="non-public"):
        await f.get(URL)
    assert seen == []
    # Allowed: fetched, still pinned to the checked address, with the host name as SNI and Host.
    f, seen = fetcher(lambda r: httpx.Response(200, json=DOC), addresses=(address,), allow_private_addresses=True)
    client = await f.get(URL)
    assert client.client_id == URL and len(seen) == 1
    assert seen[0].url.host == address and seen[0].headers["host"] == "app.example"
    assert seen[0].extensions["sni_hostname"] == "app.example"


@pytest.mark.parametrize("address", NEVER)
async def test_link_local_multicast_and_unspecified_stay_refused_when_private_is_allowed(address: str) -> None:
    assert not is_private_address(address) and not is_public_address(address)
    f, seen = fetcher(lambda r: httpx.Response(200, json=DOC), addresses=("10.0.0.5", address), allow_private_addresses=True)
    with pytest.raises(ClientMetadataError, match="neither a public nor a private"):
        await f.get(URL)
    assert seen == []


@pytest.mark.parametrize(
    "response",
    [httpx.Response(302, headers={"location": "https://10.0.0.6/c.json"}), httpx.Response(200, content=b"x" * 6000)],
)
async def test_allowing_private_addresses_keeps_the_other_rules(response: httpx.Response) -> None:
    f, seen = fetcher(lambda r: response, addresses=("10.0.0.5",), allow_private_addresses=True)
    with pytest.raises(ClientMetadataError):
        check_url("http://10.0.0.5/client.json")  # https only, whatever the address
    with pytest.raises(ClientMetadataError):
        await f.get(URL)  # no redirects followed, size cap
    assert len(seen) == 1


async def test_a_document_on_loopback_over_real_tls_from_a_private_ca(tmp_path: Path) -> None:
    """No fakes: a real HTTPS server on loopback with a certificate for "localhost" from a
    throwaway CA. Refused by default before any connection; with private addresses allowed,
    refused while the CA is not trusted; fetched (SNI "localhost") once SMCP_CIMD_CA_FILE's
    CA is."""
    pki = make_pki(tmp_path)

    def document(url: str) -> dict:
        return {**DOC, "client_id": url}

    with MetadataHost(pki, document) as host:
        with pytest.raises(ClientMetadataError, match="non-public"):
            await ClientMetadataFetcher(verify=tls_context(pki.ca_file)).get(host.url)
        assert host.sni == [] and host.hits == []

        with pytest.raises(ClientMetadataError, match="CERTIFICATE_VERIFY_FAILED"):
            await ClientMetadataFetcher(verify=tls_context(), allow_private_addresses=True).get(host.url)
        assert host.hits == []

        client = await ClientMetadataFetcher(verify=tls_context(pki.ca_file), allow_private_addresses=True).get(host.url)
        assert client.client_id == host.url and client.redirect_uris == (REDIRECT,)
        assert host.documents_served() == 1 and set(host.sni) == {"localhost"}
        assert host.hits[0].host_header == f"localhost:{host.port}"

        # The certificate is checked against the name in the URL, not merely the CA: the
        # same server under another name that resolves to it does not verify.
        async def resolver(name: str, port: int) -> list[str]:
            return host.addresses

        other = f"https://metadata.test:{host.port}/client.json"
        with pytest.raises(ClientMetadataError, match="CERTIFICATE_VERIFY_FAILED|match"):
            await ClientMetadataFetcher(verify=tls_context(pki.ca_file), allow_private_addresses=True, resolver=resolver).get(other)
        assert host.documents_served() == 1


async def test_the_authorization_server_takes_both_settings(tmp_path: Path) -> None:
    """SMCP_CIMD_ALLOW_PRIVATE_ADDRESSES and SMCP_CIMD_CA_FILE reach the fetcher the
    authorization server builds: off by default, a loopback document is an invalid client."""
    pki = make_pki(tmp_path / "pki")
    with MetadataHost(pki, lambda url: {**DOC, "client_id": url}) as host:
        for allow in (False, True):
            settings = Settings(data_dir=tmp_path / f"data-{allow}", admin_token="smcpadm_x", auth_cache_ttl_s=0,
                                cimd_allow_private_addresses=allow, cimd_ca_file=pki.ca_file)
            store = await Store.open(settings)
            try:
                oauth = await _authorization_server(settings, store)
                if not allow:
                    with pytest.raises(OAuthError, match="non-public"):
                        await oauth.find_client(host.url)
                    assert host.hits == []
                else:
                    client = await oauth.find_client(host.url)
                    assert client is not None and client.client_id == host.url and client.kind == "metadata"
                    assert host.documents_served() == 1
            finally:
                await store.close()


def test_a_bad_ca_file_is_a_clear_start_up_error(tmp_path: Path) -> None:
    (tmp_path / "not.pem").write_text("not a certificate")
    for path in (tmp_path / "missing.pem", tmp_path / "not.pem"):
        with pytest.raises(ValueError, match="SMCP_CIMD_CA_FILE"):
            tls_context(path)


async def test_ip_literal_client_ids_are_checked_too() -> None:
    f, seen = fetcher(lambda r: httpx.Response(200, json=DOC))
    with pytest.raises(ClientMetadataError, match="non-public"):
        await f.get("https://127.0.0.1/client.json")
    assert seen == []


async def test_too_large_documents_are_refused() -> None:
    big = {**DOC, "padding": "x" * 10_000}
    f, _ = fetcher(lambda r: httpx.Response(200, content=orjson.dumps(big)), max_bytes=5 * 1024)
    with pytest.raises(ClientMetadataError, match="exceeds"):
        await f.get(URL)
    # Without a Content-Length (streamed), the cap holds while reading.
    async def chunks():
        data = orjson.dumps(big)
        yield data[:4000]
        yield data[4000:]

    f, _ = fetcher(lambda r: httpx.Response(200, content=chunks()))
    with pytest.raises(ClientMetadataError, match="exceeds"):
        await f.get(URL)


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(302, headers={"location": "http://169.254.169.254/"}),
        httpx.Response(404),
        httpx.Response(200, content=b"not json"),
        httpx.Response(200, json={**DOC, "client_id": "https://other.example/c.json"}),
        httpx.Response(200, json={**DOC, "redirect_uris": []}),
        httpx.Response(200, json={**DOC, "token_endpoint_auth_method": "client_secret_basic"}),
        httpx.Response(200, json={**DOC, "client_secret": "s"}),
    ],
)
async def test_bad_documents_and_redirects_are_refused(response: httpx.Response) -> None:
    f, _ = fetcher(lambda r: response)
    with pytest.raises(ClientMetadataError):
        await f.get(URL)


async def test_slow_servers_time_out() -> None:
    import asyncio

    async def resolver(host: str, port: int) -> list[str]:
        await asyncio.sleep(5)
        return ["93.184.215.14"]

    f = ClientMetadataFetcher(resolver=resolver, timeout_s=0.2)
    with pytest.raises(ClientMetadataError, match="longer than"):
        await f.get(URL)


async def test_full_flow_with_a_metadata_document_client(idp) -> None:
    f, _ = fetcher(lambda r: httpx.Response(200, json=DOC))
    idp.oauth.fetcher = f
    flow = Flow(idp.http, URL, redirect_uri=REDIRECT)
    page = await flow.authorize()
    assert page.status_code == 200
    consent = await flow.login(page)
    assert "Example App" in consent.text and URL in consent.text
    tokens = await flow.exchange(await flow.code())
    assert tokens.status_code == 200, tokens.text
    assert (await flow.refresh(tokens.json()["refresh_token"])).status_code == 200
    # A redirect URI the document does not list is refused without redirecting.
    r = await flow.authorize(redirect_uri="http://127.0.0.1:40112/cb")
    assert r.status_code == 400 and "location" not in r.headers


async def test_metadata_document_on_a_private_address_cannot_start_a_flow(idp) -> None:
    f, seen = fetcher(lambda r: httpx.Response(200, json=DOC), addresses=("10.0.0.7",))
    idp.oauth.fetcher = f
    r = await Flow(idp.http, URL, redirect_uri=REDIRECT).authorize()
    assert r.status_code == 400 and "location" not in r.headers and "non-public" in r.text
    assert seen == []
