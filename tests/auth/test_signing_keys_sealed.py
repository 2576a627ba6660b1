"""Signing keys at rest (smcp.auth.keyseal): sealed with the secrets key ring, bound to their
key id, readable from before sealing (and then sealed), and carried through KEK rotation."""

from __future__ import annotations

import base64
import json
import logging
import os
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from joserfc import jwt
from joserfc.jwk import ECKey
from oauth_helpers import Flow

from smcp.app import _authorization_server
from smcp.auth import keyseal
from smcp.auth.keyseal import SealedSigningKeys
from smcp.auth.tokens import ACCESS_TOKEN_TYPE, KeyRing, token_kid
from smcp.config import Settings
from smcp.secrets import KeyRing as KekRing
from smcp.secrets import SecretUnreadable, SecretVault
from smcp.store import Store
from smcp.store import tables as t
from smcp.store.tables import utcnow

_keys = t.oauth_signing_keys


async def stored(store: Store) -> dict[str, str]:
    """kid → the private_jwk column, as the database holds it."""
    async with store.db.read() as conn:
        return {r.kid: r.private_jwk for r in (await conn.execute(sa.select(_keys))).all()}


async def insert_key(store: Store, kid: str, private: str, public: dict[str, Any], *, age_s: float = 0) -> None:
    async with store.db.write() as conn:
        await conn.execute(
            _keys.insert().values(
                kid=kid, alg="ES256", private_jwk=private, public_jwk=json.dumps(public),
                created_at=utcnow() - timedelta(seconds=age_s),
            )
        )


def signing_ring(store: Store, kek: KekRing) -> KeyRing:
    """The signing keys as a freshly started node loads them."""
    return KeyRing(store.oauth, kek, rotate_after_s=30 * 86_400, max_token_ttl_s=3600)


def claims(sub: str = "someone") -> dict[str, Any]:
    now = int(time.time())
    return {"sub": sub, "iat": now, "exp": now + 300}


async def test_private_keys_are_sealed_in_the_database(idp) -> None:
    await Flow(idp.http, idp.public_client).tokens()
    rows = await stored(idp.store)
    assert rows
    ring = KekRing.from_settings(idp.settings)
    secrets_d = []
    for kid, text in rows.items():
        assert text.startswith("smcp-sk1.1.")  # sealed, under KEK v1
        private = json.loads(keyseal.unseal(text, kid=kid, keyring=ring))
        secrets_d.append(private["d"])
        assert private["d"] not in text and '"d"' not in text and "BEGIN" not in text
    db = idp.settings.data_dir / "smcp.db"
    raw = b"".join(p.read_bytes() for p in (db, db.with_name("smcp.db-wal")) if p.exists())
    for d in secrets_d:
        assert d.encode() not in raw and base64.urlsafe_b64decode(d + "=" * (-len(d) % 4)) not in raw


async def test_plaintext_rows_from_before_sealing_work_and_get_sealed(idp) -> None:
    # Rows as the code before sealing wrote them: a JWK in clear (and, older, a PEM one).
    old = ECKey.generate_key("P-256", parameters={"kid": "legacyjwk0001", "alg": "ES256", "use": "sig"})
    pem = ECKey.generate_key("P-256", parameters={"kid": "legacypem0001", "alg": "ES256", "use": "sig"})
    await insert_key(idp.store, "legacyjwk0001", json.dumps(old.as_dict(private=True)), old.as_dict(private=False))
    await insert_key(idp.store, "legacypem0001", pem.as_pem(private=True).decode(), pem.as_dict(private=False), age_s=60)
    signed_before = {
        kid: jwt.encode({"alg": "ES256", "kid": kid, "typ": ACCESS_TOKEN_TYPE}, claims(), key, algorithms=["ES256"])
        for kid, key in (("legacyjwk0001", old), ("legacypem0001", pem))
    }

    node = signing_ring(idp.store, KekRing.from_settings(idp.settings))
    await node.start()
    for token in signed_before.values():
        assert node.verify(token, ACCESS_TOKEN_TYPE)["sub"] == "someone"
    rows = await stored(idp.store)
    for kid, key in (("legacyjwk0001", old), ("legacypem0001", pem)):
        assert rows[kid].startswith("smcp-sk1.1."), rows[kid][:40]
        assert key.as_dict(private=True)["d"] not in rows[kid]
    # The JWK row is the newest key, so it signs; a node loading only the sealed row agrees.
    token = node.sign(claims("after"), ACCESS_TOKEN_TYPE)
    assert token_kid(token) == "legacyjwk0001"
    again = signing_ring(idp.store, KekRing.from_settings(idp.settings))
    await again.start()
    assert again.verify(token, ACCESS_TOKEN_TYPE)["sub"] == "after"
    assert again.verify(signed_before["legacypem0001"], ACCESS_TOKEN_TYPE)["sub"] == "someone"
    # The running node finds the (now sealed) keys too, at its next reload.
    await idp.oauth.keys.reload()
    assert idp.oauth.keys.verify(token, ACCESS_TOKEN_TYPE)["sub"] == "after"


async def test_a_row_copied_to_another_kid_does_not_decrypt(idp, caplog) -> None:
    rows = await stored(idp.store)
    kid, sealed = next(iter(rows.items()))
    ring = KekRing.from_settings(idp.settings)
    public = json.loads(keyseal.unseal(sealed, kid=kid, keyring=ring))
    public.pop("d")
    public["kid"] = "copied000001"
    # Someone with write access to the database copies the sealed key under a kid of theirs.
    await insert_key(idp.store, "copied000001", sealed, public, age_s=60)
    with pytest.raises(SecretUnreadable, match=r"signing key copied000001 does not decrypt: .*copied from another key id"):
        await signing_ring(idp.store, ring).start()
    # A node already running goes on with its own key and logs the bad row; the copy is never used.
    with caplog.at_level(logging.ERROR, logger="smcp.auth"):
        await idp.oauth.keys.reload()
    assert "copied000001" in caplog.text
    assert await idp.oauth.keys.knows(kid) and not await idp.oauth.keys.knows("copied000001")
    assert "copied000001" not in json.dumps(idp.oauth.keys.jwks())


