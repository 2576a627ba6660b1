"""Header rules of the Streamable HTTP transport (legacy, sessionful era)."""

from __future__ import annotations

import functools

LEGACY_VERSIONS = ("2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05")
# Without the header a server must assume this one (2025-06-18 transport spec).
DEFAULT_LEGACY_VERSION = "2025-03-26"

SESSION_HEADER = "mcp-session-id"
VERSION_HEADER = "mcp-protocol-version"


# A client sends the same Accept on every request: parse it once (bounded, so varied
# values cost a parse each and nothing more).
@functools.lru_cache(maxsize=256)
def accepts(accept: str, media_type: str) -> bool:
    main, _, _ = media_type.partition("/")
    for part in accept.split(","):
        value = part.split(";", 1)[0].strip().lower()
        if value in (media_type, f"{main}/*", "*/*"):
            return True
    return False


def version_supported(version: str | None) -> bool:
    return version is None or version in LEGACY_VERSIONS
