"""SMCP's OAuth 2.1 authorization server, and the resource-server metadata of hosted servers.

One module for the whole protocol surface, in the order a client meets it:

    GET  /.well-known/oauth-protected-resource/t/{tenant}/{server}/mcp   RFC 9728
    GET  /.well-known/oauth-authorization-server                         RFC 8414
    POST /oauth/register                                                 RFC 7591 (setting)
    GET  /oauth/authorize        → login page → consent page             OAuth 2.1 + PKCE S256
    POST /oauth/login, /oauth/consent                                     (HTML forms, CSRF-checked)
    POST /oauth/oidc/start → upstream provider → GET /oauth/oidc/callback   optional OIDC login
    POST /oauth/token            authorization_code | refresh_token      rotation + reuse detection
    POST /oauth/revoke                                                   RFC 7009
    GET  /oauth/jwks                                                     signing keys (kid, rotated)

Clients are found in this order: pre-registered (admin API) and dynamically registered
clients by id; an https client_id is a Client ID Metadata Document, fetched safely.
What a registration may say is auth/registration.py's, which the admin API shares;
the error answer and CORS headers are auth/errors.py's.

Every authorization is for exactly one MCP server: `resource` (RFC 8707) is required
and must be a server URL of a tenant the user belongs to; the access token's audience
is that URL and nothing else. Errors that concern the client or its redirect URI are
shown to the user, never redirected (no open redirects); all others go back to the
registered redirect URI with `state` and `iss` (RFC 9207).
"""

from __future__ import annotations

import base64
import hmac
import logging
import re
import secrets
import time
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from smcp.auth import cimd, passwords, roles
from smcp.auth.errors import CORS, NO_STORE, OAuthError
from smcp.auth.oidc import UpstreamOidc
from smcp.auth.ratelimit import OAuthLimits, retry_after
from smcp.auth.registration import (
    AUTH_METHODS,
    GRANT_TYPES,
    SCOPES_SUPPORTED,
    client_from_metadata,
    registration_response,
)
from smcp.auth.resource import PRM_PREFIX
from smcp.auth.tokens import (
    MCP_SCOPE,
    REQUEST_TOKEN_TYPE,
    SESSION_TOKEN_TYPE,
    AccessTokens,
    InvalidToken,
    KeyRing,
    expiry,
    looks_like_jwt,
    s256,
    sha256_hex,
    token_kid,
)
from smcp.auth.upstream_login import UpstreamLogin
from smcp.config import Settings
from smcp.domain.spec import NAME_RE
from smcp.store import Store
from smcp.store.identity import Client, CodeRecord, Grant, Outcome
from smcp.ui import pages

log = logging.getLogger("smcp.auth")

_VERIFIER = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")
_CHALLENGE = re.compile(r"^[A-Za-z0-9\-_]{43}$")  # base64url(SHA-256), unpadded
MAX_FORM_BYTES = 64 * 1024
MAX_REGISTRATION_BYTES = 16 * 1024
MAX_STATE = 1024


def _too_many(wait: float, what: str) -> OAuthError:
    # RFC 6749 has no rate-limit error for these endpoints (slow_down is the device
    # flow's); 429 and Retry-After carry the meaning, and temporarily_unavailable tells
    # a client to come back rather than that its request was wrong (invalid_request).
    after = retry_after(wait)
    return OAuthError("temporarily_unavailable", f"too many {what}; retry in {after} s", 429, {"retry-after": after})


def with_query(uri: str, params: dict[str, str]) -> str:
    """Append parameters to a redirect URI, keeping any query it already has."""
    parts = urlsplit(uri)
    query = parse_qsl(parts.query, keep_blank_values=True) + [(k, v) for k, v in params.items() if v is not None]
    return urlunsplit(parts._replace(query=urlencode(query)))


