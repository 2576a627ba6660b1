"""The one-machine runtime: bubblewrap instances on this host.

Each `connect` gets its own supervised instance today (sharing mode `per-session`);
instances are tracked per (tenant, server) so pools and scale-to-zero can grow here
without the gateway noticing.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from smcp.config import Settings
from smcp.domain import Instance, InvalidBundle, LogLine, Revision, RuntimeKind, ServerSpec
from smcp.egress import EgressManager
from smcp.runtime import bundles, seccomp
from smcp.runtime.builds import Builder
from smcp.runtime.cgroups import Cgroups, InstanceLimits, Limits
from smcp.runtime.instance import SupervisedInstance, new_instance_record
from smcp.runtime.http_upstream import HttpUpstreams, upstream_headers
from smcp.runtime.interface import Channel
from smcp.runtime.logs import LogRing
from smcp.runtime.process import StdioProcess
from smcp.runtime.sandbox import APP_DIR, DATA_DIR, NODE_MODULES_DIR, VENV_DIR, SandboxPlan, build_launch
from smcp.secrets.delivery import secret_env, secret_files
from smcp.secrets.redact import Redactor

UidOf = Callable[[str], Awaitable[int]]
logger = logging.getLogger("smcp.runtime")
# (tenant, secret names) -> decrypted values; injected by app.py (smcp.secrets), so the
# runtime never touches the store or the key ring itself.
SecretsFor = Callable[[str, Sequence[str]], Awaitable[dict[str, bytes]]]


class LocalRuntime:
    def __init__(self, settings: Settings, uid_of: UidOf, secrets_for: SecretsFor | None = None) -> None:
        self._settings = settings
        self._uid_of = uid_of
        self._secrets_for = secrets_for
        root = settings.data_dir.resolve()
        # Isolation is checked once, at start: a node that cannot limit or filter refuses to run.
        self._cgroups = Cgroups.detect(settings.cgroups, settings.cgroup_parent)
        if settings.seccomp and (why := seccomp.available()):
            raise RuntimeError(f"cannot build the seccomp filter ({why}); install libseccomp2 or set SMCP_SECCOMP=false")
        logger.info(
            "isolation: %s; %s",
            self._cgroups.describe() if self._cgroups else "no cgroups (SMCP_CGROUPS=off): no resource limits",
            seccomp.describe(allow_inet=False) if settings.seccomp else "no seccomp filter (SMCP_SECCOMP=false)",
        )
        self._apps = root / "apps"
        self._builder = Builder(
            root / "builds",
            root / "cache",
            python=settings.sandbox_python,
            node=settings.sandbox_node,
            bwrap=settings.bwrap_path,
            timeout_s=settings.build_timeout_s,
            cgroups=self._cgroups,
            limits=Limits(memory_mb=settings.build_memory_mb, cpu=settings.build_cpu, pids=settings.build_pids),
            seccomp=seccomp.filter_bpf(allow_inet=True) if settings.seccomp else None,
            tmp_mb=settings.build_tmp_mb,
            sched_batch=settings.instance_sched_batch,
            cpus=settings.instance_cpu_set,
        )
        # bwrap runs as the tenant's uid and must traverse these to bind its own
        # subdirectory; 0711 lets it pass through without listing anyone else's.
        for path in (root, self._apps, root / "builds", root / "cache"):
            path.mkdir(parents=True, exist_ok=True)
            path.chmod(0o711)
        self._live: dict[str, SupervisedInstance] = {}
        self._logs: dict[tuple[str, str], LogRing] = {}
        self._unpack_locks: dict[str, asyncio.Lock] = {}
        # One egress proxy socket per instance whose spec has [network] allow (smcp.egress).
        self._egress = EgressManager.from_settings(settings, root / "egress")
        # runtime = "http": remote upstreams, dialled by this node under the same address rules.
        self._http = HttpUpstreams(
            unsafe_allow=settings.http_upstream_unsafe_allow,
            timeout_s=settings.request_timeout_s,
            max_message_bytes=settings.max_message_bytes,
        )

    # -- builds ---------------------------------------------------------------------
    def app_dir(self, digest: str) -> Path:
        return self._apps / digest

    async def prepare(self, tenant: str, spec: ServerSpec, bundle: Path, bundle_digest: str) -> str | None:
        app_dir = await self._unpack(bundle, bundle_digest)
        uid = await self._uid_of(tenant)
        self._log(tenant, spec.name).add("-", "event", f"building bundle {bundle_digest[:12]}")
        key = await self._builder.build(tenant, spec, app_dir, uid, uid)
        entry = spec.entrypoint.removeprefix("-m ").strip() if spec.entrypoint else None
        if spec.runtime in (RuntimeKind.python, RuntimeKind.node) and entry and not spec.entrypoint.startswith("-m "):  # type: ignore[union-attr]
            if not (app_dir / entry).is_file():
                raise InvalidBundle(f"entrypoint {entry!r} is not a file in the bundle")
        return key

    async def _unpack(self, bundle: Path, digest: str) -> Path:
        dest = self.app_dir(digest)
        lock = self._unpack_locks.setdefault(digest, asyncio.Lock())
        async with lock:
            if not dest.exists():
                data = await asyncio.to_thread(bundle.read_bytes)
                await asyncio.to_thread(
                    bundles.extract,
                    data,
                    dest,
                    max_unpacked_bytes=self._settings.max_bundle_unpacked_bytes,
                    max_entries=self._settings.max_bundle_entries,
                )
        return dest

    # -- instances ------------------------------------------------------------------
    async def connect(self, revision: Revision, *, session: str) -> Channel:
        spec = revision.spec
        if spec.runtime is RuntimeKind.http:
            # No process: the channel is a conversation with the remote server, carrying
            # the tenant's configured credentials (never the client's).
            assert spec.http is not None
            return self._http.connect(revision, upstream_headers(spec.http.headers, await self._secrets(revision)))
        uid = await self._uid_of(revision.tenant)
        app_dir = self.app_dir(revision.bundle_digest)
        if not app_dir.exists():
            raise InvalidBundle(f"bundle {revision.bundle_digest[:12]} is not unpacked on this node")
        secrets = await self._secrets(revision)
        record = new_instance_record(revision.tenant, revision.server, revision.id)
        limits = InstanceLimits.resolve(spec.resources, self._settings)
        plan = self._plan(revision, app_dir, uid, limits)
        # Secrets: read-only files at /run/secrets/<NAME>, env vars where the spec asks.
        plan.files += secret_files(spec.secrets, secrets)
        plan.env.update(secret_env(spec.secrets, secrets))
        redact = Redactor(secrets.values())
        if spec.network.allow:
            # Only allowlisted specs get a way out: their own proxy socket plus the
            # in-sandbox loopback forwarder (which is why _plan's seccomp filter
            # allows AF_INET exactly when spec.network.allow is non-empty).
            sock = await self._egress.open(revision.tenant, revision.server, record.id, uid, spec.network.allow)
            self._egress.wire(plan, sock, self._settings.sandbox_python)
        log = self._log(revision.tenant, revision.server)
        for note in limits.clamped:
            log.add(record.id, "event", f"resources: {note}")
        log.add(record.id, "event", f"limits: {limits.describe()}" + ("" if self._settings.seccomp else "; no seccomp"))
        launches = itertools.count()

        async def spawn(on_stdout: Callable[[bytes], None], on_stderr: Callable[[str], None]) -> StdioProcess:
            # A fresh cgroup per launch: a restarted process must not inherit the
            # previous one's lingering pid charges.
            n = next(launches)
            cgroups = self._cgroups
            group = cgroups.create(record.id + (f"-r{n}" if n else ""), limits.limits) if cgroups else None

            def exited(code: int) -> str | None:
                if group is None or cgroups is None:
                    return None
                failure, events = group.usage().notes(group.limits, code)
                for event in events:
                    log.add(record.id, "event", event)
                cgroups.remove_later(group)
                return failure

            proc = StdioProcess(
                build_launch(plan, bwrap=self._settings.bwrap_path),
                uid=uid,
                gid=uid,
                max_message_bytes=self._settings.max_message_bytes,
                max_queued_bytes=self._settings.instance_stdin_queue_bytes,
                on_stdout=on_stdout,
                # What a server prints never carries its secrets into the platform's logs.
                on_stderr=(lambda text: on_stderr(redact(text))) if redact else on_stderr,
                cgroup=group,
                on_exit=exited,
                sched_batch=self._settings.instance_sched_batch,
                cpus=self._settings.instance_cpu_set,
            )
            try:
                await proc.start()
            except BaseException:
                if group is not None and cgroups is not None:
                    cgroups.remove_later(group)
                raise
            return proc

        def gone(instance: SupervisedInstance) -> None:
            self._live.pop(instance.record.id, None)
            self._egress.close_soon(instance.record.id)

        instance = SupervisedInstance(
            record,
            spawn,
            log,
            restart_max=self._settings.restart_max,
            backoff_s=self._settings.restart_backoff_s,
            backoff_max_s=self._settings.restart_backoff_max_s,
            budget_reset_s=self._settings.restart_budget_reset_s,
            stop_grace_s=self._settings.stop_grace_s,
            on_gone=gone,
        )
        record.sessions = 1
        self._live[record.id] = instance
        try:
            await instance.start()
        except Exception:
            self._live.pop(record.id, None)
            self._egress.close_soon(record.id)
            raise
        return instance

    def _plan(self, revision: Revision, app_dir: Path, uid: int, limits: InstanceLimits) -> SandboxPlan:
        spec = revision.spec
        env = {
            "HOME": DATA_DIR,
            "TMPDIR": "/tmp",
            "LANG": "C.UTF-8",
        }
        ro_binds = [(app_dir, APP_DIR)]
        if spec.runtime is RuntimeKind.python:
            entry = spec.entrypoint or ""
            module = entry.removeprefix("-m ").strip() if entry.startswith("-m ") else None
            if revision.build_key:
                ro_binds.append((self._builder.venv_path(revision.build_key), VENV_DIR))
                python = f"{VENV_DIR}/bin/python"
                env["VIRTUAL_ENV"] = VENV_DIR
                env["PATH"] = f"{VENV_DIR}/bin:/usr/local/bin:/usr/bin:/bin"
            else:
                python = self._settings.sandbox_python
                env["PATH"] = "/usr/local/bin:/usr/bin:/bin"
            env["PYTHONUNBUFFERED"] = "1"
            env["PYTHONDONTWRITEBYTECODE"] = "1"
            argv = [python, "-m", module] if module else [python, entry]
            if spec.pypi and not module and revision.build_key:
                argv = [python, *self._builder.entry(revision.build_key)]
        elif spec.runtime is RuntimeKind.node:
            env["PATH"] = "/usr/local/bin:/usr/bin:/bin"
            env["NODE_ENV"] = "production"
            if revision.build_key:
                ro_binds.append((self._builder.node_modules_path(revision.build_key), NODE_MODULES_DIR))
            # Node does not see a memory cgroup's limit: size its heap to the spec, so it
            # fails with a readable "heap out of memory" instead of a silent OOM kill.
            heap = limits.node_heap_mb
            node = [self._settings.sandbox_node, f"--max-old-space-size={heap}"]
            if spec.npm and revision.build_key:
                argv = node + self._builder.entry(revision.build_key)
            else:
                argv = node + [spec.entrypoint or ""]
        else:
            env["PATH"] = "/usr/local/bin:/usr/bin:/bin"
            argv = list(spec.command or ())
        env.update(spec.env)
        # Any node a server starts (a `command` server, a child process) gets a heap sized
        # to the memory limit too, unless the spec chose its own.
        if "--max-old-space-size" not in env.get("NODE_OPTIONS", ""):
            env["NODE_OPTIONS"] = f"{env.get('NODE_OPTIONS', '')} --max-old-space-size={limits.node_heap_mb}".strip()
        return SandboxPlan(
            argv=argv + list(spec.args),
            uid=uid,
            gid=uid,
            cwd=APP_DIR,
            env=env,
            ro_binds=ro_binds,
            # /data and /tmp are private size-capped tmpfs: nothing a server writes reaches the host disk.
            tmp_size=limits.disk_mb * 1024 * 1024,
            tmpfs=[(DATA_DIR, limits.disk_mb * 1024 * 1024)],
            seccomp=seccomp.filter_bpf(allow_inet=bool(spec.network.allow)) if self._settings.seccomp else None,
        )

    async def _secrets(self, revision: Revision) -> dict[str, bytes]:
        names = [ref.name for ref in revision.spec.secrets]
        if not names:
            return {}
        if self._secrets_for is None:
            raise RuntimeError("this runtime was built without a secret source, but the spec references secrets")
        return await self._secrets_for(revision.tenant, names)

    def instances(self, tenant: str, server: str | None = None) -> list[Instance]:
        return [
            i.record
            for i in self._live.values()
            if i.record.tenant == tenant and (server is None or i.record.server == server)
        ]

    def logs(self, tenant: str, server: str, *, limit: int = 200) -> list[LogLine]:
        ring = self._logs.get((tenant, server))
        return ring.tail(limit) if ring else []

    def _log(self, tenant: str, server: str) -> LogRing:
        key = (tenant, server)
        ring = self._logs.get(key)
        if ring is None:
            ring = self._logs[key] = LogRing(self._settings.log_ring_lines, self._settings.log_line_bytes)
        return ring

    async def stop_server(self, tenant: str, server: str) -> None:
        doomed = [i for i in self._live.values() if i.record.tenant == tenant and i.record.server == server]
        await asyncio.gather(*(i.stop("server deleted") for i in doomed), return_exceptions=True)

    async def aclose(self) -> None:
        await asyncio.gather(*(i.stop("platform shutting down") for i in list(self._live.values())), return_exceptions=True)
        if self._cgroups is not None:
            await self._cgroups.aclose()
        await self._egress.aclose()
        await self._http.aclose()
