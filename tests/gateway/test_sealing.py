from __future__ import annotations

import time

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from smcp.gateway.sealing import SessionSealer


def test_round_trip_and_tamper() -> None:
    sealer = SessionSealer(AESGCM.generate_key(bit_length=256), max_age_s=60)
    token = sealer.seal({"t": "acme", "p": "key:1"})
    state = sealer.open(token)
    assert state is not None and state["t"] == "acme" and state["p"] == "key:1"
    flipped = token[:10] + ("A" if token[10] != "A" else "B") + token[11:]
    assert sealer.open(flipped) is None
    assert sealer.open("") is None and sealer.open("x" * 5000) is None and sealer.open("!!!") is None


def test_another_key_cannot_open() -> None:
    a = SessionSealer(AESGCM.generate_key(bit_length=256), max_age_s=60)
    b = SessionSealer(AESGCM.generate_key(bit_length=256), max_age_s=60)
    assert b.open(a.seal({"t": "x"})) is None


def test_ids_are_unique_and_expire() -> None:
    sealer = SessionSealer(AESGCM.generate_key(bit_length=256), max_age_s=0.5)
    assert sealer.seal({"t": "x"}) != sealer.seal({"t": "x"})
    token = sealer.seal({"t": "x"})
    time.sleep(1.6)
    assert sealer.open(token) is None


def test_sealing_is_fast() -> None:
    # Not a benchmark: a guard against someone putting a KDF here (tens of ms each).
    sealer = SessionSealer(AESGCM.generate_key(bit_length=256), max_age_s=60)
    token = sealer.seal({"t": "acme", "s": "demo", "r": "r" * 32, "p": "key:abc", "c": {}})
    started = time.perf_counter()
    for _ in range(1000):
        sealer.open(token)
    assert time.perf_counter() - started < 1.0
