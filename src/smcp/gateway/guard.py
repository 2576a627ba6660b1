"""First gate: Host and Origin checks (DNS-rebinding defence) before any other work."""

from __future__ import annotations

from urllib.parse import urlsplit

from smcp.config import Settings


def _netloc(url: str) -> str:
    parts = urlsplit(url)
    return (parts.netloc or "").lower()


class Guard:
    def __init__(self, settings: Settings) -> None:
        port = settings.port
        hosts = {h.lower() for h in settings.allowed_hosts}
        hosts |= {f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"}
        hosts.add(_netloc(settings.base_url))
        if settings.host not in ("0.0.0.0", "::"):
            hosts.add(f"{settings.host}:{port}".lower())
        self._any_host = "*" in hosts
        self._hosts = hosts
        self._origins = {o.rstrip("/").lower() for o in settings.allowed_origins}

    def check(self, host: str | None, origin: str | None) -> str | None:
        """Return why the request is refused, or None to let it through."""
        if not self._any_host:
            if not host or host.lower() not in self._hosts:
                return f"Host {host!r} is not served here"
        if origin is not None:
            # Browsers send Origin; a page on another origin must not drive a
            # user's local MCP endpoint. Same-origin or explicitly allowed only.
            value = origin.rstrip("/").lower()
            if value not in self._origins and _netloc(value) not in self._hosts:
                return f"Origin {origin!r} is not allowed"
        return None
