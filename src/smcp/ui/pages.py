"""Login, consent and error pages of the authorization server.

Plain HTML with every value escaped, no scripts, a restrictive CSP, and no framing.
Forms carry the signed authorization request and a CSRF token that must match a
cookie; nothing here takes a "next" URL, so there is nothing to redirect openly.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from urllib.parse import urlsplit

from starlette.responses import HTMLResponse

SECURITY_HEADERS = {
    # No scripts at all; inline styles only. frame-ancestors stops clickjacking of consent.
    "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
}

_STYLE = """
body{font-family:system-ui,sans-serif;background:#f5f5f7;color:#1d1d1f;margin:0}
main{max-width:28rem;margin:4rem auto;background:#fff;border-radius:12px;padding:2rem;box-shadow:0 1px 4px #0002}
h1{font-size:1.3rem;margin-top:0}dl{display:grid;grid-template-columns:max-content 1fr;gap:.4rem 1rem}
dt{color:#666}dd{margin:0;word-break:break-all}label{display:block;margin:.8rem 0 .2rem}
input[type=text],input[type=password]{width:100%;padding:.5rem;box-sizing:border-box}
.row{display:flex;gap:.8rem;margin-top:1.4rem}button{padding:.6rem 1.2rem;border-radius:8px;border:1px solid #888;cursor:pointer}
button.primary{background:#0a66c2;color:#fff;border-color:#0a66c2}.warn{background:#fff4e5;padding:.6rem;border-radius:8px}
.error{background:#fdecea;padding:.6rem;border-radius:8px}code{font-size:.9em}
.or{color:#666;text-align:center;margin:1.2rem 0 0}
"""


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    html = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)} · SMCP</title><style>{_STYLE}</style></head>"
        f"<body><main>{body}</main></body></html>"
    )
    return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)


@dataclass(frozen=True, slots=True)
class RequestView:
    """What the pages show about an authorization request."""

    client_name: str
    client_id: str
    redirect_uri: str
    tenant: str
    server: str
    resource: str
    scopes: tuple[str, ...]
    # The upstream OpenID provider's display name, when upstream login is configured.
    upstream_login: str | None = None


_SCOPE_TEXT = {
    "mcp": "use this MCP server's tools, resources and prompts as you",
    "offline_access": "stay connected after you close the session (refresh tokens)",
}


def _hidden(request_token: str, csrf: str) -> str:
    return (
        f'<input type=hidden name=request value="{escape(request_token)}">'
        f'<input type=hidden name=csrf value="{escape(csrf)}">'
    )


def _summary(view: RequestView) -> str:
    host = urlsplit(view.redirect_uri).hostname or view.redirect_uri
    return (
        "<dl>"
        f"<dt>Application</dt><dd>{escape(view.client_name)}</dd>"
        f"<dt>Client ID</dt><dd><code>{escape(view.client_id)}</code></dd>"
        f"<dt>Returns to</dt><dd><code>{escape(host)}</code></dd>"
        f"<dt>Tenant</dt><dd>{escape(view.tenant)}</dd>"
        f"<dt>Server</dt><dd>{escape(view.server)}<br><code>{escape(view.resource)}</code></dd>"
        "</dl>"
    )


def login_page(view: RequestView, request_token: str, csrf: str, *, error: str | None = None, status: int = 200) -> HTMLResponse:
    err = f'<p class=error role=alert>{escape(error)}</p>' if error else ""
    body = (
        f"<h1>Sign in to SMCP</h1><p>{escape(view.client_name)} wants to connect to "
        f"<b>{escape(view.tenant)}/{escape(view.server)}</b>.</p>{err}{_upstream(view, request_token, csrf)}"
        '<form method=post action="/oauth/login">'
        f"{_hidden(request_token, csrf)}"
        '<label for=u>User name</label><input id=u type=text name=username autocomplete=username required autofocus>'
        '<label for=p>Password</label><input id=p type=password name=password autocomplete=current-password required>'
        '<div class=row><button class=primary type=submit>Sign in</button></div></form>'
    )
    return _page("Sign in", body, status)


def _upstream(view: RequestView, request_token: str, csrf: str) -> str:
    # A form, not a link: starting an upstream login takes the same CSRF proof as the
    # password form, so another site cannot start one in the user's name.
    if not view.upstream_login:
        return ""
    return (
        '<form method=post action="/oauth/oidc/start">'
        f"{_hidden(request_token, csrf)}"
        f'<div class=row><button class=primary type=submit>Sign in with {escape(view.upstream_login)}</button></div>'
        "</form><p class=or>or with a user name and password</p>"
    )


def _is_loopback(uri: str) -> bool:
    host = (urlsplit(uri).hostname or "").lower()
    return host in ("localhost", "127.0.0.1", "::1") or host.startswith("127.")


def consent_page(view: RequestView, user: str, request_token: str, csrf: str) -> HTMLResponse:
    scopes = "".join(f"<li><code>{escape(s)}</code>: {escape(_SCOPE_TEXT.get(s, s))}</li>" for s in view.scopes)
    warn = ""
    if _is_loopback(view.redirect_uri):
        warn = (
            "<p class=warn>This application returns to a program on <b>this computer</b> "
            f"(<code>{escape(view.redirect_uri)}</code>). Allow it only if you just started it yourself.</p>"
        )
    body = (
        f"<h1>Allow {escape(view.client_name)}?</h1>"
        f"<p>Signed in as <b>{escape(user)}</b>.</p>{_summary(view)}"
        f"<p>It will be able to:</p><ul>{scopes}</ul>{warn}"
        '<form method=post action="/oauth/consent">'
        f"{_hidden(request_token, csrf)}"
        '<div class=row><button class=primary type=submit name=decision value=approve>Allow</button>'
        '<button type=submit name=decision value=deny>Deny</button></div></form>'
    )
    return _page("Allow access", body)


def error_page(title: str, message: str, status: int = 400) -> HTMLResponse:
    body = f"<h1>{escape(title)}</h1><p class=error>{escape(message)}</p><p>You can close this window.</p>"
    return _page(title, body, status)
