"""The server spec: what `smcp.toml` says to run, validated once at deploy time."""

from __future__ import annotations

import enum
import re
import tomllib
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from smcp.domain.errors import InvalidSpec
from smcp.domain.network import Network

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
# Names the platform sets itself inside the sandbox; a spec may not override them.
RESERVED_ENV = frozenset({"PATH", "HOME", "TMPDIR", "VIRTUAL_ENV", "PYTHONPATH", "LD_PRELOAD", "LD_LIBRARY_PATH"})


class RuntimeKind(str, enum.Enum):
    python = "python"
    node = "node"
    command = "command"
    http = "http"


class SharingMode(str, enum.Enum):
    shared = "shared"
    per_session = "per-session"
    per_principal = "per-principal"


# Registry packages must name one exact version: what a revision runs never changes
# under it. npm: "name@1.2.3" or "@scope/name@1.2.3-rc.1" (semver, no ranges or tags);
# PyPI: "name==1.2" or "name[extra]==1.2" (no wildcards, no other operators).
NPM_PACKAGE_RE = re.compile(
    r"^(?P<name>(?:@[a-z0-9][a-z0-9._~-]*/)?[a-z0-9][a-z0-9._~-]*)"
    r"@(?P<version>\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?)$"
)
PYPI_PACKAGE_RE = re.compile(
    r"^(?P<name>[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)(?:\[(?P<extras>[A-Za-z0-9._-]+(?:,[A-Za-z0-9._-]+)*)\])?"
    r"==(?P<version>[0-9][0-9A-Za-z.!+_-]*)$"
)
# A package's executable (an npm `bin` entry or a Python console script).
BIN_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MAX_SECRETS = 64


