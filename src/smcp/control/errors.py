"""One JSON error shape for every failure: {"error": {"code", "message", "detail"}}.

Domain errors carry their own HTTP status; the few that only the API raises live here.
Nothing reaches the client as a stack trace: unexpected errors become a bare 500.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute
from starlette.types import Scope

from smcp.domain import SmcpError

log = logging.getLogger(__name__)

ADMIN_REALM = 'Bearer realm="smcp-admin"'


class Unauthorized(SmcpError):
    code = "unauthorized"
    status = 401


class Forbidden(SmcpError):
    code = "forbidden"
    status = 403


class PayloadTooLarge(SmcpError):
    code = "payload_too_large"
    status = 413


class UnsupportedMediaType(SmcpError):
    code = "unsupported_media_type"
    status = 415


class BadRequest(SmcpError):
    code = "bad_request"
    status = 400


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
}


def error_response(
    status: int, code: str, message: str, detail: Any = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    try:
        detail = jsonable_encoder(detail)
    except Exception:  # a detail we cannot encode must not turn a 4xx into a 500
        detail = str(detail)
    body = {"error": {"code": code, "message": message, "detail": detail}}
    return JSONResponse(body, status_code=status, headers=headers)


def _validation_detail(exc: RequestValidationError) -> list[dict[str, Any]]:
    # Only location, message and type: pydantic's ctx/input may hold objects or secrets.
    return [
        {"loc": list(err.get("loc", ())), "msg": err.get("msg", ""), "type": err.get("type", "")}
        for err in exc.errors()
    ]


class AllowedMethods:
    """The methods a path answers to, for the Allow header of a 405.

    Starlette's router names only the methods of the first route whose path matched,
    while a path such as /tenants has one route per method (GET and POST).
    """

    def __init__(self, routes: Iterable[BaseRoute]) -> None:
        self._routes: list[tuple[re.Pattern[str], frozenset[str]]] = []
        for route in routes:
            regex, methods = getattr(route, "path_regex", None), getattr(route, "methods", None)
            if regex is not None and methods:
                self._routes.append((regex, frozenset(methods)))

    def __call__(self, scope: Scope) -> set[str]:
        path: str = scope["path"]
        # Inside a Mount the path still carries the mount's prefix (Starlette 1.x).
        root = scope.get("root_path", "")
        if root and path.startswith(root + "/"):
            path = path[len(root):]
        return {m for regex, methods in self._routes if regex.match(path) for m in methods}


def install_error_handlers(app: FastAPI, routes: Iterable[BaseRoute] = ()) -> None:
    """`routes` are the app's routes that Allow headers must account for (the routes of
    its included routers, which FastAPI does not list flat in app.routes)."""
    allowed = AllowedMethods(routes)

    @app.exception_handler(SmcpError)
    async def _smcp_error(_request: Request, exc: SmcpError) -> JSONResponse:
        headers = {"WWW-Authenticate": ADMIN_REALM} if exc.status == 401 else None
        return error_response(exc.status, exc.code, exc.message, exc.detail, headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, "validation_error", "request is invalid", _validation_detail(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "error")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            named = {m.strip() for m in headers.pop("Allow", "").split(",") if m.strip()}
            headers["Allow"] = ", ".join(sorted(named | allowed(request.scope)))
        return error_response(exc.status_code, code, message, headers=headers or None)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal", "internal error")
