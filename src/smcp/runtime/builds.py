"""Builds: turn a bundle into what its instances run, inside a build sandbox.

A `python` bundle gets a virtualenv made by uv from its requirements.txt. The build
runs as the tenant's uid with network (the package registry) but sees only its
bundle, its output and a per-tenant download cache. Outputs are keyed by what went
in (tenant, interpreter, requirements), so a redeploy with unchanged requirements
reuses the previous build, and no tenant ever runs another tenant's build.

A `node` bundle whose package.json declares dependencies must carry its
package-lock.json; the build is `npm ci --ignore-scripts --omit=dev`: exactly the
locked tree, production dependencies only, and no install scripts (preinstall /
postinstall hooks are arbitrary code from every package in the tree; packages that
need them to compile native addons are not supported). Its node_modules is mounted
read-only at /srv/node_modules, where Node's resolution from /srv/app finds it.

Registry packages (`npm = "pkg@1.2.3"`, `pypi = "pkg==1.2"`) are installed at
deploy time the same way; the build then resolves what to run inside the sandbox
(the package's `bin` / console scripts, see `_pick`) and records it in entry.json
beside the output. Instances run that offline; they never reach a registry.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import posixpath
import shlex
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path

from uv import find_uv_bin

from smcp.domain import BuildFailed, InvalidBundle, InvalidSpec, RuntimeKind, ServerSpec
from smcp.domain.spec import BIN_NAME_RE, NPM_PACKAGE_RE, PYPI_PACKAGE_RE
from smcp.runtime.cgroups import Cgroups, Limits, spawn_kwargs
from smcp.runtime.sandbox import APP_DIR, NODE_MODULES_DIR, VENV_DIR, SandboxPlan, build_launch

_UV_INSIDE = "/opt/uv/uv"
_CACHE_INSIDE = "/cache"
_NODE_BUILD_INSIDE = "/srv/build"
_LOG_TAIL = 4000
_ENTRY_MARK = "SMCP-ENTRY "
_LOCKFILES = ("package-lock.json", "npm-shrinkwrap.json")
_MAX_PACKAGE_JSON = 1024 * 1024

# Run inside the build sandbox after the install, so the host never reads files a
# package controls: each prints one marker line the host parses.
_RESOLVE_PY = (
    "import json, sys, importlib.metadata as m\n"
    "d = m.distribution(sys.argv[1])\n"
    "s = sorted(e.name for e in d.entry_points if e.group == 'console_scripts')\n"
    "print('SMCP-ENTRY ' + json.dumps({'scripts': s}))\n"
)
_RESOLVE_JS = (
    "const name = process.argv[1];"
    "const p = require('/srv/build/node_modules/' + name + '/package.json');"
    "let b = p.bin || {};"
    "if (typeof b === 'string') b = {[name.split('/').pop()]: b};"
    "console.log('SMCP-ENTRY ' + JSON.stringify({bins: b}));"
)


def build_key(tenant: str, python: str, requirements: bytes, *more: bytes, kind: bytes = b"python-venv-v1") -> str:
    h = hashlib.sha256()
    for part in (kind, tenant.encode(), python.encode(), requirements, *more):
        h.update(len(part).to_bytes(8, "big") + part)
    return h.hexdigest()


def _pick(found: list[str], want: str | None, package: str, what: str) -> str:
    """Which executable of a package to run: `bin` if given, else the only one, else the
    one named like the package (its unscoped name); anything else is ambiguous."""
    if want is not None:
        if want not in found:
            raise BuildFailed(f"{package} has no {what} {want!r}; it has: {', '.join(found) or 'none'}")
        return want
    if len(found) == 1:
        return found[0]
    base = package.split("/")[-1].lower()
    for name in found:
        if name.lower() == base or name.lower().replace("_", "-") == base.replace("_", "-"):
            return name
    if not found:
        raise BuildFailed(f"{package} declares no {what}; it cannot be run as a server on its own")
    raise BuildFailed(f"{package} has several {what}s ({', '.join(found)}); choose one with bin = \"…\"")


def _entry_line(log: str) -> dict:
    for line in reversed(log.splitlines()):
        if line.startswith(_ENTRY_MARK):
            try:
                data = json.loads(line[len(_ENTRY_MARK) :])
            except ValueError:
                break
            if isinstance(data, dict):
                return data
            break
    raise BuildFailed("build finished but did not report the package's executables", detail=log[-_LOG_TAIL:])


class Builder:
    def __init__(
        self,
        root: Path,
        cache_root: Path,
        *,
        python: str,
        bwrap: str,
        timeout_s: float,
        node: str = "/usr/bin/node",
        cgroups: Cgroups | None = None,
        limits: Limits | None = None,
        seccomp: bytes | None = None,
        tmp_mb: int | None = None,
        sched_batch: bool = True,
        cpus: frozenset[int] | None = None,
    ) -> None:
        # Isolation of build sandboxes (cgroups.py, seccomp.py): generous limits, but limits.
        self._cgroups = cgroups
        self._limits = limits or Limits()
        self._seccomp = seccomp
        self._sched_batch = sched_batch
        self._cpus = cpus
        self._tmp_bytes = tmp_mb * 1024 * 1024 if tmp_mb else None
        self._root = root
        self._cache_root = cache_root
        self._python = python
        self._node = node
        self._entries: dict[str, list[str]] = {}
        self._bwrap = bwrap
        self._timeout_s = timeout_s
        self._locks: dict[str, asyncio.Lock] = {}

    def venv_path(self, key: str) -> Path:
        return self._root / key / "venv"

    def node_modules_path(self, key: str) -> Path:
        return self._root / key / "node" / "node_modules"

    def entry(self, key: str) -> list[str]:
        """The argv tail (after the interpreter) a registry-package build resolved."""
        cached = self._entries.get(key)
        if cached is None:
            data = json.loads((self._root / key / "entry.json").read_text())
            cached = self._entries[key] = [str(a) for a in data["argv"]]
        return list(cached)

    async def build(self, tenant: str, spec: ServerSpec, app_dir: Path, uid: int, gid: int) -> str | None:
        if spec.runtime is RuntimeKind.node:
            return await self._build_node_kind(tenant, spec, app_dir, uid, gid)
        if spec.runtime is not RuntimeKind.python:
            return None
        req_file = app_dir / "requirements.txt"
        requirements = req_file.read_bytes() if req_file.is_file() else b""
        if spec.pypi:
            # The bundle's requirements.txt, if any, constrains the package's dependencies.
            module = spec.entrypoint.removeprefix("-m ").strip() if spec.entrypoint else None
            extra = (spec.pypi.encode(), (spec.bin or "").encode(), (module or "").encode())
            key = build_key(tenant, self._python, requirements, *extra, kind=b"pypi-v1")
            install = shlex.quote(spec.pypi) + (f" -c {APP_DIR}/requirements.txt" if requirements.strip() else "")
            resolve = None if module else (spec.pypi, spec.bin)
            return await self._once(key, lambda: self._build_venv(key, app_dir, uid, gid, install, resolve))
        if not requirements.strip():
            return None
        key = build_key(tenant, self._python, requirements)
        install = f"-r {APP_DIR}/requirements.txt"
        return await self._once(key, lambda: self._build_venv(key, app_dir, uid, gid, install, None))

    async def _once(self, key: str, build: Callable[[], Awaitable[None]]) -> str:
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            final = self._root / key
            if (final / ".complete").exists():
                return key
            await build()
        return key

    async def _build_node_kind(self, tenant: str, spec: ServerSpec, app_dir: Path, uid: int, gid: int) -> str | None:
        if spec.npm:
            key = build_key(tenant, self._node, spec.npm.encode(), (spec.bin or "").encode(), kind=b"npm-package-v1")
            return await self._once(key, lambda: self._build_node(key, app_dir, uid, gid, package=spec.npm, bin=spec.bin))
        manifest = app_dir / "package.json"
        if not manifest.is_file():
            return None  # a dependency-free script: nothing to install
        raw = manifest.read_bytes()
        if len(raw) > _MAX_PACKAGE_JSON:
            raise InvalidBundle(f"package.json is larger than {_MAX_PACKAGE_JSON} bytes")
        try:
            package = json.loads(raw)
        except ValueError as exc:
            raise InvalidBundle(f"package.json is not valid JSON: {exc}") from None
        if not isinstance(package, dict):
            raise InvalidBundle("package.json must be a JSON object")
        if not package.get("dependencies") and not package.get("optionalDependencies"):
            return None
        lockfile = next((name for name in _LOCKFILES if (app_dir / name).is_file()), None)
        if lockfile is None:
            raise InvalidSpec(
                "runtime 'node': package.json declares dependencies but the bundle has no package-lock.json; "
                "run `npm install` and ship package-lock.json with the server (builds run `npm ci`, which "
                "installs exactly the locked versions)"
            )
        lock_bytes = (app_dir / lockfile).read_bytes()
        key = build_key(tenant, self._node, raw, lockfile.encode(), lock_bytes, kind=b"node-lockfile-v1")
        return await self._once(key, lambda: self._build_node(key, app_dir, uid, gid, lockfile=lockfile))

    def _prepare_work(self, key: str, out: str, uid: int, gid: int) -> tuple[Path, Path]:
        work = self._root / f".{key}.tmp"
        shutil.rmtree(work, ignore_errors=True)
        (work / out).mkdir(parents=True)
        cache = self._cache_root / str(uid)
        cache.mkdir(parents=True, exist_ok=True)
        for path in (work, work / out, cache):
            os.chown(path, uid, gid)
        cache.chmod(0o700)
        return work, cache

    async def _build_node(
        self,
        key: str,
        app_dir: Path,
        uid: int,
        gid: int,
        *,
        lockfile: str | None = None,
        package: str | None = None,
        bin: str | None = None,
    ) -> None:
        work, cache = self._prepare_work(key, "node", uid, gid)
        npm = "npm ci" if lockfile else "npm install --save-exact"
        # --prefer-offline: tarballs already in the tenant's cache are used without asking the
        # registry again (npm still checks each one's integrity against the lockfile).
        common = "--ignore-scripts --omit=dev --no-audit --no-fund --no-update-notifier --prefer-offline"
        if lockfile:
            what = f"npm ci ({lockfile})"
            script = (
                f"cp {APP_DIR}/package.json {APP_DIR}/{lockfile} {_NODE_BUILD_INSIDE}/ && "
                f"cd {_NODE_BUILD_INSIDE} && {npm} {common}"
            )
        else:
            assert package is not None
            name = NPM_PACKAGE_RE.match(package).group("name")  # type: ignore[union-attr]
            what = f"npm install {package}"
            script = (
                f"cd {_NODE_BUILD_INSIDE} && "
                "printf '%s' '{\"name\":\"smcp-build\",\"private\":true}' > package.json && "
                f"{npm} {common} {shlex.quote(package)} && "
                f"{shlex.quote(self._node)} -e {shlex.quote(_RESOLVE_JS)} {shlex.quote(name)}"
            )
        node_dir = str(Path(self._node).parent)
        plan = SandboxPlan(
            argv=["/bin/sh", "-c", script],
            uid=uid,
            gid=gid,
            cwd=APP_DIR,
            network=True,
            env={
                "PATH": f"{node_dir}:/usr/bin:/bin",
                "HOME": "/tmp",
                "npm_config_cache": f"{_CACHE_INSIDE}/npm",
                "npm_config_userconfig": "/dev/null",
                "npm_config_update_notifier": "false",
                "npm_config_fund": "false",
                "npm_config_audit": "false",
                "npm_config_loglevel": "warn",
                "LANG": "C.UTF-8",
            },
            ro_binds=[(app_dir, APP_DIR)],
            rw_binds=[(work / "node", _NODE_BUILD_INSIDE), (cache, _CACHE_INSIDE)],
            hostname="smcp-build",
        )
        log = await self._run(work, plan, what)
        if package is not None:
            try:
                bins = _entry_line(log).get("bins")
                if not isinstance(bins, dict) or not all(isinstance(v, str) for v in bins.values()):
                    raise BuildFailed(f"{package}: its package.json has a malformed bin field")
                chosen = _pick(sorted(bins), bin, name, "bin")
                path = posixpath.normpath(posixpath.join(NODE_MODULES_DIR, name, bins[chosen]))
                if not path.startswith(f"{NODE_MODULES_DIR}/{name}/"):
                    raise BuildFailed(f"{package}: bin {chosen!r} points outside the package ({bins[chosen]!r})")
            except BuildFailed:
                shutil.rmtree(work, ignore_errors=True)
                raise
            (work / "entry.json").write_text(json.dumps({"argv": [path], "bin": chosen}))
        self._finish(key, work, log)

    async def _build_venv(
        self, key: str, app_dir: Path, uid: int, gid: int, install: str, resolve: tuple[str, str | None] | None
    ) -> None:
        work, cache = self._prepare_work(key, "venv", uid, gid)
        uv = Path(find_uv_bin())
        script = (
            f"{_UV_INSIDE} venv --quiet --python {self._python} {VENV_DIR} && "
            f"{_UV_INSIDE} pip install --python {VENV_DIR}/bin/python --no-progress {install}"
        )
        what = "installing requirements.txt"
        if resolve is not None:
            dist = PYPI_PACKAGE_RE.match(resolve[0]).group("name")  # type: ignore[union-attr]
            what = f"installing {resolve[0]}"
            script += f" && {VENV_DIR}/bin/python -c {shlex.quote(_RESOLVE_PY)} {shlex.quote(dist)}"
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
        log = await self._run(work, plan, what)
        if resolve is not None:
            try:
                scripts = _entry_line(log).get("scripts")
                if not isinstance(scripts, list) or not all(isinstance(s, str) and BIN_NAME_RE.match(s) for s in scripts):
                    raise BuildFailed(f"{resolve[0]}: could not read its console scripts")
                chosen = _pick(scripts, resolve[1], dist, "console script")
            except BuildFailed:
                shutil.rmtree(work, ignore_errors=True)
                raise
            (work / "entry.json").write_text(json.dumps({"argv": [f"{VENV_DIR}/bin/{chosen}"], "bin": chosen}))
        self._finish(key, work, log)

    async def _run(self, work: Path, plan: SandboxPlan, what: str) -> str:
        """Run one build sandbox to completion; its combined output, or BuildFailed."""
        plan.seccomp, plan.tmp_size = self._seccomp, self._tmp_bytes
        launch = build_launch(plan, bwrap=self._bwrap)
        group = self._cgroups.create(f"build-{work.name.strip('.')[:16]}-{os.urandom(3).hex()}", self._limits) if self._cgroups else None
        spawn, release = spawn_kwargs(plan.uid, plan.gid, group, batch=self._sched_batch, cpus=self._cpus)
        try:
            proc = await asyncio.create_subprocess_exec(
                *launch.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                pass_fds=launch.pass_fds,
                env={},
                start_new_session=True,
                **spawn,
            )
        except BaseException:
            if group is not None and self._cgroups is not None:
                self._cgroups.remove_later(group)
            raise
        finally:
            launch.close()
            release()
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), timeout=self._timeout_s)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            shutil.rmtree(work, ignore_errors=True)
            raise BuildFailed(f"build timed out after {self._timeout_s:.0f}s") from None
        finally:
            oom = group.usage().oom_kills if group is not None else 0
            if group is not None and self._cgroups is not None:
                self._cgroups.remove_later(group)
        log = out.decode("utf-8", "replace")
        if oom and proc.returncode != 0:
            shutil.rmtree(work, ignore_errors=True)
            raise BuildFailed(f"build killed: out of memory (limit {self._limits.memory_mb} MiB)", detail=log[-_LOG_TAIL:])
        if proc.returncode != 0:
            shutil.rmtree(work, ignore_errors=True)
            raise BuildFailed(
                f"build failed: {what} exited with code {proc.returncode}",
                detail=log[-_LOG_TAIL:],
            )
        return log

    def _finish(self, key: str, work: Path, log: str) -> None:
        # Only the host writes work/ itself (the sandbox saw work/venv or work/node).
        (work / "build.log").write_text(log)
        (work / ".complete").write_text(key)
        final = self._root / key
        shutil.rmtree(final, ignore_errors=True)
        work.rename(final)
