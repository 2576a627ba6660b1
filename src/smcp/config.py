"""All settings in one place: environment variables (SMCP_*) over defaults, validated at start.

Every limit the platform enforces is a setting here, so an operator can see and change it.
"""

from __future__ import annotations

import ipaddress
import shutil
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from smcp import placement


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
    # A request's line and header fields together (smcp.httpserver): past it, 431.
    max_header_bytes: Annotated[int, Field(ge=1024)] = 64 * 1024
    # An idle keep-alive connection is closed after this long; a request head must
    # arrive whole within it, and a body must not stall for longer (a client trickling
    # either holds no connection for long).
    http_idle_timeout_s: Annotated[float, Field(gt=0)] = 5.0
    max_json_depth: Annotated[int, Field(ge=2, le=10_000)] = 64
    # A hosted server's single stdout message may not exceed this.
    max_message_bytes: Annotated[int, Field(ge=1024)] = 16 * 1024 * 1024
    # What may wait to be written to one hosted process's stdin when it reads slower
    # than messages come (or not at all). Past it, a message is refused at once with
    # -32004 and HTTP 503, rather than held: a stuck server costs the node bounded
    # memory and its callers no hang.
    instance_stdin_queue_bytes: Annotated[int, Field(ge=1024)] = 16 * 1024 * 1024
    request_timeout_s: Annotated[float, Field(gt=0)] = 120.0
    initialize_timeout_s: Annotated[float, Field(gt=0)] = 30.0
    # How long a subscriptions/listen stream may stay open before the gateway ends it.
    subscription_timeout_s: Annotated[float, Field(gt=0)] = 24 * 3600.0
    # How long a legacy server's request to a modern caller (an input_required result;
    # gateway/parking.py) waits for the caller's retry before both are given up.
    input_request_timeout_s: Annotated[float, Field(gt=0)] = 300.0
    # The cyclic GC's first-generation threshold once the node has started (app.py
    # _tune_gc); 0 keeps Python's default (700).
    gc_gen0_threshold: Annotated[int, Field(ge=0)] = 50_000
    # The node's event loop: uvloop (libuv, in C) costs the gateway ~12% less CPU per
    # proxied call than the standard library's loop (bench/); "asyncio" is the fallback.
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"
    max_pending_per_session: Annotated[int, Field(ge=1)] = 64
    max_sessions: Annotated[int, Field(ge=1)] = 256
    # Shares of the node's session table (gateway/sessions.py): one tenant, or one of
    # its keys or users, can never hold every session on the node. At a cap, the
    # owner's least recently used idle session makes room; if all are in use, 429.
    max_sessions_per_tenant: Annotated[int, Field(ge=1)] = 128
    max_sessions_per_principal: Annotated[int, Field(ge=1)] = 64
    session_idle_timeout_s: Annotated[float, Field(gt=0)] = 1800.0
    sse_keepalive_s: Annotated[float, Field(gt=0)] = 15.0
    # Legacy-era resumption: events kept per SSE stream, streams kept per session, and
    # the reconnect delay suggested to clients.
    replay_buffer_events: Annotated[int, Field(ge=1, le=100_000)] = 128
    replay_streams: Annotated[int, Field(ge=1, le=1000)] = 16
    sse_retry_ms: Annotated[int, Field(ge=0)] = 1000
    # runtime = "http" upstreams must resolve to public addresses; these networks are
    # exempt (tests only: loopback upstreams). Empty in production.
    http_upstream_unsafe_allow: list[str] = Field(default_factory=list)
    # Key sealing session ids (base64, 32 bytes); every node serving the same sessions
    # needs the same one. Generated into data_dir/session-key when unset.
    session_key: str | None = None
    session_max_age_s: Annotated[float, Field(gt=0)] = 7 * 24 * 3600.0
    # How long a checked API key is trusted before the database is asked again.
    auth_cache_ttl_s: Annotated[float, Field(ge=0)] = 5.0
    # Reverse proxies (addresses or networks, e.g. ["10.0.0.0/8"]) whose X-Forwarded-For
    # is believed when telling clients apart (rate limits). Empty: the peer address is
    # the client, and X-Forwarded-For is ignored.
    trusted_proxies: list[str] = Field(default_factory=list)

    # Identity: the built-in OAuth 2.1 authorization server (docs/identity.md).
    oauth_enabled: bool = True
    # The issuer identifier; defaults to public_url (must be https in production).
    oauth_issuer: str | None = None
    access_token_ttl_s: Annotated[int, Field(ge=30, le=86_400)] = 300
    refresh_token_ttl_s: Annotated[int, Field(ge=60)] = 30 * 86_400
    auth_code_ttl_s: Annotated[int, Field(ge=10, le=600)] = 60
    # Authorization requests (login + consent) must complete within this.
    authorization_request_ttl_s: Annotated[int, Field(ge=60, le=3600)] = 600
    login_session_ttl_s: Annotated[int, Field(ge=60)] = 8 * 3600
    signing_key_rotate_s: Annotated[int, Field(ge=3600)] = 30 * 86_400
    # Rate limits of the authorization server (smcp.auth.ratelimit), each a budget that
    # refills evenly over its window; 0 turns one off. Counted per node, in memory.
    # Sign-ins count failures only, so others' failures cannot lock out a right password
    # except through the looser per-user-name budget, and then only while they keep failing.
    oauth_login_rate: Annotated[int, Field(ge=0)] = 10  # failed sign-ins a minute, per (client address, user name)
    oauth_login_ip_rate: Annotated[int, Field(ge=0)] = 30  # failed sign-ins a minute, per client address
    oauth_login_user_rate: Annotated[int, Field(ge=0)] = 100  # failed sign-ins an hour, per user name
    oauth_register_rate: Annotated[int, Field(ge=0)] = 20  # dynamic registrations an hour, per client address
    # Token requests a minute per client; per (client, address) for public clients, whose
    # client_id anyone may send.
    oauth_token_rate: Annotated[int, Field(ge=0)] = 120
    # Counters kept in memory at most (oldest dropped first), so a flood of addresses or
    # user names cannot grow the node without bound.
    rate_limit_max_keys: Annotated[int, Field(ge=100)] = 100_000
    # RFC 7591 dynamic client registration (deprecated by MCP 2026-07-28; on for older clients).
    oauth_dynamic_registration: bool = True
    # Client ID metadata documents: https client_ids fetched with an SSRF guard.
    oauth_client_metadata_documents: bool = True
    cimd_max_bytes: Annotated[int, Field(ge=512, le=1024 * 1024)] = 5 * 1024
    cimd_timeout_s: Annotated[float, Field(gt=0, le=30)] = 5.0
    cimd_cache_ttl_s: Annotated[float, Field(ge=0)] = 600.0
    # For air-gapped deployments whose client registry lives on a private network (and for
    # tests): documents may also come from loopback and private-network addresses (RFC 1918,
    # 100.64.0.0/10, IPv6 ULA). Link-local (cloud metadata), multicast and unspecified
    # addresses stay refused, and every other rule holds: https, path rules, size and time
    # caps, no redirects, the certificate verified for the host name (SNI), the connection
    # pinned to the checked address. Off in production on a shared network.
    cimd_allow_private_addresses: bool = False
    # CA certificates (PEM) trusted for client metadata documents in addition to the public
    # roots, e.g. a private CA. The fetcher ignores SSL_CERT_FILE and proxy variables on
    # purpose: a proxy would dial an address the SSRF guard never checked.
    cimd_ca_file: Path | None = None

    # Upstream OpenID Connect login (smcp.auth.oidc, docs/identity.md): a "Sign in with
    # <display name>" button beside the password form. Off while oidc_issuer is unset.
    # The issuer must be https and match the provider's discovery document exactly.
    oidc_issuer: str | None = None
    oidc_client_id: str | None = None
    # The client secret inline, or a file holding it (for secret managers that mount files).
    # Neither: a public client (PKCE only, token_endpoint_auth_method "none").
    oidc_client_secret: SecretStr | None = None
    oidc_client_secret_file: Path | None = None
    oidc_display_name: Annotated[str, Field(min_length=1, max_length=60)] = "single sign-on"
    oidc_scopes: str = "openid email profile"
    # The claim whose value is the SMCP user name; for "email", only when email_verified.
    # Whatever the claim, an (issuer, sub) once linked to a user stays the key.
    oidc_username_claim: Annotated[str, Field(min_length=1, max_length=100)] = "email"
    # Unknown identities get a user of their own (with no tenant until an admin adds one);
    # off: they are refused with a page saying so.
    oidc_auto_provision: bool = False
    # When non-empty: only verified emails in these domains may sign in upstream.
    oidc_allowed_email_domains: list[str] = Field(default_factory=list)
    oidc_cache_ttl_s: Annotated[float, Field(ge=0)] = 3600.0  # discovery document and JWKS
    oidc_timeout_s: Annotated[float, Field(gt=0, le=60)] = 10.0
    oidc_max_response_bytes: Annotated[int, Field(ge=1024, le=4 * 1024 * 1024)] = 256 * 1024
    oidc_clock_skew_s: Annotated[int, Field(ge=0, le=300)] = 60
    # FOR TESTS ONLY: accept an http:// issuer (and endpoints) on a loopback address.
    oidc_allow_insecure_issuer: bool = False

    # Runtime.
    bwrap_path: str = "bwrap"
    sandbox_python: str = Field(default_factory=_default_sandbox_python)
    # The Node.js binary `node` servers run on and build with (npm beside it); like
    # sandbox_python it must live under /usr, which sandboxes bind read-only.
    sandbox_node: str = "/usr/bin/node"
    # Host uids for sandboxed processes: tenant n runs as uid_base + n (never root).
    sandbox_uid_base: Annotated[int, Field(ge=1000)] = 200_000
    log_ring_lines: Annotated[int, Field(ge=10)] = 1000
    log_line_bytes: Annotated[int, Field(ge=80)] = 4096
    restart_max: Annotated[int, Field(ge=0)] = 5
    restart_backoff_s: Annotated[float, Field(ge=0)] = 0.5
    restart_backoff_max_s: Annotated[float, Field(ge=0)] = 10.0
    # restart_max counts crashes in a row: a process that ran this long before it
    # exited gets the whole budget (and the shortest backoff) back, as systemd's
    # StartLimitIntervalSec does, so a long-lived shared instance that crashes now and
    # then is not given up on for good.
    restart_budget_reset_s: Annotated[float, Field(gt=0)] = 60.0
    stop_grace_s: Annotated[float, Field(ge=0)] = 3.0
    build_timeout_s: Annotated[float, Field(gt=0)] = 600.0
    max_bundle_bytes: Annotated[int, Field(ge=1024)] = 64 * 1024 * 1024
    max_bundle_unpacked_bytes: Annotated[int, Field(ge=1024)] = 512 * 1024 * 1024
    max_bundle_entries: Annotated[int, Field(ge=1)] = 20_000

    # Egress proxy (smcp.egress): the only way out of a sandbox whose spec has
    # [network] allow. Per connection: the request head must arrive within
    # header_timeout and fit max_header_bytes; a connection with no bytes moving
    # either way for idle_timeout is closed, and so is one that moves more than
    # max_bytes (both directions together).
    egress_header_timeout_s: Annotated[float, Field(gt=0)] = 10.0
    egress_idle_timeout_s: Annotated[float, Field(gt=0)] = 60.0
    egress_connect_timeout_s: Annotated[float, Field(gt=0)] = 10.0
    egress_resolve_timeout_s: Annotated[float, Field(gt=0)] = 5.0
    egress_max_header_bytes: Annotated[int, Field(ge=1024)] = 32 * 1024
    egress_max_bytes: Annotated[int, Field(ge=1024)] = 256 * 1024 * 1024
    egress_max_connections: Annotated[int, Field(ge=1)] = 64  # concurrent, per instance
    # FOR TESTS ONLY. Networks exempt from the public-address check (e.g. ["127.0.0.1/32"]
    # for a loopback test upstream), and fixed name → address answers used instead of DNS.
    # Production leaves both empty: loopback, private and metadata addresses are refused.
    egress_unsafe_allow_networks: list[str] = Field(default_factory=list)
    egress_hosts_override: dict[str, str | list[str]] = Field(default_factory=dict)

    # Isolation limits (docs/security.md). cgroups: "auto" uses v1 or v2, whichever
    # offers memory/cpu/pids here, and refuses to start if neither does; "off" runs
    # without resource limits. cgroup_parent: "" nests the node's cgroups below its
    # own cgroup (<own>/smcp/node-<pid>/...); "/path" puts them there instead.
    cgroups: Literal["auto", "v1", "v2", "off"] = "auto"
    cgroup_parent: str = ""
    # A spec's [resources] are clamped to these ceilings (an instance event says so).
    instance_memory_mb_max: Annotated[int, Field(ge=16)] = 4096
    instance_cpu_max: Annotated[float, Field(gt=0)] = 2.0
    instance_pids_max: Annotated[int, Field(ge=4)] = 1024
    # Size cap of each of an instance's writable tmpfs areas (/data and /tmp), unless the
    # spec sets [resources] disk_mb; tmpfs pages also count against the memory limit.
    instance_disk_mb: Annotated[int, Field(ge=1)] = 256
    instance_disk_mb_max: Annotated[int, Field(ge=1)] = 2048
    # Node's V8 heap cap, as a percentage of the instance's memory limit
    # (NODE_OPTIONS=--max-old-space-size), so Node fails readably before the OOM killer.
    node_heap_percent: Annotated[int, Field(ge=10, le=100)] = 75
    # Builds (pip/npm installs) get generous limits of their own.
    build_memory_mb: Annotated[int, Field(ge=64)] = 4096
    build_cpu: Annotated[float, Field(gt=0)] = 2.0
    build_pids: Annotated[int, Field(ge=16)] = 2048
    build_tmp_mb: Annotated[int, Field(ge=16)] = 2048
    # The seccomp filter (runtime/seccomp.py) on every hosted process and build; turn it
    # off only to debug a server that a refused system call breaks.
    seccomp: bool = True
    # Hosted processes and builds run under SCHED_BATCH: the kernel never lets their
    # wake-ups preempt a running task, so a busy tenant's server cannot cut into the
    # gateway mid-request (docs/security.md, "Scheduling"). Their CPU share and cap are
    # unchanged; off leaves them under the default policy.
    instance_sched_batch: bool = True
    # CPU placement (smcp/placement.py), Linux CPU lists such as "0" or "2-7": the node
    # (gateway, control plane) pins itself to node_cpus; hosted processes and builds run
    # on instance_cpus. Empty: no restriction (every CPU the node started with).
    node_cpus: str = ""
    instance_cpus: str = ""

    # Secrets (smcp.secrets). The key ring holding the key-encryption keys: inline JSON
    # ({"active": 1, "keys": {"1": "<base64 of 32 bytes>"}}) or one base64 key, for
    # operators who keep it in a secret manager; otherwise a file (0600), by default
    # data_dir/keyring.json, generated on first start. Only a file ring can be rotated
    # in place (`smcp keys rotate`); an inline ring is rotated by adding a key to it.
    secrets_keyring: SecretStr | None = None
    secrets_keyring_file: Path | None = None
    max_secret_bytes: Annotated[int, Field(ge=1, le=1024 * 1024)] = 64 * 1024

    @field_validator("node_cpus", "instance_cpus")
    @classmethod
    def _cpu_list(cls, value: str) -> str:
        placement.parse_cpus(value)  # ValueError says what is wrong
        return value.strip()

    @property
    def node_cpu_set(self) -> frozenset[int] | None:
        return placement.parse_cpus(self.node_cpus)

    @property
    def instance_cpu_set(self) -> frozenset[int]:
        return placement.for_hosted(placement.parse_cpus(self.instance_cpus))

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for item in value:
            ipaddress.ip_network(item.strip(), strict=False)  # ValueError names the bad entry
        return [item.strip() for item in value]

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{(self.data_dir / 'smcp.db').resolve()}"

    @property
    def base_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    @property
    def issuer(self) -> str:
        return (self.oauth_issuer or self.base_url).rstrip("/")

    def server_url(self, tenant: str, server: str) -> str:
        return f"{self.base_url}/t/{tenant}/{server}/mcp"
