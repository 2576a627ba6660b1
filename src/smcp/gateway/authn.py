"""Who is calling an MCP endpoint, and what to answer when nobody valid is.

The one place where the data plane turns credentials into a Principal:

- API keys (`smcp_…`): the key's tenant, role and optional server list decide.
- OAuth access tokens (JWTs from SMCP's authorization server): signature, issuer,
  expiry and grant must hold, the audience must be exactly this server's URL, the
  tenant claim this server's tenant, the scope must include `mcp`.

Refusals follow RFC 6750 and RFC 9728: 401 with `WWW-Authenticate: Bearer
resource_metadata="…", scope="…"` (plus `error="invalid_token"` when a credential was
presented), and 403 `insufficient_scope` when a valid credential lacks what this
server needs (step-up). `authenticate()` returns either the caller or the refusal.

The client's credential is never passed on: the gateway forwards only JSON-RPC bodies
to hosted servers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from smcp.auth import roles
from smcp.auth.resource import resource_metadata_url
from smcp.auth.tokens import MCP_SCOPE, AccessTokens, InvalidToken, looks_like_jwt
from smcp.domain import Principal

Authenticate = Callable[[str], Awaitable[Principal | None]]

@dataclass(frozen=True, slots=True)
class Challenge:
    """A refusal: HTTP status, headers and JSON body."""

    status: int
    headers: list[tuple[str, str]]
    body: dict[str, str]


@dataclass(frozen=True, slots=True)
class _Refusal:
    status: int
    error: str | None  # RFC 6750 error code; None when no credential was presented
    description: str


_NO_CREDENTIAL = _Refusal(401, None, "authentication required")


def tenant_and_server(resource_url: str) -> tuple[str, str]:
    # resource_url is built by Settings.server_url: {base}/t/{tenant}/{server}/mcp
    parts = resource_url.rsplit("/", 4)
    return parts[-3], parts[-2]


class Authenticator:
    def __init__(self, api_keys: Authenticate, tokens: AccessTokens | None = None) -> None:
        self._api_keys = api_keys
        self._tokens = tokens

    async def authenticate(self, headers: dict[str, str], *, resource_url: str) -> Principal | Challenge:
        """The caller, or the answer that refuses it. `resource_url` is the exact MCP URL."""
        found = await self._principal(headers, resource_url)
        return found if isinstance(found, Principal) else self._challenge(found, resource_url)

    async def _principal(self, headers: dict[str, str], resource_url: str) -> Principal | _Refusal:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return _NO_CREDENTIAL
        tenant, server = tenant_and_server(resource_url)
        if self._tokens is not None and looks_like_jwt(token):
            return await self._access_token(token, resource_url, tenant)
        principal = await self._api_keys(token)
        if principal is None:
            return self._refuse(401, "invalid_token", "the API key or access token is not valid")
        if principal.kind == "api_key":
            if principal.tenant == tenant and not roles.permits(principal.role, "mcp.use"):
                return self._refuse(403, "insufficient_scope", f"role {principal.role!r} may not use MCP servers")
            if principal.tenant == tenant and principal.servers is not None and server not in principal.servers:
                return self._refuse(403, "insufficient_scope", "this API key is not allowed on this server")
        return principal

    async def _access_token(self, token: str, resource_url: str, tenant: str) -> Principal | _Refusal:
        assert self._tokens is not None
        try:
            claims = await self._tokens.check(token)
        except InvalidToken as exc:
            return self._refuse(401, "invalid_token", str(exc))
        # RFC 8707 audience binding: exact string match, no prefix or parent matching.
        if claims.audience != resource_url or claims.tenant != tenant:
            return self._refuse(401, "invalid_token", "the access token was issued for another resource")
        if MCP_SCOPE not in claims.scopes:
            return self._refuse(403, "insufficient_scope", f"the access token lacks the {MCP_SCOPE!r} scope")
        if not roles.permits(claims.role, "mcp.use"):
            return self._refuse(403, "insufficient_scope", f"role {claims.role!r} may not use MCP servers")
        return Principal(
            kind="oauth",
            subject=f"user:{claims.subject}",
            tenant=claims.tenant,
            role=claims.role,
            scopes=claims.scopes,
            client_id=claims.client_id,
        )

    @staticmethod
    def _refuse(status: int, error: str, description: str) -> _Refusal:
        return _Refusal(status, error, description)

    def _challenge(self, refusal: _Refusal, resource_url: str) -> Challenge:
        if self._tokens is None:
            return Challenge(
                refusal.status if refusal.status == 403 else 401,
                [("www-authenticate", 'Bearer realm="smcp", error="invalid_token"')],
                {
                    "error": refusal.error or "invalid_token",
                    "error_description": "a valid API key is required (Authorization: Bearer <key>)",
                },
            )
        params = [f'resource_metadata="{resource_metadata_url(resource_url)}"', f'scope="{MCP_SCOPE}"']
        if refusal.error is not None:
            params.insert(0, f'error="{refusal.error}"')
            params.append(f'error_description="{_quote(refusal.description)}"')
        body = {"error": refusal.error or "invalid_token", "error_description": refusal.description}
        return Challenge(refusal.status, [("www-authenticate", "Bearer " + ", ".join(params))], body)


def _quote(text: str) -> str:
    return "".join(c for c in text if c >= " " and c not in '"\\')
