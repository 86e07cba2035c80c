"""Wire ↔ numpy for the Open Inference Protocol (JSON and binary tensors) and TF Serving REST.

The hot path: one ``orjson.loads``, then per input ``np.asarray`` on its ``data`` list (or
``np.frombuffer`` on its slice of binary tensor data). The element count ``prod(shape)``
is computed and checked against ``max_elements`` and against the data before anything is
allocated; nothing is copied that numpy can view. Responses are one ``orjson.dumps`` with
``OPT_SERIALIZE_NUMPY`` (arrays are written by orjson's C code, never element by element in
Python), followed by raw tensor bytes when the binary extension is asked for.

Every decode failure is an InvalidInputError subclass: InvalidData (malformed payload),
SignatureMismatch (shape or element count), PayloadTooLarge (a size limit). Messages follow
*X must be Y. Got Z instead.* and never echo the payload.

Imports: spec, errors, config (typing only); no starlette, so it is importable anywhere.
"""

from __future__ import annotations

import base64
import struct
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import numpy as np
import orjson

from shipyard.errors import (
    InferenceError,
    InvalidData,
    InvalidInputError,
    PayloadTooLarge,
    SignatureMismatch,
)
from shipyard.server._json import b64decode, check_depth, data_depth, loads, loads_tolerant, unb64
from shipyard.spec import DType

if TYPE_CHECKING:
    import numpy.typing as npt

    from shipyard.config import ServerSettings
    from shipyard.spec import Signature

__all__ = [
    "MAX_RANK",
    "TFS_UNNAMED",
    "DecodeLimits",
    "InferInput",
    "InferRequest",
    "RequestedOutput",
    "TfsForm",
    "decode_bytes_raw",
    "decode_infer_request",
    "decode_tfs_predict",
    "encode_bytes_raw",
    "encode_infer_response",
    "encode_tfs_predict",
    "loads_tolerant",
]

# The wire is little-endian, and so is every platform shipyard supports (x86-64,
# aarch64): native dtypes are the wire dtypes. A big-endian host is refused at import
# rather than decoding garbage.
if sys.byteorder != "little":  # pragma: no cover
    raise ImportError("shipyard's wire codec needs a little-endian host")

_VALID = ", ".join(d.value for d in DType)
_NUMPY: dict[DType, np.dtype[Any]] = {d: d.to_numpy() for d in DType if d is not DType.BYTES}
_BY_NUMPY: dict[np.dtype[Any], DType] = {dt: d for d, dt in _NUMPY.items()}
# One lookup by wire name gives the datatype and its numpy dtype (None for BYTES); keyed by
# str because DType's Enum __hash__ is a Python-level call on the hot path.
_WIRE: dict[str, tuple[DType, np.dtype[Any] | None]] = {
    d.value: (d, None if d is DType.BYTES else d.to_numpy()) for d in DType
}
_BYTES = DType.BYTES
_FLOAT_KINDS = frozenset("fc")
_JSON_OUT = orjson.OPT_SERIALIZE_NUMPY
_LEN = struct.Struct("<I")
_CONTAINERS = (dict, list)
_new_input = tuple.__new__  # NamedTuple construction without its Python-level __new__

MAX_RANK = 16
"""Most dimensions a tensor may have on the wire."""

TFS_UNNAMED = "inputs"
"""Key under which :func:`decode_tfs_predict` returns an unnamed tensor when no signature
is given."""

TfsForm = Literal["row", "columnar"]


@dataclass(frozen=True, slots=True)
class DecodeLimits:
    """Hard limits on what a request may contain.

    Attributes:
        max_elements: Most elements in one tensor (checked before allocating).
        max_json_depth: Deepest JSON nesting (the top object is level 1).
        max_bytes_element_bytes: Largest single BYTES element.
        allow_nan: Accept NaN and ±Inf in floating-point inputs.
    """

    max_elements: int = 64 * 1024 * 1024
    max_json_depth: int = 32
    max_bytes_element_bytes: int = 16 * 1024 * 1024
    allow_nan: bool = True

    @classmethod
    def from_settings(cls, settings: ServerSettings) -> DecodeLimits:
        """Limits from the server settings (elements are bounded by the body size)."""
        return cls(
            max_elements=settings.max_body_bytes,
            max_json_depth=settings.max_json_depth,
            max_bytes_element_bytes=settings.max_bytes_element_bytes,
            allow_nan=settings.allow_nan,
        )


