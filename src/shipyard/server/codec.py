"""Wire ↔ numpy for the Open Inference Protocol (JSON and binary tensors) and TF Serving REST.

The hot path: orjson, then ``np.asarray`` on each ``data`` list (or ``np.frombuffer`` on
binary tensor data), element counts checked against the shape before anything large is
allocated. Every failure is an InvalidInputError subclass with a message of the form
*X must be Y. Got Z instead.*; payloads are never echoed.

Imports: config, spec, errors (no starlette: importable anywhere).
"""

from __future__ import annotations

import base64
import json
import struct
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from shipyard.errors import InvalidData, InvalidInputError, PayloadTooLarge, SignatureMismatch
from shipyard.spec import DType

if TYPE_CHECKING:
    import numpy.typing as npt

    from shipyard.config import ServerSettings
    from shipyard.spec import Signature

__all__ = [
    "DecodeLimits",
    "InferRequest",
    "decode_bytes_raw",
    "decode_infer_request",
    "decode_tfs_predict",
    "encode_bytes_raw",
    "encode_infer_response",
    "encode_tfs_predict",
    "loads_tolerant",
]

_DTYPES: dict[str, DType] = {d.value: d for d in DType}
# Native dtypes: the wire is little-endian, and so is every platform shipyard supports
# (x86-64, aarch64); a big-endian host is refused at import rather than decoding garbage.
if sys.byteorder != "little":  # pragma: no cover
    raise ImportError("shipyard's wire codec needs a little-endian host")
_NUMPY: dict[DType, np.dtype[Any]] = {d: d.to_numpy() for d in DType if d is not DType.BYTES}
_BY_NUMPY: dict[np.dtype[Any], DType] = {dt: d for d, dt in _NUMPY.items()}
_FLOAT_KINDS = frozenset("fc")


def _dtype_of(arr: npt.NDArray[Any]) -> DType:
    """The OIP datatype of an array (a dict lookup on the hot path)."""
    found = _BY_NUMPY.get(arr.dtype)
    return found if found is not None else DType.from_numpy(arr.dtype)


_JSON_OUT = orjson.OPT_SERIALIZE_NUMPY
MAX_RANK = 16


@dataclass(frozen=True, slots=True)
class DecodeLimits:
    """Hard limits on what a request may contain."""

    max_elements: int = 64 * 1024 * 1024
    max_json_depth: int = 32
    max_bytes_element_bytes: int = 16 * 1024 * 1024
    allow_nan: bool = True

    @classmethod
    def from_settings(cls, settings: ServerSettings) -> DecodeLimits:
        """Limits from the server settings (elements bounded by the body size)."""
        return cls(
            max_elements=settings.max_body_bytes,
            max_json_depth=settings.max_json_depth,
            max_bytes_element_bytes=settings.max_bytes_element_bytes,
            allow_nan=settings.allow_nan,
        )


class InferRequest:
    """A decoded V2 inference request."""

    __slots__ = ("binary_default", "id", "inputs", "outputs", "parameters")

    def __init__(
        self,
        id: str | None,
        parameters: dict[str, Any],
        inputs: dict[str, npt.NDArray[Any]],
        outputs: list[tuple[str, bool | None]] | None,
        binary_default: bool,
    ) -> None:
        self.id = id
        self.parameters = parameters
        self.inputs = inputs
        self.outputs = outputs
        self.binary_default = binary_default

    def tensors(self) -> dict[str, npt.NDArray[Any]]:
        """Inputs by name."""
        return self.inputs

    def deadline(self, timeout_ms: float | None) -> float | None:
        """Monotonic deadline from a header (ms) or Triton's ``timeout`` parameter (µs)."""
        budget_s: float | None = None
        if timeout_ms is not None and timeout_ms > 0:
            budget_s = timeout_ms / 1000
        raw = self.parameters.get("timeout")
        if isinstance(raw, int | float) and not isinstance(raw, bool) and raw > 0:
            from_param = raw / 1_000_000
            budget_s = from_param if budget_s is None else min(budget_s, from_param)
        return None if budget_s is None else time.monotonic() + budget_s


