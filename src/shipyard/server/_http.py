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
* **The infer fast path.** ``POST /v2/models/{name}[/versions/{v}]/infer`` is answered
  here, without ASGI, when the server has a :class:`FastRoute` (the public app): no
  scope dict, no task per request, no message dicts, one write of the whole answer.
  The token is checked as AuthMiddleware would (``FastRoute.admit``). The request is
  decoded, run and encoded inside the parser's message-complete callback when its model
  runs inline; a batching model's request is queued (no task) and answered from its
  future when its batch, run at the end of the loop turn, is done. Anything else (other
  routes, ``Expect: 100-continue``, escapes or a query in the path, a request behind an
  unanswered one on the same connection) takes the ordinary ASGI path.
* **Keep-alive** is timed by the same sweep (an idle deadline, no loop timer per request).
* **Malformed requests** (bad framing, both ``Content-Length`` and ``Transfer-Encoding``,
  duplicate ``Content-Length``, obs-fold) are refused by httptools; the client gets 400
  with the JSON error body (``malformed-request``) instead of uvicorn's plain text.

Imports: errors, the server's errors table, uvicorn (its httptools protocol's internals).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from shipyard.errors import HeadersTooLarge, MalformedRequest, RequestTimeout, ShipyardError
from shipyard.server.errors import body_too_large, error_body

__all__ = ["FastRoute", "Reply", "limited_http_protocol"]

logger = logging.getLogger("shipyard.server")