_DEFAULT_LIMITS = DecodeLimits()


class InferInput(NamedTuple):
    """One decoded input tensor."""

    name: str
    datatype: DType
    shape: tuple[int, ...]
    data: npt.NDArray[Any]


class RequestedOutput(NamedTuple):
    """One entry of the request's ``outputs``; ``binary`` is None when not specified."""

    name: str
    binary: bool | None


class InferRequest:
    """A decoded V2 inference request.

    Attributes:
        id: The request's ``id`` (echoed in the response), or None.
        parameters: The request-level ``parameters`` object.
        inputs: The input tensors, in request order.
        outputs: The requested outputs, or None for "all outputs".
        binary_default: ``parameters.binary_data_output``: outputs not naming
            ``binary_data`` themselves are sent as binary tensor data.
    """

    __slots__ = ("binary_default", "id", "inputs", "outputs", "parameters")

    def __init__(
        self,
        id: str | None,
        parameters: dict[str, Any],
        inputs: list[InferInput],
        outputs: list[RequestedOutput] | None,
        binary_default: bool,
    ) -> None:
        self.id = id
        self.parameters = parameters
        self.inputs = inputs
        self.outputs = outputs
        self.binary_default = binary_default

    def tensors(self) -> dict[str, npt.NDArray[Any]]:
        """Inputs by name."""
        return {inp.name: inp.data for inp in self.inputs}

    def deadline(self, timeout_ms: float | None, *, now: float | None = None) -> float | None:
        """Monotonic deadline from a header (ms) or Triton's ``timeout`` parameter (µs).

        Args:
            timeout_ms: The request's timeout header, if any.
            now: The current monotonic time (default ``time.monotonic()``).

        Returns:
            The earlier of the two deadlines, or None when neither is given.
        """
        budget_s: float | None = None
        if timeout_ms is not None and timeout_ms > 0:
            budget_s = timeout_ms / 1000
        raw = self.parameters.get("timeout")
        if isinstance(raw, int | float) and not isinstance(raw, bool) and raw > 0:
            from_param = raw / 1_000_000
            budget_s = from_param if budget_s is None else min(budget_s, from_param)
        if budget_s is None:
            return None
        return (time.monotonic() if now is None else now) + budget_s


# ---- V2 decode -------------------------------------------------------------------------


def _count(name: str, shape: Any, limits: DecodeLimits) -> tuple[tuple[int, ...], int]:
    """Validate a wire shape and return it with its element count (nothing allocated)."""
    if type(shape) is not list or len(shape) > MAX_RANK:
        raise SignatureMismatch(
            f"Input {name!r} shape must be a list of at most {MAX_RANK} integers. "
            f"Got {str(shape)[:80]} instead."
        )
    n = 1
    nonzero = 1  # bounds the dims of an empty tensor too: [2**62, 2**62, 0] is refused
    for d in shape:
        if type(d) is not int or d < 0:
            raise SignatureMismatch(
                f"Input {name!r} shape must hold non-negative integers. "
                f"Got {str(shape)[:80]} instead."
            )
        n *= d
        nonzero *= d or 1
    if nonzero > limits.max_elements:
        n = nonzero
    if n > limits.max_elements:
        raise PayloadTooLarge(
            f"Input {name!r} must have at most {limits.max_elements} elements. Got {n} instead.",
            hint="Raise SHIPYARD_SERVER__MAX_BODY_BYTES or split the batch.",
        )
    return tuple(shape), n


def _too_big_element(size: int, limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"A BYTES element must be at most {limit} bytes. Got {size} instead.",
        hint="Raise SHIPYARD_SERVER__MAX_BYTES_ELEMENT_BYTES.",
    )