class AuthorizationServer:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        keys: KeyRing,
        tokens: AccessTokens,
        fetcher: cimd.ClientMetadataFetcher | None = None,
        oidc: UpstreamOidc | None = None,
    ) -> None:
        self.s = settings
        self.store = store
        self.keys = keys
        self.tokens = tokens
        self.issuer = settings.issuer
        if fetcher is None:
            # A bad SMCP_CIMD_CA_FILE raises here (ValueError), so the node does not start.
            fetcher = cimd.ClientMetadataFetcher(
                max_bytes=settings.cimd_max_bytes,
                timeout_s=settings.cimd_timeout_s,
                cache_ttl_s=settings.cimd_cache_ttl_s,
                verify=cimd.tls_context(settings.cimd_ca_file),
                allow_private_addresses=settings.cimd_allow_private_addresses,
            )
            if settings.cimd_allow_private_addresses and settings.oauth_client_metadata_documents:
                log.warning(
                    "SMCP_CIMD_ALLOW_PRIVATE_ADDRESSES is on: client metadata documents may be fetched "
                    "from loopback and private-network addresses"
                )
        self.fetcher = fetcher
        # Sign-in, registration and token budgets (per node; tests swap in a fake clock).
        self.limits = OAuthLimits.from_settings(settings)
        secure = settings.base_url.startswith("https://")
        self._secure = secure
        # `__Host-` cookies must be Secure, host-only and Path=/. Plain-http development
        # (http://127.0.0.1) cannot set Secure cookies, so it uses unprefixed names.
        prefix = "__Host-" if secure else ""
        self.session_cookie = f"{prefix}smcp_session"
        self.csrf_cookie = f"{prefix}smcp_csrf"
        # Upstream OpenID Connect login; None when no issuer is configured. A misconfigured
        # provider raises OidcConfigError here, so the node does not start half-working.
        self.oidc = oidc if oidc is not None else UpstreamOidc.from_settings(settings)
        # Binds an upstream login to the browser that started it (upstream_login.py).
        self.oidc_cookie = f"{prefix}smcp_oidc"
        self.upstream = UpstreamLogin(self)

    # ------------------------------------------------------------------ routes
    def routes(self) -> list[BaseRoute]:
        issuer_path = urlsplit(self.issuer).path.rstrip("/")
        routes: list[BaseRoute] = [
            Route(PRM_PREFIX + "/t/{tenant}/{server}/mcp", self.protected_resource, methods=["GET", "OPTIONS"]),
            Route("/.well-known/oauth-authorization-server" + issuer_path, self.metadata, methods=["GET", "OPTIONS"]),
            Route("/oauth/jwks", self.jwks, methods=["GET", "OPTIONS"]),
            Route("/oauth/authorize", self.authorize, methods=["GET"]),
            Route("/oauth/login", self.login, methods=["POST"]),
            Route("/oauth/consent", self.consent, methods=["POST"]),
            Route("/oauth/token", self.token, methods=["POST", "OPTIONS"]),
            Route("/oauth/revoke", self.revoke, methods=["POST", "OPTIONS"]),
            Route("/oauth/register", self.register, methods=["POST", "OPTIONS"]),
            Route("/oauth/oidc/start", self.upstream.start, methods=["POST"]),
            Route("/oauth/oidc/callback", self.upstream.callback, methods=["GET"]),
        ]
        return routes

    def endpoint(self, path: str) -> str:
        return f"{self.issuer}{path}"

    # --------------------------------------------------------------- metadata
    def metadata_document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "issuer": self.issuer,
            "authorization_endpoint": self.endpoint("/oauth/authorize"),
            "token_endpoint": self.endpoint("/oauth/token"),
            "revocation_endpoint": self.endpoint("/oauth/revoke"),
            "jwks_uri": self.endpoint("/oauth/jwks"),
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": list(GRANT_TYPES),
            "token_endpoint_auth_methods_supported": list(AUTH_METHODS),
            "revocation_endpoint_auth_methods_supported": list(AUTH_METHODS),
            "code_challenge_methods_supported": ["S256"],
            "scopes_supported": list(SCOPES_SUPPORTED),
            "authorization_response_iss_parameter_supported": True,
            "client_id_metadata_document_supported": self.s.oauth_client_metadata_documents,
        }
        if self.s.oauth_dynamic_registration:
            doc["registration_endpoint"] = self.endpoint("/oauth/register")
        return doc

    async def metadata(self, request: Request) -> Response:
        if request.method == "OPTIONS":
            return Response(status_code=204, headers=CORS)
        return JSONResponse(self.metadata_document(), headers={**CORS, "cache-control": "max-age=300"})

    async def protected_resource(self, request: Request) -> Response:
        if request.method == "OPTIONS":
            return Response(status_code=204, headers=CORS)
        tenant, server = request.path_params["tenant"], request.path_params["server"]
        if not NAME_RE.match(tenant) or not NAME_RE.match(server):
            return JSONResponse({"error": "not_found"}, status_code=404, headers=CORS)
        # The document is the same whether or not the server exists, so it reveals nothing.
        doc = {
            "resource": self.s.server_url(tenant, server),
            "authorization_servers": [self.issuer],
            "scopes_supported": [MCP_SCOPE],
            "bearer_methods_supported": ["header"],
            "resource_name": f"{tenant}/{server} on SMCP",
        }
        return JSONResponse(doc, headers={**CORS, "cache-control": "max-age=300"})

    async def jwks(self, request: Request) -> Response:
        if request.method == "OPTIONS":
            return Response(status_code=204, headers=CORS)
        return JSONResponse(self.keys.jwks(), headers={**CORS, "cache-control": "max-age=300"})

    # ---------------------------------------------------------------- clients
    async def find_client(self, client_id: str) -> Client | None:
        if not client_id or len(client_id) > 2048:
            return None
        if cimd.is_metadata_url(client_id):
            if not self.s.oauth_client_metadata_documents:
                return None
            try:
                return await self.fetcher.get(client_id)
            except cimd.ClientMetadataError as exc:
                log.info("client metadata document %s refused: %s", client_id, exc)
                raise OAuthError("invalid_client", f"client metadata document refused: {exc}", 400) from exc
        return await self.store.oauth.get_client(client_id)

    async def authenticate_client(self, request: Request, form: dict[str, str]) -> Client:
        """Token and revocation endpoints: who is the client, proven how its registration says."""
        basic_id = basic_secret = None
        auth = request.headers.get("authorization", "")
        if auth[:6].lower() == "basic ":
            try:
                raw = base64.b64decode(auth[6:].strip(), validate=True).decode()
                cid, _, sec = raw.partition(":")
                basic_id, basic_secret = unquote(cid), unquote(sec)
            except (ValueError, UnicodeDecodeError):
                raise OAuthError("invalid_client", "malformed Basic credentials", 401, {"www-authenticate": "Basic"}) from None
        client_id = basic_id or form.get("client_id", "")
        if basic_id and form.get("client_id") and form["client_id"] != basic_id:
            raise OAuthError("invalid_request", "client_id in the body and the Authorization header differ")
        try:
            client = await self.find_client(client_id)
        except OAuthError:
            client = None
        if client is None:
            raise OAuthError("invalid_client", "unknown client", 401)
        secret = basic_secret if basic_id else form.get("client_secret")
        if client.secret_hash is not None and (
            not secret or not hmac.compare_digest(sha256_hex(secret), client.secret_hash)
        ):
            hdr = {"www-authenticate": "Basic"} if basic_id else {}
            raise OAuthError("invalid_client", "client authentication failed", 401, hdr)
        return client

    # --------------------------------------------------------------- authorize
    async def authorize(self, request: Request) -> Response:
        q = request.query_params
        for name in q:
            if len(q.getlist(name)) > 1:
                return pages.error_page("Invalid request", f"parameter {name!r} appears more than once")
        client_id = q.get("client_id", "")
        try:
            client = await self.find_client(client_id)
        except OAuthError as exc:
            return pages.error_page("Unknown application", exc.description)
        if client is None:
            return pages.error_page("Unknown application", "The application (client_id) is not registered here.")
        redirect_uri = q.get("redirect_uri")
        if redirect_uri is None:
            if len(client.redirect_uris) != 1:
                return pages.error_page("Invalid request", "redirect_uri is required for this application.")
            redirect_uri = client.redirect_uris[0]
        elif redirect_uri not in client.redirect_uris:
            # Exact string match only; an unregistered URI is never redirected to.
            return pages.error_page("Invalid redirect", "The redirect_uri is not registered for this application.")
        state = q.get("state")

        def fail(error: str, description: str) -> Response:
            params = {"error": error, "error_description": description, "iss": self.issuer}
            if state is not None:
                params["state"] = state
            return RedirectResponse(with_query(redirect_uri, params), status_code=303, headers=pages.SECURITY_HEADERS)

        if state is not None and len(state) > MAX_STATE:
            return fail("invalid_request", "state is too long")
        if q.get("response_type") != "code":
            return fail("unsupported_response_type", "only response_type=code is supported")
        if "authorization_code" not in client.grant_types:
            return fail("unauthorized_client", "this client may not use the authorization code grant")
        challenge = q.get("code_challenge")
        if not challenge:
            return fail("invalid_request", "PKCE is required: send code_challenge with code_challenge_method=S256")
        if q.get("code_challenge_method") != "S256":
            return fail("invalid_request", "code_challenge_method must be S256 (plain is not accepted)")
        if not _CHALLENGE.match(challenge):
            return fail("invalid_request", "code_challenge is not a base64url SHA-256 value")
        resource = q.get("resource")
        if not resource:
            return fail("invalid_target", "resource is required: the URL of the MCP server to access (RFC 8707)")
        target = await self._resource(resource)
        if target is None:
            return fail("invalid_target", "resource is not an MCP server hosted here")
        tenant, server = target
        if client.tenant is not None and client.tenant != tenant:
            return fail("invalid_target", "this client is registered for another tenant")
        requested = (q.get("scope") or MCP_SCOPE).split()
        unknown = [s for s in requested if s not in SCOPES_SUPPORTED]
        if unknown:
            return fail("invalid_scope", f"unsupported scope {unknown[0]!r}")
        scopes = tuple(dict.fromkeys(requested))

        csrf = secrets.token_urlsafe(24)
        now = int(time.time())
        request_token = self.keys.sign(
            {
                "iss": self.issuer,
                "aud": self.issuer + "/oauth/authorize",
                "iat": now,
                "exp": now + self.s.authorization_request_ttl_s,
                "client_id": client.client_id,
                "redirect_uri": redirect_uri,
                "state": state,
                "code_challenge": challenge,
                "resource": resource,
                "tenant": tenant,
                "server": server,
                "scope": " ".join(scopes),
                "csrf": csrf,
            },
            REQUEST_TOKEN_TYPE,
        )
        view = self.view(client, redirect_uri, tenant, server, resource, scopes)
        user = await self._session_user(request)
        if user is not None:
            role = await self.store.users.role_of(user[0], tenant)
            if roles.permits(role, "mcp.use"):
                response: Response = pages.consent_page(view, user[1], request_token, csrf)
            else:
                response = pages.login_page(
                    view, request_token, csrf, error=f"{user[1]} has no access to tenant {tenant}; sign in as another user."
                )
        else:
            response = pages.login_page(view, request_token, csrf)
        self.set_cookie(response, self.csrf_cookie, csrf, self.s.authorization_request_ttl_s, samesite="strict")
        return response

    async def _resource(self, resource: str) -> tuple[str, str] | None:
        """(tenant, server) if `resource` is exactly the URL of a hosted server."""
        prefix = self.s.base_url + "/t/"
        if not resource.startswith(prefix) or not resource.endswith("/mcp"):
            return None
        middle = resource[len(prefix) : -len("/mcp")].split("/")
        if len(middle) != 2 or not all(NAME_RE.match(p) for p in middle):
            return None
        tenant, server = middle
        if resource != self.s.server_url(tenant, server):
            return None
        if await self.store.servers.get(tenant, server) is None:
            return None
        return tenant, server

    def view(
        self, client: Client, redirect_uri: str, tenant: str, server: str, resource: str, scopes: tuple[str, ...]
    ) -> pages.RequestView:
        return pages.RequestView(
            client_name=client.client_name,
            client_id=client.client_id,
            redirect_uri=redirect_uri,
            tenant=tenant,
            server=server,
            resource=resource,
            scopes=scopes,
            upstream_login=self.oidc.display_name if self.oidc is not None else None,
        )

    # ----------------------------------------------------------- login/consent
    async def _form(self, request: Request) -> dict[str, str]:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_FORM_BYTES:
            raise OAuthError("invalid_request", "request body too large", 413)
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/x-www-form-urlencoded":
            raise OAuthError("invalid_request", "send application/x-www-form-urlencoded")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM_BYTES:
                raise OAuthError("invalid_request", "request body too large", 413)
        pairs = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
        out: dict[str, str] = {}
        for k, v in pairs:
            if k in out:
                raise OAuthError("invalid_request", f"parameter {k!r} appears more than once")
            out[k] = v
        return out

    def _same_origin(self, request: Request) -> bool:
        origin = request.headers.get("origin")
        if origin is None:
            return True  # non-browser or old browser; the CSRF token still has to match
        own = urlsplit(self.s.base_url)
        return origin.rstrip("/").lower() == f"{own.scheme}://{own.netloc}".lower()

    async def pending_request(self, request: Request) -> tuple[dict[str, str], dict[str, Any]] | Response:
        """The form and its verified authorization request, or an error page (CSRF, expiry)."""
        try:
            form = await self._form(request)
        except OAuthError as exc:
            return pages.error_page("Invalid request", exc.description, exc.status)
        if not self._same_origin(request):
            return pages.error_page("Forbidden", "This form was submitted from another site.", 403)
        try:
            claims = self.keys.verify(form.get("request", ""), REQUEST_TOKEN_TYPE)
        except InvalidToken:
            return pages.error_page("Invalid request", "The sign-in request is missing or was tampered with.")
        if claims.get("aud") != self.issuer + "/oauth/authorize" or claims.get("exp", 0) <= time.time():
            return pages.error_page("Request expired", "This sign-in request has expired; start again from your application.")
        cookie = request.cookies.get(self.csrf_cookie, "")
        sent = form.get("csrf", "")
        expected = str(claims.get("csrf", ""))
        if not (cookie and sent and hmac.compare_digest(cookie, sent) and hmac.compare_digest(sent, expected)):
            return pages.error_page("Forbidden", "The form's CSRF token does not match; start again from your application.", 403)
        return form, claims

    async def login(self, request: Request) -> Response:
        pending = await self.pending_request(request)
        if isinstance(pending, Response):
            return pending
        form, claims = pending
        client = await self.client_or_none(claims["client_id"])
        if client is None:
            return pages.error_page("Unknown application", "The application is no longer registered.")
        scopes = tuple(str(claims["scope"]).split())
        view = self.view(client, claims["redirect_uri"], claims["tenant"], claims["server"], claims["resource"], scopes)
        name = form.get("username", "").strip()[:200]
        if wait := await self.limits.login_wait(request.scope, name):
            page = pages.login_page(
                view, form["request"], form["csrf"], status=429,
                error=f"Too many failed sign-ins from here or for this user name. Wait {retry_after(wait)} seconds, then try again.",
            )
            page.headers["retry-after"] = retry_after(wait)
            return page
        found = await self.store.users.credentials(name)
        user, pw_hash = (found if found else (None, None))
        ok = passwords.verify_password(pw_hash, form.get("password", ""))
        if user is None or not ok or user.disabled_at is not None:
            await self.limits.login_failed(request.scope, name)
            return pages.login_page(view, form["request"], form["csrf"], error="Wrong user name or password.", status=401)
        role = await self.store.users.role_of(user.id, claims["tenant"])
        if not roles.permits(role, "mcp.use"):
            return pages.login_page(
                view, form["request"], form["csrf"], error=f"{user.name} has no access to tenant {claims['tenant']}.", status=403
            )
        response = pages.consent_page(view, user.name, form["request"], form["csrf"])
        self.set_session(response, user.id, user.name)
        return response

    def set_session(self, response: Response, user_id: str, name: str) -> None:
        """Signed-in: the session cookie every login method ends with (password or upstream)."""
        now = int(time.time())
        session = self.keys.sign(
            {"iss": self.issuer, "aud": self.issuer + "/session", "sub": user_id, "name": name, "iat": now,
             "exp": now + self.s.login_session_ttl_s},
            SESSION_TOKEN_TYPE,
        )
        self.set_cookie(response, self.session_cookie, session, self.s.login_session_ttl_s, samesite="lax")

    async def consent(self, request: Request) -> Response:
        pending = await self.pending_request(request)
        if isinstance(pending, Response):
            return pending
        form, claims = pending
        redirect_uri, state = claims["redirect_uri"], claims.get("state")
        client = await self.client_or_none(claims["client_id"])
        if client is None or redirect_uri not in client.redirect_uris:
            return pages.error_page("Unknown application", "The application is no longer registered.")

        def back(params: dict[str, str]) -> Response:
            params = {**params, "iss": self.issuer}
            if state is not None:
                params["state"] = state
            response = RedirectResponse(with_query(redirect_uri, params), status_code=303, headers=pages.SECURITY_HEADERS)
            response.delete_cookie(self.csrf_cookie, path="/", secure=self._secure, httponly=True, samesite="strict")
            return response

        user = await self._session_user(request)
        if user is None:
            return pages.error_page("Signed out", "Your session ended; start again from your application.", 401)
        if form.get("decision") != "approve":
            return back({"error": "access_denied", "error_description": "the user denied access"})
        tenant, server = claims["tenant"], claims["server"]
        role = await self.store.users.role_of(user[0], tenant)
        if not roles.permits(role, "mcp.use") or await self._resource(claims["resource"]) != (tenant, server):
            return back({"error": "access_denied", "error_description": "the user may not use this server"})
        code = secrets.token_urlsafe(32)
        await self.store.oauth.create_code(
            code_hash=sha256_hex(code),
            client_id=client.client_id,
            user_id=user[0],
            tenant=tenant,
            resource=claims["resource"],
            scope=claims["scope"],
            redirect_uri=redirect_uri,
            code_challenge=claims["code_challenge"],
            expires_at=expiry(self.s.auth_code_ttl_s),
        )
        return back({"code": code})

    async def client_or_none(self, client_id: str) -> Client | None:
        try:
            return await self.find_client(client_id)
        except OAuthError:
            return None

    async def _session_user(self, request: Request) -> tuple[str, str] | None:
        raw = request.cookies.get(self.session_cookie)
        if not raw:
            return None
        try:
            claims = self.keys.verify(raw, SESSION_TOKEN_TYPE)
        except InvalidToken:
            return None
        if claims.get("aud") != self.issuer + "/session" or claims.get("exp", 0) <= time.time():
            return None
        user = await self.store.users.get(str(claims.get("sub")))
        if user is None or user.disabled_at is not None:
            return None
        return user.id, user.name

    def set_cookie(self, response: Response, name: str, value: str, max_age: int, *, samesite: str) -> None:
        response.set_cookie(
            name, value, max_age=max_age, path="/", secure=self._secure, httponly=True, samesite=samesite  # type: ignore[arg-type]
        )

    # ------------------------------------------------------------------- token
    async def token(self, request: Request) -> Response:
        if request.method == "OPTIONS":
            return Response(status_code=204, headers=CORS)
        try:
            form = await self._form(request)
            client = await self.authenticate_client(request, form)
            if wait := await self.limits.token_wait(request.scope, client.client_id, public=client.secret_hash is None):
                raise _too_many(wait, "token requests for this client")
            grant_type = form.get("grant_type")
            if grant_type not in client.grant_types:
                if grant_type in GRANT_TYPES:
                    raise OAuthError("unauthorized_client", f"this client may not use {grant_type}")
                raise OAuthError("unsupported_grant_type", "grant_type must be authorization_code or refresh_token")
            if grant_type == "authorization_code":
                body = await self._code_grant(client, form)
            else:
                body = await self._refresh_grant(client, form)
        except OAuthError as exc:
            return exc.response()
        return JSONResponse(body, headers={**CORS, **NO_STORE})

    async def _code_grant(self, client: Client, form: dict[str, str]) -> dict[str, Any]:
        code = form.get("code", "")
        verifier = form.get("code_verifier", "")
        if not code:
            raise OAuthError("invalid_request", "code is required")
        if not _VERIFIER.match(verifier):
            raise OAuthError("invalid_request" if not verifier else "invalid_grant", "a valid code_verifier is required (PKCE)")
        redirect_uri = form.get("redirect_uri")
        resource = form.get("resource")

        def check(record: CodeRecord) -> str | None:
            if record.grant.client_id != client.client_id:
                return "the code was issued to another client"
            if redirect_uri is not None and redirect_uri != record.redirect_uri:
                return "redirect_uri does not match the authorization request"
            if not hmac.compare_digest(s256(verifier), record.code_challenge):
                return "code_verifier does not match the code_challenge"
            if resource is not None and resource != record.grant.resource:
                return "resource does not match the authorization request"
            return None

        refresh = self._new_refresh() if "refresh_token" in client.grant_types else None
        outcome = await self.store.oauth.redeem_code(
            sha256_hex(code),
            check,
            refresh_hash=sha256_hex(refresh) if refresh else None,
            refresh_expires_at=expiry(self.s.refresh_token_ttl_s),
        )
        if isinstance(outcome, str):
            raise OAuthError("invalid_grant", _describe(outcome, "authorization code"))
        return await self._issue(outcome.grant, refresh)

    async def _refresh_grant(self, client: Client, form: dict[str, str]) -> dict[str, Any]:
        token = form.get("refresh_token", "")
        if not token:
            raise OAuthError("invalid_request", "refresh_token is required")
        resource = form.get("resource")
        scope = form.get("scope")

        def check(grant: Grant) -> str | None:
            if grant.client_id != client.client_id:
                return "the refresh token was issued to another client"
            if resource is not None and resource != grant.resource:
                return "resource does not match the grant"
            if scope is not None and not set(scope.split()) <= set(grant.scope.split()):
                return "scope exceeds the grant"
            return None

        new = self._new_refresh()
        outcome = await self.store.oauth.rotate_refresh(
            sha256_hex(token), check, new_hash=sha256_hex(new), new_expires_at=expiry(self.s.refresh_token_ttl_s)
        )
        if isinstance(outcome, str):
            raise OAuthError("invalid_grant", _describe(outcome, "refresh token"))
        return await self._issue(outcome, new, scope=scope)

    async def _issue(self, grant: Grant, refresh: str | None, *, scope: str | None = None) -> dict[str, Any]:
        # The role is read now, not at consent: a user removed from the tenant, or whose
        # role lost MCP access, gets no more tokens and the grant ends.
        role = await self.store.users.role_of(grant.user_id, grant.tenant)
        if not roles.permits(role, "mcp.use"):
            await self.store.oauth.revoke_grant(grant.id, "user no longer has access to the tenant")
            raise OAuthError("invalid_grant", "the user no longer has access to this tenant")
        granted = scope or grant.scope
        access = await self.tokens.issue(
            user_id=grant.user_id,
            client_id=grant.client_id,
            tenant=grant.tenant,
            resource=grant.resource,
            scope=granted,
            role=str(role),
            grant_id=grant.id,
        )
        body: dict[str, Any] = {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": int(self.tokens.ttl_s),
            "scope": granted,
        }
        if refresh is not None:
            body["refresh_token"] = refresh
        return body

    @staticmethod
    def _new_refresh() -> str:
        return "smcp_rt_" + secrets.token_urlsafe(32)

    # ------------------------------------------------------------------ revoke
    async def revoke(self, request: Request) -> Response:
        if request.method == "OPTIONS":
            return Response(status_code=204, headers=CORS)
        try:
            form = await self._form(request)
            client = await self.authenticate_client(request, form)
        except OAuthError as exc:
            return exc.response()
        token = form.get("token", "")
        grant: Grant | None = None
        if looks_like_jwt(token):
            kid = token_kid(token)
            if kid and await self.keys.knows(kid):
                try:
                    claims = self.keys.verify(token, "at+jwt")
                    grant = await self.store.oauth.get_grant(str(claims.get("gid")))
                except InvalidToken:
                    grant = None
        elif token:
            grant = await self.store.oauth.grant_for_refresh(sha256_hex(token))
        # RFC 7009 §2.2: unknown or foreign tokens get the same 200 as revoked ones.
        if grant is not None and grant.client_id == client.client_id:
            await self.store.oauth.revoke_grant(grant.id, "revoked by the client")
        return Response(status_code=200, headers={**CORS, **NO_STORE})

    # ---------------------------------------------------------------- register
    async def register(self, request: Request) -> Response:
        if request.method == "OPTIONS":
            return Response(status_code=204, headers=CORS)
        if not self.s.oauth_dynamic_registration:
            return OAuthError("access_denied", "dynamic client registration is turned off", 403).response()
        if wait := await self.limits.register_wait(request.scope):
            return _too_many(wait, "client registrations from this address").response()
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_REGISTRATION_BYTES:
            return OAuthError("invalid_client_metadata", "registration request too large", 413).response()
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_REGISTRATION_BYTES:
                return OAuthError("invalid_client_metadata", "registration request too large", 413).response()
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            doc = None
        if not isinstance(doc, dict):
            return OAuthError("invalid_client_metadata", "the body must be a JSON object").response()
        try:
            client, secret = client_from_metadata(doc, kind="dynamic", tenant=None)
        except OAuthError as exc:
            return exc.response()
        client = await self.store.oauth.create_client(client)
        out = registration_response(client, secret)
        return JSONResponse(out, status_code=201, headers={**CORS, **NO_STORE})


def _describe(outcome: str, what: str) -> str:
    return {
        Outcome.UNKNOWN: f"unknown {what}",
        Outcome.EXPIRED: f"the {what} has expired",
        Outcome.REVOKED: f"the {what} was revoked",
        Outcome.REPLAYED: f"the {what} was already used; every token of this grant is now revoked",
    }.get(outcome, outcome)
