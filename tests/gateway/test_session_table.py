"""The node's session table: caps per node, tenant and principal, and who gives way."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from smcp.gateway.sessions import NoRoom, SessionTable


@dataclass
class _Session:
    """What the table reads of a session: its id, owner, use and age."""

    id: str
    tenant: str
    subject: str
    last_active: float
    idle: bool = True
    revision: Any = field(init=False)
    principal: Any = field(init=False)

    def __post_init__(self) -> None:
        self.revision = SimpleNamespace(tenant=self.tenant)
        self.principal = SimpleNamespace(subject=self.subject)


def _fill(table: SessionTable, tenant: str, subject: str, n: int, *, start: float = 0, idle: bool = True) -> list[_Session]:
    sessions = [_Session(f"{tenant}-{subject}-{i}", tenant, subject, start + i, idle) for i in range(n)]
    for s in sessions:
        assert table.claim(tenant, subject) is None
        table.add(s)  # type: ignore[arg-type]
        table.release(tenant, subject)
    return sessions


def test_a_principal_at_its_cap_gives_up_its_oldest_idle_session() -> None:
    table = SessionTable(10, per_tenant=8, per_principal=3)
    a = _fill(table, "t", "alice", 3)
    a[0].idle = False  # the oldest is busy: the next oldest idle one goes
    assert table.claim("t", "alice") is a[1]
    assert table.get(a[1].id) is None  # out of the table at once, for the caller to end
    # Another principal of the tenant is not affected by alice's cap.
    assert table.claim("t", "bob") is None


def test_a_principal_whose_sessions_are_all_in_use_is_refused() -> None:
    table = SessionTable(10, per_tenant=8, per_principal=2)
    _fill(table, "t", "alice", 2, idle=False)
    with pytest.raises(NoRoom) as refused:
        table.claim("t", "alice")
    assert refused.value.share == "principal"


def test_a_tenant_cannot_take_the_node() -> None:
    table = SessionTable(10, per_tenant=4, per_principal=3)
    _fill(table, "greedy", "k1", 3, idle=False)
    _fill(table, "greedy", "k2", 1, idle=False)
    with pytest.raises(NoRoom) as refused:
        table.claim("greedy", "k3")
    assert refused.value.share == "tenant"
    # Everyone else still has room.
    assert table.claim("other", "k") is None


def test_a_full_node_takes_room_from_the_heaviest_tenant() -> None:
    table = SessionTable(6, per_tenant=4, per_principal=4)
    light = _fill(table, "light", "a", 2, start=0)
    heavy = _fill(table, "heavy", "b", 4, start=10)
    assert len(table) == 6 and table.full
    # light's sessions are older, but the heavy tenant gives way first.
    assert table.claim("new", "c") is heavy[0]
    table.release("new", "c")
    table.add(heavy[0])  # type: ignore[arg-type]
    for s in heavy:
        s.idle = False
    assert table.claim("new", "c") is light[0]
    table.release("new", "c")
    table.add(light[0])  # type: ignore[arg-type]
    for s in light:
        s.idle = False
    with pytest.raises(NoRoom) as refused:
        table.claim("new", "c")
    assert refused.value.share == "node"


def test_removal_frees_the_owners_share() -> None:
    table = SessionTable(10, per_tenant=2, per_principal=2)
    a = _fill(table, "t", "alice", 2, idle=False)
    table.remove(a[0].id)
    assert table.claim("t", "alice") is None
    table.release("t", "alice")
    table.remove(a[1].id)
    table.remove(a[1].id)  # twice is harmless
    assert len(table) == 0


def test_room_claimed_for_sessions_still_starting_counts() -> None:
    """Concurrent initializes cannot all see the same free place: each claim holds one
    until its session is added or given up."""
    table = SessionTable(10, per_tenant=8, per_principal=2)
    assert table.claim("t", "alice") is None
    assert table.claim("t", "alice") is None
    with pytest.raises(NoRoom):
        table.claim("t", "alice")  # two are starting, none idle yet
    table.release("t", "alice")
    assert table.claim("t", "alice") is None  # one gave up: its place is free again