def decode_bytes_raw(raw: bytes | memoryview, count: int, max_element: int) -> npt.NDArray[Any]:
    """Decode ``count`` BYTES elements, each a 4-byte little-endian length then its bytes.

    Raises:
        InvalidData: a length prefix runs past the end, or bytes are left over.
        PayloadTooLarge: an element is longer than ``max_element``.
    """
    out = np.empty(count, dtype=object)
    pos, end = 0, len(raw)
    unpack = _LEN.unpack_from
    for i in range(count):
        if pos + 4 > end:
            raise InvalidData(
                f"BYTES data must hold {count} length-prefixed elements. "
                f"Got {i} before the data ended instead."
            )
        (length,) = unpack(raw, pos)
        pos += 4
        if length > max_element:
            raise _too_big_element(length, max_element)
        if pos + length > end:
            raise InvalidData(
                f"A BYTES element length must fit the data left ({end - pos} bytes). "
                f"Got {length} instead."
            )
        out[i] = bytes(raw[pos : pos + length])
        pos += length
    if pos != end:
        raise InvalidData(
            f"BYTES data must hold exactly {count} elements. "
            f"Got {end - pos} bytes left over instead."
        )
    return out


def encode_bytes_raw(arr: npt.NDArray[Any]) -> bytes:
    """Length-prefix every element of a BYTES tensor (``str`` is UTF-8 encoded)."""
    parts: list[bytes] = []
    pack = _LEN.pack
    for item in arr.reshape(-1):
        b = item.encode("utf-8") if isinstance(item, str) else bytes(item)
        parts.append(pack(len(b)))
        parts.append(b)
    return b"".join(parts)


def _flatten(data: list[Any], out: list[Any], budget: int) -> None:
    if budget <= 0:
        raise InvalidData(f"Tensor data must be nested at most {MAX_RANK} levels deep.")
    for v in data:
        if type(v) is list:
            _flatten(v, out, budget - 1)
        else:
            out.append(v)


def _bytes_from_json(name: str, data: Any, count: int, limits: DecodeLimits) -> npt.NDArray[Any]:
    if type(data) is not list:
        data = [data]
    if any(type(v) is list for v in data):
        flat: list[Any] = []
        _flatten(data, flat, MAX_RANK)
        data = flat
    if len(data) != count:
        raise SignatureMismatch(
            f"Input {name!r} must have {count} elements for its shape. Got {len(data)} instead."
        )
    encoded: list[bytes] = []
    for v in data:
        if type(v) is str:
            encoded.append(v.encode("utf-8"))
        elif type(v) is dict and len(v) == 1 and type(v.get("b64")) is str:
            encoded.append(b64decode(v["b64"]))
        else:
            raise InvalidData(
                f"BYTES input {name!r} must hold strings. Got {type(v).__name__} instead."
            )
    longest = max(map(len, encoded), default=0)
    if longest > limits.max_bytes_element_bytes:
        raise _too_big_element(longest, limits.max_bytes_element_bytes)
    out = np.empty(count, dtype=object)
    out[:] = encoded
    return out


def _numbers_from_json(
    name: str,
    data: Any,
    dtype: DType,
    np_dtype: np.dtype[Any],
    shape: tuple[int, ...],
    count: int,
    limits: DecodeLimits,
) -> npt.NDArray[Any]:
    if type(data) is list:
        n0 = len(data)
        if n0 != count and (not shape or n0 != shape[0]):
            raise SignatureMismatch(
                f"Input {name!r} with shape {list(shape)} must have {count} elements. "
                f"Got {n0} at the top level of its data instead."
            )
        if (n0 != count or (n0 and type(data[0]) is list)) and (
            data_depth(data) + 3 > limits.max_json_depth
        ):
            raise InvalidData(
                f"JSON nesting must be at most {limits.max_json_depth} levels deep. "
                f"Got deeper than that in input {name!r} instead.",
                hint="Raise SHIPYARD_SERVER__MAX_JSON_DEPTH if this is intended.",
            )
    try:
        arr = np.asarray(data, dtype=np_dtype)
    except RuntimeWarning:  # past the dtype's range (1e39 as FP32) with warnings as errors
        arr = _overflowed(data, np_dtype)
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidData(
            f"Input {name!r} data must be a (nested) list of {dtype.value} values. "
            f"Got values that are not: {str(exc)[:100]}"
        ) from None
    if arr.size != count:
        raise SignatureMismatch(
            f"Input {name!r} with shape {list(shape)} must have {count} elements. "
            f"Got {arr.size} instead."
        )
    return arr


