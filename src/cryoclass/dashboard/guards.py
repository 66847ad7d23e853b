"""ASGI middleware guarding the dashboard: the Host header (DNS rebinding), the Origin of writes
(cross-site requests), the size of request bodies, and framing (clickjacking)."""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Largest request body accepted (bytes); the dashboard's own bodies are a few dozen bytes.
MAX_BODY_BYTES = 64 * 1024
#: Sent with every response: no other site may show the dashboard in a frame.
FRAME_HEADERS = [
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
]
WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def host_name(host_header: str) -> str:
    """The host of a Host header without its port: 'a:80' -> 'a', '[::1]:80' -> '[::1]'."""
    h = host_header.strip().lower()
    if h.startswith("["):
        return h[: h.find("]") + 1] if "]" in h else h
    return h.split(":")[0]


def _bracketed(host: str) -> str:
    """An allowed host as a Host header names it: IPv6 addresses in brackets."""
    h = host.strip().lower()
    return f"[{h}]" if ":" in h and not h.startswith("[") else host_name(h)


def _header(scope: Scope, name: bytes) -> str:
    for k, v in scope.get("headers", []):
        if k == name:
            return v.decode("latin-1")
    return ""


class Guards:
    """Refuses a Host not in ``allowed_hosts`` (400; None: any), a write whose Origin is
    another site (403), a body over ``max_body`` bytes (413); adds FRAME_HEADERS to every
    response."""

    def __init__(
        self, app: ASGIApp, allowed_hosts: list[str] | None = None, max_body: int = MAX_BODY_BYTES
    ) -> None:
        self.app = app
        self.allowed = None if allowed_hosts is None else {_bracketed(h) for h in allowed_hosts}
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_framed(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": list(message.get("headers", [])) + FRAME_HEADERS}
            await send(message)

        host = _header(scope, b"host")
        problem = None
        if self.allowed is not None and host_name(host) not in self.allowed:
            problem = (400, "Invalid host header")
        elif scope["method"] in WRITES:
            origin = _header(scope, b"origin")
            if origin and urlsplit(origin).netloc.lower() != host.strip().lower():
                problem = (403, "cross-site request refused (Origin does not match Host)")
            length = _header(scope, b"content-length")
            if length.isdigit() and int(length) > self.max_body:
                problem = (413, f"request body too large (over {self.max_body} bytes)")
        if problem is not None:
            await PlainTextResponse(problem[1], status_code=problem[0])(scope, receive, send_framed)
            return
        await self.app(scope, self._capped(receive), send_framed)

    def _capped(self, receive: Receive) -> Receive:
        """receive() that stops a body (chunked, without Content-Length) past max_body."""
        seen = 0

        async def wrapped() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise BodyTooLarge(self.max_body)
            return message

        return wrapped


class BodyTooLarge(ValueError):
    """A request body past the cap (answered 413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body too large (over {limit} bytes)")
