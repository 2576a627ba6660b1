"""`[network] allow` in smcp.toml: normalised when valid, refused with a clear message when not."""

from __future__ import annotations

import pytest

from smcp.domain import InvalidSpec, parse_spec

BASE = 'name = "x"\nruntime = "command"\ncommand = ["a"]\n'


def spec(allow: str) -> tuple[str, ...]:
    return parse_spec(BASE + f"[network]\nallow = {allow}\n").network.allow


def test_default_is_no_network() -> None:
    assert parse_spec(BASE).network.allow == ()


def test_entries_are_normalised() -> None:
    assert spec(
        '["API.Example.com", "*.example.org:8443", "api.example.com.:443", "1.1.1.1:80", "[2606:4700::1111]", "bücher.de"]'
    ) == (
        "api.example.com:443",
        "*.example.org:8443",
        "1.1.1.1:80",
        "[2606:4700::1111]:443",
        "xn--bcher-kva.de:443",
    )


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("0x7f.1", "disguised IP address"),
        ("127.1:80", "disguised IP address"),
        ("2130706433", "disguised IP address"),
        ("017700000001", "disguised IP address"),
        ("0xa9fea9fe", "disguised IP address"),
        ("foo.123", "disguised IP address"),
        ("127.0.0.1", "not a public address"),
        ("169.254.169.254:80", "not a public address"),
        ("10.0.0.1", "not a public address"),
        ("[::1]:443", "not a public address"),
        ("[::ffff:169.254.169.254]", "embed or translate IPv4"),
        ("[64:ff9b::a9fe:a9fe]", "embed or translate IPv4"),
        ("[2002:a9fe:a9fe::]", "embed or translate IPv4"),
        ("[2001:0:4136:e378::1]", "embed or translate IPv4"),
        ("[2606:4700:0::1111]", "canonical form"),
        ("::1", "in brackets"),
        ("*.com", "at least two labels"),
        ("*", "only as the whole first label"),
        ("a.*.com", "only as the whole first label"),
        ("*.*.example.com", "only as the whole first label"),
        ("*.1.2.3.4", "wildcard cannot apply to an IP address"),
        ("x.com:0", "port must be"),
        ("x.com:65536", "port must be"),
        ("x.com:https", "port must be"),
        ("x.com:080", "port must be"),
        ("http://x.com", "host[:port] only"),
        ("user@x.com", "host[:port] only"),
        ("x.com/path", "host[:port] only"),
        ("-x.com", "not a valid host name"),
        ("x_y.com", "not a valid host name"),
        ("", "empty entry"),
    ],
)
def test_bad_entries_are_refused_clearly(entry: str, message: str) -> None:
    with pytest.raises(InvalidSpec) as info:
        spec(f'["{entry}"]')
    text = str(info.value)
    assert "network.allow" in text and message in text, text


def test_allow_must_be_a_list() -> None:
    with pytest.raises(InvalidSpec, match="must be a list"):
        spec('"api.example.com"')
    with pytest.raises(InvalidSpec, match="network"):
        parse_spec(BASE + "[network]\nallow = []\nopen = true\n")


def test_spec_round_trips_through_json() -> None:
    from smcp.domain import ServerSpec

    s = parse_spec(BASE + '[network]\nallow = ["*.Example.org"]\n')
    assert ServerSpec.model_validate(s.to_json()) == s
