"""Reading addresses the way resolvers do, and refusing every non-public one (units)."""

from __future__ import annotations

import ipaddress

import pytest

from smcp.egress import AddressPolicy, Allowlist, parse_authority, parse_ip_literal, parse_ipv4_any
from smcp.egress.allowlist import Target


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("127.0.1", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("0X7F.0.0.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("017700000001", "127.0.0.1"),
        ("0177.0.0.01", "127.0.0.1"),
        ("169.254.169.254", "169.254.169.254"),
        ("2852039166", "169.254.169.254"),
        ("0xa9fea9fe", "169.254.169.254"),
        ("0xa9.0xfe.0xa9.0xfe", "169.254.169.254"),
        ("0251.0376.0251.0376", "169.254.169.254"),
        ("025177524776", "169.254.169.254"),
        ("169.254.43518", "169.254.169.254"),
        ("169.16689662", "169.254.169.254"),
        ("0", "0.0.0.0"),
        ("127.0.0.1.", "127.0.0.1"),
    ],
)
def test_ipv4_in_every_spelling(text: str, expected: str) -> None:
    assert parse_ipv4_any(text) == ipaddress.IPv4Address(expected)


@pytest.mark.parametrize(
    "text", ["example.com", "1.2.3.4.5", "256.1.1.1", "1.2.3.256x", "08.1.1.1", "1..1", "", "0x", "-1", "1e3"]
)
def test_not_ipv4(text: str) -> None:
    if text == "0x":
        assert parse_ipv4_any(text) == ipaddress.IPv4Address("0.0.0.0")  # inet_aton agrees
        return
    assert parse_ipv4_any(text) is None


METADATA_FORMS = [
    "169.254.169.254",
    "::ffff:169.254.169.254",  # IPv4-mapped
    "::ffff:a9fe:a9fe",
    "64:ff9b::a9fe:a9fe",  # NAT64 (is_global says True on 3.11)
    "64:ff9b::169.254.169.254",
    "2002:a9fe:a9fe::",  # 6to4 (is_global says True on 3.11.7)
    "2002:a9fe:a9fe:1234::1",
    "2001:0:4136:e378:8000:63bf:5601:5601",  # Teredo
    "64:ff9b:1::a9fe:a9fe",  # local-use NAT64
    "::a9fe:a9fe",  # IPv4-compatible
    "::ffff:0:a9fe:a9fe",  # SIIT
    "fd00:ec2::254",  # AWS IMDS IPv6 (unique-local)
]
PRIVATE = [
    "127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "100.64.0.1", "0.0.0.0", "192.0.0.9", "224.0.0.1",
    "255.255.255.255", "198.18.0.1", "::1", "::", "fe80::1", "fec0::1", "ff02::1", "fc00::1", "2001:db8::1",
    "::ffff:127.0.0.1", "64:ff9b::7f00:1", "2002:7f00:1::", "2002:0a00:0001::1", "64:ff9b::a00:1",
]  # fmt: skip
PUBLIC = ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "64:ff9b::808:808", "2002:808:808::1", "::ffff:8.8.8.8"]


@pytest.mark.parametrize("text", METADATA_FORMS + PRIVATE)
def test_policy_refuses_non_public(text: str) -> None:
    why = AddressPolicy().refusal(ipaddress.ip_address(text))
    assert why, text


def test_policy_names_the_embedded_form() -> None:
    policy = AddressPolicy()
    assert "NAT64" in policy.refusal(ipaddress.ip_address("64:ff9b::a9fe:a9fe"))  # type: ignore[operator]
    assert "6to4" in policy.refusal(ipaddress.ip_address("2002:a9fe:a9fe::"))  # type: ignore[operator]
    assert "Teredo" in policy.refusal(ipaddress.ip_address("2001:0:4136:e378::1"))  # type: ignore[operator]
    assert "IPv4-mapped" in policy.refusal(ipaddress.ip_address("::ffff:169.254.169.254"))  # type: ignore[operator]


@pytest.mark.parametrize("text", PUBLIC)
def test_policy_allows_public(text: str) -> None:
    assert AddressPolicy().refusal(ipaddress.ip_address(text)) is None


def test_unsafe_allow_is_narrow() -> None:
    policy = AddressPolicy(["127.0.0.1/32"])
    assert policy.refusal(ipaddress.ip_address("127.0.0.1")) is None
    assert policy.refusal(ipaddress.ip_address("::ffff:127.0.0.1")) is None  # the same address, mapped
    assert policy.refusal(ipaddress.ip_address("127.0.0.2"))
    assert policy.refusal(ipaddress.ip_address("169.254.169.254"))
    # The production default: loopback refused.
    assert AddressPolicy().refusal(ipaddress.ip_address("127.0.0.1"))


def test_parse_authority_reads_literals_as_addresses() -> None:
    t = parse_authority("0x7f.1:80", default_port=None)
    assert t.ip == ipaddress.IPv4Address("127.0.0.1") and t.host == "127.0.0.1"
    t = parse_authority("[::ffff:169.254.169.254]:443", default_port=None)
    assert t.ip == ipaddress.IPv6Address("::ffff:a9fe:a9fe")
    assert parse_authority("API.Example.COM.", default_port=80) == Target("api.example.com", 80)
    for bad in ["user@host:80", "host:0", "host:99999", "host:", "::1:80", "a b:80", "host:8o", "[::1", "x/y:80"]:
        with pytest.raises(ValueError):
            parse_authority(bad, default_port=443)
    with pytest.raises(ValueError):
        parse_authority("host", default_port=None)  # CONNECT needs a port


def test_allowlist_matching() -> None:
    allow = Allowlist(["api.example.com:443", "*.example.org:443", "8.8.8.8:53"])
    assert allow.match(Target("api.example.com", 443)).allowed
    assert not allow.match(Target("api.example.com", 80)).allowed
    assert "port 80" in allow.match(Target("api.example.com", 80)).reason
    assert not allow.match(Target("example.com", 443)).allowed
    assert not allow.match(Target("evil-api.example.com", 443)).allowed
    assert allow.match(Target("a.example.org", 443)).allowed
    assert allow.match(Target("a.b.example.org", 443)).allowed
    assert not allow.match(Target("example.org", 443)).allowed  # a wildcard never matches the apex
    assert not allow.match(Target("badexample.org", 443)).allowed
    assert not allow.match(Target("a.example.org.evil.com", 443)).allowed
    # An address matches only an address entry, whatever its spelling.
    assert allow.match(parse_authority("0x08080808:53", default_port=None)).allowed
    assert allow.match(parse_authority("134744072:53", default_port=None)).allowed
    assert not allow.match(Target("8.8.8.8", 443, ipaddress.IPv4Address("8.8.8.8"))).allowed
    # A name never matches an address entry.
    assert not allow.match(Target("dns.google", 53)).allowed


def test_literal_parse_roundtrip() -> None:
    assert parse_ip_literal("[2606:4700::1111]") == ipaddress.IPv6Address("2606:4700::1111")
    assert parse_ip_literal("example.com") is None
