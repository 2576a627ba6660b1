"""Who is calling an MCP endpoint, and what to answer when nobody valid is.

The one place where the data plane turns credentials into a Principal: API keys
today; OAuth access tokens (audience = this server's URL) plug in here too.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from smcp.domain import Principal

Authenticate = Callable[[str], Awaitable[Principal | None]]


@dataclass(frozen=True, slots=True)
class Challenge:
    """A refusal: HTTP status, headers and JSON body."""

    status: int
    headers: list[tuple[str, str]]
    body: dict[str, str]


class Authenticator:
    def __init__(self, api_keys: Authenticate) -> None:
        self._api_keys = api_keys

    async def principal(self, headers: dict[str, str], *, resource_url: str) -> Principal | None:
        """The caller, or None. `resource_url` is the exact MCP URL the request targets."""
        scheme, _, token = headers.get("authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return None
        return await self._api_keys(token)

    def challenge(self, *, resource_url: str) -> Challenge:
        return Challenge(
            401,
            [("www-authenticate", 'Bearer realm="smcp", error="invalid_token"')],
            {"error": "invalid_token", "error_description": "a valid API key is required (Authorization: Bearer <key>)"},
        )
