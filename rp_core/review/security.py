"""The review server's guard: a random token on every request, loopback host names, strict headers.

The token travels in the URL the command prints (`?token=`) and, from the page's own scripts, in the
`X-RP-Token` header. No cookie is set: browsers share cookies between every port of 127.0.0.1, so a
cookie would let any other local page act on the review. The Host check stops DNS rebinding, the
headers stop the page from being framed, from loading anything but its own files, and from leaking
the token in a Referer.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

TOKEN_HEADER = "x-rp-token"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost")

#: Sent with every answer, allowed or not.
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        b"form-action 'none'; frame-ancestors 'none'; base-uri 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
    (b"cross-origin-resource-policy", b"same-origin"),
)


def new_token() -> str:
    """A fresh unguessable token (192 bits, URL-safe)."""
    return secrets.token_urlsafe(24)


def request_token(scope: Scope) -> str:
    """The token a request carries: the `X-RP-Token` header, else the `token` query parameter."""
    for name, value in scope.get("headers", ()):
        if name == TOKEN_HEADER.encode():
            return bytes(value).decode("latin-1")
    query = parse_qs(bytes(scope.get("query_string", b"")).decode("latin-1"))
    return (query.get("token") or [""])[0]


def host_allowed(scope: Scope, port: int | None) -> bool:
    """Whether the Host header names this machine's loopback (a rebinding attacker's name is refused)."""
    host = next((bytes(v).decode("latin-1") for k, v in scope.get("headers", ()) if k == b"host"), "")
    name, _, given_port = host.rpartition(":") if host.count(":") == 1 else (host, "", "")
    if port is not None and given_port and given_port != str(port):
        return False
    return name in LOOPBACK_HOSTS


class TokenGuard:
    """ASGI middleware: 403 without the token, 400 for a foreign Host, security headers on every answer."""

    def __init__(self, app: ASGIApp, token: str, port: int | None = None) -> None:
        self.app, self.token, self.port = app, token, port

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        if not host_allowed(scope, self.port):
            await _plain(send_with_headers, 400, "This review server answers only on 127.0.0.1.")
        elif not hmac.compare_digest(request_token(scope).encode(), self.token.encode()):
            await _plain(send_with_headers, 403, "Forbidden: open the address with its token that `rp review` printed.")
        else:
            await self.app(scope, receive, send_with_headers)


async def _plain(send: Send, status: int, text: str) -> None:
    body = text.encode()
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