def test_sealed_form_is_bound_to_kid_and_kek_version(tmp_path: Path) -> None:
    k1, k2 = (base64.b64encode(os.urandom(32)).decode() for _ in range(2))
    ring = KekRing.from_settings(
        Settings(data_dir=tmp_path, secrets_keyring=json.dumps({"active": 1, "keys": {"1": k1, "2": k2}}))
    )
    sealed = keyseal.seal('{"kty": "EC", "d": "secret"}', kid="kid1", keyring=ring)
    assert keyseal.unseal(sealed, kid="kid1", keyring=ring) == '{"kty": "EC", "d": "secret"}'
    assert keyseal.kek_version(sealed) == 1
    with pytest.raises(SecretUnreadable, match="copied from another key id"):
        keyseal.unseal(sealed, kid="kid2", keyring=ring)
    with pytest.raises(SecretUnreadable, match="does not decrypt"):  # relabelled as KEK v2's
        keyseal.unseal(sealed.replace("smcp-sk1.1.", "smcp-sk1.2.", 1), kid="kid1", keyring=ring)
    flipped = sealed[:-3] + ("A" if sealed[-3] != "A" else "B") + sealed[-2:]
    with pytest.raises(SecretUnreadable, match="does not decrypt"):
        keyseal.unseal(flipped, kid="kid1", keyring=ring)
    with pytest.raises(SecretUnreadable, match="malformed"):
        keyseal.unseal("smcp-sk1.x.y", kid="kid1", keyring=ring)
    with pytest.raises(SecretUnreadable, match="unknown stored format"):
        keyseal.unseal("smcp-sk9.1.a.b", kid="kid1", keyring=ring)
    # Re-wrapping keeps the key and moves it to the target KEK.
    moved = keyseal.rewrap(sealed, kid="kid1", keyring=ring, target=2)
    assert keyseal.kek_version(moved) == 2 and moved.split(".")[-1] == sealed.split(".")[-1]
    assert keyseal.unseal(moved, kid="kid1", keyring=ring) == '{"kty": "EC", "d": "secret"}'


async def test_tokens_signed_before_a_key_ring_rotation_verify_after_it(idp) -> None:
    flow = Flow(idp.http, idp.public_client)
    tokens = await flow.tokens()
    bearer = {"authorization": f"Bearer {tokens['access_token']}"}
    n = len(await stored(idp.store))
    # `smcp keys rotate`: the management API's vault re-wraps the signing keys with the secrets'.
    r = await idp.api.post("/keyring/rotate")
    assert r.status_code == 200, r.text
    assert r.json() == {"active": 2, "added": 2, "rewrapped": n, "retired": [1], "versions": [2]}
    assert (await idp.api.get("/keyring")).json()["data_keys"] == {"2": n}
    assert all(v.startswith("smcp-sk1.2.") for v in (await stored(idp.store)).values())
    # The running node still accepts the token...
    assert (await idp.http.post("/t/acme/echo/mcp", headers=bearer)).status_code == 200
    # ...and so does a node started afresh, whose ring (from the file) has only the new KEK.
    fresh = await _authorization_server(idp.settings, idp.store)
    assert KekRing.from_settings(idp.settings).versions == [2]
    assert (await fresh.tokens.check(tokens["access_token"])).subject
    # Signing goes on: a token from a refresh on the running node verifies on the fresh one.
    refreshed = await flow.refresh(tokens["refresh_token"])
    assert refreshed.status_code == 200, refreshed.text
    assert (await fresh.tokens.check(refreshed.json()["access_token"])).subject


async def test_inline_ring_rotation_rewraps_signing_keys(tmp_path: Path) -> None:
    k1, k2 = (base64.b64encode(os.urandom(32)).decode() for _ in range(2))

    def ring(active: int, **keys: str) -> KekRing:
        doc = {"active": active, "keys": {v.lstrip("v"): k for v, k in keys.items()}}
        return KekRing.from_settings(Settings(data_dir=tmp_path, secrets_keyring=json.dumps(doc)))

    store = await Store.open(Settings(data_dir=tmp_path / "data", admin_token="x"))
    try:
        node = signing_ring(store, ring(1, v1=k1))
        await node.start()
        token = node.sign(claims(), ACCESS_TOKEN_TYPE)
        # A ring without the KEK the keys are sealed with: the node refuses to start, saying why.
        with pytest.raises(SecretUnreadable, match="wrapped by KEK v1, which is not in the key ring"):
            await signing_ring(store, ring(2, v2=k2)).start()
        # The operator adds key 2 and makes it active; rotate re-wraps (no secrets stored at all).
        vault = SecretVault(store.secrets, ring(2, v1=k1, v2=k2), also=[SealedSigningKeys(store.oauth)])
        report = await vault.rotate()
        assert (report.active, report.added, report.rewrapped, report.retired) == (2, None, 1, [])
        assert (await vault.status()).data_keys == {2: 1}
        # Key 1 can now go: a node with key 2 alone verifies the token signed before.
        after = signing_ring(store, ring(2, v2=k2))
        await after.start()
        assert after.verify(token, ACCESS_TOKEN_TYPE)["sub"] == "someone"
    finally:
        await store.close()
