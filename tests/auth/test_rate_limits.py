"""Rate limits of sign-in, dynamic registration and the token endpoint (smcp.auth.ratelimit):
each trips at its configured count with 429 + Retry-After, refills after its window (a fake
clock, no sleeping), is scoped to its key (another address is unaffected), and the
counters' memory is bounded."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from oauth_helpers import BASE, PASSWORD, REDIRECT, Flow, hidden

from smcp.auth.ratelimit import ClientAddress, InMemoryRateStore, OAuthLimits, Rate


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def limit(idp: Any, clock: Clock, **settings: Any) -> InMemoryRateStore:
    """Give the node's authorization server these limits, counted on the fake clock."""
    defaults = {
        "oauth_login_rate": 100,
        "oauth_login_ip_rate": 100,
        "oauth_login_user_rate": 100,
        "oauth_register_rate": 100,
        "oauth_token_rate": 100,
    }
    s = idp.settings.model_copy(update={**defaults, **settings})
    store = InMemoryRateStore(max_keys=s.rate_limit_max_keys, clock=clock)
    idp.oauth.limits = OAuthLimits.from_settings(s, store=store)
    return store


@pytest.fixture
async def browsers(idp: Any) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    """One cookie jar per client address, all on the same in-process node."""
    clients = {
        ip: httpx.AsyncClient(transport=httpx.ASGITransport(app=idp.transport.app, client=(ip, 40000)), base_url=BASE)
        for ip in ("198.51.100.1", "198.51.100.2", "198.51.100.3", "198.51.100.4")
    }
    try:
        yield clients
    finally:
        for c in clients.values():
            await c.aclose()


async def sign_in_page(http: httpx.AsyncClient, client_id: str) -> tuple[Flow, httpx.Response]:
    flow = Flow(http, client_id)
    page = await flow.authorize()
    assert page.status_code == 200 and "name=password" in page.text, page.text
    return flow, page


def assert_throttled_page(r: httpx.Response, retry_after: int) -> None:
    assert r.status_code == 429, r.text
    assert r.headers["retry-after"] == str(retry_after)
    assert r.headers["content-type"].startswith("text/html")
    assert "Too many failed sign-ins" in r.text and "name=password" in r.text  # the form, to try again later


# -- sign-in ---------------------------------------------------------------------------------
async def test_login_failures_per_address_and_user_trip_at_the_limit_and_refill(idp, browsers, clock) -> None:
    limit(idp, clock, oauth_login_rate=3)
    a, b = browsers["198.51.100.1"], browsers["198.51.100.2"]
    flow, page = await sign_in_page(a, idp.public_client)
    for _ in range(3):
        assert (await flow.login(page, "alice", "wrong password!")).status_code == 401
    # The limit is reached: even the right password waits (60 s / 3 = one more every 20 s).
    assert_throttled_page(await flow.login(page, "alice", PASSWORD), retry_after=20)
    assert_throttled_page(await flow.login(page, "ALICE ", PASSWORD), retry_after=20)  # same user, however typed
    # Another user name from the same address is its own budget...
    assert (await flow.login(page, "bob", "wrong password!")).status_code == 401
    # ...and the right password from another address still works.
    flow_b, page_b = await sign_in_page(b, idp.public_client)
    assert (await flow_b.login(page_b, "alice", PASSWORD)).status_code == 200
    # One interval later one attempt is back; a whole window later, all of them.
    clock.now += 20
    assert (await flow.login(page, "alice", "wrong password!")).status_code == 401
    assert (await flow.login(page, "alice", PASSWORD)).status_code == 429
    clock.now += 60
    assert (await flow.login(page, "alice", PASSWORD)).status_code == 200


async def test_login_failures_per_address_across_user_names(idp, browsers, clock) -> None:
    limit(idp, clock, oauth_login_ip_rate=3)
    a, b = browsers["198.51.100.1"], browsers["198.51.100.2"]
    flow, page = await sign_in_page(a, idp.public_client)
    for name in ("mallory1", "mallory2", "mallory3"):  # password spraying: a new name each time
        assert (await flow.login(page, name, "guess guess guess")).status_code == 401
    assert_throttled_page(await flow.login(page, "alice", PASSWORD), retry_after=20)
    flow_b, page_b = await sign_in_page(b, idp.public_client)
    assert (await flow_b.login(page_b, "alice", PASSWORD)).status_code == 200
    clock.now += 60
    assert (await flow.login(page, "alice", PASSWORD)).status_code == 200


