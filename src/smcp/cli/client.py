"""HTTP client for the management API, raising two errors the CLI knows how to print."""

from __future__ import annotations

from typing import Any

import httpx

API_PREFIX = "/api/v1"


class ApiError(Exception):
    """The API answered with an error: its status and the error body's fields."""

    def __init__(self, status: int, code: str, message: str, detail: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.detail = detail


class Unreachable(Exception):
    """Nothing answered at the URL (or the connection broke mid-way)."""

    def __init__(self, url: str, reason: str, *, refused: bool) -> None:
        super().__init__(reason)
        self.url = url
        self.reason = reason
        self.refused = refused


class Client:
    def __init__(self, url: str, token: str | None, *, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        headers = {"Accept": "application/json", "User-Agent": "smcp-cli"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(base_url=self.url + API_PREFIX, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        content: bytes | None = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | None | httpx.Timeout = None,
    ) -> Any:
        """Send one request; the decoded JSON body (None for 204) or ApiError/Unreachable."""
        kwargs: dict[str, Any] = {"json": json, "content": content, "params": params, "headers": headers}
        if timeout is not None:
            kwargs["timeout"] = timeout
        try:
            response = self._http.request(method, path, **kwargs)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise Unreachable(self.url, str(exc), refused=True) from exc
        except httpx.TransportError as exc:
            raise Unreachable(self.url, f"{type(exc).__name__}: {exc}", refused=False) from exc
        if response.is_success and not response.content:
            return None
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.is_success:
            return body
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            raise ApiError(
                response.status_code,
                str(error.get("code", "error")),
                str(error.get("message", response.reason_phrase)),
                error.get("detail"),
            )
        # Not our API's shape (a proxy, or the wrong URL): say what came back.
        snippet = response.text[:200].strip()
        message = f"HTTP {response.status_code} {response.reason_phrase}"
        raise ApiError(response.status_code, "http_error", message, snippet or None)
