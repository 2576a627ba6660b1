"""Egress listeners for a node: one unix socket per sandboxed instance that has an allowlist.

Why one socket per *instance* (not one per tenant): a socket's identity is its
allowlist. The socket is bind-mounted into exactly one sandbox, so the proxy
behind it knows the tenant, server and instance of every connection without
trusting anything the sandbox says, and applies that server's allowlist only. A
per-tenant socket would have to serve the union of the tenant's allowlists, and
then any server of the tenant could borrow another's reach. Two servers of one
tenant share a uid, so SO_PEERCRED alone cannot tell them apart; the filesystem
can — each sandbox sees only its own socket, at /run/smcp/egress.sock.

Layout on the host (data_dir/egress/, 0711):

    <tenant>/                 0710 root:<tenant gid> — only that tenant's uid can traverse
    <tenant>/<instance>.sock  0660 root:<tenant gid>
    <tenant>.log.jsonl        0600 root — the decision log (log.py)
    forwarder.py              0644 — bound read-only into sandboxes at /run/smcp/forwarder.py

On top of the file modes, the proxy refuses any peer whose uid (SO_PEERCRED) is
not the tenant's sandbox uid.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import socket
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from smcp.egress.addresses import AddressPolicy
from smcp.egress.allowlist import Allowlist
from smcp.egress.log import DecisionLog
from smcp.egress.proxy import Connector, EgressLimits, EgressProxy, Owner, Resolver, direct_connector, system_resolver

if TYPE_CHECKING:
    from smcp.config import Settings
    from smcp.runtime.sandbox import SandboxPlan

log = logging.getLogger("smcp.egress")

SANDBOX_SOCKET = "/run/smcp/egress.sock"
SANDBOX_FORWARDER = "/run/smcp/forwarder.py"
SANDBOX_PROXY_PORT = 3128
SANDBOX_PROXY_URL = f"http://127.0.0.1:{SANDBOX_PROXY_PORT}"
NO_PROXY = "localhost,127.0.0.1,::1"

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
_FORWARDER_SOURCE = Path(__file__).with_name("forwarder.py")


def proxy_env() -> dict[str, str]:
    """What a sandboxed process needs to find its proxy (every common spelling)."""
    env = {name: SANDBOX_PROXY_URL for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")}
    env.update(NO_PROXY=NO_PROXY, no_proxy=NO_PROXY)
    return env


def _bind_unix(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        if len(os.fsencode(path)) < 100:
            sock.bind(os.fspath(path))
        else:
            # sun_path holds ~108 bytes; reach a deep directory through its descriptor.
            dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                sock.bind(f"/proc/self/fd/{dfd}/{path.name}")
            finally:
                os.close(dfd)
        sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class EgressManager:
    def __init__(
        self,
        root: Path,
        *,
        limits: EgressLimits | None = None,
        policy: AddressPolicy | None = None,
        hosts_override: Mapping[str, Sequence[str]] | None = None,
        resolver: Resolver = system_resolver,
        connector: Connector = direct_connector,
    ) -> None:
        self.root = root
        self.limits = limits or EgressLimits()
        self.policy = policy or AddressPolicy()
        self.hosts_override = dict(hosts_override or {})
        self._resolver = resolver
        self._connector = connector
        root.mkdir(parents=True, exist_ok=True)
        root.chmod(0o711)
        self.decisions = DecisionLog(root)
        self._proxies: dict[str, tuple[EgressProxy, Path]] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self.forwarder = root / "forwarder.py"
        shutil.copyfile(_FORWARDER_SOURCE, self.forwarder)
        self.forwarder.chmod(0o644)
        if self.policy.unsafe_allow:
            log.warning(
                "egress: address check disabled for %s (SMCP_EGRESS_UNSAFE_ALLOW_NETWORKS; for tests only)",
                ", ".join(str(n) for n in self.policy.unsafe_allow),
            )

    @classmethod
    def from_settings(cls, settings: Settings, root: Path) -> EgressManager:
        return cls(
            root,
            limits=EgressLimits(
                header_timeout_s=settings.egress_header_timeout_s,
                idle_timeout_s=settings.egress_idle_timeout_s,
                connect_timeout_s=settings.egress_connect_timeout_s,
                resolve_timeout_s=settings.egress_resolve_timeout_s,
                max_header_bytes=settings.egress_max_header_bytes,
                max_bytes=settings.egress_max_bytes,
                max_connections=settings.egress_max_connections,
            ),
            policy=AddressPolicy(settings.egress_unsafe_allow_networks),
            hosts_override={
                k: [v] if isinstance(v, str) else list(v) for k, v in settings.egress_hosts_override.items()
            },
        )

    def log_path(self, tenant: str) -> Path:
        return self.decisions.path(tenant)

    def socket_path(self, tenant: str, instance: str) -> Path:
        if not _NAME_RE.match(tenant) or not _NAME_RE.match(instance):
            raise ValueError("tenant and instance names must be plain identifiers")
        return self.root / tenant / f"{instance}.sock"

    async def open(self, tenant: str, server: str, instance: str, uid: int, allow: Iterable[str]) -> Path:
        """Start the proxy for one instance; returns the host path of its socket."""
        allowlist = Allowlist(allow)
        if not allowlist:
            raise ValueError("an egress proxy needs a non-empty allowlist")
        path = self.socket_path(tenant, instance)
        tenant_dir = path.parent
        tenant_dir.mkdir(mode=0o710, exist_ok=True)
        if os.geteuid() == 0:
            os.chown(tenant_dir, 0, uid)
            tenant_dir.chmod(0o710)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        sock = _bind_unix(path)
        try:
            path.chmod(0o660)
            if os.geteuid() == 0:
                os.chown(path, 0, uid)
            proxy = EgressProxy(
                Owner(tenant, server, instance, uid),
                allowlist,
                policy=self.policy,
                limits=self.limits,
                log=self.decisions,
                resolver=self._resolver,
                connector=self._connector,
                hosts_override=self.hosts_override,
            )
            await proxy.serve(sock)
        except BaseException:
            sock.close()
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            raise
        self._proxies[instance] = (proxy, path)
        return path

    async def close(self, instance: str) -> None:
        entry = self._proxies.pop(instance, None)
        if entry is None:
            return
        proxy, path = entry
        await proxy.close()
        with contextlib.suppress(FileNotFoundError):
            path.unlink()

    def close_soon(self, instance: str) -> None:
        """For synchronous callbacks (an instance is gone): close in the background."""
        if instance not in self._proxies:
            return
        task = asyncio.get_running_loop().create_task(self.close(instance))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def proxy(self, instance: str) -> EgressProxy | None:
        entry = self._proxies.get(instance)
        return entry[0] if entry else None

    async def aclose(self) -> None:
        await asyncio.gather(*(self.close(i) for i in list(self._proxies)), *self._closing, return_exceptions=True)
        self.decisions.close()

    def wire(self, plan: SandboxPlan, socket_path: Path, python: str) -> None:
        """Put the proxy into a sandbox plan: socket, forwarder, proxy variables.

        The forwarder wraps the server's argv (see forwarder.py). Variables are set
        after the spec's own env, so the platform's values win.
        """
        plan.rw_binds.append((socket_path, SANDBOX_SOCKET))
        plan.ro_binds.append((self.forwarder, SANDBOX_FORWARDER))
        plan.argv = [
            python, "-I", "-S", SANDBOX_FORWARDER,
            "--listen", f"127.0.0.1:{SANDBOX_PROXY_PORT}",
            "--socket", SANDBOX_SOCKET,
            "--", *plan.argv,
        ]  # fmt: skip
        plan.env.update(proxy_env())