def _depth(value: Any, limit: int, level: int = 1) -> None:
    if level > limit:
        raise InvalidInputError(
            f"JSON nesting must be at most {limit} levels deep. Got deeper than that instead.",
            hint="Raise SHIPYARD_SERVER__MAX_JSON_DEPTH if this is intended.",
        )
    if isinstance(value, dict):
        for v in value.values():
            if isinstance(v, dict | list):
                _depth(v, limit, level + 1)
    elif isinstance(value, list):
        for v in value:
            if isinstance(v, dict | list):
                _depth(v, limit, level + 1)


def _count(name: str, shape: Any, limits: DecodeLimits) -> tuple[tuple[int, ...], int]:
    if not isinstance(shape, list) or len(shape) > MAX_RANK:
        raise InvalidInputError(
            f"Input {name!r} shape must be a list of at most {MAX_RANK} integers. "
            f"Got {str(shape)[:80]} instead."
        )
    n = 1
    for d in shape:
        if not isinstance(d, int) or isinstance(d, bool) or d < 0:
            raise InvalidInputError(
                f"Input {name!r} shape must hold non-negative integers. Got {shape} instead."
            )
        n *= d
    if n > limits.max_elements:
        raise PayloadTooLarge(
            f"Input {name!r} must have at most {limits.max_elements} elements. Got {n} instead.",
            hint="Raise SHIPYARD_SERVER__MAX_BODY_BYTES or split the batch.",
        )
    return tuple(shape), n


def decode_bytes_raw(raw: bytes | memoryview, count: int, max_element: int) -> npt.NDArray[Any]:
    """``count`` BYTES elements, each a 4-byte little-endian length then the bytes."""
    out = np.empty(count, dtype=object)
    pos, end = 0, len(raw)
    unpack = struct.unpack_from
    for i in range(count):
        if pos + 4 > end:
            raise InvalidInputError(
                f"BYTES data must hold {count} length-prefixed elements. It ended after {i}."
            )
        (length,) = unpack("<I", raw, pos)
        pos += 4
        if length > max_element:
            raise PayloadTooLarge(
                f"A BYTES element must be at most {max_element} bytes. Got {length} instead.",
                hint="Raise SHIPYARD_SERVER__MAX_BYTES_ELEMENT_BYTES.",
            )
        if pos + length > end:
            raise InvalidInputError(
                f"A BYTES element length must fit the data. Got {length} with {end - pos} left."
            )
        out[i] = bytes(raw[pos : pos + length])
        pos += length
    if pos != end:
        raise InvalidInputError(
            f"BYTES data must hold exactly {count} elements. {end - pos} bytes were left over."
        )
    return out


def encode_bytes_raw(arr: npt.NDArray[Any]) -> bytes:
    """Length-prefix every element (str is UTF-8 encoded)."""
    parts: list[bytes] = []
    for item in arr.ravel():
        b = item.encode("utf-8") if isinstance(item, str) else bytes(item)
        parts.append(struct.pack("<I", len(b)))
        parts.append(b)
    return b"".join(parts)


def _flatten(data: Any, out: list[Any], depth: int, limit: int) -> None:
    if depth > limit:
        raise InvalidInputError(f"Tensor data must be nested at most {limit} levels deep.")
    for v in data:
        if isinstance(v, list):
            _flatten(v, out, depth + 1, limit)
        else:
            out.append(v)


def _bytes_from_json(name: str, data: Any, count: int, limits: DecodeLimits) -> npt.NDArray[Any]:
    flat: list[Any] = []
    _flatten(data if isinstance(data, list) else [data], flat, 1, MAX_RANK)
    if len(flat) != count:
        raise SignatureMismatch(
            f"Input {name!r} must have {count} elements for its shape. Got {len(flat)} instead."
        )
    out = np.empty(count, dtype=object)
    for i, v in enumerate(flat):
        if isinstance(v, str):
            b = v.encode("utf-8")
        elif isinstance(v, dict) and isinstance(v.get("b64"), str):
            b = _b64(v["b64"])
        else:
            raise InvalidInputError(
                f"BYTES input {name!r} must hold strings. Got {type(v).__name__}."
            )
        if len(b) > limits.max_bytes_element_bytes:
            raise PayloadTooLarge(
                f"A BYTES element must be at most {limits.max_bytes_element_bytes} bytes. "
                f"Got {len(b)} instead.",
                hint="Raise SHIPYARD_SERVER__MAX_BYTES_ELEMENT_BYTES.",
            )
        out[i] = b
    return out


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (ValueError, TypeError) as exc:
        raise InvalidInputError(f"A b64 value must be valid base64: {exc}") from None


