"""Resource-server facts shared by the gateway and the authorization server."""

from __future__ import annotations

from urllib.parse import urlsplit

PRM_PREFIX = "/.well-known/oauth-protected-resource"


def resource_metadata_url(resource_url: str) -> str:
    """RFC 9728 §3.1: the well-known suffix goes between the host and the resource's path."""
    parts = urlsplit(resource_url)
    return f"{parts.scheme}://{parts.netloc}{PRM_PREFIX}{parts.path}"