def _overflowed(data: Any, np_dtype: Any) -> npt.NDArray[Any]:
    """The array with numbers past a float dtype's range as ±inf (the NaN policy decides).

    IEEE casts, Triton and TF Serving do the same. This path runs only where warnings are
    errors (numpy warns on such casts); elsewhere the plain cast gives the same result.
    """
    with np.errstate(over="ignore"):
        return np.asarray(data, dtype=np_dtype)


def _check_binary_size(name: str, size: Any, left: int, has_header: bool) -> int:
    if type(size) is not int or size < 0 or size > left:
        where = (
            f"the {left} binary bytes left"
            if has_header
            else "the body (no Inference-Header-Content-Length header was sent)"
        )
        raise InvalidData(
            f"Input {name!r} binary_data_size must be a non-negative integer that fits "
            f"{where}. Got {str(size)[:32]} instead."
        )
    return size


def decode_infer_request(
    body: bytes, *, header_length: int | None = None, limits: DecodeLimits | None = None
) -> InferRequest:
    """Decode a V2 REST inference body: JSON, or a JSON header followed by binary tensors.

    Args:
        body: The whole request body.
        header_length: ``Inference-Header-Content-Length`` (binary tensor extension), or
            None for a pure JSON body.
        limits: Size and content limits (default :class:`DecodeLimits`).

    Returns:
        The decoded request; tensors are numpy arrays (views into ``body`` for binary data).

    Raises:
        InvalidData: malformed JSON or structure, an unknown datatype, values of the wrong
            type, binary lengths that lie, JSON nested too deep, NaN/Inf when refused.
        SignatureMismatch: a bad shape, or data whose element count does not match it.
        PayloadTooLarge: a tensor or BYTES element exceeds a limit.

    Example:
        >>> req = decode_infer_request(
        ...     b'{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","data":[1,2]}]}'
        ... )
        >>> req.tensors()["x"]
        array([[1., 2.]], dtype=float32)
    """
    if limits is None:
        limits = _DEFAULT_LIMITS
    has_header = False
    if header_length is None:
        header_length, left = len(body), 0
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            doc = loads(body)  # raises InvalidData with orjson's position
    else:
        left = len(body) - header_length
        if header_length < 0 or left < 0:
            raise InvalidData(
                f"Inference-Header-Content-Length must be between 0 and the body size "
                f"({len(body)}). Got {header_length} instead."
            )
        doc = loads(memoryview(body)[:header_length], "The JSON header of the request")
        has_header = True
    if type(doc) is not dict:
        raise InvalidData(
            f"The request body must be a JSON object. Got a JSON {type(doc).__name__} instead."
        )
    raw_inputs = doc.get("inputs")
    if type(raw_inputs) is not list or not raw_inputs:
        raise InvalidData("The request must have a non-empty 'inputs' list. It does not.")
    max_depth = limits.max_json_depth
    params: Any = None
    outputs: list[RequestedOutput] | None = None
    req_id: Any = None
    if len(doc) > 1:
        params = doc.get("parameters")
        if params is not None:
            if type(params) is not dict:
                raise InvalidData(
                    f"'parameters' must be a JSON object. "
                    f"Got a JSON {type(params).__name__} instead."
                )
            check_depth(params, max_depth, 2)
        raw_outputs = doc.get("outputs")
        if raw_outputs is not None:
            outputs = _requested(raw_outputs, max_depth)
        req_id = doc.get("id")
        if not doc.keys() <= _REQUEST_KEYS:  # unknown members are ignored, within the depth limit
            _check_unknown(doc, _REQUEST_KEYS, max_depth, 2)
    inputs: list[InferInput] = []
    offset = 0
    for inp in raw_inputs:
        if type(inp) is not dict:
            raise InvalidData(
                "Each input must be an object with name, shape, datatype and data. "
                f"Got a JSON {type(inp).__name__} instead."
            )
        if not inp.keys() <= _INPUT_KEYS:
            _check_unknown(inp, _INPUT_KEYS, max_depth, 4)
        name = inp.get("name")
        if type(name) is not str or not name:
            raise InvalidData("Each input must have a non-empty string 'name'. One does not.")
        raw_dtype = inp.get("datatype")
        wire = _WIRE.get(raw_dtype) if type(raw_dtype) is str else None
        if wire is None:
            raise InvalidData(
                f"Input {name!r} datatype must be one of {_VALID}. "
                f"Got {str(raw_dtype)[:32]!r} instead."
            )
        dtype, np_dtype = wire
        shape, count = _count(name, inp.get("shape"), limits)
        size = None
        iparams = inp.get("parameters")
        if iparams is not None:
            if type(iparams) is not dict:
                raise InvalidData(
                    f"Input {name!r} parameters must be a JSON object. "
                    f"Got a JSON {type(iparams).__name__} instead."
                )
            size = iparams.get("binary_data_size")
            for value in iparams.values():
                if type(value) in _CONTAINERS:
                    check_depth(value, max_depth, 5)
        if size is not None:
            size = _check_binary_size(name, size, left - offset, has_header)
            start = header_length + offset
            offset += size
            if np_dtype is None:
                chunk = memoryview(body)[start : start + size]
                arr = decode_bytes_raw(chunk, count, limits.max_bytes_element_bytes)
            else:
                if size != count * np_dtype.itemsize:
                    raise SignatureMismatch(
                        f"Input {name!r} with shape {list(shape)} must have "
                        f"{count * np_dtype.itemsize} bytes of {dtype.value}. "
                        f"Got {size} instead."
                    )
                arr = np.frombuffer(body, dtype=np_dtype, count=count, offset=start)
                if np_dtype.kind == "b" and arr.view(np.uint8).max(initial=0) > 1:
                    raise InvalidData(
                        f"BOOL input {name!r} bytes must be 0 or 1. Got other values instead."
                    )
        else:
            data = inp.get("data")
            if data is None:
                raise InvalidData(
                    f"Input {name!r} must have 'data' or parameters.binary_data_size. "
                    "Got neither instead."
                )
            if np_dtype is None:
                arr = _bytes_from_json(name, data, count, limits)
            else:
                arr = _numbers_from_json(name, data, dtype, np_dtype, shape, count, limits)
        if arr.shape != shape:
            arr = arr.reshape(shape)
        if not limits.allow_nan and arr.dtype.kind in _FLOAT_KINDS and not np.isfinite(arr).all():
            raise InvalidData(
                f"Input {name!r} must hold finite numbers. Got NaN or Inf instead.",
                hint="NaN/Inf are refused by SHIPYARD_SERVER__ALLOW_NAN=false.",
            )
        inputs.append(_new_input(InferInput, (name, dtype, shape, arr)))
    if offset != left:
        raise InvalidData(
            f"Binary tensor data must be used up exactly by the inputs' binary_data_size. "
            f"Got {left - offset} bytes left over instead."
        )
    if len(inputs) > 1 and len({inp.name for inp in inputs}) != len(inputs):
        names = [inp.name for inp in inputs]
        twice = next(n for n in names if names.count(n) > 1)
        raise InvalidData(f"Input names must be unique. Got {twice!r} twice instead.")
    if params is None:
        return InferRequest(req_id if type(req_id) is str else None, {}, inputs, outputs, False)
    return InferRequest(
        req_id if type(req_id) is str else None,
        params,
        inputs,
        outputs,
        params.get("binary_data_output") is True,
    )