async def test_login_failures_per_user_name_from_many_addresses(idp, browsers, clock) -> None:
    limit(idp, clock, oauth_login_user_rate=3)
    ips = list(browsers)
    for ip in ips[:3]:  # distributed guessing: one failure from each address
        flow, page = await sign_in_page(browsers[ip], idp.public_client)
        assert (await flow.login(page, "alice", "guess guess guess")).status_code == 401
    # The looser per-user budget is spent: alice waits too, for one interval (3600 s / 3)...
    flow, page = await sign_in_page(browsers[ips[3]], idp.public_client)
    assert_throttled_page(await flow.login(page, "alice", PASSWORD), retry_after=1200)
    # ...while other users sign in from the same addresses.
    assert (await flow.login(page, "bob", "wrong password!")).status_code == 401
    clock.now += 1200
    assert (await flow.login(page, "alice", PASSWORD)).status_code == 200


async def test_successful_sign_ins_do_not_count(idp, browsers, clock) -> None:
    limit(idp, clock, oauth_login_rate=2, oauth_login_ip_rate=2, oauth_login_user_rate=2)
    http = browsers["198.51.100.1"]
    for _ in range(5):
        http.cookies.clear()  # signed out: the login form each time
        flow, page = await sign_in_page(http, idp.public_client)
        assert (await flow.login(page, "alice", PASSWORD)).status_code == 200


async def test_x_forwarded_for_only_from_trusted_proxies(idp, clock) -> None:
    # The in-process client's peer address is 127.0.0.1.
    limit(idp, clock, oauth_login_rate=2)
    _, page = await sign_in_page(idp.http, idp.public_client)

    async def attempt(xff: str, password: str = "wrong password!") -> int:
        r = await idp.http.post("/oauth/login", headers={"x-forwarded-for": xff}, data={
            "request": hidden(page.text, "request"), "csrf": hidden(page.text, "csrf"),
            "username": "alice", "password": password})
        return r.status_code

    # Not trusted: a forged header is not a fresh budget.
    assert [await attempt(f"203.0.113.{i}") for i in range(3)] == [401, 401, 429]
    # Trusted: the address the proxy saw counts; what the client wrote left of it does not.
    store = limit(idp, clock, oauth_login_rate=2, trusted_proxies=["127.0.0.1/32"])
    assert [await attempt(f"{i}.0.0.1, 203.0.113.7") for i in range(1, 4)] == [401, 401, 429]
    assert await attempt("203.0.113.8", PASSWORD) == 200
    assert any("203.0.113.7" in k for k in store._full_at) and not any("1.0.0.1" in k for k in store._full_at)


# -- dynamic client registration -------------------------------------------------------------
async def test_registration_per_address(idp, browsers, clock) -> None:
    limit(idp, clock, oauth_register_rate=2)
    a, b = browsers["198.51.100.1"], browsers["198.51.100.2"]
    doc = {"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none"}
    assert [(await a.post("/oauth/register", json=doc)).status_code for _ in range(2)] == [201, 201]
    r = await a.post("/oauth/register", json=doc)
    assert r.status_code == 429 and r.headers["retry-after"] == "1800"  # 3600 s / 2
    assert r.json()["error"] == "temporarily_unavailable" and r.headers["cache-control"] == "no-store"
    # Bad requests spend the budget too (an attacker's are mostly bad).
    assert (await a.post("/oauth/register", json={"redirect_uris": []})).status_code == 429
    assert (await b.post("/oauth/register", json=doc)).status_code == 201
    clock.now += 3600
    assert (await a.post("/oauth/register", json=doc)).status_code == 201


# -- token endpoint --------------------------------------------------------------------------
async def test_token_requests_of_a_public_client_per_address(idp, browsers, clock) -> None:
    limit(idp, clock, oauth_token_rate=3)
    a, b = browsers["198.51.100.1"], browsers["198.51.100.2"]
    data = {"grant_type": "refresh_token", "refresh_token": "smcp_rt_nope", "client_id": idp.public_client}
    assert [(await a.post("/oauth/token", data=data)).status_code for _ in range(3)] == [400, 400, 400]
    r = await a.post("/oauth/token", data=data)
    assert r.status_code == 429 and r.headers["retry-after"] == "20"
    body = r.json()
    assert body["error"] == "temporarily_unavailable" and "token requests" in body["error_description"]
    assert r.headers["cache-control"] == "no-store" and r.headers["access-control-allow-origin"] == "*"
    # A public client_id is anyone's to send: another address has its own budget.
    assert (await b.post("/oauth/token", data=data)).status_code == 400
    clock.now += 60
    assert (await a.post("/oauth/token", data=data)).status_code == 400


