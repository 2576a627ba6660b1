"""Errors every plane raises; the control API maps each to one HTTP status."""

from __future__ import annotations


class SmcpError(Exception):
    """Base error: `code` is a stable machine-readable name, `status` the HTTP status."""

    code = "error"
    status = 500

    def __init__(self, message: str, *, detail: object | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail


class NotFound(SmcpError):
    code = "not_found"
    status = 404


class Conflict(SmcpError):
    code = "conflict"
    status = 409


class InvalidSpec(SmcpError):
    """smcp.toml is missing, malformed or names something impossible."""

    code = "invalid_spec"
    status = 422


class InvalidBundle(SmcpError):
    """The uploaded bundle is not a safe, well-formed archive."""

    code = "invalid_bundle"
    status = 422


class BuildFailed(SmcpError):
    """The build step failed; `detail` carries the tail of its log."""

    code = "build_failed"
    status = 422