def _check_finite(name: str, arr: npt.NDArray[Any], limits: DecodeLimits) -> None:
    if not limits.allow_nan and arr.dtype.kind in _FLOAT_KINDS and not np.isfinite(arr).all():
        raise InvalidInputError(
            f"Input {name!r} must hold finite numbers. Got NaN or Inf instead.",
            hint="NaN/Inf are refused by SHIPYARD_SERVER__ALLOW_NAN=false.",
        )


def decode_infer_request(
    body: bytes, *, header_length: int | None = None, limits: DecodeLimits | None = None
) -> InferRequest:
    """Decode a V2 REST inference body (JSON, or JSON header + binary tensors).

    Raises:
        InvalidData: malformed JSON or structure.
        InvalidInputError: bad datatype, shape, element count, lengths that lie.
        PayloadTooLarge: an input or element exceeds a limit.
    """
    limits = limits or DecodeLimits()
    if header_length is not None:
        if header_length < 0 or header_length > len(body):
            raise InvalidInputError(
                "Inference-Header-Content-Length must be between 0 and the body size "
                f"({len(body)}). Got {header_length} instead."
            )
        header: bytes | memoryview = memoryview(body)[:header_length]
        binary = memoryview(body)[header_length:]
    else:
        header, binary = body, memoryview(b"")
    try:
        doc = orjson.loads(header)
    except orjson.JSONDecodeError as exc:
        raise InvalidData(
            f"The request body must be valid JSON. It is not: {str(exc)[:120]}",
            hint="Send a JSON object with an 'inputs' list (Open Inference Protocol).",
        ) from None
    if not isinstance(doc, dict):
        raise InvalidData(f"The request body must be a JSON object. Got {type(doc).__name__}.")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidData("The request must have a non-empty 'inputs' list. It does not.")
    params = doc.get("parameters") or {}
    if not isinstance(params, dict):
        raise InvalidData("'parameters' must be an object.")
    _depth(params, limits.max_json_depth)
    inputs: dict[str, npt.NDArray[Any]] = {}
    offset = 0
    for inp in raw_inputs:
        if not isinstance(inp, dict):
            raise InvalidData("Each input must be an object with name, shape, datatype and data.")
        name = inp.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidData("Each input must have a non-empty string 'name'.")
        if name in inputs:
            raise InvalidInputError(f"Input names must be unique. Got {name!r} twice.")
        dtype = _DTYPES.get(inp.get("datatype"))  # type: ignore[arg-type]
        if dtype is None:
            raise InvalidInputError(
                f"Input {name!r} datatype must be one of {sorted(_DTYPES)}. "
                f"Got {str(inp.get('datatype'))[:32]!r} instead."
            )
        shape, count = _count(name, inp.get("shape"), limits)
        iparams = inp.get("parameters") or {}
        size = iparams.get("binary_data_size") if isinstance(iparams, dict) else None
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise InvalidInputError(
                    f"Input {name!r} binary_data_size must fit the {len(binary) - offset} "
                    f"binary bytes left. Got {size} instead."
                )
            chunk = binary[offset : offset + size]
            offset += size
            if dtype is DType.BYTES:
                arr = decode_bytes_raw(chunk, count, limits.max_bytes_element_bytes)
            else:
                np_dtype = _NUMPY[dtype]
                if size != count * np_dtype.itemsize:
                    raise InvalidInputError(
                        f"Input {name!r} with shape {list(shape)} must have "
                        f"{count * np_dtype.itemsize} bytes of {dtype.value}. Got {size} instead."
                    )
                arr = np.frombuffer(chunk, dtype=np_dtype)
        else:
            data = inp.get("data")
            if data is None:
                raise InvalidData(f"Input {name!r} must have 'data' or binary_data_size.")
            if dtype is DType.BYTES:
                arr = _bytes_from_json(name, data, count, limits)
            else:
                try:
                    arr = np.asarray(data, dtype=_NUMPY[dtype])
                except (ValueError, TypeError, OverflowError) as exc:
                    raise InvalidInputError(
                        f"Input {name!r} data must be a (nested) list of {dtype.value} "
                        f"values. It is not: {str(exc)[:100]}"
                    ) from None
                if arr.size != count:
                    raise SignatureMismatch(
                        f"Input {name!r} with shape {list(shape)} must have {count} elements. "
                        f"Got {arr.size} instead."
                    )
        arr = arr.reshape(shape)
        _check_finite(name, arr, limits)
        inputs[name] = arr
    if offset != len(binary):
        raise InvalidInputError(
            f"Binary tensor data must be consumed exactly by the inputs. "
            f"{len(binary) - offset} bytes were left over."
        )
    outputs: list[tuple[str, bool | None]] | None = None
    raw_outputs = doc.get("outputs")
    if raw_outputs is not None:
        if not isinstance(raw_outputs, list):
            raise InvalidData("'outputs' must be a list of objects with a 'name'.")
        outputs = []
        for out in raw_outputs:
            if not isinstance(out, dict) or not isinstance(out.get("name"), str):
                raise InvalidData("Each requested output must be an object with a 'name'.")
            oparams = out.get("parameters") or {}
            binary_flag = oparams.get("binary_data") if isinstance(oparams, dict) else None
            outputs.append((out["name"], bool(binary_flag) if binary_flag is not None else None))
    req_id = doc.get("id")
    return InferRequest(
        id=req_id if isinstance(req_id, str) else None,
        parameters=params,
        inputs=inputs,
        outputs=outputs,
        binary_default=bool(params.get("binary_data_output", False)),
    )


