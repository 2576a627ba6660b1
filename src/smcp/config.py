"""All settings in one place: environment variables (SMCP_*) over defaults, validated at start.

Every limit the platform enforces is a setting here, so an operator can see and change it.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_sandbox_python() -> str:
    # The interpreter hosted Python servers run on. It must live under a path the
    # sandbox binds read-only (/usr), so the host's own virtualenv never leaks in.
    return "/usr/bin/python3" if Path("/usr/bin/python3").exists() else (shutil.which("python3") or "python3")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SMCP_", env_file=None, extra="ignore")

    # Where the platform keeps its database, bundles, builds and instance data.
    data_dir: Path = Path(".smcp")
    database_url: str | None = None  # default: SQLite in data_dir

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8787
    # The URL clients use to reach this node; defaults to http://host:port.
    public_url: str | None = None

    # Management API bearer token; generated into data_dir/admin-token when unset.
    admin_token: str | None = None

    # Data-plane guard. Hosts and Origins not listed are refused (DNS-rebinding defence).
    allowed_hosts: list[str] = Field(default_factory=list)
    allowed_origins: list[str] = Field(default_factory=list)
    max_body_bytes: Annotated[int, Field(ge=1024)] = 4 * 1024 * 1024
    max_json_depth: Annotated[int, Field(ge=2, le=10_000)] = 64
    # A hosted server's single stdout message may not exceed this.
    max_message_bytes: Annotated[int, Field(ge=1024)] = 16 * 1024 * 1024
    request_timeout_s: Annotated[float, Field(gt=0)] = 120.0
    initialize_timeout_s: Annotated[float, Field(gt=0)] = 30.0
    # How long a subscriptions/listen stream may stay open before the gateway ends it.
    subscription_timeout_s: Annotated[float, Field(gt=0)] = 24 * 3600.0
    max_pending_per_session: Annotated[int, Field(ge=1)] = 64
    max_sessions: Annotated[int, Field(ge=1)] = 256
    session_idle_timeout_s: Annotated[float, Field(gt=0)] = 1800.0
    sse_keepalive_s: Annotated[float, Field(gt=0)] = 15.0
    # Legacy-era resumption: events kept per SSE stream, streams kept per session, and
    # the reconnect delay suggested to clients.
    replay_buffer_events: Annotated[int, Field(ge=1, le=100_000)] = 128
    replay_streams: Annotated[int, Field(ge=1, le=1000)] = 16
    sse_retry_ms: Annotated[int, Field(ge=0)] = 1000
    # Key sealing session ids (base64, 32 bytes); every node serving the same sessions
    # needs the same one. Generated into data_dir/session-key when unset.
    session_key: str | None = None
    session_max_age_s: Annotated[float, Field(gt=0)] = 7 * 24 * 3600.0
    # How long a checked API key is trusted before the database is asked again.
    auth_cache_ttl_s: Annotated[float, Field(ge=0)] = 5.0

    # Runtime.
    bwrap_path: str = "bwrap"
    sandbox_python: str = Field(default_factory=_default_sandbox_python)
    # Host uids for sandboxed processes: tenant n runs as uid_base + n (never root).
    sandbox_uid_base: Annotated[int, Field(ge=1000)] = 200_000
    log_ring_lines: Annotated[int, Field(ge=10)] = 1000
    log_line_bytes: Annotated[int, Field(ge=80)] = 4096
    restart_max: Annotated[int, Field(ge=0)] = 5
    restart_backoff_s: Annotated[float, Field(ge=0)] = 0.5
    restart_backoff_max_s: Annotated[float, Field(ge=0)] = 10.0
    stop_grace_s: Annotated[float, Field(ge=0)] = 3.0
    build_timeout_s: Annotated[float, Field(gt=0)] = 600.0
    max_bundle_bytes: Annotated[int, Field(ge=1024)] = 64 * 1024 * 1024
    max_bundle_unpacked_bytes: Annotated[int, Field(ge=1024)] = 512 * 1024 * 1024
    max_bundle_entries: Annotated[int, Field(ge=1)] = 20_000

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{(self.data_dir / 'smcp.db').resolve()}"

    @property
    def base_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    def server_url(self, tenant: str, server: str) -> str:
        return f"{self.base_url}/t/{tenant}/{server}/mcp"
