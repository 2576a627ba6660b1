"""The server spec: what `smcp.toml` says to run, validated once at deploy time."""

from __future__ import annotations

import enum
import re
import tomllib
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from smcp.domain.errors import InvalidSpec

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
# Names the platform sets itself inside the sandbox; a spec may not override them.
RESERVED_ENV = frozenset({"PATH", "HOME", "TMPDIR", "VIRTUAL_ENV", "PYTHONPATH", "LD_PRELOAD", "LD_LIBRARY_PATH"})


class RuntimeKind(str, enum.Enum):
    python = "python"
    command = "command"


class SharingMode(str, enum.Enum):
    shared = "shared"
    per_session = "per-session"
    per_principal = "per-principal"


class Resources(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    memory_mb: Annotated[int, Field(ge=16, le=65536)] = 512
    cpu: Annotated[float, Field(gt=0, le=64)] = 1.0
    pids: Annotated[int, Field(ge=4, le=32768)] = 256


class Scaling(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    min_instances: Annotated[int, Field(ge=0, le=1000)] = 0
    max_instances: Annotated[int, Field(ge=1, le=1000)] = 10

    @model_validator(mode="after")
    def _bounds(self) -> Scaling:
        if self.min_instances > self.max_instances:
            raise ValueError("scaling.min_instances must not exceed scaling.max_instances")
        return self


class ServerSpec(BaseModel):
    """Validated `smcp.toml`. Paths are relative to the bundle root."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    runtime: RuntimeKind
    entrypoint: str | None = None
    command: tuple[str, ...] | None = None
    args: tuple[str, ...] = ()
    env: dict[str, str] = Field(default_factory=dict)
    resources: Resources = Resources()
    scaling: Scaling = Scaling()
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

    @model_validator(mode="after")
    def _shape(self) -> ServerSpec:
        if self.runtime is RuntimeKind.python:
            if not self.entrypoint:
                raise ValueError("runtime 'python' needs entrypoint (a .py file in the bundle, or '-m module')")
            if self.command:
                raise ValueError("runtime 'python' takes entrypoint, not command")
            _check_relative(self.entrypoint.removeprefix("-m ").strip(), "entrypoint")
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