_REQUEST_KEYS = frozenset({"id", "parameters", "inputs", "outputs"})
_INPUT_KEYS = frozenset({"name", "shape", "datatype", "parameters", "data"})


def _check_unknown(obj: dict[str, Any], known: frozenset[str], max_depth: int, level: int) -> None:
    """Members a request may carry but we do not read: refused only past the depth limit."""
    for key, value in obj.items():
        if key not in known and type(value) in _CONTAINERS:
            check_depth(value, max_depth, level)


def _requested(raw: Any, max_depth: int) -> list[RequestedOutput]:
    if type(raw) is not list:
        raise InvalidData(
            f"'outputs' must be a list of objects with a 'name'. "
            f"Got a JSON {type(raw).__name__} instead."
        )
    outputs: list[RequestedOutput] = []
    for out in raw:
        if type(out) is not dict or type(out.get("name")) is not str:
            raise InvalidData("Each requested output must be an object with a 'name'. One is not.")
        flag = None
        oparams = out.get("parameters")
        if type(oparams) is dict:
            flag = oparams.get("binary_data")
            for value in oparams.values():
                if type(value) in _CONTAINERS:
                    check_depth(value, max_depth, 5)
        outputs.append(
            _new_input(RequestedOutput, (out["name"], flag if type(flag) is bool else None))
        )
    return outputs


