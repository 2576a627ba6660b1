"""Shared upstreams by key: one per revision (`shared`), or per revision and principal
(`per-principal`), and per era for a dual-era server."""

from __future__ import annotations

import contextlib

from smcp.domain import Revision
from smcp.gateway.upstream import SharedUpstream
from smcp.runtime.interface import Runtime


class UpstreamPool:
    """Shared upstreams by key: per revision (`shared`) or per revision and principal."""

    def __init__(self, runtime: Runtime, *, init_timeout_s: float, input_timeout_s: float = 300.0) -> None:
        self._runtime = runtime
        self._init_timeout_s = init_timeout_s
        self._input_timeout_s = input_timeout_s
        self._upstreams: dict[str, SharedUpstream] = {}

    def get(self, revision: Revision, principal_subject: str, *, modern: bool = False) -> SharedUpstream:
        """The upstream for legacy sessions, or (modern=True) for stateless requests.

        A dual-era server gets one instance per era (an SDK connection serves one era);
        a legacy-only server's probe falls back, and both keys then share nothing but
        the revision.
        """
        key = revision.id
        if revision.spec.sharing.value == "per-principal":
            key = f"{revision.id}:{principal_subject}"
        if modern:
            key += ":modern"
        upstream = self._upstreams.get(key)
        if upstream is None:
            upstream = self._upstreams[key] = SharedUpstream(
                self._runtime,
                revision,
                key=key,
                init_timeout_s=self._init_timeout_s,
                prefer_modern=modern,
                input_timeout_s=self._input_timeout_s,
            )
        return upstream

    async def aclose(self) -> None:
        upstreams, self._upstreams = self._upstreams, {}
        for upstream in upstreams.values():
            with contextlib.suppress(Exception):
                await upstream.close()
