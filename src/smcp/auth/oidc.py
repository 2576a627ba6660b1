"""Upstream OpenID Connect login: SMCP as a relying party of a team's own identity provider.

The authorization server stays SMCP's; an upstream login only answers "who is this
person", after which the SMCP user goes on to the same consent page as a password login.

    config = OidcConfig.from_settings(settings)        # None when no issuer is set
    upstream = UpstreamOidc(config)
    url = await upstream.authorization_url(state=..., nonce=..., code_verifier=...)
    ... the provider redirects back to /oauth/oidc/callback ...
    await upstream.check_response_issuer(query.get("iss"))
    identity = await upstream.redeem(code, code_verifier=..., nonce=...)

What a check here defends against, where the reason is not obvious:
- The discovery document's `issuer` must equal the configured issuer exactly (OIDC
  Discovery §4.3), and so must the ID token's `iss` and a callback's RFC 9207 `iss`: a
  response from one provider can never be taken for another's (mix-up attacks).
- Only asymmetric signature algorithms the provider lists are accepted. An HS256 ID token
  would be keyed with our own client secret, so anyone holding the secret could mint one;
  `none` proves nothing. The algorithm comes from that list, never from the token alone.
- `nonce` ties the ID token to the login this browser started, PKCE ties the code to it,
  and `state` (stored server-side, single use) ties the callback to it.
- Endpoints are operator-configured, not chosen by strangers, so unlike client metadata
  documents (cimd.py) they may be private addresses; they must still be https.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import httpx
import orjson
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, JWKRegistry, OKPKey, RSAKey

from smcp.config import Settings

PublicKey = RSAKey | ECKey | OKPKey

# Asymmetric JWS algorithms only (see the module docstring for why not HS* or none).
SIGNING_ALGS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA", "Ed25519"}
)
_KTY = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}
# at_hash (OIDC Core §3.1.3.6): the left half of the access token's hash, the hash
# being the one the signature algorithm uses (SHA-512 for Ed25519).
_AT_HASH = {"256": hashlib.sha256, "384": hashlib.sha384, "512": hashlib.sha512}

# A provider rotating keys publishes the new one before signing with it; an unknown kid
# causes one JWKS refetch, but not more often than this, so junk kids cannot make SMCP
# hammer the provider.
JWKS_REFETCH_MIN_S = 10.0
# A freshly minted ID token's iat is seconds old; one older than this was not minted for
# this code exchange.
MAX_ID_TOKEN_AGE_S = 600
MAX_SUBJECT = 255
# The management API's rule for user names (control/routes/identity.py USER_PATTERN);
# kept here because auth must not import the control plane.
USER_NAME = re.compile(r"[a-z0-9][a-z0-9._@+-]{0,199}")


class OidcError(Exception):
    """An upstream login that cannot go on: what the person is told, and the HTTP status."""

    def __init__(self, message: str, *, status: int = 502, title: str = "Sign-in failed") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.title = title


class OidcConfigError(ValueError):
    """The settings name no usable provider; SMCP refuses to start rather than show a broken button."""


def _loopback(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_url(url: str, *, allow_insecure: bool, what: str) -> str:
    """https, or http on a loopback address when insecure issuers are allowed (tests)."""
    parts = urlsplit(url)
    if parts.username or parts.password or parts.fragment or "#" in url:
        raise OidcConfigError(f"{what} {url!r} must not contain credentials or a fragment")
    if parts.scheme == "https" and parts.hostname:
        return url
    if parts.scheme == "http" and allow_insecure and _loopback(parts.hostname):
        return url
    if parts.scheme == "http" and _loopback(parts.hostname):
        raise OidcConfigError(
            f"{what} {url!r} is plain http; set SMCP_OIDC_ALLOW_INSECURE_ISSUER=true to allow it (tests only)"
        )
    raise OidcConfigError(f"{what} {url!r} must be an https URL")


@dataclass(frozen=True, slots=True)
class OidcConfig:
    issuer: str
    client_id: str
    client_secret: str | None
    redirect_uri: str
    display_name: str = "single sign-on"
    scopes: tuple[str, ...] = ("openid", "email", "profile")
    username_claim: str = "email"
    auto_provision: bool = False
    allowed_email_domains: frozenset[str] = field(default_factory=frozenset)
    allow_insecure: bool = False
    cache_ttl_s: float = 3600.0
    timeout_s: float = 10.0
    max_bytes: int = 256 * 1024
    leeway_s: int = 60

    @classmethod
    def from_settings(cls, s: Settings) -> OidcConfig | None:
        if not s.oidc_issuer:
            return None
        issuer = check_url(s.oidc_issuer, allow_insecure=s.oidc_allow_insecure_issuer, what="SMCP_OIDC_ISSUER")
        if urlsplit(issuer).query:
            raise OidcConfigError("SMCP_OIDC_ISSUER must not have a query")
        if not s.oidc_client_id:
            raise OidcConfigError("SMCP_OIDC_CLIENT_ID is required when SMCP_OIDC_ISSUER is set")
        if s.oidc_client_secret is not None and s.oidc_client_secret_file is not None:
            raise OidcConfigError("set SMCP_OIDC_CLIENT_SECRET or SMCP_OIDC_CLIENT_SECRET_FILE, not both")
        secret = s.oidc_client_secret.get_secret_value() if s.oidc_client_secret is not None else None
        if s.oidc_client_secret_file is not None:
            try:
                secret = s.oidc_client_secret_file.read_text().strip()
            except OSError as exc:
                raise OidcConfigError(f"cannot read SMCP_OIDC_CLIENT_SECRET_FILE: {exc}") from exc
            if not secret:
                raise OidcConfigError("SMCP_OIDC_CLIENT_SECRET_FILE is empty")
        scopes = tuple(dict.fromkeys(s.oidc_scopes.split()))
        if "openid" not in scopes:
            raise OidcConfigError("SMCP_OIDC_SCOPES must include openid")
        domains = frozenset(d.strip().lstrip("@").lower() for d in s.oidc_allowed_email_domains if d.strip())
        return cls(
            issuer=issuer,
            client_id=s.oidc_client_id,
            client_secret=secret or None,
            redirect_uri=f"{s.issuer}/oauth/oidc/callback",
            display_name=s.oidc_display_name,
            scopes=scopes,
            username_claim=s.oidc_username_claim,
            auto_provision=s.oidc_auto_provision,
            allowed_email_domains=domains,
            allow_insecure=s.oidc_allow_insecure_issuer,
            cache_ttl_s=s.oidc_cache_ttl_s,
            timeout_s=s.oidc_timeout_s,
            max_bytes=s.oidc_max_response_bytes,
            leeway_s=s.oidc_clock_skew_s,
        )


@dataclass(frozen=True, slots=True)
class ProviderMetadata:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    userinfo_endpoint: str | None
    id_token_algs: frozenset[str]
    token_auth_method: str  # "client_secret_basic" | "client_secret_post" | "none"
    iss_parameter: bool  # RFC 9207: the provider puts `iss` in authorization responses


@dataclass(frozen=True, slots=True)
class UpstreamIdentity:
    issuer: str
    subject: str
    claims: dict[str, Any]

    @property
    def email(self) -> str | None:
        value = self.claims.get("email")
        return value.strip().lower() if isinstance(value, str) and "@" in value and len(value) <= 320 else None

    @property
    def email_verified(self) -> bool:
        # Some providers (AWS Cognito among them) send the boolean as a string.
        value = self.claims.get("email_verified")
        return value is True or (isinstance(value, str) and value.lower() == "true")


class UpstreamOidc:
    """One configured provider: its cached metadata and keys, the code exchange, ID token checks."""

    def __init__(self, config: OidcConfig, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.config = config
        self._transport = transport
        self._lock = asyncio.Lock()
        self._meta: tuple[float, ProviderMetadata] | None = None
        self._keys: tuple[float, list[PublicKey]] | None = None  # (fetched at, keys)

    @classmethod
    def from_settings(cls, settings: Settings) -> UpstreamOidc | None:
        config = OidcConfig.from_settings(settings)
        return cls(config) if config is not None else None

    @property
    def display_name(self) -> str:
        return self.config.display_name

    # ------------------------------------------------------------------ discovery
    async def metadata(self) -> ProviderMetadata:
        hit = self._meta
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        async with self._lock:
            hit = self._meta
            if hit is not None and hit[0] > time.monotonic():
                return hit[1]
            url = self.config.issuer.rstrip("/") + "/.well-known/openid-configuration"
            meta = self._parse_metadata(await self._fetch_json("GET", url, what="discovery document"))
            self._meta = (time.monotonic() + self.config.cache_ttl_s, meta)
            return meta

    def _parse_metadata(self, doc: dict[str, Any]) -> ProviderMetadata:
        c = self.config
        if doc.get("issuer") != c.issuer:
            raise OidcError(
                f"The identity provider's discovery document names the issuer {doc.get('issuer')!r}, "
                f"not the configured {c.issuer!r}; SMCP will not use it.",
                title="Identity provider misconfigured",
            )

        def endpoint(name: str, required: bool = True) -> str | None:
            value = doc.get(name)
            if value is None and not required:
                return None
            if not isinstance(value, str):
                raise OidcError(f"The identity provider's discovery document lacks {name}.", title="Identity provider misconfigured")
            try:
                return check_url(value, allow_insecure=c.allow_insecure, what=name)
            except OidcConfigError as exc:
                raise OidcError(str(exc), title="Identity provider misconfigured") from None

        responses = doc.get("response_types_supported")
        if isinstance(responses, list) and "code" not in responses:
            raise OidcError("The identity provider does not offer the authorization code flow.", title="Identity provider misconfigured")
        challenges = doc.get("code_challenge_methods_supported")
        if isinstance(challenges, list) and "S256" not in challenges:
            raise OidcError("The identity provider does not support PKCE with S256.", title="Identity provider misconfigured")
        listed = doc.get("id_token_signing_alg_values_supported")
        algs = frozenset(a for a in listed if isinstance(a, str)) & SIGNING_ALGS if isinstance(listed, list) else frozenset()
        if not algs:
            raise OidcError(
                f"The identity provider signs ID tokens with none of {', '.join(sorted(SIGNING_ALGS))}.",
                title="Identity provider misconfigured",
            )
        # RFC 8414/OIDC Discovery default when the list is absent: client_secret_basic.
        methods = doc.get("token_endpoint_auth_methods_supported")
        if not isinstance(methods, list) or not methods:
            methods = ["client_secret_basic"]
        if c.client_secret is None:
            method = "none"
        elif "client_secret_basic" in methods:
            method = "client_secret_basic"
        elif "client_secret_post" in methods:
            method = "client_secret_post"
        else:
            raise OidcError(
                "The identity provider accepts neither client_secret_basic nor client_secret_post at its token endpoint.",
                title="Identity provider misconfigured",
            )
        return ProviderMetadata(
            issuer=c.issuer,
            authorization_endpoint=str(endpoint("authorization_endpoint")),
            token_endpoint=str(endpoint("token_endpoint")),
            jwks_uri=str(endpoint("jwks_uri")),
            userinfo_endpoint=endpoint("userinfo_endpoint", required=False),
            id_token_algs=algs,
            token_auth_method=method,
            iss_parameter=doc.get("authorization_response_iss_parameter_supported") is True,
        )

    async def signing_keys(self, *, refetch: bool = False) -> list[PublicKey]:
        """The provider's keys, cached; `refetch` (an unknown kid) asks again unless it just did."""
        hit = self._keys
        if hit is not None:
            age = time.monotonic() - hit[0]
            if age < (JWKS_REFETCH_MIN_S if refetch else self.config.cache_ttl_s):
                return hit[1]
        meta = await self.metadata()
        async with self._lock:
            doc = await self._fetch_json("GET", meta.jwks_uri, what="key set (JWKS)")
            keys = _import_keys(doc)
            self._keys = (time.monotonic(), keys)
            return keys

    # -------------------------------------------------------------------- the flow
    async def authorization_url(self, *, state: str, nonce: str, code_challenge: str) -> str:
        meta = await self.metadata()
        c = self.config
        params = {
            "response_type": "code",
            "client_id": c.client_id,
            "redirect_uri": c.redirect_uri,
            "scope": " ".join(c.scopes),
            "state": state,
            "nonce": nonce,
            "code_challenge": code_challenge,
            "code_challenge_method": "S256",
        }
        parts = urlsplit(meta.authorization_endpoint)
        query = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
        return urlunsplit(parts._replace(query=urlencode(query)))

    async def check_response_issuer(self, iss: str | None) -> None:
        """RFC 9207: a present `iss` must be our issuer; an advertised one must be present."""
        meta = await self.metadata()
        if iss is None:
            if meta.iss_parameter:
                raise OidcError("The sign-in response lacks the issuer (iss) its provider promises to send.", status=400)
            return
        if iss != self.config.issuer:
            raise OidcError(
                "The sign-in response came from another identity provider than the one it was sent to.", status=400
            )

    async def redeem(self, code: str, *, code_verifier: str, nonce: str) -> UpstreamIdentity:
        """Exchange the code, validate the ID token, and fill missing claims from userinfo."""
        meta = await self.metadata()
        c = self.config
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": c.redirect_uri,
            "code_verifier": code_verifier,
        }
        headers: dict[str, str] = {}
        if meta.token_auth_method == "client_secret_basic":
            # RFC 6749 §2.3.1: both parts are form-encoded before the Basic encoding.
            raw = f"{quote(c.client_id, safe='')}:{quote(c.client_secret or '', safe='')}"
            headers["authorization"] = "Basic " + base64.b64encode(raw.encode()).decode()
        else:
            form["client_id"] = c.client_id
            if meta.token_auth_method == "client_secret_post":
                form["client_secret"] = c.client_secret or ""
        body = await self._fetch_json("POST", meta.token_endpoint, what="token response", form=form, headers=headers)
        id_token = body.get("id_token")
        if not isinstance(id_token, str):
            raise OidcError("The identity provider's token response has no ID token.")
        access_token = body.get("access_token")
        access_token = access_token if isinstance(access_token, str) else None
        claims = await self.validate_id_token(id_token, nonce=nonce, access_token=access_token)
        identity = UpstreamIdentity(c.issuer, claims["sub"], claims)
        if self._needs_userinfo(claims) and meta.userinfo_endpoint and access_token:
            token_type = body.get("token_type")
            if isinstance(token_type, str) and token_type.lower() == "bearer":
                extra = await self._userinfo(meta.userinfo_endpoint, access_token, claims["sub"])
                # Signed ID token claims win; userinfo only fills what the ID token left out.
                identity = UpstreamIdentity(c.issuer, claims["sub"], {**extra, **claims})
        return identity

    def _needs_userinfo(self, claims: dict[str, Any]) -> bool:
        wanted = {self.config.username_claim}
        if self.config.username_claim == "email" or self.config.allowed_email_domains:
            wanted |= {"email", "email_verified"}
        return not wanted <= claims.keys()

    async def _userinfo(self, url: str, access_token: str, subject: str) -> dict[str, Any]:
        doc = await self._fetch_json("GET", url, what="userinfo response", headers={"authorization": f"Bearer {access_token}"})
        # OIDC Core §5.3.4: userinfo about someone else must not be used (token substitution).
        if doc.get("sub") != subject:
            raise OidcError("The identity provider's userinfo response is about another subject than its ID token.")
        return doc

    # ------------------------------------------------------------------ ID tokens
    async def validate_id_token(self, token: str, *, nonce: str, access_token: str | None = None) -> dict[str, Any]:
        meta = await self.metadata()
        try:
            header = _header(token)
        except (ValueError, TypeError):
            raise OidcError("The ID token is malformed.") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in meta.id_token_algs:
            raise OidcError(f"The ID token is signed with {alg!r}, which the provider does not list or SMCP does not accept.")
        kid = header.get("kid") if isinstance(header.get("kid"), str) else None
        key = _pick_key(await self.signing_keys(), alg, kid)
        if key is None and kid is not None:
            key = _pick_key(await self.signing_keys(refetch=True), alg, kid)
        if key is None:
            raise OidcError("The ID token is signed with a key the identity provider does not publish.")
        try:
            claims = dict(jwt.decode(token, key, algorithms=[alg]).claims)
        except (JoseError, ValueError, TypeError) as exc:
            raise OidcError(f"The ID token's signature does not verify ({exc.__class__.__name__}).") from None
        self._check_claims(claims, nonce)
        at_hash = claims.get("at_hash")
        if at_hash is not None and access_token is not None:
            digest = _AT_HASH.get("512" if alg.startswith("Ed") else alg[-3:], hashlib.sha256)(access_token.encode()).digest()
            expected = base64.urlsafe_b64encode(digest[: len(digest) // 2]).rstrip(b"=").decode()
            if not isinstance(at_hash, str) or not hmac.compare_digest(at_hash, expected):
                raise OidcError("The ID token's at_hash does not match the access token.")
        return claims

    def _check_claims(self, claims: dict[str, Any], nonce: str) -> None:
        c = self.config
        now = time.time()
        if claims.get("iss") != c.issuer:
            raise OidcError("The ID token was issued by another identity provider than the configured one.")
        aud = claims.get("aud")
        audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        if c.client_id not in audiences:
            raise OidcError("The ID token was issued for another application (its audience is not SMCP's client id).")
        azp = claims.get("azp")
        if (azp is not None or len(audiences) > 1) and azp != c.client_id:
            raise OidcError("The ID token's authorized party (azp) is not SMCP's client id.")
        exp, iat, nbf = claims.get("exp"), claims.get("iat"), claims.get("nbf")
        if not _number(exp) or exp + c.leeway_s <= now:
            raise OidcError("The ID token has expired; check that this server's clock is right.")
        if not _number(iat) or iat - c.leeway_s > now or iat + MAX_ID_TOKEN_AGE_S + c.leeway_s < now:
            raise OidcError("The ID token's issue time (iat) is missing or implausible; check the clocks.")
        if nbf is not None and (not _number(nbf) or nbf - c.leeway_s > now):
            raise OidcError("The ID token is not valid yet; check that this server's clock is right.")
        sent = claims.get("nonce")
        if not isinstance(sent, str) or not hmac.compare_digest(sent.encode(), nonce.encode()):
            raise OidcError("The ID token does not belong to this sign-in (nonce mismatch).", status=400)
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub or len(sub) > MAX_SUBJECT:
            raise OidcError("The ID token has no usable subject (sub).")

    # ---------------------------------------------------------------------- mapping
    def username_for(self, identity: UpstreamIdentity) -> str | None:
        """The SMCP user name this identity claims, if the claim is trustworthy and well formed."""
        claim = self.config.username_claim
        if claim == "email":
            value: Any = identity.email if identity.email_verified else None
        else:
            value = identity.claims.get(claim)
        if not isinstance(value, str):
            return None
        name = value.strip().lower()
        return name if USER_NAME.fullmatch(name) else None

    def email_allowed(self, identity: UpstreamIdentity) -> bool:
        domains = self.config.allowed_email_domains
        if not domains:
            return True
        email = identity.email
        return bool(email and identity.email_verified and email.rpartition("@")[2] in domains)

    # ------------------------------------------------------------------------- HTTP
    async def _fetch_json(
        self,
        method: str,
        url: str,
        *,
        what: str,
        form: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """One bounded request: a total deadline, a size cap, no redirects, JSON object or OidcError."""
        c = self.config
        try:
            async with asyncio.timeout(c.timeout_s):
                # trust_env: an operator's HTTPS_PROXY/NO_PROXY and SSL_CERT_FILE (an internal
                # provider behind a private CA) apply here, as to any outbound client they run.
                async with httpx.AsyncClient(
                    transport=self._transport, follow_redirects=False, trust_env=True, timeout=c.timeout_s
                ) as http:
                    request = http.build_request(
                        method, url, data=form, headers={"accept": "application/json", **(headers or {})}
                    )
                    response = await http.send(request, stream=True)
                    try:
                        body = await _read_capped(response, c.max_bytes, what)
                    finally:
                        await response.aclose()
        except TimeoutError:
            raise OidcError(f"The identity provider's {what} took longer than {c.timeout_s:g}s.", title="Identity provider unavailable") from None
        except httpx.HTTPError as exc:
            raise OidcError(f"The identity provider cannot be reached for its {what} ({exc.__class__.__name__}).",
                            title="Identity provider unavailable") from None
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            doc = None
        if response.status_code != 200:
            detail = ""
            if isinstance(doc, dict) and isinstance(doc.get("error"), str):
                detail = f": {doc['error'][:100]}"
                if isinstance(doc.get("error_description"), str):
                    detail += f" ({doc['error_description'][:200]})"
            raise OidcError(f"The identity provider answered its {what} with HTTP {response.status_code}{detail}.")
        if not isinstance(doc, dict):
            raise OidcError(f"The identity provider's {what} is not a JSON object.")
        return doc


async def _read_capped(response: httpx.Response, cap: int, what: str) -> bytes:
    declared = response.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > cap:
        raise OidcError(f"The identity provider's {what} exceeds {cap} bytes.")
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > cap:
            raise OidcError(f"The identity provider's {what} exceeds {cap} bytes.")
    return bytes(body)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _header(token: str) -> dict[str, Any]:
    if token.count(".") != 2:
        raise ValueError("not a compact JWS")
    head = token.split(".", 1)[0]
    data = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    if not isinstance(data, dict):
        raise TypeError("JWS header is not an object")
    return data


def _import_keys(doc: dict[str, Any]) -> list[PublicKey]:
    """The signature keys of a JWKS; keys SMCP cannot use (encryption, symmetric, unknown) are skipped."""
    raw = doc.get("keys")
    if not isinstance(raw, list):
        raise OidcError("The identity provider's key set (JWKS) has no keys list.")
    keys: list[PublicKey] = []
    for entry in raw:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig" or entry.get("kty") not in ("RSA", "EC", "OKP"):
            continue
        try:
            key = JWKRegistry.import_key(entry)
        except (JoseError, ValueError, TypeError):
            continue
        if isinstance(key, RSAKey | ECKey | OKPKey):
            keys.append(key)
    return keys


def _pick_key(keys: list[PublicKey], alg: str, kid: str | None) -> PublicKey | None:
    kty = _KTY.get(alg[:2])
    fits = [
        k for k in keys
        if k.key_type == kty and k.get("alg") in (None, alg) and (kid is None or k.kid == kid)
    ]
    # Without a kid the choice must be unambiguous (OIDC Core §10.1).
    return fits[0] if len(fits) == 1 else None
