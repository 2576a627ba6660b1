"""The OAuth error answer (RFC 6749 §5.2) and the headers every OAuth endpoint sends."""

from __future__ import annotations

from starlette.responses import JSONResponse

# Browser-based MCP clients call the metadata, token, revocation and registration
# endpoints cross-origin; none of them relies on cookies.
CORS = {
    "access-control-allow-origin": "*",
    "access-control-allow-methods": "GET, POST, OPTIONS",
    "access-control-allow-headers": "authorization, content-type, mcp-protocol-version",
    "access-control-max-age": "600",
}
NO_STORE = {"cache-control": "no-store", "pragma": "no-cache"}


class OAuthError(Exception):
    def __init__(self, error: str, description: str, status: int = 400, headers: dict[str, str] | None = None) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        return JSONResponse(
            {"error": self.error, "error_description": self.description},
            status_code=self.status,
            headers={**CORS, **NO_STORE, **self.headers},
        )
