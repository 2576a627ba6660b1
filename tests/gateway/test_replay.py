from __future__ import annotations

from smcp.gateway.replay import StreamLog, StreamLogs, parse_event_id


def test_log_keeps_only_the_last_events() -> None:
    log = StreamLog("p1", max_events=3)
    for i in range(5):
        log.append(str(i).encode())
    assert [raw for _, raw in log.after(0)] == [b"2", b"3", b"4"]
    assert [seq for seq, _ in log.after(4)] == [5]


def test_closed_log_takes_nothing_more() -> None:
    log = StreamLog("p1", max_events=3)
    log.append(b"a")
    log.close()
    log.append(b"b")
    assert [raw for _, raw in log.after(0)] == [b"a"]


def test_stream_count_is_bounded_closed_first() -> None:
    logs = StreamLogs(max_streams=2, max_events=4)
    a, b = logs.open("p"), logs.open("p")
    a.close()
    c = logs.open("g")
    assert logs.get(a.id) is None and logs.get(b.id) is b and logs.get(c.id) is c


def test_event_ids() -> None:
    assert parse_event_id("p12-3") == ("p12", 3)
    assert parse_event_id("g-1-7") == ("g-1", 7)
    for bad in (None, "", "p12", "p12-", "-3", "p12-x"):
        assert parse_event_id(bad) is None
