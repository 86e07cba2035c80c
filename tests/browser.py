"""Open a local HTML file in headless Chromium and report what a user's browser would see.

Generic test helper (used for every self-contained HTML report): it drives Debian's
``chromium`` over the DevTools protocol on a pipe (``--remote-debugging-pipe``: no port,
no websocket library), and records every network request, every console error and
uncaught exception, the values of JavaScript expressions evaluated in the loaded page,
and a PNG screenshot.

    from tests.browser import load_page, require_chromium

    page = load_page(path, expressions={"points": "document.querySelectorAll('circle').length"})
    assert page.requests == [] and page.console_errors == []
    assert page.values["points"] == 5 and not page.screenshot_blank()

``make test`` installs chromium (scripts/install_chromium.sh); where it is absent the tests
that need it are skipped through :func:`require_chromium`.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import struct
import subprocess
import tempfile
import threading
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

__all__ = ["PageReport", "chromium_path", "decode_png", "load_page", "require_chromium"]

_NAMES = ("chromium", "chromium-browser", "google-chrome", "chrome")


def chromium_path() -> str | None:
    """The chromium executable, or None when none is installed."""
    for name in _NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def require_chromium() -> str:
    """The chromium executable; skips the calling test when there is none."""
    found = chromium_path()
    if found is None:
        pytest.skip("chromium is not installed (run scripts/install_chromium.sh)")
    return found


@dataclass
class PageReport:
    """What loading a page produced.

    Attributes:
        url: The page's file URL.
        requests: URLs the page asked for beyond its own document (should be empty for a
            self-contained page).
        console_errors: Console errors, failed loads and uncaught exceptions.
        values: Result of each expression passed to :func:`load_page`, by key.
        screenshot: The viewport as PNG bytes.
    """

    url: str
    requests: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)
    screenshot: bytes = b""

    def screenshot_colors(self) -> int:
        """How many distinct colours the screenshot holds (1 means blank)."""
        _, _, channels, pixels = decode_png(self.screenshot)
        seen = {pixels[i : i + channels] for i in range(0, len(pixels), channels * 7)}
        return len(seen)

    def screenshot_blank(self) -> bool:
        """True when the screenshot is one flat colour."""
        return self.screenshot_colors() <= 1


def decode_png(data: bytes) -> tuple[int, int, int, bytes]:
    """Decode an 8-bit, non-interlaced RGB/RGBA/grey PNG: (width, height, channels, pixels)."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG file")
    pos, idat = 8, b""
    width = height = channels = 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        chunk = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", chunk)
            if depth != 8 or interlace:
                raise ValueError("only 8-bit non-interlaced PNGs are supported")
            channels = {0: 1, 2: 3, 4: 2, 6: 4}[color]
        elif kind == b"IDAT":
            idat += chunk
    raw = zlib.decompress(idat)
    stride = width * channels
    out = bytearray(height * stride)
    prev = bytearray(stride)
    for row in range(height):
        start = row * (stride + 1)
        filt, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b = prev[i]
            c = prev[i - channels] if i >= channels else 0
            if filt == 1:
                line[i] = (line[i] + a) & 0xFF
            elif filt == 2:
                line[i] = (line[i] + b) & 0xFF
            elif filt == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif filt == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pred) & 0xFF
        out[row * stride : (row + 1) * stride] = line
        prev = line
    return width, height, channels, bytes(out)


