"""The egress plane: the only way out of a sandbox is its own allowlisted proxy.

`EgressManager` runs one proxy per sandboxed instance whose spec has a
`[network] allow` list; `EgressProxy` is that proxy (HTTP CONNECT and plain
absolute-form HTTP, SSRF-checked, logged); `AddressPolicy` decides which
resolved addresses are public; `Allowlist` matches targets. See
docs/security.md for the promises and the tests that keep them.
"""

from smcp.egress.addresses import AddressPolicy, parse_ip_literal, parse_ipv4_any
from smcp.egress.allowlist import Allowlist, Target, parse_authority
from smcp.egress.log import DecisionLog
from smcp.egress.manager import (
    SANDBOX_PROXY_URL,
    SANDBOX_SOCKET,
    EgressManager,
    proxy_env,
)
from smcp.egress.proxy import EgressLimits, EgressProxy, Owner, system_resolver

__all__ = [
    "SANDBOX_PROXY_URL",
    "SANDBOX_SOCKET",
    "AddressPolicy",
    "Allowlist",
    "DecisionLog",
    "EgressLimits",
    "EgressManager",
    "EgressProxy",
    "Owner",
    "Target",
    "parse_authority",
    "parse_ip_literal",
    "parse_ipv4_any",
    "proxy_env",
    "system_resolver",
]