_END = b"\r\n\r\n"
_REASONS = {400: b"Bad Request", 408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


Reply = tuple[int, list[tuple[bytes, bytes]], bytes]
"""An answer: status, headers (besides content-length and x-request-id), body."""


class FastCall(Protocol):
    request_id: str
    status: int

    def bind(self) -> None: ...

    def unbind(self) -> None: ...


class FastLater(Protocol):
    """An answer waiting for its batch (``app.Later``)."""

    future: asyncio.Future[Any]

    def finish(self, future: asyncio.Future[Any]) -> Reply: ...


class FastRoute(Protocol):
    """What the fast path needs of the app (``InferenceApp`` and its ``InferCall``)."""

    max_body: int

    def accepts(self, target: bytes) -> bool: ...

    def call(self, path: str, headers: list[tuple[bytes, bytes]]) -> FastCall: ...

    def admit(self, call: Any, client: tuple[str, int] | None) -> Reply | None: ...

    def answer(self, call: Any, body: bytes) -> Reply | FastLater: ...

    def failed(self, call: Any, exc: BaseException) -> Reply: ...

    def finish(self, call: Any, client: tuple[str, int] | None) -> None: ...


class _Noop:
    __slots__ = ()

    def set(self) -> None:
        pass


_NOOP = _Noop()


class _FastCycle:
    """One fast-path request on a connection.

    It stands in for uvicorn's request cycle where the protocol's own code looks at
    ``self.cycle`` (pipelining, shutdown, disconnects).
    """

    __slots__ = ("body", "call", "disconnected", "keep_alive", "response_complete", "size")

    message_event = _NOOP
    response_started = False

    def __init__(self, call: FastCall, keep_alive: bool) -> None:
        self.call = call
        self.keep_alive = keep_alive
        self.body: list[bytes] = []
        self.size = 0
        self.response_complete = False
        self.disconnected = False


def _internal(call: FastCall, exc: BaseException) -> Reply:
    """The generic answer to an error that escaped the app (logged, never shown)."""
    status, body, headers = error_body(exc, call.request_id)
    return status, [(b"content-type", b"application/json"), *headers], body


class _LimitedHttpTools(HttpToolsProtocol):
    max_header_bytes = 64 * 1024
    client_timeout_s = 10.0
    # per server (each gets its own subclass): its open connections and their sweep
    _live: set[_LimitedHttpTools] = set()
    _sweeper: asyncio.TimerHandle | None = None
    fast: FastRoute | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True  # the bytes that arrive belong to a request line or headers
        self._head_bytes = 0
        self._tail = b""  # the last 3 bytes seen, for a CRLFCRLF split across reads
        self._deadline: float | None = None  # loop time: head deadline or body stall
        self._idle_until: float | None = None  # loop time: keep-alive deadline

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
        for conn in [c for c in cls._live if c._idle_until is not None and c._idle_until <= now]:
            conn._idle_until = None
            conn.timeout_keep_alive_handler()
        cls._sweeper = loop.call_later(cls._sweep_s(), cls._sweep, loop) if cls._live else None

    def data_received(self, data: bytes) -> None:
        self._idle_until = None
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

    def on_message_begin(self) -> None:
        # uvicorn builds the ASGI scope here; it is built in on_headers_complete instead,
        # only for the requests the fast path leaves to ASGI
        self.url = b""
        self.expect_100_continue = False
        self.headers = []

    def _asgi_scope(self) -> None:
        url, expect, headers = self.url, self.expect_100_continue, self.headers
        super().on_message_begin()
        self.url, self.expect_100_continue = url, expect
        self.headers = self.scope["headers"] = headers

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._arm()  # from now on: the longest the body may stall
        fast, cycle, parser = self.fast, self.cycle, self.parser
        if (
            fast is not None
            and (cycle is None or cycle.response_complete)
            and not self.expect_100_continue
            and parser.get_method() == b"POST"
            and fast.accepts(self.url)
            and not parser.should_upgrade()
        ):
            call = fast.call(self.url.decode("ascii"), self.headers)
            keep_alive = parser.should_keep_alive() and parser.get_http_version() != "1.0"
            self.cycle = fast_cycle = _FastCycle(call, keep_alive)  # type: ignore[assignment]
            refused = fast.admit(call, self.client)
            if refused is not None:
                fast_cycle.keep_alive = False  # its body is not read: the connection ends
                self._reply(fast_cycle, refused)
            return
        self._asgi_scope()
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        cycle: Any = self.cycle
        if type(cycle) is not _FastCycle:
            super().on_body(body)
            return
        if cycle.response_complete:
            return
        cycle.size += len(body)
        fast = self.fast
        assert fast is not None
        if cycle.size > fast.max_body:
            cycle.keep_alive = False
            self._reply(cycle, fast.failed(cycle.call, body_too_large(fast.max_body)))
            return
        cycle.body.append(body)

    def on_message_complete(self) -> None:
        self._disarm()
        cycle: Any = self.cycle
        if type(cycle) is not _FastCycle:
            super().on_message_complete()
        elif not cycle.response_complete:
            self._answer(cycle)
        self._in_head, self._head_bytes, self._tail = True, 0, b""

    def _answer(self, cycle: _FastCycle) -> None:
        fast = self.fast
        assert fast is not None
        parts = cycle.body
        body = parts[0] if len(parts) == 1 else b"".join(parts)
        cycle.body = []
        call = cycle.call
        call.bind()
        try:
            try:
                reply = fast.answer(call, body)
            except Exception as exc:  # pragma: no cover - answer() turns errors into answers
                reply = _internal(call, exc)
        finally:
            call.unbind()
        if isinstance(reply, tuple):
            self._reply(cycle, reply)
        else:  # it waits for its batch: answered from the batch's future (no task)
            reply.future.add_done_callback(lambda f: self._answered(cycle, reply, f))

    def _answered(self, cycle: _FastCycle, later: FastLater, future: asyncio.Future[Any]) -> None:
        try:
            reply = later.finish(future)
        except Exception as exc:  # pragma: no cover - finish() turns errors into answers
            reply = _internal(cycle.call, exc)
        self._reply(cycle, reply)

    def _reply(self, cycle: _FastCycle, reply: Reply) -> None:
        """Write the whole answer at once, then what uvicorn does after a response."""
        cycle.response_complete = True
        call = cycle.call
        fast = self.fast
        assert fast is not None
        if self.transport.is_closing():  # the client went away: nothing to write to
            fast.finish(call, self.client)
            return
        status, headers, payload = reply
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += (name, b": ", value, b"\r\n")
        for name, value in headers:
            head += (name, b": ", value, b"\r\n")
        head.append(
            b"content-length: %d\r\nx-request-id: %s\r\n" % (len(payload), call.request_id.encode())
        )
        if not cycle.keep_alive:
            head.append(b"connection: close\r\n")
        head += (b"\r\n", payload)
        self.transport.write(b"".join(head))
        call.status = status
        fast.finish(call, self.client)
        if not cycle.keep_alive:
            self.transport.close()
        self.on_response_complete()

    def on_response_complete(self) -> None:
        # uvicorn's, with the keep-alive timeout as a deadline the sweep checks: arming a
        # loop timer per response (and cancelling it on the next request) costs more
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self._unset_keepalive_if_required()
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
        else:
            self._idle_until = self.loop.time() + self.timeout_keep_alive

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
    max_header_bytes: int, client_timeout_s: float = 10.0, fast: FastRoute | None = None
) -> type[HttpToolsProtocol]:
    """The httptools protocol of uvicorn, with the head size and client time limits.

    With ``fast``, infer calls take the fast path (see the module docstring).
    """
    return type(
        "LimitedHttpTools",
        (_LimitedHttpTools,),
        {
            "max_header_bytes": max_header_bytes,
            "client_timeout_s": client_timeout_s,
            "fast": fast,
            "_live": set(),
            "_sweeper": None,
        },
    )
