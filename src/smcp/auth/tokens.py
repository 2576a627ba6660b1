"""Signed access tokens (RFC 9068 JWTs, ES256) and the key ring that signs and checks them.

An access token says: this user (`sub`), through this client (`client_id`), may use
exactly one MCP server (`aud` = its URL, from the RFC 8707 `resource` parameter) of
one tenant (`tenant`), with these scopes, until `exp`. It belongs to a grant (`gid`),
the family its refresh tokens share, so revoking the grant ends it too.

Keys rotate: a new key is minted when the newest is older than the rotation period,
and old keys stay published in the JWKS (and accepted) until every token they could
have signed has expired. The key id (`kid`) in each token picks the key. Private keys
are stored sealed with the secrets key ring (smcp.auth.keyseal), never in clear.

Verification costs ~0.2 ms with joserfc, so verified tokens are cached by their hash
until they expire; the per-request cost is then a dict lookup plus the audience check.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet

from smcp.auth import keyseal
from smcp.secrets.crypto import SecretUnreadable
from smcp.secrets.keyring import KeyRing as KekRing
from smcp.store.identity import OAuthRepo, SigningKey
from smcp.store.tables import utcnow
from smcp.ttlcache import TTLCache

log = logging.getLogger("smcp.auth")

ALG = "ES256"
ACCESS_TOKEN_TYPE = "at+jwt"
SESSION_TOKEN_TYPE = "smcp-session+jwt"
REQUEST_TOKEN_TYPE = "smcp-authz-request+jwt"

# The scope that lets a token use an MCP server (the only one the resource server needs).
MCP_SCOPE = "mcp"
OFFLINE_SCOPE = "offline_access"


class InvalidToken(Exception):
    pass


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2 and token.startswith("ey")


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def s256(verifier: str) -> str:
    """The PKCE S256 challenge of a verifier (RFC 7636): base64url(SHA-256), unpadded."""
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode()


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


class KeyRing:
    """The authorization server's signing keys, shared by every node through the database."""

    def __init__(self, repo: OAuthRepo, kek: KekRing, *, rotate_after_s: float, max_token_ttl_s: float) -> None:
        self._repo = repo
        self._kek = kek
        self._rotate_after = rotate_after_s
        # A retired key is kept as long as any token it signed may still be presented.
        self._retain = rotate_after_s + max_token_ttl_s + 300
        self._current: tuple[str, ECKey] | None = None
        self._current_created: float = 0.0
        self._public = KeySet([])
        self._by_kid: dict[str, ECKey] = {}
        self._unreadable: list[SecretUnreadable] = []
        self._last_reload = 0.0

    def _make(self) -> SigningKey:
        kid = secrets.token_hex(8)
        key = ECKey.generate_key("P-256", parameters={"kid": kid, "alg": ALG, "use": "sig"})
        # A rotation done through another ring object (another process on the same file)
        # may have retired the KEK this one thinks active; never seal under a retired KEK.
        self._kek.reload()
        return SigningKey(
            kid=kid,
            alg=ALG,
            private_jwk=keyseal.seal(json.dumps(key.as_dict(private=True)), kid=kid, keyring=self._kek),
            public_jwk=json.dumps(key.as_dict(private=False)),
            created_at=utcnow(),
        )

    async def start(self) -> None:
        """Load (minting a first key if due). A key that does not decrypt stops the start:
        running without it would refuse every token it signed, and quietly."""
        await self.rotate_if_due(force_check=True)
        if self._unreadable:
            raise self._unreadable[0]

    async def rotate_if_due(self, *, force_check: bool = False) -> None:
        now = time.time()
        if not force_check and self._current is not None and now - self._current_created < self._rotate_after:
            return
        await self._repo.ensure_signing_key(
            not_before=_utc(now - self._rotate_after), make=self._make, drop_before=_utc(now - self._retain)
        )
        await self.reload()

    async def reload(self) -> None:
        for _ in range(2):
            keys = await self._repo.signing_keys()
            by_kid: dict[str, ECKey] = {}
            unreadable: list[SecretUnreadable] = []
            for k in keys:
                try:
                    by_kid[k.kid] = await self._open(k)
                except SecretUnreadable as exc:
                    unreadable.append(exc)
            # A KEK rotation elsewhere may have re-wrapped a row and retired its KEK
            # between our read and the unwrap: read the rows once more before giving up.
            if not unreadable:
                break
        for exc in unreadable:
            log.error("%s", exc.message)
        # After start, keep what was loaded before (it decrypted then) rather than fail
        # every request over a row that changed since; the log says which.
        for k in keys:
            if k.kid not in by_kid and k.kid in self._by_kid:
                by_kid[k.kid] = self._by_kid[k.kid]
        keys = [k for k in keys if k.kid in by_kid]
        self._unreadable = unreadable
        if keys:
            newest = keys[0]
            self._current = (newest.kid, by_kid[newest.kid])
            self._current_created = newest.created_at.timestamp()
        self._by_kid = by_kid
        self._public = KeySet([ECKey.import_key(json.loads(k.public_jwk)) for k in keys])
        self._last_reload = time.monotonic()

    async def _open(self, row: SigningKey) -> ECKey:
        private = keyseal.unseal(row.private_jwk, kid=row.kid, keyring=self._kek)
        key = _import_private(private, row.kid)
        if not keyseal.is_sealed(row.private_jwk):
            # Written before keys were sealed: seal it now. Losing the compare-and-swap
            # means another node sealed it first, which is as good.
            sealed = keyseal.seal(json.dumps(key.as_dict(private=True)), kid=row.kid, keyring=self._kek)
            if await self._repo.replace_private_key(row.kid, old=row.private_jwk, new=sealed):
                log.info("signing key %s: sealed with the key ring (it was stored in clear)", row.kid)
        return key

    async def knows(self, kid: str) -> bool:
        """Whether `kid` is ours; reloads (at most every 10 s) so keys minted by another node are found."""
        if kid in self._by_kid:
            return True
        if time.monotonic() - self._last_reload > 10:
            await self.reload()
        return kid in self._by_kid

    def jwks(self) -> dict[str, Any]:
        return {"keys": [k.as_dict(private=False) for k in self._public.keys]}

    def sign(self, claims: dict[str, Any], typ: str) -> str:
        if self._current is None:
            raise RuntimeError("key ring not started")
        kid, key = self._current
        return jwt.encode({"alg": ALG, "kid": kid, "typ": typ}, claims, key, algorithms=[ALG])

    def verify(self, token: str, typ: str) -> dict[str, Any]:
        """Signature, algorithm and type only; the caller checks the claims it cares about."""
        try:
            header = _header(token)
            if header.get("alg") != ALG or header.get("typ") != typ:
                raise InvalidToken("wrong token type or algorithm")
            key = self._by_kid.get(str(header.get("kid")))
            if key is None:
                raise InvalidToken("unknown signing key")
            return dict(jwt.decode(token, key, algorithms=[ALG]).claims)
        except (JoseError, ValueError, TypeError, KeyError) as exc:
            raise InvalidToken(f"malformed or badly signed token: {exc}") from exc


