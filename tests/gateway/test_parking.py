"""The parking lot behind input_required results for modern callers of legacy servers."""

from __future__ import annotations

import asyncio

import pytest

from smcp.gateway.parking import PREFIX, Parked, ParkingLot, input_required


@pytest.mark.asyncio
async def test_parked_request_is_taken_once_by_its_caller_only() -> None:
    expired: list[Parked] = []
    lot = ParkingLot(30, expired.append)
    token = lot.park("g1", "probe-1", "alice")
    assert token.startswith(PREFIX) and lot.holds("g1")
    assert lot.take(token, "mallory") is None and lot.holds("g1")  # not hers, and not burnt
    parked = lot.take(token, "alice")
    assert parked is not None and parked.gid == "g1" and parked.server_id == "probe-1"
    assert lot.take(token, "alice") is None and not lot.holds("g1")
    assert expired == []


@pytest.mark.asyncio
async def test_an_unanswered_request_expires_and_is_given_up() -> None:
    expired: list[Parked] = []
    lot = ParkingLot(0.05, expired.append)
    token = lot.park("g2", 7, "alice")
    await asyncio.sleep(0.2)
    assert [p.gid for p in expired] == ["g2"]
    assert lot.take(token, "alice") is None and not lot.holds("g2")


@pytest.mark.asyncio
async def test_clear_forgets_everything_without_expiring() -> None:
    expired: list[Parked] = []
    lot = ParkingLot(0.05, expired.append)
    lot.park("g3", 1, "a")
    lot.clear()
    await asyncio.sleep(0.1)
    assert expired == [] and not lot.holds("g3")


def test_input_required_carries_the_servers_request() -> None:
    message = input_required("c1", {"jsonrpc": "2.0", "id": "s1", "method": "elicitation/create", "params": {"message": "ok?"}}, "smcp-input:x")
    assert message["id"] == "c1"
    assert message["result"] == {
        "resultType": "input_required",
        "inputRequests": {"smcp": {"method": "elicitation/create", "params": {"message": "ok?"}}},
        "requestState": "smcp-input:x",
    }
