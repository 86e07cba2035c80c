"""The HTTP/1.1 protocol under uvicorn, with hard limits on what a client may hold.

* **Size of the head.** httptools buffers a header until it is complete, so a client could
  grow the server's memory with one endless header line. The limit is applied to the raw
  bytes as they arrive, before the parser buffers them: past ``max_header_bytes`` the
  client gets 431 with the JSON error body, and the connection is closed.
* **Time.** uvicorn arms no timer while a request is being received, so a client that
  dribbles its headers (slowloris), or declares a body and stops sending it, would hold
  its connection forever. Here the request line and headers must arrive within
  ``client_timeout_s`` of their first byte (or of the connection), and a body may not
  stall for longer than that between two reads: past it the client gets 408
  ``request-timeout`` and the connection is closed. A connection only notes its deadline
  (a float); one sweep per server checks them every quarter of the timeout. Arming and
  cancelling a loop timer three times per request cost about 5% of the throughput.
* **Malformed requests** (bad framing, both ``Content-Length`` and ``Transfer-Encoding``,
  duplicate ``Content-Length``, obs-fold) are refused by httptools; the client gets 400
  with the JSON error body (``malformed-request``) instead of uvicorn's plain text.

Imports: errors, the server's errors table, uvicorn.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from shipyard.errors import HeadersTooLarge, MalformedRequest, RequestTimeout, ShipyardError
from shipyard.server.errors import error_body

__all__ = ["limited_http_protocol"]

logger = logging.getLogger("shipyard.server")

_END = b"\r\n\r\n"
_REASONS = {400: b"Bad Request", 408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


class _LimitedHttpTools(HttpToolsProtocol):
    max_header_bytes = 64 * 1024
    client_timeout_s = 10.0
    # per server (each gets its own subclass): its open connections and their sweep
    _live: set[_LimitedHttpTools] = set()
    _sweeper: asyncio.TimerHandle | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True  # the bytes that arrive belong to a request line or headers
        self._head_bytes = 0
        self._tail = b""  # the last 3 bytes seen, for a CRLFCRLF split across reads
        self._deadline: float | None = None  # loop time: head deadline or body stall

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()  # a client that connects and sends nothing is timed out too
        cls = type(self)
        cls._live.add(self)
        if cls._sweeper is None:
            cls._sweeper = self.loop.call_later(cls._sweep_s(), cls._sweep, self.loop)

    def connection_lost(self, exc: Exception | None) -> None:
        self._deadline = None
        type(self)._live.discard(self)
        super().connection_lost(exc)

    @classmethod
    def _sweep_s(cls) -> float:
        return min(1.0, cls.client_timeout_s / 4)

    @classmethod
    def _sweep(cls, loop: asyncio.AbstractEventLoop) -> None:
        """Time out the connections past their deadline; run again while any are open."""
        now = loop.time()
        for conn in [c for c in cls._live if c._deadline is not None and c._deadline <= now]:
            conn._timed_out()
        cls._sweeper = loop.call_later(cls._sweep_s(), cls._sweep, loop) if cls._live else None

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            if self._deadline is None:
                self._arm()  # the deadline runs from the first byte of the head
            window = self._tail + data
            end = window.find(_END)
            size = self._head_bytes + (end + len(_END) - len(self._tail) if end >= 0 else len(data))
            if size > self.max_header_bytes:
                self._refuse(
                    HeadersTooLarge(
                        f"The request line and headers must be at most {self.max_header_bytes} "
                        f"bytes. Got at least {size} instead.",
                        hint="Send large values in the body, not in headers or the URL.",
                    )
                )
                return
            self._head_bytes = size
            self._tail = window[-3:]
        elif self._deadline is not None:
            self._arm()  # body bytes arrived: the stall timer starts again
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._arm()  # from now on: the longest the body may stall
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()
        self._in_head, self._head_bytes, self._tail = True, 0, b""

    def send_400_response(self, msg: str) -> None:
        self._refuse(
            MalformedRequest(
                "An HTTP request must be well-formed HTTP/1.1. Got one the parser refuses instead.",
                hint="Send one Content-Length or 'Transfer-Encoding: chunked', not both, "
                "and no folded header lines.",
            )
        )

    def _arm(self) -> None:
        self._deadline = self.loop.time() + self.client_timeout_s

    def _disarm(self) -> None:
        self._deadline = None

    def _timed_out(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if not self._in_head and self.flow.read_paused:  # pragma: no cover - we are the slow one
            self._arm()
            return
        what = "its request line and headers" if self._in_head else "the next part of its body"
        exc = RequestTimeout(
            f"A client must send {what} within {self.client_timeout_s:g} s. "
            "It did not: the connection is closed.",
            hint="Send the whole request promptly; slow links should use smaller requests.",
        )
        cycle = self.cycle
        if self._in_head or cycle is None or not cycle.response_started:
            self._refuse(exc)
        else:  # pragma: no cover - a response is already on its way: just hang up
            self.transport.close()

    def _refuse(self, exc: ShipyardError) -> None:
        client = self.client[0] if self.client else "-"
        logger.warning("Refused a request from %s: %s", client, exc.message)
        status, body, _ = error_body(exc, "-")
        self._disarm()
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (status, _REASONS[status], len(body), body)
        )
        self.transport.close()
        self._in_head = False
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True  # the app's next receive() sees http.disconnect
            self.cycle.message_event.set()


def limited_http_protocol(
    max_header_bytes: int, client_timeout_s: float = 10.0
) -> type[HttpToolsProtocol]:
    """The httptools protocol of uvicorn, with the head size and client time limits."""
    return type(
        "LimitedHttpTools",
        (_LimitedHttpTools,),
        {
            "max_header_bytes": max_header_bytes,
            "client_timeout_s": client_timeout_s,
            "_live": set(),
            "_sweeper": None,
        },
    )