# ---- V2 encode -------------------------------------------------------------------------


def _dtype_of(name: str, arr: npt.NDArray[Any]) -> DType:
    """The OIP datatype of an output array (a dict lookup on the hot path)."""
    found = _BY_NUMPY.get(arr.dtype)
    if found is not None:
        return found
    try:
        return DType.from_numpy(arr.dtype)
    except InvalidInputError:
        raise InferenceError(
            f"Output {name!r} dtype must map to an OIP datatype. Got {arr.dtype} instead."
        ) from None


def _bytes_as_text(arr: npt.NDArray[Any]) -> list[str] | None:
    """BYTES elements as str, or None if one is not valid UTF-8 (it then goes binary)."""
    out: list[str] = []
    try:
        for v in arr.reshape(-1):
            out.append(v.decode("utf-8") if isinstance(v, bytes) else str(v))
    except UnicodeDecodeError:
        return None
    return out


def encode_infer_response(
    request: InferRequest,
    outputs: Mapping[str, npt.NDArray[Any]],
    *,
    model_name: str,
    model_version: str,
) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """Encode a V2 response: JSON, or a JSON header + binary outputs when asked for.

    An output is binary when its requested entry says ``binary_data: true``, or it says
    nothing and the request set ``parameters.binary_data_output: true``. A BYTES output
    that is not valid UTF-8 is always sent binary (JSON strings cannot carry it). Numbers
    go through orjson's numpy serializer; NaN and Inf become ``null`` in JSON (use binary
    outputs to keep them).

    Args:
        request: The decoded request (id, requested outputs, binary defaults).
        outputs: The model's outputs by name.
        model_name: Echoed as ``model_name``.
        model_version: Echoed as ``model_version``.

    Returns:
        The body, and ASGI headers: ``content-type``, plus
        ``inference-header-content-length`` when binary outputs follow the JSON.

    Raises:
        SignatureMismatch: a requested output does not exist.
        InferenceError: an output's dtype has no OIP datatype.
    """
    wanted = request.outputs
    if wanted is None:
        wanted = [RequestedOutput(name, None) for name in outputs]
    entries: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for name, flag in wanted:
        arr = outputs.get(name)
        if arr is None:
            raise SignatureMismatch(
                f"Requested output must be one of {sorted(outputs)}. Got {name[:64]!r} instead."
            )
        dtype = _dtype_of(name, arr)
        binary = request.binary_default if flag is None else flag
        entry: dict[str, Any] = {"name": name, "datatype": dtype.value, "shape": list(arr.shape)}
        if dtype is _BYTES:
            text = None if binary else _bytes_as_text(arr)
            if text is None:
                raw = encode_bytes_raw(arr)
                entry["parameters"] = {"binary_data_size": len(raw)}
                chunks.append(raw)
            else:
                entry["data"] = text
        else:
            np_dtype = _NUMPY[dtype]
            if not arr.flags.c_contiguous or arr.dtype is not np_dtype:
                arr = np.ascontiguousarray(arr, dtype=np_dtype)
            if binary:
                raw = arr.tobytes()
                entry["parameters"] = {"binary_data_size": len(raw)}
                chunks.append(raw)
            else:
                entry["data"] = arr.reshape(-1)
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


