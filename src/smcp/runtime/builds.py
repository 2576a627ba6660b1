"""Builds: turn a bundle into what its instances run, inside a build sandbox.

A `python` bundle gets a virtualenv made by uv from its requirements.txt. The build
runs as the tenant's uid with network (the package registry) but sees only its
bundle, its output and a per-tenant download cache. Outputs are keyed by what went
in (tenant, interpreter, requirements), so a redeploy with unchanged requirements
reuses the previous build, and no tenant ever runs another tenant's build.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
from pathlib import Path

from uv import find_uv_bin

from smcp.domain import BuildFailed, RuntimeKind, ServerSpec
from smcp.runtime.sandbox import APP_DIR, VENV_DIR, SandboxPlan, build_launch

_UV_INSIDE = "/opt/uv/uv"
_CACHE_INSIDE = "/cache"
_LOG_TAIL = 4000


def build_key(tenant: str, python: str, requirements: bytes) -> str:
    h = hashlib.sha256()
    for part in (b"python-venv-v1", tenant.encode(), python.encode(), requirements):
        h.update(len(part).to_bytes(8, "big") + part)
    return h.hexdigest()


class Builder:
    def __init__(self, root: Path, cache_root: Path, *, python: str, bwrap: str, timeout_s: float) -> None:
        self._root = root
        self._cache_root = cache_root
        self._python = python
        self._bwrap = bwrap
        self._timeout_s = timeout_s
        self._locks: dict[str, asyncio.Lock] = {}

    def venv_path(self, key: str) -> Path:
        return self._root / key / "venv"

    async def build(self, tenant: str, spec: ServerSpec, app_dir: Path, uid: int, gid: int) -> str | None:
        if spec.runtime is not RuntimeKind.python:
            return None
        req_file = app_dir / "requirements.txt"
        requirements = req_file.read_bytes() if req_file.is_file() else b""
        if not requirements.strip():
            return None
        key = build_key(tenant, self._python, requirements)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            final = self._root / key
            if (final / ".complete").exists():
                return key
            await self._build_venv(key, app_dir, uid, gid)
        return key

    async def _build_venv(self, key: str, app_dir: Path, uid: int, gid: int) -> None:
        work = self._root / f".{key}.tmp"
        shutil.rmtree(work, ignore_errors=True)
        (work / "venv").mkdir(parents=True)
        cache = self._cache_root / str(uid)
        cache.mkdir(parents=True, exist_ok=True)
        for path in (work, work / "venv", cache):
            os.chown(path, uid, gid)
        cache.chmod(0o700)
        uv = Path(find_uv_bin())
        script = (
            f"{_UV_INSIDE} venv --quiet --python {self._python} {VENV_DIR} && "
            f"{_UV_INSIDE} pip install --python {VENV_DIR}/bin/python --no-progress -r {APP_DIR}/requirements.txt"
        )
        plan = SandboxPlan(
            argv=["/bin/sh", "-c", script],
            uid=uid,
            gid=gid,
            cwd=APP_DIR,
            network=True,
            env={
                "PATH": "/usr/bin:/bin",
                "HOME": "/tmp",
                "UV_CACHE_DIR": _CACHE_INSIDE,
                "UV_NO_CONFIG": "1",
                "UV_PYTHON_DOWNLOADS": "never",
                "UV_LINK_MODE": "copy",
                "UV_NATIVE_TLS": "1",
                "SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt",
                "LANG": "C.UTF-8",
            },
            ro_binds=[(app_dir, APP_DIR), (uv, _UV_INSIDE)],
            rw_binds=[(work / "venv", VENV_DIR), (cache, _CACHE_INSIDE)],
            hostname="smcp-build",
        )
        launch = build_launch(plan, bwrap=self._bwrap)
        try:
            proc = await asyncio.create_subprocess_exec(
                *launch.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                pass_fds=launch.pass_fds,
                user=uid,
                group=gid,
                extra_groups=[],
                env={},
                start_new_session=True,
            )
        finally:
            launch.close()
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), timeout=self._timeout_s)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            shutil.rmtree(work, ignore_errors=True)
            raise BuildFailed(f"build timed out after {self._timeout_s:.0f}s") from None
        log = out.decode("utf-8", "replace")
        if proc.returncode != 0:
            shutil.rmtree(work, ignore_errors=True)
            raise BuildFailed(
                f"build failed: installing requirements.txt exited with code {proc.returncode}",
                detail=log[-_LOG_TAIL:],
            )
        (work / "build.log").write_text(log)
        (work / ".complete").write_text(key)
        final = self._root / key
        shutil.rmtree(final, ignore_errors=True)
        work.rename(final)