async def test_token_requests_of_a_confidential_client_per_client(idp, browsers, clock) -> None:
    r = await idp.http.post("/oauth/register", json={"redirect_uris": [REDIRECT], "client_name": "Conf"})
    conf = r.json()
    limit(idp, clock, oauth_token_rate=3)
    a, b = browsers["198.51.100.1"], browsers["198.51.100.2"]
    data = {"grant_type": "refresh_token", "refresh_token": "smcp_rt_nope"}
    good, bad = (conf["client_id"], conf["client_secret"]), (conf["client_id"], "wrong")
    # Callers without the secret are refused before they can spend the client's budget.
    assert {(await a.post("/oauth/token", auth=bad, data=data)).status_code for _ in range(5)} == {401}
    assert [(await a.post("/oauth/token", auth=good, data=data)).status_code for _ in range(3)] == [400] * 3
    # The budget is the client's, wherever it calls from.
    r = await b.post("/oauth/token", auth=good, data=data)
    assert r.status_code == 429 and r.headers["retry-after"] == "20"
    clock.now += 60
    assert (await b.post("/oauth/token", auth=good, data=data)).status_code == 400


async def test_a_whole_flow_fits_the_default_limits(idp) -> None:
    flow = Flow(idp.http, idp.public_client)
    tokens = await flow.tokens()
    assert (await flow.refresh(tokens["refresh_token"])).status_code == 200


# -- the limiter itself ----------------------------------------------------------------------
async def test_limiter_bursts_refills_and_caps_failure_debt(clock) -> None:
    store = InMemoryRateStore(clock=clock)
    rate = Rate(7, 60)  # an interval that is not a whole number of seconds
    assert [await store.take("k", rate) for _ in range(7)] == [0.0] * 7
    assert await store.take("k", rate) == pytest.approx(60 / 7)
    assert await store.take("other", rate) == 0.0
    clock.now += 60
    assert [await store.take("k", rate) for _ in range(7)] == [0.0] * 7
    # Failures already happened, so they are charged even over budget, but the debt never
    # exceeds one window: a flood of them keeps the key shut for one window at most.
    for _ in range(1000):
        await store.charge("f", rate)
    assert await store.peek("f", rate) == pytest.approx(60 - 60 / 7 * 6)
    clock.now += 60
    # A key back at a full budget is the same as an unknown one, and is forgotten when met.
    assert [await store.peek(k, rate) for k in ("f", "k", "other")] == [0.0, 0.0, 0.0]
    assert len(store) == 0


async def test_limiter_memory_is_bounded(clock) -> None:
    store = InMemoryRateStore(max_keys=1000, clock=clock)
    rate = Rate(5, 60)
    for i in range(20_000):
        await store.take(f"ip:{i}", rate)
    assert len(store) == 1000 and store.evicted == 19_000
    # Expired counters go first, before live ones are dropped.
    clock.now += 61
    for i in range(500):
        await store.take(f"new:{i}", rate)
    assert len(store) <= 1000 and store.evicted == 19_000
    # Through the server's limits too: many user names, one bounded store.
    limits = OAuthLimits(
        store, ClientAddress(), login=Rate(5, 60), login_ip=None, login_user=Rate(5, 3600), register=None, token=None
    )
    for i in range(5000):
        await limits.login_failed({"client": ("203.0.113.9", 1)}, f"user{i}")
    assert len(store) == 1000


def test_client_address() -> None:
    def scope(peer: str | None, *xff: str) -> dict[str, Any]:
        return {"client": (peer, 1) if peer else None, "headers": [(b"x-forwarded-for", v.encode()) for v in xff]}

    plain = ClientAddress()
    assert plain(scope("192.0.2.1", "203.0.113.1")) == "192.0.2.1"  # not trusted: header ignored
    assert plain(scope(None)) == "unknown"
    # IPv6 counts per /64 (a host has a whole one); v4-mapped is the IPv4 address.
    assert plain(scope("2001:db8:1:2:aaaa::1")) == plain(scope("2001:db8:1:2:bbbb::2")) == "2001:db8:1:2::/64"
    assert plain(scope("::ffff:192.0.2.7")) == "192.0.2.7"
    behind = ClientAddress(["10.0.0.0/8"])
    assert behind(scope("10.0.0.1", "203.0.113.1")) == "203.0.113.1"
    # Right to left, skipping our own proxies; the client's own entries are not believed.
    assert behind(scope("10.0.0.1", "6.6.6.6, 203.0.113.1, 10.0.0.2")) == "203.0.113.1"
    assert behind(scope("10.0.0.1", "6.6.6.6", "203.0.113.1")) == "203.0.113.1"  # header repeated
    assert behind(scope("10.0.0.1", "203.0.113.1:5555")) == "203.0.113.1"
    assert behind(scope("10.0.0.1", "not-an-address")) == "10.0.0.1"
    assert behind(scope("10.0.0.1")) == "10.0.0.1"
    assert behind(scope("192.0.2.1", "203.0.113.1")) == "192.0.2.1"  # a peer that is not our proxy
