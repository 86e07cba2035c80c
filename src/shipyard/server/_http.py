"""The HTTP/1.1 protocol under uvicorn, with a hard limit on the request line plus headers.

httptools buffers a header until it is complete, so a client could grow the server's memory
with one endless header line. The limit is applied to the raw bytes as they arrive, before
the parser buffers them: past ``max_header_bytes`` the client gets 431 with the JSON error
body, and the connection is closed.

Imports: errors, the server's errors table, uvicorn.
"""

from __future__ import annotations

import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from shipyard.errors import HeadersTooLarge
from shipyard.server.errors import error_body

__all__ = ["limited_http_protocol"]

logger = logging.getLogger("shipyard.server")

_END = b"\r\n\r\n"


class _LimitedHttpTools(HttpToolsProtocol):
    max_header_bytes = 64 * 1024

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True  # the bytes that arrive belong to a request line or headers
        self._head_bytes = 0
        self._tail = b""  # the last 3 bytes seen, for a CRLFCRLF split across reads

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            window = self._tail + data
            end = window.find(_END)
            size = self._head_bytes + (end + len(_END) - len(self._tail) if end >= 0 else len(data))
            if size > self.max_header_bytes:
                self._refuse(size)
                return
            self._head_bytes = size
            self._tail = window[-3:]
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head, self._head_bytes, self._tail = True, 0, b""

    def _refuse(self, size: int) -> None:
        exc = HeadersTooLarge(
            f"The request line and headers must be at most {self.max_header_bytes} bytes. "
            f"Got at least {size} instead.",
            hint="Send large values in the body, not in headers or the URL.",
        )
        client = self.client[0] if self.client else "-"
        logger.warning("Refused a request from %s: %s", client, exc.message)
        status, body, _ = error_body(exc, "-")
        self.transport.write(
            b"HTTP/1.1 %d Request Header Fields Too Large\r\n"
            b"content-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (status, len(body), body)
        )
        self.transport.close()
        self._in_head = False


def limited_http_protocol(max_header_bytes: int) -> type[HttpToolsProtocol]:
    """The httptools protocol of uvicorn, refusing heads over ``max_header_bytes`` with 431."""
    return type("LimitedHttpTools", (_LimitedHttpTools,), {"max_header_bytes": max_header_bytes})
