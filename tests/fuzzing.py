"""What the project's fuzz tests share: their settings and the strategies for JSON-RPC.

Hypothesis examples are derandomized, so CI sends the same cases on every run;
`SMCP_FUZZ_RANDOM=1` explores new ones, `SMCP_FUZZ_EXAMPLES=N` sets how many. The
seeded generators of the async tests read `SMCP_FUZZ_SEED` instead.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from smcp.protocol import modern


def fuzz_settings(examples: int) -> settings:
    """Settings for a hypothesis fuzz test of `examples` cases (unless the environment asks for more)."""
    return settings(
        max_examples=fuzz_cases(examples),
        derandomize=os.environ.get("SMCP_FUZZ_RANDOM") != "1",
        database=None,
        deadline=None,
        # Live tests draw from a module fixture (a node) that does not change between examples.
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )


def fuzz_cases(default: int) -> int:
    return int(os.environ.get("SMCP_FUZZ_EXAMPLES", str(default)))


def fuzz_seed() -> int:
    """The seed of the seeded (non-hypothesis) fuzz tests."""
    return int(os.environ.get("SMCP_FUZZ_SEED", "20261126"))


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=20,
)
ids = st.one_of(st.integers(min_value=-(2**70), max_value=2**70), st.text(max_size=30), st.text(min_size=1020, max_size=1030), json_values)
methods = st.one_of(
    st.sampled_from(
        ["initialize", "tools/call", "tools/list", "resources/read", "prompts/get", "tasks/get", "tasks/cancel",
         "tasks/update", "server/discover", "subscriptions/listen", "ping", "logging/setLevel", "notifications/cancelled", ""]
    ),
    st.text(max_size=20),
    json_values,
)
metas = st.dictionaries(
    st.sampled_from([modern.META_VERSION, modern.META_CAPABILITIES, modern.META_CLIENT_INFO, "progressToken", "x"]),
    st.one_of(st.sampled_from(["2026-07-28", "2025-11-25", "1999-01-01"]), st.just({}), json_values),
    max_size=4,
)
params = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {},
        optional={
            "name": st.one_of(st.sampled_from(["echo", "é=?base64?"]), json_values),
            "uri": st.one_of(st.just("file:///x"), json_values),
            "taskId": st.one_of(st.just("t-1"), json_values),
            "arguments": json_values,
            "_meta": st.one_of(metas, json_values),
        },
    ),
)
envelopes = st.fixed_dictionaries(
    {},
    optional={
        "jsonrpc": st.one_of(st.just("2.0"), json_values),
        "id": ids,
        "method": methods,
        "params": params,
        "result": json_values,
        "error": json_values,
    },
)
header_values = st.one_of(
    st.sampled_from(["2026-07-28", "2025-11-25", "tools/call", "echo", "t-1", "=?base64?ZWNobw==?=", "=?base64?!!?=", "=?base64??="]),
    st.text(max_size=30),
)
header_maps = st.dictionaries(
    st.sampled_from(["mcp-protocol-version", "mcp-method", "mcp-name", "mcp-param-region", "mcp-session-id"]),
    header_values,
    max_size=5,
)
