"""Upstream OpenID Connect login: the "Sign in with …" button's two routes.

The authorization server (server.py) owns the pending request, the pages and the login
session; this module only turns a provider's answer into one of its users (auth/oidc.py
speaks to the provider, store/oidc.py keeps the links and logins in flight).
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from smcp.auth import roles
from smcp.auth.oidc import OidcError, UpstreamIdentity, UpstreamOidc
from smcp.auth.tokens import (
    REQUEST_TOKEN_TYPE,
    InvalidToken,
    KeyRing,
    expiry,
    s256,
    sha256_hex,
)
from smcp.config import Settings
from smcp.store import Store
from smcp.store.identity import Client
from smcp.store.oidc import LoginMissing, PendingLogin, Refusal
from smcp.ui import pages

log = logging.getLogger(__name__)

# Our own states are 43 characters; a longer one is not ours and is not looked up.
_MAX_STATE = 1024


class LoginHost(Protocol):
    """What these routes use of the authorization server (server.py implements it)."""

    s: Settings
    store: Store
    keys: KeyRing
    issuer: str
    oidc: UpstreamOidc | None
    oidc_cookie: str

    async def pending_request(self, request: Request) -> tuple[dict[str, str], dict[str, Any]] | Response: ...

    async def client_or_none(self, client_id: str) -> Client | None: ...

    def view(
        self, client: Client, redirect_uri: str, tenant: str, server: str, resource: str, scopes: tuple[str, ...]
    ) -> pages.RequestView: ...

    def set_session(self, response: Response, user_id: str, name: str) -> None: ...

    def set_cookie(self, response: Response, name: str, value: str, max_age: int, *, samesite: str) -> None: ...


class UpstreamLogin:
    def __init__(self, server: LoginHost) -> None:
        self.server = server

    async def start(self, request: Request) -> Response:
        """The login page's "Sign in with …" form: remember the login, send the browser upstream."""
        if self.server.oidc is None:
            return pages.error_page("Not found", "Sign-in through an identity provider is not configured here.", 404)
        pending = await self.server.pending_request(request)
        if isinstance(pending, Response):
            return pending
        form, claims = pending
        state, nonce, verifier = secrets.token_urlsafe(32), secrets.token_urlsafe(32), secrets.token_urlsafe(48)
        try:
            url = await self.server.oidc.authorization_url(state=state, nonce=nonce, code_challenge=s256(verifier))
        except OidcError as exc:
            log.warning("upstream login unavailable: %s", exc.message)
            return pages.error_page(exc.title, exc.message, exc.status)
        # One binding value per browser, reused while it lives, so logins started in two
        # tabs do not undo each other; only its hash is stored.
        binding = request.cookies.get(self.server.oidc_cookie, "")
        if not re.fullmatch(r"[A-Za-z0-9_-]{43}", binding):
            binding = secrets.token_urlsafe(32)
        await self.server.store.oidc.save_login(
            PendingLogin(
                state_hash=sha256_hex(state),
                browser_hash=sha256_hex(binding),
                nonce=nonce,
                code_verifier=verifier,
                request=form["request"],
                expires_at=expiry(max(0, int(claims["exp"]) - int(time.time()))),
            )
        )
        response = RedirectResponse(url, status_code=303, headers=pages.SECURITY_HEADERS)
        # Lax, not Strict: the callback is a top-level navigation from the provider's site.
        self.server.set_cookie(response, self.server.oidc_cookie, binding, self.server.s.authorization_request_ttl_s, samesite="lax")
        return response

    async def callback(self, request: Request) -> Response:
        """The provider's redirect back: check it, learn who signed in, go on to consent."""
        if self.server.oidc is None:
            return pages.error_page("Not found", "Sign-in through an identity provider is not configured here.", 404)
        q = request.query_params
        for name in q:
            if len(q.getlist(name)) > 1:
                return pages.error_page("Invalid request", f"parameter {name!r} appears more than once")
        state = q.get("state", "")
        if not state or len(state) > _MAX_STATE:
            return pages.error_page("Invalid request", "The identity provider's response has no state; start again from your application.")
        login = await self.server.store.oidc.take_login(sha256_hex(state), sha256_hex(request.cookies.get(self.server.oidc_cookie, "")))
        if login is LoginMissing.OTHER_BROWSER:
            return pages.error_page("Sign-in not recognised", "This sign-in was started in another browser; start again from your application.")
        if not isinstance(login, PendingLogin):
            return pages.error_page(
                "Sign-in not recognised", "This sign-in response was already used or has expired; start again from your application."
            )
        if login.expires_at <= expiry(0):
            return pages.error_page("Request expired", "This sign-in request has expired; start again from your application.")
        try:
            await self.server.oidc.check_response_issuer(q.get("iss"))
            if "error" in q:
                raise _provider_error(q.get("error", ""), q.get("error_description"), self.server.oidc.display_name)
            code = q.get("code")
            if not code:
                raise OidcError("The identity provider's response has neither a code nor an error.", status=400)
            identity = await self.server.oidc.redeem(code, code_verifier=login.code_verifier, nonce=login.nonce)
        except OidcError as exc:
            log.info("upstream login failed: %s", exc.message)
            return pages.error_page(exc.title, exc.message, exc.status)
        try:
            claims = self.server.keys.verify(login.request, REQUEST_TOKEN_TYPE)
        except InvalidToken:
            return pages.error_page("Request expired", "This sign-in request is no longer valid; start again from your application.")
        if claims.get("aud") != self.server.issuer + "/oauth/authorize" or claims.get("exp", 0) <= time.time():
            return pages.error_page("Request expired", "This sign-in request has expired; start again from your application.")
        user = await self._upstream_user(identity)
        if isinstance(user, Response):
            return user
        client = await self.server.client_or_none(claims["client_id"])
        if client is None:
            return pages.error_page("Unknown application", "The application is no longer registered.")
        scopes = tuple(str(claims["scope"]).split())
        view = self.server.view(client, claims["redirect_uri"], claims["tenant"], claims["server"], claims["resource"], scopes)
        role = await self.server.store.users.role_of(user[0], claims["tenant"])
        if not roles.permits(role, "mcp.use"):
            return pages.login_page(
                view, login.request, str(claims["csrf"]), error=f"{user[1]} has no access to tenant {claims['tenant']}.", status=403
            )
        response = pages.consent_page(view, user[1], login.request, str(claims["csrf"]))
        self.server.set_session(response, user[0], user[1])
        return response

    async def _upstream_user(self, identity: UpstreamIdentity) -> tuple[str, str] | Response:
        """The SMCP user (id, name) an upstream identity is, linking it on first sight; or a refusal page."""
        assert self.server.oidc is not None
        provider = self.server.oidc.display_name
        who = identity.email or identity.subject
        if not self.server.oidc.email_allowed(identity):
            return pages.error_page(
                "Not allowed", f"Your {provider} account ({who}) has no verified email address in a domain allowed here.", 403
            )
        found = await self.server.store.oidc.resolve(
            identity.issuer,
            identity.subject,
            email=identity.email if identity.email_verified else None,
            name=self.server.oidc.username_for(identity),
            provision=self.server.oidc.config.auto_provision,
        )
        if not isinstance(found, Refusal):
            log.info("user %s signed in through %s", found.name, identity.issuer)
            return found.id, found.name
        log.info("upstream identity %s at %s refused: %s", identity.subject, identity.issuer, found)
        claim = self.server.oidc.config.username_claim
        usable = "verified email address" if claim == "email" else f"usable {claim} claim"
        message = {
            Refusal.UNKNOWN: f"Your {provider} account ({who}) is not an SMCP user. Ask an administrator to add you.",
            Refusal.NO_NAME: (
                f"Your {provider} account ({who}) is not linked to an SMCP user, and it has no {usable} "
                "to find one by. Ask an administrator."
            ),
            Refusal.TAKEN: (
                f"The SMCP user matching your {provider} account ({who}) is already linked to another "
                f"{provider} account. Ask an administrator."
            ),
            Refusal.DISABLED: "This SMCP user is disabled.",
        }[found]
        return pages.error_page("Not allowed", message, 403)


def _provider_error(error: str, description: str | None, provider: str) -> OidcError:
    """An error the provider sent back instead of a code, as a page for the person."""
    detail = f" ({description[:200]})" if description else ""
    if error == "access_denied":
        return OidcError(f"Sign-in was cancelled or refused at {provider}{detail}.", status=403, title="Sign-in cancelled")
    if error == "temporarily_unavailable":
        return OidcError(f"{provider} is temporarily unavailable{detail}; try again later.", status=503,
                         title="Identity provider unavailable")
    return OidcError(f"{provider} could not sign you in: {error[:100]}{detail}.", status=502)