def _import_private(text: str, kid: str) -> ECKey:
    if text.lstrip().startswith("{"):
        return ECKey.import_key(json.loads(text))
    # PEM, as some hand-made or older rows hold it; the row's kid names it.
    return ECKey.import_key(text, {"kid": kid, "alg": ALG, "use": "sig"})


def _header(token: str) -> dict[str, Any]:
    head = token.split(".", 1)[0]
    data = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    if not isinstance(data, dict):
        raise TypeError("JWT header is not an object")
    return data


def token_kid(token: str) -> str | None:
    try:
        kid = _header(token).get("kid")
    except (ValueError, TypeError):
        return None
    return kid if isinstance(kid, str) else None


@dataclass(frozen=True, slots=True)
class AccessClaims:
    subject: str  # user id
    client_id: str
    tenant: str
    audience: str
    scopes: frozenset[str]
    role: str
    grant_id: str
    expires_at: float


class AccessTokens:
    """Issues access tokens and checks them, with a cache of verified ones."""

    def __init__(
        self,
        keys: KeyRing,
        issuer: str,
        ttl_s: float,
        grant_active: Callable[[str], Awaitable[bool]],
        *,
        max_entries: int = 20_000,
    ) -> None:
        self._keys = keys
        self._issuer = issuer
        self._ttl = ttl_s
        self._grant_active = grant_active
        self._max = max_entries
        self._verified: dict[bytes, tuple[float, AccessClaims | None]] = {}

    @property
    def ttl_s(self) -> float:
        return self._ttl

    async def issue(
        self, *, user_id: str, client_id: str, tenant: str, resource: str, scope: str, role: str, grant_id: str
    ) -> str:
        await self._keys.rotate_if_due()
        now = int(time.time())
        claims = {
            "iss": self._issuer,
            "sub": user_id,
            "aud": resource,
            "client_id": client_id,
            "tenant": tenant,
            "scope": scope,
            "role": role,
            "gid": grant_id,
            "iat": now,
            "nbf": now,
            "exp": now + int(self._ttl),
            "jti": secrets.token_urlsafe(12),
        }
        return self._keys.sign(claims, ACCESS_TOKEN_TYPE)

    async def check(self, token: str) -> AccessClaims:
        """Verify signature, issuer, lifetime and shape (not the audience: that is per request)."""
        digest = hashlib.sha256(token.encode()).digest()
        now = time.time()
        hit = self._verified.get(digest)
        if hit is not None and hit[0] > now:
            if hit[1] is None:
                raise InvalidToken("invalid token")
            claims = hit[1]
        else:
            try:
                claims = await self._verify(token, now)
            except InvalidToken:
                self._remember(digest, now + 5, None)
                raise
            self._remember(digest, claims.expires_at, claims)
        if claims.expires_at <= now:
            raise InvalidToken("token expired")
        if not await self._grant_active(claims.grant_id):
            raise InvalidToken("token revoked")
        return claims

    def _remember(self, digest: bytes, until: float, claims: AccessClaims | None) -> None:
        if len(self._verified) >= self._max:
            self._verified.clear()
        self._verified[digest] = (until, claims)

    async def _verify(self, token: str, now: float) -> AccessClaims:
        kid = token_kid(token)
        if kid is None or not await self._keys.knows(kid):
            raise InvalidToken("unknown signing key")
        c = self._keys.verify(token, ACCESS_TOKEN_TYPE)
        if c.get("iss") != self._issuer:
            raise InvalidToken("wrong issuer")
        exp, nbf = c.get("exp"), c.get("nbf", 0)
        if not isinstance(exp, int | float) or exp <= now:
            raise InvalidToken("token expired")
        if not isinstance(nbf, int | float) or nbf > now + 30:
            raise InvalidToken("token not yet valid")
        try:
            return AccessClaims(
                subject=_str(c, "sub"),
                client_id=_str(c, "client_id"),
                tenant=_str(c, "tenant"),
                audience=_str(c, "aud"),
                scopes=frozenset(_str(c, "scope").split()),
                role=_str(c, "role"),
                grant_id=_str(c, "gid"),
                expires_at=float(exp),
            )
        except KeyError as exc:
            raise InvalidToken(f"token lacks claim {exc}") from None


def _str(claims: dict[str, Any], name: str) -> str:
    value = claims.get(name)
    if not isinstance(value, str):
        raise KeyError(name)
    return value


class GrantStatus:
    """Whether a grant is still active, cached for `ttl_s` (revocation reaches every node within it)."""

    def __init__(self, lookup: Callable[[str], Awaitable[bool]], ttl_s: float, max_entries: int = 20_000) -> None:
        self._lookup = lookup
        self._cache: TTLCache[str, bool] = TTLCache(ttl_s, max_entries=max_entries)

    async def __call__(self, grant_id: str) -> bool:
        return await self._cache.get(grant_id, lambda: self._lookup(grant_id))

    def forget(self, grant_id: str) -> None:
        self._cache.invalidate(grant_id)


def expiry(seconds: float) -> datetime:
    return utcnow() + timedelta(seconds=seconds)
