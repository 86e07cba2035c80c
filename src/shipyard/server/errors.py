"""THE table from ShipyardError to HTTP status, and the JSON error body every client reads.

Body: ``{"error": message, "code": stable-code, "hint": ..., "request_id": ...}``. ``error``
is what the Triton and TF Serving clients read. An exception that is not a ShipyardError
is our bug: the client gets a generic 500 with the request id; details go only to the log.

Imports: errors.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

import orjson

from shipyard import errors

__all__ = ["HTTP_STATUS", "body_too_large", "error_body", "status_for"]

logger = logging.getLogger(__name__)

#: Error class → HTTP status; the most specific class in the MRO wins.
HTTP_STATUS: dict[type[errors.ShipyardError], HTTPStatus] = {
    errors.Unauthenticated: HTTPStatus.UNAUTHORIZED,
    errors.Forbidden: HTTPStatus.FORBIDDEN,
    errors.RateLimited: HTTPStatus.TOO_MANY_REQUESTS,
    errors.NotFoundError: HTTPStatus.NOT_FOUND,
    errors.ConflictError: HTTPStatus.CONFLICT,
    errors.PayloadTooLarge: HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
    errors.HeadersTooLarge: HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
    errors.RequestTimeout: HTTPStatus.REQUEST_TIMEOUT,
    errors.InvalidInputError: HTTPStatus.BAD_REQUEST,
    errors.ConversionError: HTTPStatus.BAD_REQUEST,
    errors.ModelNotReady: HTTPStatus.SERVICE_UNAVAILABLE,
    errors.Overloaded: HTTPStatus.SERVICE_UNAVAILABLE,
    errors.CapacityExceeded: HTTPStatus.SERVICE_UNAVAILABLE,
    errors.RuntimeLoadError: HTTPStatus.SERVICE_UNAVAILABLE,
    errors.DeadlineExceeded: HTTPStatus.GATEWAY_TIMEOUT,
    errors.IntegrityError: HTTPStatus.SERVICE_UNAVAILABLE,
    errors.InferenceError: HTTPStatus.INTERNAL_SERVER_ERROR,
    errors.ConfigError: HTTPStatus.INTERNAL_SERVER_ERROR,
    errors.ShipyardError: HTTPStatus.INTERNAL_SERVER_ERROR,
}

#: Statuses that tell the client to come back later.
RETRY_AFTER_S = {HTTPStatus.SERVICE_UNAVAILABLE: "1"}


def status_for(exc: BaseException) -> HTTPStatus:
    """The HTTP status of an exception (500 for anything that is not a ShipyardError)."""
    if isinstance(exc, errors.ShipyardError):
        for klass in type(exc).__mro__:
            status = HTTP_STATUS.get(klass)
            if status is not None:
                return status
    return HTTPStatus.INTERNAL_SERVER_ERROR


def error_body(exc: BaseException, request_id: str) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    """Status, JSON body and extra headers for an exception."""
    status = status_for(exc)
    if isinstance(exc, errors.ShipyardError):
        body: dict[str, Any] = exc.to_dict()
    else:
        logger.error("Unhandled error in request %s", request_id, exc_info=exc)
        body = {
            "error": "Internal server error.",
            "code": "internal",
            "hint": "Report this with the request id; the server log has the details.",
        }
    body["request_id"] = request_id
    headers: list[tuple[bytes, bytes]] = []
    retry = RETRY_AFTER_S.get(status)
    if retry is not None:
        headers.append((b"retry-after", retry.encode()))
    return int(status), orjson.dumps(body), headers


def body_too_large(limit: int, got: int | None = None) -> errors.PayloadTooLarge:
    """The 413 error of a V2 infer body past ``limit`` bytes.

    ``got`` is its declared size, or None when it was counted while streaming in.
    """
    seen = "more than that" if got is None else str(got)
    return errors.PayloadTooLarge(
        f"A request body must be at most {limit} bytes. Got {seen} instead.",
        hint="Raise SHIPYARD_SERVER__MAX_BODY_BYTES or split the batch.",
    )