class SecretRef(BaseModel):
    """A tenant secret the server receives: always as /run/secrets/<name>, as an env var on request."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    # True: also set env var <name>; a string: set that env var instead.
    env: bool | str = False

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not ENV_NAME_RE.match(v):
            raise ValueError(f"secret name {v!r} must be 1-128 of A-Z, a-z, 0-9 and '_', not starting with a digit")
        return v

    @field_validator("env")
    @classmethod
    def _env(cls, v: bool | str) -> bool | str:
        if isinstance(v, str):
            if not ENV_NAME_RE.match(v):
                raise ValueError(f"secret env name {v!r} is not a valid variable name")
            if v in RESERVED_ENV:
                raise ValueError(f"secret env name {v!r} is set by the platform and cannot be overridden")
        return v

    @property
    def env_name(self) -> str | None:
        if self.env is True:
            return self.name
        return self.env or None


class Resources(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    memory_mb: Annotated[int, Field(ge=16, le=65536)] = 512
    cpu: Annotated[float, Field(gt=0, le=64)] = 1.0
    pids: Annotated[int, Field(ge=4, le=32768)] = 256
    # Size cap of each writable tmpfs (/data, /tmp); None: the node's SMCP_INSTANCE_DISK_MB.
    disk_mb: Annotated[int, Field(ge=1, le=65536)] | None = None


class Scaling(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    min_instances: Annotated[int, Field(ge=0, le=1000)] = 0
    max_instances: Annotated[int, Field(ge=1, le=1000)] = 10

    @model_validator(mode="after")
    def _bounds(self) -> Scaling:
        if self.min_instances > self.max_instances:
            raise ValueError("scaling.min_instances must not exceed scaling.max_instances")
        return self


_SECRET_REF = re.compile(r"\{secret:([A-Za-z_][A-Za-z0-9_]{0,127})\}")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$")
# The gateway sets these on every upstream request itself.
_RESERVED_HEADERS = frozenset(
    {"accept", "content-type", "content-length", "host", "mcp-session-id", "mcp-protocol-version", "mcp-method", "mcp-name", "connection", "transfer-encoding"}
)


class HttpUpstream(BaseModel):
    """runtime = "http": a remote Streamable HTTP MCP server, called with the tenant's
    own credentials. `{secret:NAME}` in a header value is filled from the tenant's
    secrets (NAME must also be listed in `secrets`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        from urllib.parse import urlsplit

        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http(s) URL with a host")
        if parts.username or parts.password:
            raise ValueError("must not carry credentials; put them in headers with {secret:NAME}")
        if parts.fragment:
            raise ValueError("must not have a fragment")
        return v

    @field_validator("headers")
    @classmethod
    def _headers(cls, v: dict[str, str]) -> dict[str, str]:
        for name, value in v.items():
            if not _HEADER_NAME.match(name) or name.lower() in _RESERVED_HEADERS:
                raise ValueError(f"header {name!r} cannot be configured")
            if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
                raise ValueError(f"header {name!r} has a control character")
        return v

    def secret_names(self) -> set[str]:
        return {m.group(1) for value in self.headers.values() for m in _SECRET_REF.finditer(value)}


class ServerSpec(BaseModel):
    """Validated `smcp.toml`. Paths are relative to the bundle root."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    runtime: RuntimeKind
    entrypoint: str | None = None
    command: tuple[str, ...] | None = None
    args: tuple[str, ...] = ()
    env: dict[str, str] = Field(default_factory=dict)
    # Tenant secrets delivered to instances: ["NAME", { name = "NAME", env = true }, …].
    secrets: tuple[SecretRef, ...] = ()
    # A registry package to run instead of bundle code: npm (runtime "node") or PyPI
    # (runtime "python"), pinned to one exact version, built at deploy time.
    npm: str | None = None
    pypi: str | None = None
    # Which executable of that package to run (npm `bin` / console script); optional
    # when the package has exactly one, or one named like the package.
    bin: str | None = None
    resources: Resources = Resources()
    scaling: Scaling = Scaling()
    # Egress allowlist (see domain/network.py); empty means no network at all.
    network: Network = Network()
    # runtime = "http": the remote upstream.
    http: HttpUpstream | None = None
    # shared: one instance serves every session (ids rewritten by the gateway);
    # per-principal: one per caller identity; per-session: one per client session.
    sharing: SharingMode = SharingMode.shared
    description: str = ""

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError("must be 1-63 characters of a-z, 0-9 and '-', starting with a letter or digit")
        return v

    @field_validator("env")
    @classmethod
    def _env(cls, v: dict[str, str]) -> dict[str, str]:
        for key, value in v.items():
            if not ENV_NAME_RE.match(key):
                raise ValueError(f"env name {key!r} is not a valid variable name")
            if key in RESERVED_ENV:
                raise ValueError(f"env name {key!r} is set by the platform and cannot be overridden")
            if "\0" in value:
                raise ValueError(f"env value of {key!r} contains a NUL byte")
        return v

    @field_validator("secrets", mode="before")
    @classmethod
    def _secret_refs(cls, v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [{"name": item} if isinstance(item, str) else item for item in v]
        return v

    @field_validator("secrets")
    @classmethod
    def _secrets(cls, v: tuple[SecretRef, ...]) -> tuple[SecretRef, ...]:
        if len(v) > MAX_SECRETS:
            raise ValueError(f"at most {MAX_SECRETS} secrets")
        names = [ref.name for ref in v]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"secret {dupes[0]!r} is listed twice")
        envs = [ref.env_name for ref in v if ref.env_name]
        for name in envs:
            if name in RESERVED_ENV:
                raise ValueError(f"secret env name {name!r} is set by the platform and cannot be overridden")
        dupes = sorted({n for n in envs if envs.count(n) > 1})
        if dupes:
            raise ValueError(f"two secrets set env var {dupes[0]!r}")
        return v

    @field_validator("npm")
    @classmethod
    def _npm(cls, v: str | None) -> str | None:
        if v is not None and not NPM_PACKAGE_RE.match(v):
            raise ValueError(
                f"npm package {v!r} must name one exact version, e.g. \"@scope/pkg@1.2.3\" "
                "(no ranges, tags like 'latest', URLs or git references)"
            )
        return v

    @field_validator("pypi")
    @classmethod
    def _pypi(cls, v: str | None) -> str | None:
        if v is not None and not PYPI_PACKAGE_RE.match(v):
            raise ValueError(
                f"pypi package {v!r} must be pinned to one exact version, e.g. \"pkg==1.2.0\" "
                "(no ranges, wildcards, URLs or other operators)"
            )
        return v

    @field_validator("bin")
    @classmethod
    def _bin(cls, v: str | None) -> str | None:
        if v is not None and not BIN_NAME_RE.match(v):
            raise ValueError(f"bin {v!r} must be an executable name (a-z, A-Z, 0-9, '.', '_', '-')")
        return v

    @model_validator(mode="after")
    def _shape(self) -> ServerSpec:
        if self.http is not None and self.runtime is not RuntimeKind.http:
            raise ValueError("[http] belongs to runtime 'http'")
        if self.npm and self.runtime is not RuntimeKind.node:
            raise ValueError("npm packages run on runtime 'node'")
        if self.pypi and self.runtime is not RuntimeKind.python:
            raise ValueError("pypi packages run on runtime 'python'")
        if self.bin and not (self.npm or self.pypi):
            raise ValueError("bin selects an executable of an npm or pypi package; set npm or pypi")
        for ref in self.secrets:
            if ref.env_name and ref.env_name in self.env:
                raise ValueError(f"env var {ref.env_name!r} is set both by env and by secret {ref.name!r}")
        if self.runtime is RuntimeKind.python and self.pypi:
            if self.command:
                raise ValueError("runtime 'python' takes entrypoint, not command")
            if self.entrypoint:
                if not self.entrypoint.startswith("-m ") or self.bin:
                    raise ValueError("with pypi, entrypoint may only be '-m module' (or use bin), not both")
                _check_module(self.entrypoint.removeprefix("-m ").strip())
        elif self.runtime is RuntimeKind.python:
            if not self.entrypoint:
                raise ValueError("runtime 'python' needs entrypoint (a .py file in the bundle, or '-m module')")
            if self.command:
                raise ValueError("runtime 'python' takes entrypoint, not command")
            _check_relative(self.entrypoint.removeprefix("-m ").strip(), "entrypoint")
        elif self.runtime is RuntimeKind.node:
            if self.command:
                raise ValueError("runtime 'node' takes entrypoint (or npm), not command")
            if self.npm:
                if self.entrypoint:
                    raise ValueError("with npm, the package's bin runs; drop entrypoint (choose a bin with bin = ...)")
            else:
                if not self.entrypoint:
                    raise ValueError("runtime 'node' needs entrypoint (a .js/.mjs/.cjs file in the bundle) or npm")
                if self.entrypoint.startswith("-"):
                    raise ValueError("runtime 'node' entrypoint must be a file in the bundle, not an option")
                _check_relative(self.entrypoint, "entrypoint")
        elif self.runtime is RuntimeKind.http:
            if self.http is None:
                raise ValueError('runtime \'http\' needs [http] url = "https://…/mcp"')
            if self.command or self.entrypoint or self.npm or self.pypi:
                raise ValueError("runtime 'http' takes [http] url, not command, entrypoint or packages")
            listed = {ref.name for ref in self.secrets}
            missing = sorted(self.http.secret_names() - listed)
            if missing:
                raise ValueError(f"[http] headers use secrets not listed in secrets: {', '.join(missing)}")
        else:
            if not self.command:
                raise ValueError("runtime 'command' needs command (an argv list, e.g. [\"node\", \"index.js\"])")
            if self.entrypoint:
                raise ValueError("runtime 'command' takes command, not entrypoint")
            if any("\0" in part for part in self.command):
                raise ValueError("command contains a NUL byte")
        return self

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def _check_module(module: str) -> None:
    if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$", module):
        raise ValueError(f"entrypoint module {module!r} is not a dotted Python module name")


def _check_relative(path: str, field: str) -> None:
    if not path or path.startswith("/") or ".." in path.split("/"):
        raise ValueError(f"{field} must be a path inside the bundle, got {path!r}")


def parse_spec(text: str | bytes, *, source: str = "smcp.toml") -> ServerSpec:
    """Parse and validate smcp.toml text; every problem is reported as InvalidSpec."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidSpec(f"{source} is not UTF-8") from exc
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidSpec(f"{source} is not valid TOML: {exc}") from exc
    return spec_from_mapping(raw, source=source)


def spec_from_mapping(raw: dict[str, Any], *, source: str = "spec") -> ServerSpec:
    try:
        return ServerSpec.model_validate(raw)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg'].removeprefix('Value error, ')}"
            for err in exc.errors()
        ]
        raise InvalidSpec(f"{source} is invalid: " + "; ".join(problems), detail=problems) from exc