def _json_data(arr: npt.NDArray[Any], dtype: DType) -> Any:
    if dtype is DType.BYTES:
        return [
            v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in arr.ravel()
        ]
    if dtype is DType.FP16:
        return arr.ravel().astype(np.float32)
    return np.ascontiguousarray(arr).ravel()


def encode_infer_response(
    request: InferRequest,
    outputs: dict[str, npt.NDArray[Any]],
    *,
    model_name: str,
    model_version: str,
) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """Encode a V2 response: JSON, or JSON header + binary outputs when asked for.

    Raises:
        SignatureMismatch: a requested output does not exist.
    """
    wanted = request.outputs
    if wanted is None:
        wanted = [(name, None) for name in outputs]
    entries: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for name, binary_flag in wanted:
        arr = outputs.get(name)
        if arr is None:
            raise SignatureMismatch(
                f"Requested output must be one of {sorted(outputs)}. Got {name!r} instead."
            )
        dtype = _dtype_of(arr)
        entry: dict[str, Any] = {"name": name, "datatype": dtype.value, "shape": list(arr.shape)}
        if binary_flag if binary_flag is not None else request.binary_default:
            raw = (
                encode_bytes_raw(arr)
                if dtype is DType.BYTES
                else np.ascontiguousarray(arr, dtype=_NUMPY[dtype]).tobytes()
            )
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = _json_data(arr, dtype)
        entries.append(entry)
    resp: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request.id is not None:
        resp["id"] = request.id
    resp["outputs"] = entries
    head = orjson.dumps(resp, option=_JSON_OUT)
    if not chunks:
        return head, [(b"content-type", b"application/json")]
    return head + b"".join(chunks), [
        (b"content-type", b"application/octet-stream"),
        (b"inference-header-content-length", str(len(head)).encode()),
    ]


# ---- TF Serving REST -------------------------------------------------------------------


def loads_tolerant(body: bytes) -> Any:
    """Orjson first; the stdlib parser (which takes NaN/Infinity tokens) only if orjson fails.

    Raises:
        InvalidData: the body is not JSON even with those tokens.
    """
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        first_error = str(exc)
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise InvalidData(
            f"The request body must be valid JSON. It is not: {first_error[:120]}"
        ) from None


def _unb64(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"b64"} and isinstance(value["b64"], str):
            return _b64(value["b64"])
        raise InvalidInputError('A tensor value object must be {"b64": "..."}.')
    if isinstance(value, list):
        return [_unb64(v) for v in value]
    return value