def _tfs_array(
    name: str, value: Any, dtype: DType | None, limits: DecodeLimits, has_b64: bool
) -> npt.NDArray[Any]:
    if has_b64:
        value = unb64(value, limits.max_json_depth)
    try:
        if dtype is None:
            arr = np.asarray(value)
            if arr.dtype.kind in "USO":
                dtype = DType.BYTES
        elif dtype is not DType.BYTES:
            try:
                arr = np.asarray(value, dtype=_NUMPY[dtype])
            except RuntimeWarning:
                arr = _overflowed(value, _NUMPY[dtype])
        if dtype is DType.BYTES:
            arr = np.asarray(value, dtype=object)
    except (ValueError, TypeError, OverflowError) as exc:
        kind = dtype.value if dtype is not None else "numeric"
        raise InvalidData(
            f"Input {name!r} must be a regular (nested) list of {kind} values. "
            f"Got values that are not: {str(exc)[:100]}"
        ) from None
    if arr.ndim > MAX_RANK:
        raise InvalidData(f"Input {name!r} must have at most {MAX_RANK} dimensions.")
    if arr.size > limits.max_elements:
        raise PayloadTooLarge(
            f"Input {name!r} must have at most {limits.max_elements} elements. "
            f"Got {arr.size} instead.",
            hint="Raise SHIPYARD_SERVER__MAX_BODY_BYTES or split the batch.",
        )
    if dtype is DType.BYTES:
        flat = arr.reshape(-1)
        longest = 0
        for i, v in enumerate(flat):
            if type(v) is str:
                v = flat[i] = v.encode("utf-8")
            elif type(v) is not bytes:
                raise InvalidData(
                    f"Input {name!r} must be a regular (nested) list of strings. "
                    f"Got a {type(v).__name__} among them instead."
                )
            longest = max(longest, len(v))
        if longest > limits.max_bytes_element_bytes:
            raise _too_big_element(longest, limits.max_bytes_element_bytes)
    elif not limits.allow_nan and arr.dtype.kind in _FLOAT_KINDS and not np.isfinite(arr).all():
        raise InvalidData(
            f"Input {name!r} must hold finite numbers. Got NaN or Inf instead.",
            hint="NaN/Inf are refused by SHIPYARD_SERVER__ALLOW_NAN=false.",
        )
    return arr


def _is_named(row: Any) -> bool:
    return type(row) is dict and not (len(row) == 1 and "b64" in row)


def decode_tfs_predict(
    body: bytes, signature: Signature | None = None, *, limits: DecodeLimits | None = None
) -> tuple[dict[str, npt.NDArray[Any]], TfsForm]:
    """Decode a TF Serving ``:predict`` body into named arrays.

    Row form: ``{"instances": [...]}``, a list of values (one unnamed input) or of objects
    (several named inputs sharing the 0-th dim). Columnar form: ``{"inputs": ...}``, one
    tensor or an object of named tensors. ``{"b64": "..."}`` values become bytes.
    ``NaN``/``Infinity`` tokens are accepted (orjson first, the stdlib parser only when
    orjson fails) unless ``limits.allow_nan`` is False.

    Args:
        body: The request body.
        signature: The model's signature: input dtypes, and the name of an unnamed input.
            Without it dtypes are inferred and an unnamed input is keyed ``"inputs"``.
        limits: Size and content limits.

    Returns:
        The inputs by name, and which form the body used (for the response).

    Raises:
        InvalidData: not JSON, neither or both forms, ragged or mistyped values.
        SignatureMismatch: input names that do not match the signature.
        PayloadTooLarge: a tensor or BYTES element exceeds a limit.
    """
    limits = limits or _DEFAULT_LIMITS
    doc = loads_tolerant(body, allow_nan=limits.allow_nan)
    if type(doc) is not dict:
        raise InvalidData(
            f"A :predict body must be a JSON object. Got a JSON {type(doc).__name__} instead."
        )
    has_rows, has_cols = "instances" in doc, "inputs" in doc
    if has_rows == has_cols:
        raise InvalidData(
            "A :predict body must have exactly one of 'instances' (row) or 'inputs' "
            f"(columnar). Got {'both' if has_rows else 'neither'} instead."
        )
    has_b64 = b'"b64"' in body
    specs = {s.name: s.dtype for s in signature.inputs} if signature is not None else None
    form: TfsForm
    named: dict[str, Any]
    if has_rows:
        form = "row"
        rows = doc["instances"]
        if type(rows) is not list or not rows:
            raise InvalidData("'instances' must be a non-empty list. It is not.")
        if _is_named(rows[0]):
            names = list(rows[0])
            for i, row in enumerate(rows):
                if not _is_named(row) or row.keys() != rows[0].keys():
                    raise InvalidData(
                        f"Every instance must be an object with inputs {sorted(names)[:16]}. "
                        f"Got instance {i} that is not instead."
                    )
            named = {n: [row[n] for row in rows] for n in names}
        else:
            named = {_unnamed(specs): rows}
    else:
        form = "columnar"
        cols = doc["inputs"]
        named = dict(cols) if _is_named(cols) else {_unnamed(specs): cols}
    if specs is not None:
        _match_names(named, specs)
    arrays = {
        n: _tfs_array(n, v, specs[n] if specs is not None else None, limits, has_b64)
        for n, v in named.items()
    }
    return arrays, form


