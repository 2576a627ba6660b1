"""Rate limits for the authorization server's open doors: sign-in, client registration, tokens.

A limit is a budget of `limit` events per `window_s` that refills evenly (GCRA, the
generic cell rate algorithm; the same as a token bucket holding `limit`): a burst of
`limit` goes through at once, then one more every window/limit seconds, and after a
whole quiet window the full budget is back. A counter is one number per key, the time
at which its budget will be full again; a key whose time has passed is the same as a
key never seen, so it can be dropped at any moment without changing a decision.

Counters live behind RateStore. InMemoryRateStore keeps them in this process, at most
`max_keys` of them (the least recently touched go first), so a flood of addresses or
user names cannot grow the node without bound; each node then enforces its own budget,
and N nodes behind a balancer let a client have up to N times a limit. A shared store
(Redis, the database) implementing the same three calls atomically makes the budget the
cluster's; nothing else changes.

Sign-ins count failures only: a password check is refused while the failures of its
(client address, user name), of its client address or of its user name are over budget.
Others' failures can so keep a user out only through the looser per-user-name budget,
and only while they keep failing (its debt is capped at one window).
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from smcp.config import Settings

log = logging.getLogger("smcp.auth")

MINUTE = 60.0
HOUR = 3600.0
# Float arithmetic must not refuse the limit-th event of a burst by a rounding error.
_EPS = 1e-6
# Expired counters removed from the front per new key: enough to keep up, O(1) per call.
_SWEEP = 8

Scope = Mapping[str, Any]  # an ASGI scope
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Rate:
    """`limit` events per `window_s`, refilling evenly."""

    limit: int
    window_s: float

    def __post_init__(self) -> None:
        if self.limit < 1 or self.window_s <= 0:
            raise ValueError("a rate needs limit >= 1 and window_s > 0")

    @property
    def interval(self) -> float:
        return self.window_s / self.limit

    @property
    def tolerance(self) -> float:
        # How far ahead of now a counter may run and still admit one more event.
        return self.window_s - self.interval


class RateStore(Protocol):
    """Where counters live. Each call must be atomic per key (in memory it is: no await)."""

    async def take(self, key: str, rate: Rate) -> float:
        """Spend one event if the budget allows and return 0.0; else spend nothing and
        return the seconds until it would allow one."""
        ...

    async def peek(self, key: str, rate: Rate) -> float:
        """Seconds until `take` would succeed (0.0: now); spends nothing."""
        ...

    async def charge(self, key: str, rate: Rate) -> None:
        """Spend one event even over budget (a failure that already happened). The debt is
        capped at one window, so a key is free again a window after its last charge."""
        ...


class InMemoryRateStore:
    """Counters of one node, bounded: at most `max_keys`, least recently touched dropped first."""

    def __init__(self, *, max_keys: int = 100_000, clock: Callable[[], float] = time.monotonic) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self._max = max_keys
        self._clock = clock
        # key → time at which its budget is full again; ordered by last touch.
        self._full_at: OrderedDict[str, float] = OrderedDict()
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._full_at)

    def _get(self, key: str, now: float) -> float:
        at = self._full_at.get(key)
        if at is None:
            return now
        if at <= now + _EPS:
            del self._full_at[key]  # as good as new: free the memory now
            return now
        return at

    def _put(self, key: str, at: float, now: float) -> None:
        if key in self._full_at:
            self._full_at[key] = at
            self._full_at.move_to_end(key)
            return
        for _ in range(_SWEEP):
            if not self._full_at:
                break
            oldest, oldest_at = next(iter(self._full_at.items()))
            if oldest_at > now + _EPS:
                break
            del self._full_at[oldest]
        while len(self._full_at) >= self._max:
            # Still full of live counters: forget the stalest. That key gets a fresh budget,
            # which is the price of bounded memory (flooding needs max_keys distinct keys).
            self._full_at.popitem(last=False)
            self.evicted += 1
            if self.evicted in (1, 1000) or self.evicted % 100_000 == 0:
                log.warning("rate limits: %d counters dropped to stay within %d keys", self.evicted, self._max)
        self._full_at[key] = at

    async def take(self, key: str, rate: Rate) -> float:
        now = self._clock()
        at = self._get(key, now)
        wait = at - rate.tolerance - now
        if wait > _EPS:
            return wait
        self._put(key, at + rate.interval, now)
        return 0.0

    async def peek(self, key: str, rate: Rate) -> float:
        now = self._clock()
        wait = self._get(key, now) - rate.tolerance - now
        return wait if wait > _EPS else 0.0

    async def charge(self, key: str, rate: Rate) -> None:
        now = self._clock()
        self._put(key, min(self._get(key, now) + rate.interval, now + rate.window_s), now)


def retry_after(wait: float) -> str:
    """The Retry-After value (whole seconds, at least 1) for a wait."""
    return str(max(1, math.ceil(wait)))


# -- who is calling ------------------------------------------------------------------------
def _parse_ip(text: str) -> IPAddress | None:
    text = text.strip()
    if text.startswith("["):  # [v6]:port
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def address_key(addr: IPAddress) -> str:
    """The unit an address is counted in: one IPv4 address, or an IPv6 /64 (one host
    usually holds a whole /64, and would otherwise have 2^64 fresh budgets)."""
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr)


class ClientAddress:
    """The caller's address: the ASGI peer; behind trusted proxies, the first address of
    X-Forwarded-For, read right to left, that is not one of them. Each proxy appends the
    address it was reached from, so only entries our own proxies wrote can be believed;
    anything left of them is whatever the client chose to send."""

    def __init__(self, trusted: Iterable[str] = ()) -> None:
        self._trusted: list[IPNetwork] = [ipaddress.ip_network(n, strict=False) for n in trusted]

    def _is_trusted(self, addr: IPAddress) -> bool:
        return any(addr in net for net in self._trusted)

    def __call__(self, scope: Scope) -> str:
        client = scope.get("client")
        peer = str(client[0]) if client else ""
        addr = _parse_ip(peer)
        if addr is None:
            return peer or "unknown"  # a unix socket: every caller is "the proxy"
        if self._trusted and self._is_trusted(addr):
            hops = [
                hop
                for name, value in scope.get("headers", ())
                if name == b"x-forwarded-for"
                for hop in value.decode("latin-1").split(",")
            ]
            for hop in reversed(hops):
                parsed = _parse_ip(hop)
                if parsed is None:
                    break  # garbage where a trusted proxy should have written: stop at that proxy
                addr = parsed
                if not self._is_trusted(parsed):
                    break
        return address_key(addr)


# -- the authorization server's limits -----------------------------------------------------
def _rate(limit: int, window_s: float) -> Rate | None:
    return Rate(limit, window_s) if limit > 0 else None


class OAuthLimits:
    """The limits of /oauth/login, /oauth/register and /oauth/token, over one RateStore."""

    def __init__(
        self,
        store: RateStore,
        client: ClientAddress,
        *,
        login: Rate | None,
        login_ip: Rate | None,
        login_user: Rate | None,
        register: Rate | None,
        token: Rate | None,
    ) -> None:
        self.store = store
        self.client = client
        self._login = login
        self._login_ip = login_ip
        self._login_user = login_user
        self._register = register
        self._token = token

    @classmethod
    def from_settings(cls, settings: Settings, *, store: RateStore | None = None) -> OAuthLimits:
        return cls(
            # `is None`, not `or`: an empty in-memory store has len() 0 and is falsy.
            store if store is not None else InMemoryRateStore(max_keys=settings.rate_limit_max_keys),
            ClientAddress(settings.trusted_proxies),
            login=_rate(settings.oauth_login_rate, MINUTE),
            login_ip=_rate(settings.oauth_login_ip_rate, MINUTE),
            login_user=_rate(settings.oauth_login_user_rate, HOUR),
            register=_rate(settings.oauth_register_rate, HOUR),
            token=_rate(settings.oauth_token_rate, MINUTE),
        )

    def _login_keys(self, scope: Scope, username: str) -> list[tuple[str, Rate]]:
        ip = self.client(scope)
        # The same normalisation as the user lookup, so "Alice" and "alice " share a budget.
        user = username.strip().lower()[:200]
        keys = [
            (f"login:ip+user:{ip}\0{user}", self._login),
            (f"login:ip:{ip}", self._login_ip),
            (f"login:user:{user}", self._login_user),
        ]
        return [(k, r) for k, r in keys if r is not None]

    async def login_wait(self, scope: Scope, username: str) -> float:
        """Seconds before this sign-in may be tried (0.0: now); spends nothing."""
        wait = 0.0
        for key, rate in self._login_keys(scope, username):
            wait = max(wait, await self.store.peek(key, rate))
        return wait

    async def login_failed(self, scope: Scope, username: str) -> None:
        for key, rate in self._login_keys(scope, username):
            await self.store.charge(key, rate)

    async def register_wait(self, scope: Scope) -> float:
        """Spends one registration of the caller's address; 0.0, or the seconds to wait."""
        if self._register is None:
            return 0.0
        return await self.store.take(f"register:ip:{self.client(scope)}", self._register)

    async def token_wait(self, scope: Scope, client_id: str, *, public: bool) -> float:
        """Spends one token request of an authenticated client; 0.0, or the seconds to wait.
        A public client's id is no secret (anyone may send it), so its budget is per
        address: one caller cannot spend every user's budget of a popular client."""
        if self._token is None:
            return 0.0
        key = f"token:client+ip:{client_id}\0{self.client(scope)}" if public else f"token:client:{client_id}"
        return await self.store.take(key, self._token)