def _to_array(name: str, value: Any, dtype: DType) -> npt.NDArray[Any]:
    value = _unb64(value)
    try:
        if dtype is DType.BYTES:
            arr = np.asarray(value, dtype=object)
            flat = arr.ravel()
            for i, v in enumerate(flat):
                if isinstance(v, str):
                    flat[i] = v.encode("utf-8")
            return arr
        return np.asarray(value, dtype=dtype.to_numpy())
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidInputError(
            f"Input {name!r} must be a (nested) list of {dtype.value} values: {str(exc)[:100]}"
        ) from None


def decode_tfs_predict(body: bytes, signature: Signature) -> tuple[dict[str, Any], str]:
    """A TF Serving ``:predict`` body → (inputs by name, ``"row"`` or ``"columnar"``).

    Raises:
        InvalidData: neither or both of ``instances`` and ``inputs``.
        InvalidInputError: values that do not fit the signature's dtypes.
    """
    doc = loads_tolerant(body)
    if not isinstance(doc, dict):
        raise InvalidData("A :predict body must be a JSON object.")
    has_rows, has_cols = "instances" in doc, "inputs" in doc
    if has_rows == has_cols:
        raise InvalidData(
            "A :predict body must have exactly one of 'instances' (row) or 'inputs' (columnar).",
        )
    specs = {s.name: s for s in signature.inputs}
    if has_rows:
        rows = doc["instances"]
        if not isinstance(rows, list) or not rows:
            raise InvalidData("'instances' must be a non-empty list.")
        if all(isinstance(r, dict) and set(r) != {"b64"} for r in rows):
            names = list(specs)
            missing = [n for n in names if any(n not in r for r in rows)]
            if missing:
                raise SignatureMismatch(f"Every instance must have inputs {missing}.")
            return {n: _to_array(n, [r[n] for r in rows], specs[n].dtype) for n in names}, "row"
        if len(specs) != 1:
            raise SignatureMismatch(
                f"Instances must be objects naming the inputs {sorted(specs)} of this model."
            )
        (only,) = specs.values()
        return {only.name: _to_array(only.name, rows, only.dtype)}, "row"
    cols = doc["inputs"]
    if isinstance(cols, dict):
        unknown = [n for n in cols if n not in specs]
        if unknown:
            raise SignatureMismatch(f"Inputs must be among {sorted(specs)}. Got {unknown} instead.")
        return {n: _to_array(n, v, specs[n].dtype) for n, v in cols.items()}, "columnar"
    if len(specs) != 1:
        raise SignatureMismatch(f"'inputs' must map names to tensors for inputs {sorted(specs)}.")
    (only,) = specs.values()
    return {only.name: _to_array(only.name, cols, only.dtype)}, "columnar"


def _tfs_value(name: str, arr: npt.NDArray[Any]) -> Any:
    if arr.dtype.kind in ("O", "S", "U"):
        if name.endswith("_bytes"):
            return [
                {"b64": base64.b64encode(v if isinstance(v, bytes) else str(v).encode()).decode()}
                for v in arr.ravel()
            ]
        return np.vectorize(
            lambda v: v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v),
            otypes=[object],
        )(arr).tolist()
    if arr.dtype == np.float16:
        return arr.astype(np.float32)
    return np.ascontiguousarray(arr)


def _as_list(value: Any) -> list[Any]:
    return value.tolist() if isinstance(value, np.ndarray) else list(value)


def encode_tfs_predict(outputs: dict[str, npt.NDArray[Any]], form: str) -> bytes:
    """``{"predictions": ...}`` (row) or ``{"outputs": ...}`` (columnar)."""
    if form == "row":
        if len(outputs) == 1:
            ((name, arr),) = outputs.items()
            return orjson.dumps({"predictions": _tfs_value(name, arr)}, option=_JSON_OUT)
        columns = {name: _as_list(_tfs_value(name, arr)) for name, arr in outputs.items()}
        n = len(next(iter(columns.values())))
        rows = [{name: col[i] for name, col in columns.items()} for i in range(n)]
        return orjson.dumps({"predictions": rows}, option=_JSON_OUT)
    if len(outputs) == 1:
        ((name, arr),) = outputs.items()
        return orjson.dumps({"outputs": _tfs_value(name, arr)}, option=_JSON_OUT)
    return orjson.dumps(
        {"outputs": {name: _tfs_value(name, arr) for name, arr in outputs.items()}},
        option=_JSON_OUT,
    )
