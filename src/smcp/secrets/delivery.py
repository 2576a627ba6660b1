"""How decrypted secrets reach a sandbox: read-only files, and env vars on request.

Files: /run/secrets/<NAME>, mode 0400, owned by the sandbox uid, on a read-only
bind of bubblewrap's own tmpfs (`--ro-bind-data FD`, the data coming from a memfd):
the value never touches a host disk and never appears in any argv.

Env vars (`{ name = "X", env = true }`): set with `--setenv` inside the `--args`
memfd. Measured here (bwrap 0.8): the value is in the server process's own
/proc/self/environ, as any env var is; it is not in /proc/1/environ inside (bwrap's
PID 1 keeps its original, empty environment block — setenv() does not touch it),
not in /proc/1/cmdline, not in host `ps` (bwrap's argv carries only `--args N`), and
not in the launcher's environment. /proc/1/fd holds only an eventfd, not the args
memfd. On the host, the process's /proc/PID/environ is readable only by its own
(tenant) uid and root. Files remain the better choice: an env var is inherited by
every child the server spawns and often ends up in crash reports.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from smcp.domain.spec import SecretRef

SECRETS_DIR = "/run/secrets"


def secret_files(refs: Iterable[SecretRef], values: Mapping[str, bytes]) -> list[tuple[bytes, str]]:
    return [(values[ref.name], f"{SECRETS_DIR}/{ref.name}") for ref in refs]


def secret_env(refs: Iterable[SecretRef], values: Mapping[str, bytes]) -> dict[str, str]:
    env: dict[str, str] = {}
    for ref in refs:
        name = ref.env_name
        if not name:
            continue
        text = values[ref.name].decode("utf-8", "replace")
        if "\0" in text:
            raise ValueError(f"secret {ref.name!r} contains a NUL byte and cannot be an env var; read the file")
        env[name] = text
    return env
