"""The one-machine runtime: bubblewrap instances on this host.

Each `connect` gets its own supervised instance today (sharing mode `per-session`);
instances are tracked per (tenant, server) so pools and scale-to-zero can grow here
without the gateway noticing.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path

from smcp.config import Settings
from smcp.domain import Instance, InvalidBundle, LogLine, Revision, RuntimeKind, ServerSpec
from smcp.runtime import bundles
from smcp.runtime.builds import Builder
from smcp.runtime.instance import SupervisedInstance, new_instance_record
from smcp.runtime.logs import LogRing
from smcp.runtime.process import StdioProcess
from smcp.runtime.sandbox import APP_DIR, DATA_DIR, VENV_DIR, SandboxPlan, build_launch

UidOf = Callable[[str], Awaitable[int]]


class LocalRuntime:
    def __init__(self, settings: Settings, uid_of: UidOf) -> None:
        self._settings = settings
        self._uid_of = uid_of
        root = settings.data_dir.resolve()
        self._apps = root / "apps"
        self._instances_root = root / "instances"
        self._builder = Builder(
            root / "builds",
            root / "cache",
            python=settings.sandbox_python,
            bwrap=settings.bwrap_path,
            timeout_s=settings.build_timeout_s,
        )
        # bwrap runs as the tenant's uid and must traverse these to bind its own
        # subdirectory; 0711 lets it pass through without listing anyone else's.
        for path in (root, self._apps, self._instances_root, root / "builds", root / "cache"):
            path.mkdir(parents=True, exist_ok=True)
            path.chmod(0o711)
        self._live: dict[str, SupervisedInstance] = {}
        self._logs: dict[tuple[str, str], LogRing] = {}
        self._unpack_locks: dict[str, asyncio.Lock] = {}

    # -- builds ---------------------------------------------------------------------
    def app_dir(self, digest: str) -> Path:
        return self._apps / digest

    async def prepare(self, tenant: str, spec: ServerSpec, bundle: Path, bundle_digest: str) -> str | None:
        app_dir = await self._unpack(bundle, bundle_digest)
        uid = await self._uid_of(tenant)
        self._log(tenant, spec.name).add("-", "event", f"building bundle {bundle_digest[:12]}")
        key = await self._builder.build(tenant, spec, app_dir, uid, uid)
        entry = spec.entrypoint.removeprefix("-m ").strip() if spec.entrypoint else None
        if spec.runtime is RuntimeKind.python and entry and not spec.entrypoint.startswith("-m "):  # type: ignore[union-attr]
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
    async def connect(self, revision: Revision, *, session: str) -> SupervisedInstance:
        spec = revision.spec
        uid = await self._uid_of(revision.tenant)
        app_dir = self.app_dir(revision.bundle_digest)
        if not app_dir.exists():
            raise InvalidBundle(f"bundle {revision.bundle_digest[:12]} is not unpacked on this node")
        record = new_instance_record(revision.tenant, revision.server, revision.id)
        data_dir = self._instances_root / record.id
        data_dir.mkdir(mode=0o700)
        os.chown(data_dir, uid, uid)
        plan = self._plan(revision, app_dir, data_dir, uid)
        log = self._log(revision.tenant, revision.server)

        async def spawn(on_stdout: Callable[[bytes], None], on_stderr: Callable[[str], None]) -> StdioProcess:
            proc = StdioProcess(
                build_launch(plan, bwrap=self._settings.bwrap_path),
                uid=uid,
                gid=uid,
                max_message_bytes=self._settings.max_message_bytes,
                on_stdout=on_stdout,
                on_stderr=on_stderr,
            )
            await proc.start()
            return proc

        def gone(instance: SupervisedInstance) -> None:
            self._live.pop(instance.record.id, None)
            shutil.rmtree(data_dir, ignore_errors=True)

        instance = SupervisedInstance(
            record,
            spawn,
            log,
            restart_max=self._settings.restart_max,
            backoff_s=self._settings.restart_backoff_s,
            backoff_max_s=self._settings.restart_backoff_max_s,
            stop_grace_s=self._settings.stop_grace_s,
            on_gone=gone,
        )
        record.sessions = 1
        self._live[record.id] = instance
        try:
            await instance.start()
        except Exception:
            self._live.pop(record.id, None)
            shutil.rmtree(data_dir, ignore_errors=True)
            raise
        return instance

    def _plan(self, revision: Revision, app_dir: Path, data_dir: Path, uid: int) -> SandboxPlan:
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
        else:
            env["PATH"] = "/usr/local/bin:/usr/bin:/bin"
            argv = list(spec.command or ())
        env.update(spec.env)
        return SandboxPlan(
            argv=argv + list(spec.args),
            uid=uid,
            gid=uid,
            cwd=APP_DIR,
            env=env,
            ro_binds=ro_binds,
            rw_binds=[(data_dir, DATA_DIR)],
        )

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