class _Pipe:
    """The DevTools protocol over chromium's fds 3 (commands in) and 4 (replies out)."""

    def __init__(self, proc: subprocess.Popen[bytes], write_fd: int, read_fd: int) -> None:
        self.proc = proc
        self._w = write_fd
        self._r = read_fd
        self._next = 0
        self._buf = b""
        self.events: list[dict[str, Any]] = []
        self._replies: dict[int, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buf:
            if time.monotonic() > deadline:
                raise TimeoutError("chromium did not answer in time")
            chunk = os.read(self._r, 1 << 16)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self._buf += chunk
        raw, _, self._buf = self._buf.partition(b"\0")
        message: dict[str, Any] = json.loads(raw)
        return message

    def call(
        self, method: str, params: Mapping[str, Any] | None = None, *, session: str | None = None
    ) -> dict[str, Any]:
        self._next += 1
        ident = self._next
        msg: dict[str, Any] = {"id": ident, "method": method, "params": dict(params or {})}
        if session:
            msg["sessionId"] = session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + 30
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == ident:
                if "error" in reply:
                    raise RuntimeError(f"{method} failed: {reply['error']}")
                result: dict[str, Any] = reply.get("result", {})
                return result
            if "method" in reply:
                self.events.append(reply)

    def wait_for(self, method: str, timeout_s: float) -> None:
        if any(e["method"] == method for e in self.events):
            return
        deadline = time.monotonic() + timeout_s
        while True:
            event = self._read_message(deadline)
            if "method" in event:
                self.events.append(event)
                if event["method"] == method:
                    return


def _child_fds(read_cmd: int, write_out: int) -> None:
    os.dup2(read_cmd, 3)
    os.dup2(write_out, 4)


def load_page(
    path: Path,
    *,
    expressions: Mapping[str, str] | None = None,
    width: int = 1280,
    height: int = 1600,
    settle_s: float = 0.3,
    timeout_s: float = 30.0,
) -> PageReport:
    """Load ``path`` in headless chromium and report requests, errors, values, screenshot.

    Args:
        path: A local HTML file.
        expressions: JavaScript expressions evaluated in the page after load, by key; their
            JSON-able results land in ``PageReport.values``.
        width: Viewport width in CSS pixels.
        height: Viewport height in CSS pixels.
        settle_s: Time after the load event for late requests and errors to show up.
        timeout_s: Longest wait for the load event.
    """
    exe = require_chromium()
    url = path.resolve().as_uri()
    cmd_r, cmd_w = os.pipe()
    out_r, out_w = os.pipe()
    with tempfile.TemporaryDirectory(prefix="shipyard-chromium-") as profile:
        proc = subprocess.Popen(
            [
                exe,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--remote-debugging-pipe",
                f"--user-data-dir={profile}",
                f"--window-size={width},{height}",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=(3, 4),
            preexec_fn=lambda: _child_fds(cmd_r, out_w),
        )
        os.close(cmd_r)
        os.close(out_w)
        pipe = _Pipe(proc, cmd_w, out_r)
        try:
            return _drive(pipe, url, expressions or {}, width, height, settle_s, timeout_s)
        finally:
            with contextlib.suppress(RuntimeError, TimeoutError, OSError):
                pipe.call("Browser.close")
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            os.close(cmd_w)
            os.close(out_r)


def _drive(
    pipe: _Pipe,
    url: str,
    expressions: Mapping[str, str],
    width: int,
    height: int,
    settle_s: float,
    timeout_s: float,
) -> PageReport:
    target = pipe.call("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = pipe.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    for domain in ("Page", "Runtime", "Log", "Network"):
        pipe.call(f"{domain}.enable", session=session)
    pipe.call(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        session=session,
    )
    pipe.events.clear()
    pipe.call("Page.navigate", {"url": url}, session=session)
    pipe.wait_for("Page.loadEventFired", timeout_s)
    time.sleep(settle_s)
    report = PageReport(url=url)
    for key, expr in expressions.items():
        res = pipe.call(
            "Runtime.evaluate", {"expression": expr, "returnByValue": True}, session=session
        )
        if "exceptionDetails" in res:
            report.console_errors.append(f"evaluating {key!r}: {res['exceptionDetails']}")
        report.values[key] = res.get("result", {}).get("value")
    shot = pipe.call("Page.captureScreenshot", {"format": "png"}, session=session)
    report.screenshot = base64.b64decode(shot["data"])
    for event in pipe.events:
        method, params = event["method"], event.get("params", {})
        if method == "Network.requestWillBeSent":
            req_url = params.get("request", {}).get("url", "")
            if req_url != url:
                report.requests.append(req_url)
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            args = params.get("args", [])
            report.console_errors.append(" ".join(str(a.get("value", a)) for a in args))
        elif method == "Runtime.exceptionThrown":
            report.console_errors.append(str(params.get("exceptionDetails", {}).get("text")))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            report.console_errors.append(str(params["entry"].get("text")))
    return report
