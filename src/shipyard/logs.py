"""Logging set-up for entry points, and the contextvars every log record carries.

Library code only does ``logger = logging.getLogger(__name__)``; only entry points call
:func:`configure_logging`.

Imports: config.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from datetime import UTC, datetime

from shipyard.config import LoggingSettings

__all__ = [
    "configure_logging",
    "model_var",
    "request_id_var",
    "trace_id_from_traceparent",
    "trace_id_var",
    "version_var",
]

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
model_var: contextvars.ContextVar[str] = contextvars.ContextVar("model", default="-")
version_var: contextvars.ContextVar[str] = contextvars.ContextVar("version", default="-")
trace_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("trace_id", default="-")


def trace_id_from_traceparent(value: str) -> str | None:
    """The trace id of a W3C ``traceparent`` header (``00-<32 hex>-<16 hex>-<2 hex>``)."""
    parts = value.strip().split("-")
    if len(parts) != 4 or len(parts[1]) != 32 or parts[1] == "0" * 32:
        return None
    try:
        int(parts[1], 16)
    except ValueError:
        return None
    return parts[1].lower()


class ContextFilter(logging.Filter):
    """Adds request_id, model and version from contextvars to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        record.model = model_var.get()
        record.version = version_var.get()
        record.trace_id = trace_id_var.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
            "model": getattr(record, "model", "-"),
            "version": getattr(record, "version", "-"),
            "trace_id": getattr(record, "trace_id", "-"),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


TEXT_FORMAT = (
    "%(asctime)s %(levelname)s %(name)s "
    "[%(model)s:%(version)s %(request_id)s %(trace_id)s] %(message)s"
)


def configure_logging(settings: LoggingSettings | None = None) -> None:
    """Install one stderr handler on the ``shipyard`` logger (idempotent)."""
    settings = settings or LoggingSettings()
    root = logging.getLogger("shipyard")
    for handler in list(root.handlers):
        if getattr(handler, "_shipyard", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler._shipyard = True  # type: ignore[attr-defined]
    handler.addFilter(ContextFilter())
    handler.setFormatter(
        JsonFormatter() if settings.format == "json" else logging.Formatter(TEXT_FORMAT)
    )
    root.addHandler(handler)
    root.setLevel(settings.level)
    logging.getLogger("shipyard.access").disabled = not settings.access_log
