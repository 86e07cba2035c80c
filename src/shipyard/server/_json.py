"""JSON helpers for the wire codecs: strict and tolerant parsing, nesting depth, base64.

orjson parses on the fast path. Its recursion limit is fixed (1024 levels), so the
configurable ``max_json_depth`` is checked on the decoded structure, and only where our
code walks it: parameters, requested outputs and unknown members are walked with a depth
budget; tensor ``data`` is measured along its first path (O(rank)) and numpy bounds the
rest. A byte pre-scan was measured and rejected: counting brackets in numpy costs more
than parsing a small request, and cannot tell brackets inside strings apart.

Imports: errors.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, NoReturn

import orjson

from shipyard.errors import InvalidData

__all__ = [
    "b64decode",
    "check_depth",
    "data_depth",
    "loads",
    "loads_tolerant",
    "raise_too_deep",
    "unb64",
]


def loads(body: bytes | memoryview, what: str = "The request body") -> Any:
    """Strict JSON (RFC 8259) with orjson.

    Raises:
        InvalidData: not JSON; the message quotes orjson's position, never the payload.
    """
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidData(
            f"{what} must be valid JSON. It is not: {_short(exc)}",
            hint="Send a JSON object (Open Inference Protocol: an 'inputs' list).",
        ) from None


def loads_tolerant(body: bytes | memoryview, *, allow_nan: bool = True) -> Any:
    """JSON that may hold ``NaN``, ``Infinity`` and ``-Infinity`` tokens (TF Serving).

    orjson first (fast, strict); the stdlib parser, which accepts those tokens, only when
    orjson fails. With ``allow_nan=False`` the tokens are refused.

    Raises:
        InvalidData: not JSON even with those tokens, nested too deep for the stdlib
            parser, or a NaN/Infinity token while ``allow_nan`` is False.
    """
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        first_error = _short(exc)
    try:
        text = bytes(body).decode("utf-8")
        if allow_nan:
            return json.loads(text)
        return json.loads(text, parse_constant=_refuse_constant)
    except InvalidData:  # a refused NaN token (InvalidData is a ValueError too)
        raise
    except (ValueError, UnicodeDecodeError):
        pass
    except RecursionError:
        raise_too_deep(None)
    raise InvalidData(f"The request body must be valid JSON. It is not: {first_error}") from None


def _refuse_constant(token: str) -> NoReturn:
    raise InvalidData(
        f"Numbers must be finite. Got {token} instead.",
        hint="NaN/Infinity are refused by SHIPYARD_SERVER__ALLOW_NAN=false.",
    )


def _short(exc: Exception) -> str:
    return str(exc)[:120]


def raise_too_deep(limit: int | None) -> NoReturn:
    """Raise the one error for JSON nested too deep."""
    bound = f"at most {limit}" if limit is not None else "less"
    raise InvalidData(
        f"JSON nesting must be {bound} levels deep. Got deeper than that instead.",
        hint="Raise SHIPYARD_SERVER__MAX_JSON_DEPTH if this is intended.",
    )


_CONTAINERS = (dict, list)


def check_depth(value: Any, limit: int, level: int) -> None:
    """Refuse ``value`` if it nests deeper than ``limit``.

    ``level`` is where ``value`` itself sits (1 = the top object).

    Raises:
        InvalidData: too deep.
    """
    kind = type(value)
    if kind is dict:
        if level > limit:
            raise_too_deep(limit)
        for v in value.values():
            if type(v) in _CONTAINERS:
                check_depth(v, limit, level + 1)
    elif kind is list:
        if level > limit:
            raise_too_deep(limit)
        for v in value:
            if type(v) in _CONTAINERS:
                check_depth(v, limit, level + 1)


def data_depth(data: list[Any]) -> int:
    """Nesting of a tensor's ``data`` along its first elements (its rank if regular)."""
    depth = 0
    node: Any = data
    while isinstance(node, list):
        depth += 1
        if not node:
            break
        node = node[0]
    return depth


def b64decode(text: str) -> bytes:
    """Strict base64.

    Raises:
        InvalidData: not base64.
    """
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidData(
            f"A b64 value must be valid base64. Got {len(text)} characters that are not."
        ) from None


def unb64(value: Any, budget: int) -> Any:
    """Replace every ``{"b64": "..."}`` object in nested lists by its bytes.

    Raises:
        InvalidData: an object that is not ``{"b64": str}``, or nesting past ``budget``.
    """
    if isinstance(value, list):
        if budget <= 0:
            raise_too_deep(None)
        return [unb64(v, budget - 1) if type(v) in _CONTAINERS else v for v in value]
    if isinstance(value, dict):
        b64 = value.get("b64")
        if len(value) == 1 and isinstance(b64, str):
            return b64decode(b64)
        raise InvalidData(
            'A tensor value that is an object must be {"b64": "<base64>"}. '
            f"Got an object with keys {sorted(map(str, value))[:8]} instead."
        )
    return value