def _unnamed(specs: dict[str, DType] | None) -> str:
    if specs is None:
        return TFS_UNNAMED
    if len(specs) != 1:
        raise SignatureMismatch(
            f"Inputs must be named for a model with inputs {sorted(specs)[:16]}. "
            "Got an unnamed tensor instead."
        )
    return next(iter(specs))


def _match_names(named: Mapping[str, Any], specs: Mapping[str, DType]) -> None:
    if named.keys() != specs.keys():
        raise SignatureMismatch(
            f"Inputs must be {sorted(specs)[:16]}. Got {sorted(map(str, named))[:16]} instead."
        )


def _tfs_value(name: str, arr: npt.NDArray[Any]) -> Any:
    """An output as orjson can write it: numbers as arrays, strings as nested lists."""
    if arr.dtype.kind not in "OSU":
        if not arr.flags.c_contiguous or not arr.dtype.isnative:
            arr = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("="))
        return arr
    as_b64 = name.endswith("_bytes")
    flat = arr.reshape(-1)
    out = np.empty(flat.shape, dtype=object)
    for i, v in enumerate(flat):
        b = v if isinstance(v, bytes) else str(v).encode("utf-8")
        if not as_b64:
            try:
                out[i] = b.decode("utf-8")
                continue
            except UnicodeDecodeError:
                pass
        out[i] = {"b64": base64.b64encode(b).decode("ascii")}
    return out.reshape(arr.shape).tolist()


def encode_tfs_predict(outputs: Mapping[str, npt.NDArray[Any]], form: TfsForm) -> bytes:
    """Encode a TF Serving ``:predict`` response.

    Row form: ``{"predictions": [...]}``, one entry per instance (an object per instance
    when there are several outputs). Columnar form: ``{"outputs": ...}`` (an object keyed by
    output name when there are several). String outputs whose name ends in ``_bytes`` (and
    any that are not valid UTF-8) are written ``{"b64": "..."}``.

    Raises:
        InferenceError: in row form, outputs that do not share their first dimension.
    """
    if len(outputs) == 1:
        ((name, arr),) = outputs.items()
        key = "predictions" if form == "row" else "outputs"
        return orjson.dumps({key: _tfs_value(name, arr)}, option=_JSON_OUT)
    if form == "columnar":
        return orjson.dumps(
            {"outputs": {n: _tfs_value(n, a) for n, a in outputs.items()}}, option=_JSON_OUT
        )
    rows = {a.shape[0] if a.ndim else -1 for a in outputs.values()}
    if len(rows) != 1 or -1 in rows:
        raise InferenceError(
            "Outputs must share their first dimension to be returned as rows. "
            f"Got shapes {[list(a.shape) for a in outputs.values()]} instead."
        )
    columns = {n: _tfs_value(n, a) for n, a in outputs.items()}
    as_lists = {n: c.tolist() if isinstance(c, np.ndarray) else c for n, c in columns.items()}
    n_rows = rows.pop()
    predictions = [{n: col[i] for n, col in as_lists.items()} for i in range(n_rows)]
    return orjson.dumps({"predictions": predictions}, option=_JSON_OUT)
