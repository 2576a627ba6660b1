"""What a client registration may say (RFC 7591), for dynamic registration and the admin API."""

from __future__ import annotations

import re
import secrets
import time
from typing import Any
from urllib.parse import urlsplit

from smcp.auth.errors import OAuthError
from smcp.auth.tokens import MCP_SCOPE, OFFLINE_SCOPE, sha256_hex
from smcp.store.identity import Client

SCOPES_SUPPORTED = (MCP_SCOPE, OFFLINE_SCOPE)
GRANT_TYPES = ("authorization_code", "refresh_token")
AUTH_METHODS = ("none", "client_secret_basic", "client_secret_post")
MAX_REDIRECT_URI_LENGTH = 2000


def valid_redirect_uri(uri: str) -> bool:
    """https anywhere, http only to loopback, or a private-use scheme (RFC 8252 §7.1); never a fragment."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return False
    if parts.fragment or "#" in uri or len(uri) > MAX_REDIRECT_URI_LENGTH:
        return False
    if parts.scheme == "https":
        return bool(parts.hostname)
    if parts.scheme == "http":
        host = (parts.hostname or "").lower()
        return host in ("localhost", "127.0.0.1", "::1")
    # Reverse-domain private-use schemes such as com.example.app:/callback.
    return bool(re.fullmatch(r"[a-z][a-z0-9+\-]*(\.[a-z0-9+\-]+)+", parts.scheme or ""))


def client_from_metadata(doc: dict[str, Any], *, kind: str, tenant: str | None) -> tuple[Client, str | None]:
    """Validate RFC 7591 client metadata; returns the client and its secret (if confidential)."""
    uris = doc.get("redirect_uris")
    if not isinstance(uris, list) or not uris or len(uris) > 10 or not all(isinstance(u, str) for u in uris):
        raise OAuthError("invalid_redirect_uri", "redirect_uris must be a list of 1-10 URIs")
    for uri in uris:
        if not valid_redirect_uri(uri):
            raise OAuthError("invalid_redirect_uri", f"redirect URI {uri!r} must be https, http on loopback, or a private-use scheme")
    method = doc.get("token_endpoint_auth_method") or "client_secret_basic"  # RFC 7591 §2 default
    if not isinstance(method, str) or method not in AUTH_METHODS:
        raise OAuthError("invalid_client_metadata", f"token_endpoint_auth_method {method!r} is not supported")
    grants = doc.get("grant_types") or ["authorization_code"]
    if (
        not isinstance(grants, list)
        or not all(isinstance(g, str) for g in grants)
        or not set(grants) <= set(GRANT_TYPES)
        or "authorization_code" not in grants
    ):
        raise OAuthError("invalid_client_metadata", "grant_types must include authorization_code and may add refresh_token")
    responses = doc.get("response_types") or ["code"]
    if responses != ["code"]:
        raise OAuthError("invalid_client_metadata", "response_types must be [\"code\"]")
    name = doc.get("client_name") or "Unnamed application"
    if not isinstance(name, str) or len(name) > 200:
        raise OAuthError("invalid_client_metadata", "client_name must be a string of at most 200 characters")
    scope = doc.get("scope")
    if scope is not None and (not isinstance(scope, str) or not set(scope.split()) <= set(SCOPES_SUPPORTED)):
        raise OAuthError("invalid_client_metadata", f"scope must be drawn from {' '.join(SCOPES_SUPPORTED)}")
    secret = None if method == "none" else "smcp_cs_" + secrets.token_urlsafe(32)
    extra = {k: doc[k] for k in ("client_uri", "logo_uri", "scope", "software_id", "software_version", "application_type") if isinstance(doc.get(k), str)}
    client = Client(
        client_id=("smcp_c_" + secrets.token_hex(12)),
        kind=kind,
        client_name=name,
        redirect_uris=tuple(uris),
        grant_types=tuple(dict.fromkeys(grants)),
        token_endpoint_auth_method=method,
        tenant=tenant,
        secret_hash=sha256_hex(secret) if secret else None,
        metadata=extra,
    )
    return client, secret


def registration_response(client: Client, secret: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "client_id": client.client_id,
        "client_id_issued_at": int(client.created_at.timestamp() if client.created_at else time.time()),
        "client_name": client.client_name,
        "redirect_uris": list(client.redirect_uris),
        "grant_types": list(client.grant_types),
        "response_types": ["code"],
        "token_endpoint_auth_method": client.token_endpoint_auth_method,
        **client.metadata,
    }
    if secret is not None:
        out["client_secret"] = secret
        out["client_secret_expires_at"] = 0
    return out
