"""What stands between the network and ``npformer serve``'s routes: the ``Host`` allowlist, the API
key, the JSON content type (an ASGI middleware), CORS (Starlette's), and a deadline for a
request's headers (a uvicorn protocol).

Why each: a page in the user's browser may POST to a server on localhost. A ``text/plain`` body is
a "simple" cross-origin request that the browser sends without asking first, so JSON routes take
``application/json`` only (415 otherwise); a DNS-rebinding page reaches the server under its own
host name, so only the allowed ``Host`` names are answered (400 otherwise; by default the loopback
names when the server is bound to the loopback); ``--api-key`` makes every route but ``/health``
need ``Authorization: Bearer KEY`` (401 otherwise), compared in constant time. TEI has the same
``--api-key`` and ``--cors-allow-origin`` flags.
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass

from starlette.middleware.cors import CORSMiddleware

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

LOOPBACK = ("127.0.0.1", "localhost", "::1")
OPEN_PATHS = ("/health",)  # answered without the API key (load balancers' probes)
WANTED = frozenset((b"host", b"authorization", b"content-type"))


@dataclass
class Access:
    """Who may call the server: ``api_key`` (None: anyone), ``allowed_hosts`` (``Host`` names; None:
    any) and ``cors_allow_origin`` (origins whose pages may read the answers, ``*`` for all; empty:
    no CORS headers, so browsers keep other origins' pages from reading answers)."""

    api_key: str | None = None
    allowed_hosts: tuple[str, ...] | None = LOOPBACK
    cors_allow_origin: tuple[str, ...] = ()

    def wrap(self, app):
        """``app`` behind the checks: Host first, then CORS (which answers preflight requests), then
        the API key and the content type."""
        inner = Guard(app, api_key=self.api_key, json_only=True)
        if self.cors_allow_origin:
            inner = CORSMiddleware(
                inner,
                allow_origins=list(self.cors_allow_origin),
                allow_methods=["GET", "POST"],
                allow_headers=["authorization", "content-type"],
                max_age=600,
            )
        return Guard(inner, allowed_hosts=self.allowed_hosts)


def loopback_hosts(host: str) -> tuple[str, ...] | None:
    """The default ``--allowed-hosts``: the loopback names when ``host`` is a loopback address, else
    None (no ``Host`` check: a server bound to a network address is reached under names it cannot know)."""
    return LOOPBACK if host in LOOPBACK or host.startswith("127.") else None


def _host_name(value: str) -> str:
    """``Host`` header -> the name without its port (``[::1]:8080`` -> ``::1``)."""
    if value.startswith("["):
        return value[1:].split("]", 1)[0]
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class Guard:
    """ASGI middleware. ``allowed_hosts`` (names, or None for any) is checked first; then, unless
    the path is ``/health``, ``api_key`` (if set) and, for ``POST``, the ``application/json`` type.
    A refusal is TEI's error body with 400, 401 or 415."""

    def __init__(self, app, *, allowed_hosts: tuple[str, ...] | None = None, api_key: str | None = None, json_only: bool = False):
        self.app, self.api_key, self.json_only = app, api_key, json_only
        self.allowed_hosts = None if allowed_hosts is None else {h.lower() for h in allowed_hosts}
        self._expected = f"Bearer {api_key}".encode() if api_key else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {}
        for name, value in scope["headers"]:
            if name in WANTED and name not in headers:
                headers[name] = value
        refusal = self.refusal(scope, headers)
        if refusal is None:
            return await self.app(scope, receive, send)
        status, message, error_type, extra = refusal
        body = json.dumps({"error": message, "error_type": error_type}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def refusal(self, scope, headers: dict) -> tuple[int, str, str, list] | None:
        if self.allowed_hosts is not None:
            host = _host_name(headers.get(b"host", b"").decode("latin-1").strip().lower())
            if host not in self.allowed_hosts:
                return 400, f"host {host!r} is not served here (--allowed-hosts)", "Validation", []
        if scope["path"] in OPEN_PATHS:
            return None
        if self._expected is not None and scope["method"] != "OPTIONS":
            given = headers.get(b"authorization", b"")
            if not hmac.compare_digest(given, self._expected):
                return (
                    401,
                    "missing or wrong API key: send Authorization: Bearer KEY",
                    "Unauthorized",
                    [(b"www-authenticate", b"Bearer")],
                )
        if self.json_only and scope["method"] == "POST":
            media_type = headers.get(b"content-type", b"").split(b";", 1)[0].strip().lower()
            if media_type != b"application/json":
                shown = media_type.decode("latin-1") or "none"
                return 415, f"the request body must be Content-Type: application/json, got {shown}", "UnsupportedMediaType", []
        return None


class HeaderDeadlineProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline on a request's headers: a connection whose
    request line and headers are not complete ``read_timeout`` seconds after it opened (or after
    its next request began) is closed, so slow-header clients cannot hold connections open. The
    body's own deadline is the application's (408)."""

    read_timeout = 30.0
    _deadline = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None:
            self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._deadline = self.loop.call_later(self.read_timeout, self._too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()


def header_deadline_protocol(read_timeout: float) -> type[HeaderDeadlineProtocol]:
    """The protocol class for uvicorn's ``http=`` with this deadline (seconds)."""
    return type("HeaderDeadlineProtocol", (HeaderDeadlineProtocol,), {"read_timeout": float(read_timeout)})
