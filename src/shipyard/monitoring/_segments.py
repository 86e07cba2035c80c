"""Prediction-log segments as Arrow IPC files: columnar, one row per example.

Why Arrow IPC and not Parquet or JSON lines: the writer shares the server's CPU, so its
cost per request is serving throughput lost. Measured on this project's 2-core machine
(``benchmarks/serve/run.py``'s models), writing one example's 3x32x32 float32 input cost
76 µs as JSON text, 15-28 µs as Parquet (its list encoding writes a repetition level per
value) and 0.9 µs as Arrow IPC, which is the array's bytes behind a small header. Every
tool that reads Parquet reads Arrow IPC files too (``pyarrow.ipc.open_file``, pandas'
``read_feather``, polars, DuckDB).

Layout of one segment (schema metadata ``model`` and ``version``)::

    request_id: string   row: int32   rows: int32   ts: float64   latency_ms: float64
    key: string (null when the client sent none)
    inputs:  struct<one field per logged input>
    outputs: struct<one field per logged output>

A tensor field holds one example per row: a plain column for a scalar per example, else a
fixed-size list of the example's values in C order with the example's shape in the field's
metadata (``shape``: JSON). BYTES tensors are lists of binary values. Privacy rules change
the type: ``summary`` gives a struct (count, nan, mean, min, max), ``hash`` a string.

The request path queues :class:`Entry` objects: one per request, or one per batch that
the batcher ran (its tensors already stacked, so a batch of 8 costs about what one request
does). The writer concatenates entries' tensors with numpy into reused buffers and builds
Arrow arrays from their memory, so the Python work per request is a few list items; the
bytes are moved by numpy and Arrow in C.

Imports: numpy, orjson, pyarrow (only when the prediction log is on).
"""

from __future__ import annotations

import base64
import hashlib
import itertools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import orjson
import pyarrow as pa

from shipyard._utils.crypto import decrypt_bytes, encrypt_bytes, is_encrypted
from shipyard._utils.fs import atomic_write_bytes, fsync_dir

if TYPE_CHECKING:
    import numpy.typing as npt

    from shipyard._utils.crypto import KeyProvider

__all__ = [
    "Encoded",
    "Entry",
    "Privacy",
    "decode_requests",
    "decode_rows",
    "encode",
    "numeric_window",
    "read_segment",
    "without_inputs",
]

Arrays = Mapping[str, "npt.NDArray[Any]"]

SEGMENTS = "segments"
"""The folder of segments inside the monitoring folder: ``segments/<model>/<version>/``."""
Rule = Literal["drop", "hash", "summary"]

# Entries per record batch, and tensor bytes: each record batch costs the writer a fixed
# 100-200 µs of Python and a GIL hand-over, so they are large (4 MB of M's 12 KB inputs
# cost 8-10 µs a request where 256 KB cost 20; 2048 of S's unbatched requests 2.9 µs where
# 512 cost 3.3). Copies into a record batch's buffers are made ``COPY_BYTES`` at a time,
# each one numpy call, and the rest is Python: the GIL is never held long in one go.
CHUNK = 2048
CHUNK_BYTES = 4 * 1024 * 1024
COPY_BYTES = 256 * 1024


@dataclass(slots=True)
class Entry:
    """Requests logged together, as the request path queued them (nothing copied).

    One request, or every request of a batch the batcher ran as one call: its tensors
    then hold all their examples stacked, and ``counts`` says how many rows each request
    has. Logging a batch as one entry is what keeps the cost per request low.
    """

    model: str
    version: str
    ts: float
    request_ids: list[str]
    keys: list[str | None]
    latency_ms: list[float]
    counts: list[int] | None
    """Rows per request; None for a single request (its tensors say)."""
    inputs: Arrays
    outputs: Arrays

    def rows(self) -> list[int]:
        """Rows per request."""
        if self.counts is not None:
            return self.counts
        return [rows_in(self.outputs) or rows_in(self.inputs) or 1]


def rows_in(tensors: Arrays) -> int:
    """Examples in a request: the first batch-major tensor's leading dimension."""
    for arr in tensors.values():
        if arr.ndim:
            return int(arr.shape[0])
    return 0


def _single_rows(entries: Sequence[Entry]) -> list[int]:
    """``Entry.rows()`` of entries of one request each (same field names), field by field.

    A Python call per entry cost a third of the writer's work per request of a small
    model; this looks at each entry's tensor of one field, and one by one only when an
    earlier field is batch-major in some entries and not in others.
    """
    first = entries[0]
    for part in ("outputs", "inputs"):
        for name in getattr(first, part):
            tensors = [getattr(e, part)[name] for e in entries]
            dims = {t.ndim for t in tensors}
            if dims == {0}:
                continue
            if 0 in dims:
                return [e.rows()[0] for e in entries]
            return [t.shape[0] for t in tensors]
    return [1] * len(entries)


def json_default(value: Any) -> Any:
    """The JSON encoder's fallback: bytes as text (base64 when not UTF-8), numpy scalars."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return {"b64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(type(value).__name__)


class Privacy:
    """Which fields are written whole, summarised, hashed or dropped."""

    def __init__(
        self, inputs: Literal["full", "summary", "none"], redact: Mapping[str, Rule], salt: str
    ) -> None:
        self.inputs = inputs
        self.redact = dict(redact)
        self.salt = salt.encode()

    def rule(self, name: str, *, inputs: bool) -> Rule | None:
        """What happens to field ``name``: None keeps it whole."""
        rule = self.redact.get(name)
        if rule is None and inputs and self.inputs != "full":
            return "drop" if self.inputs == "none" else "summary"
        return rule

    def hash_of(self, value: Any) -> str:
        """Salted sha256 of one example's values (as JSON)."""
        data = orjson.dumps(value, default=json_default, option=orjson.OPT_SERIALIZE_NUMPY)
        return hashlib.sha256(self.salt + data).hexdigest()


# ---- writing ----------------------------------------------------------------------------
# Arrays are built from their buffers: ``pa.array`` imports pandas when it is installed
# (hundreds of milliseconds holding the GIL, tens of MB), and the writer shares the
# server's process.


def _concat(parts: list[npt.NDArray[Any]]) -> npt.NDArray[Any]:
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _concat_into(
    parts: list[npt.NDArray[Any]], scratch: dict[str, Any] | None, key: str, counts: list[int]
) -> npt.NDArray[Any]:
    """``np.concatenate(parts)`` into a buffer kept for the next chunk.

    Fresh multi-megabyte arrays are fresh pages the kernel must fault in and zero: for
    3 KB examples that was 2.5x the cost of the copy itself. Parts are copied about
    ``COPY_BYTES`` at a time, so the serving thread can take the GIL in between;
    ``counts`` are their leading dimensions.
    """
    first = parts[0]
    if len(parts) == 1 or scratch is None or first.dtype.kind == "O":
        return _concat(parts)
    shape = (sum(counts), *first.shape[1:])
    need = int(np.prod(shape)) * first.dtype.itemsize
    buf = scratch.get(key)
    if buf is None or buf.nbytes < need:
        buf = scratch[key] = np.empty(need, dtype=np.uint8)
    out = buf[:need].view(first.dtype).reshape(shape)
    if need <= COPY_BYTES:
        np.concatenate(parts, out=out)
        return out
    step = max(1, COPY_BYTES // max(first.nbytes, 1))
    row = 0
    for i in range(0, len(parts), step):
        n = sum(counts[i : i + step])
        np.concatenate(parts[i : i + step], out=out[row : row + n])
        row += n
    return out


def _bitmap(valid: npt.NDArray[np.bool_]) -> pa.Buffer:
    return pa.py_buffer(np.packbits(valid, bitorder="little"))


def _primitive(values: npt.NDArray[Any], valid: npt.NDArray[np.bool_] | None = None) -> pa.Array:
    """A numeric or boolean numpy vector as an Arrow array (no copy for numbers)."""
    n = len(values)
    if values.dtype == np.bool_:
        kind, data = pa.bool_(), _bitmap(values)
    else:
        values = np.ascontiguousarray(values)
        kind, data = pa.from_numpy_dtype(values.dtype), pa.py_buffer(values)
    if valid is None or valid.all():
        return pa.Array.from_buffers(kind, n, [None, data], null_count=0)
    nulls = int(n - valid.sum())
    return pa.Array.from_buffers(kind, n, [_bitmap(valid), data], null_count=nulls)


def _offsets(lengths: Any, n: int) -> pa.Buffer:
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.fromiter(lengths, dtype=np.int64, count=n), out=offsets[1:])
    if offsets[-1] >= 2**31:
        raise ValueError("A segment column would pass 2 GiB")  # CHUNK keeps it far lower
    return pa.py_buffer(offsets.astype(np.int32))


def _strings(items: Sequence[str | bytes | None], *, binary: bool = False) -> pa.Array:
    """Text (or bytes) values, None as null."""
    n = len(items)
    kind = pa.binary() if binary else pa.string()
    nulls = items.count(None)
    if nulls == n:  # a key column when no client sent one
        zeros = pa.py_buffer(np.zeros(max(n + 1, (n + 7) // 8), dtype=np.int32))
        return pa.Array.from_buffers(kind, n, [zeros, zeros, pa.py_buffer(b"")], null_count=n)
    if not nulls and not binary:
        text = "".join(items)  # type: ignore[arg-type]  # no None: all str
        if text.isascii():  # one byte a character: no encoding one by one
            offsets = _offsets(map(len, items), n)  # type: ignore[arg-type]
            return pa.Array.from_buffers(kind, n, [None, offsets, pa.py_buffer(text.encode())])
    encoded = [v.encode() if isinstance(v, str) else (v or b"") for v in items]
    valid = None
    if nulls:
        valid = _bitmap(np.fromiter((v is not None for v in items), dtype=np.bool_, count=n))
    return pa.Array.from_buffers(
        kind, n, [valid, _offsets(map(len, encoded), n), pa.py_buffer(b"".join(encoded))]
    )


def _repeat(values: Sequence[Any], counts: npt.NDArray[np.int32] | None) -> list[Any]:
    if counts is None:
        return list(values)
    return [v for v, c in zip(values, counts.tolist(), strict=True) for _ in range(c)]


def _summary_column(values: npt.NDArray[Any]) -> pa.Array:
    """Per example: count, NaN count, and mean/min/max of the finite values (numbers only)."""
    n = values.shape[0]
    flat = values.reshape(n, -1)
    count = _primitive(np.full(n, flat.shape[1], dtype=np.int64))
    if flat.dtype.kind not in "biuf" or flat.shape[1] == 0:
        return pa.StructArray.from_arrays([count], names=["count"])
    as_float = flat.astype(np.float64)
    finite = np.isfinite(as_float)
    n_finite = finite.sum(axis=1)
    some = n_finite > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(finite, as_float, 0.0).sum(axis=1) / n_finite
    low = np.where(finite, as_float, np.inf).min(axis=1)
    high = np.where(finite, as_float, -np.inf).max(axis=1)
    nan = np.isnan(as_float).sum(axis=1).astype(np.int64)
    return pa.StructArray.from_arrays(
        [
            count,
            _primitive(nan),
            _primitive(mean, some),
            _primitive(low, some),
            _primitive(high, some),
        ],
        names=["count", "nan", "mean", "min", "max"],
    )


def _as_bytes(value: Any) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)


def _tensor_column(values: npt.NDArray[Any]) -> tuple[pa.Array, dict[bytes, bytes]]:
    """One example per row: a plain column, a fixed-size list, or lists of binary."""
    n, shape = values.shape[0], values.shape[1:]
    meta = {b"shape": orjson.dumps(list(shape))}
    if values.dtype.kind in "OSU":
        rows = values.reshape(n, -1).tolist()
        items = [_as_bytes(v) for row in rows for v in row]
        offsets = _primitive(np.arange(n + 1, dtype=np.int32) * len(rows[0]))
        return pa.ListArray.from_arrays(offsets, _strings(items, binary=True)), meta
    if not shape:
        return _primitive(values), meta
    flat = _primitive(values.reshape(-1))
    return pa.FixedSizeListArray.from_arrays(flat, int(np.prod(shape))), meta


def _json_rows(
    parts: list[npt.NDArray[Any]],
    rule: Rule | None,
    privacy: Privacy,
    counts: list[int],
) -> pa.Array:
    """Each example's value as JSON text: the slow path, for mixed dtypes or shapes.

    A request's tensor without a batch axis is written whole on each of its rows.
    """

    def value(v: npt.NDArray[Any]) -> Any:
        if rule == "summary":
            return _summary_column(np.asarray(v).reshape(1, -1)).to_pylist()[0]
        if rule == "hash":
            return privacy.hash_of(np.asarray(v).tolist())
        return v

    dumps, opt = orjson.dumps, orjson.OPT_SERIALIZE_NUMPY
    texts: list[str] = []
    for part, n in zip(parts, counts, strict=True):
        if part.ndim and part.shape[0] == n:
            texts.extend(dumps(value(v), default=json_default, option=opt).decode() for v in part)
        else:
            texts.extend([dumps(value(part), default=json_default, option=opt).decode()] * n)
    return _strings(texts)


def _column(
    parts: list[npt.NDArray[Any]],
    rule: Rule | None,
    privacy: Privacy,
    counts: list[int],
    scratch: tuple[dict[str, Any], str] | None,
) -> tuple[pa.Array, dict[bytes, bytes]]:
    """One field of a chunk: ``parts`` (one per entry) hold ``counts`` rows each."""
    first = parts[0]
    batch_major = (
        [p.shape[0] if p.ndim else -1 for p in parts] == counts
        and len({p.dtype for p in parts}) == 1
        and first.dtype.kind not in "cmMV"
        and 0 not in first.shape[1:]
    )
    values = None
    if batch_major:
        try:  # numpy checks that the examples' shapes agree
            values = _concat_into(parts, *scratch, counts) if scratch else _concat(parts)
        except ValueError:
            values = None
    if values is None:
        return _json_rows(parts, rule, privacy, counts), {b"encoding": b"json"}
    if rule == "summary":
        return _summary_column(values), {}
    if rule == "hash":
        return _strings([privacy.hash_of(v) for v in values.tolist()]), {}
    return _tensor_column(values)


def _struct(
    entries: Sequence[Entry],
    entry_rows: list[int],
    privacy: Privacy,
    scratch: dict[str, Any] | None,
    *,
    inputs: bool,
) -> pa.StructArray | None:
    fields: list[pa.Field] = []
    arrays: list[pa.Array] = []
    first = entries[0].inputs if inputs else entries[0].outputs
    for name in first:
        rule = privacy.rule(name, inputs=inputs)
        if rule == "drop":
            continue
        parts = [(e.inputs if inputs else e.outputs)[name] for e in entries]
        where = (scratch, f"{'in' if inputs else 'out'}:{name}") if scratch is not None else None
        array, meta = _column(parts, rule, privacy, entry_rows, where)
        fields.append(pa.field(name, array.type, metadata=meta or None))
        arrays.append(array)
    if not fields:
        return None
    return pa.StructArray.from_arrays(arrays, fields=fields)


FORMAT = b"shipyard.predlog/1"


@dataclass(slots=True)
class Encoded:
    """A chunk of one model version's entries as a record batch, and its requests."""

    batch: pa.RecordBatch
    request_ids: list[str]
    ts: list[float]
    keys: list[str | None]
    counts: list[int]
    """Rows per request, in order: request ``i`` starts at row ``sum(counts[:i])``."""


def _encode_chunk(
    model: str,
    version: str,
    entries: Sequence[Entry],
    privacy: Privacy,
    scratch: dict[str, Any] | None,
) -> Encoded:
    unbatched = [e.counts for e in entries].count(None) == len(entries)
    per_entry = [] if unbatched else [e.rows() for e in entries]
    if unbatched or all(len(c) == 1 for c in per_entry):  # one request per entry
        counts = _single_rows(entries) if unbatched else [c[0] for c in per_entry]
        ids = [e.request_ids[0] for e in entries]
        keys = [e.keys[0] for e in entries]
        latency = [e.latency_ms[0] for e in entries]
        ts = [e.ts for e in entries]
        entry_rows = counts
    else:
        chain = itertools.chain.from_iterable
        counts = list(chain(per_entry))
        ids = list(chain(e.request_ids for e in entries))
        keys = list(chain(e.keys for e in entries))
        latency = list(chain(e.latency_ms for e in entries))
        ts = list(chain([e.ts] * len(e.request_ids) for e in entries))
        entry_rows = [sum(c) for c in per_entry]
    rows = np.asarray(counts, dtype=np.int32)
    total = int(rows.sum())
    repeat = None if total == len(counts) else rows
    if repeat is None:
        row = np.zeros(total, dtype=np.int32)
    else:
        starts = np.cumsum(rows) - rows
        row = (np.arange(total) - np.repeat(starts, rows)).astype(np.int32)

    def numbers(values: Any, dtype: Any) -> pa.Array:
        arr = np.asarray(values, dtype=dtype)
        return _primitive(arr if repeat is None else np.repeat(arr, repeat))

    names = ["request_id", "row", "rows", "ts", "latency_ms", "key"]
    arrays = [
        _strings(_repeat(ids, repeat)),
        _primitive(row),
        numbers(rows, np.int32),
        numbers(ts, np.float64),
        numbers(latency, np.float64),
        _strings(_repeat(keys, repeat)),
    ]
    for part, is_inputs in (("inputs", True), ("outputs", False)):
        struct = _struct(entries, entry_rows, privacy, scratch, inputs=is_inputs)
        if struct is not None:
            names.append(part)
            arrays.append(struct)
    schema = pa.schema(
        [pa.field(n, a.type) for n, a in zip(names, arrays, strict=True)],
        metadata={b"model": model.encode(), b"version": version.encode(), b"format": FORMAT},
    )
    return Encoded(pa.RecordBatch.from_arrays(arrays, schema=schema), ids, ts, keys, counts)


def _chunks(members: list[Entry]) -> Iterator[list[Entry]]:
    """Runs of at most ``CHUNK`` entries and about ``CHUNK_BYTES`` of inputs.

    The first entry's size stands for all: requests of one model are alike.
    """
    size = sum(a.nbytes for a in members[0].inputs.values())
    step = max(1, min(CHUNK, CHUNK_BYTES // max(size, 1)))
    for start in range(0, len(members), step):
        yield members[start : start + step]


def encode(
    model: str,
    version: str,
    entries: Sequence[Entry],
    privacy: Privacy,
    *,
    scratch: dict[str, Any] | None = None,
) -> Iterator[Encoded]:
    """One model version's entries as record batches of up to ``CHUNK`` entries each.

    Entries are grouped by field names first, so a batch's columns are the same for
    every request in it; tensors whose shapes or dtypes differ within a batch are
    written as JSON text (a rare, slower path). With ``scratch``, tensors are
    concatenated into buffers reused from chunk to chunk: a batch is then valid only
    until the next one is made (write it first).
    """
    groups: dict[tuple[Any, ...], list[Entry]] = {}
    for entry in entries:
        groups.setdefault((*entry.inputs, None, *entry.outputs), []).append(entry)
    for members in groups.values():
        for chunk in _chunks(members):
            yield _encode_chunk(model, version, chunk, privacy, scratch)


# ---- reading ----------------------------------------------------------------------------


def _numpy(array: pa.Array) -> npt.NDArray[Any]:
    """A numeric Arrow array without nulls as a numpy view of its buffer (no pandas)."""
    kind = array.type
    if array.null_count or not (pa.types.is_integer(kind) or pa.types.is_floating(kind)):
        return np.asarray(array.to_pylist())
    dtype = np.dtype(kind.to_pandas_dtype()) if pa.types.is_float16(kind) else _DTYPES[kind]
    data = array.buffers()[1]
    return np.frombuffer(data, dtype=dtype, count=len(array), offset=array.offset * dtype.itemsize)


_DTYPES = {
    pa.from_numpy_dtype(np.dtype(name)): np.dtype(name)
    for name in (
        "int8",
        "int16",
        "int32",
        "int64",
        "uint8",
        "uint16",
        "uint32",
        "uint64",
        "float32",
        "float64",
    )
}


def _field_values(array: pa.Array, field: pa.Field) -> list[Any]:
    """One JSON-like value per row (example) of a tensor field."""
    meta = field.metadata or {}
    kind = field.type
    if meta.get(b"encoding") == b"json":
        return [orjson.loads(t) for t in array.to_pylist()]
    if pa.types.is_struct(kind):  # a summary
        return [{k: v for k, v in d.items() if v is not None} for d in array.to_pylist()]
    shape = orjson.loads(meta[b"shape"]) if b"shape" in meta else []
    if pa.types.is_fixed_size_list(kind):
        if pa.types.is_boolean(kind.value_type):
            return [np.asarray(r).reshape(shape).tolist() for r in array.to_pylist()]
        flat = _numpy(array.flatten())
        return flat.reshape(len(array), *shape).tolist()  # type: ignore[no-any-return]
    if pa.types.is_list(kind):  # BYTES
        rows = [[json_default(v) for v in row] for row in array.to_pylist()]
        if len(shape) > 1:
            return [np.array(r, dtype=object).reshape(shape).tolist() for r in rows]
        return rows
    return array.to_pylist()  # type: ignore[no-any-return]


def decoded_fields(batch: pa.RecordBatch, part: str) -> dict[str, list[Any]]:
    """``inputs`` or ``outputs`` of a record batch: per field, one value per row."""
    index = batch.schema.get_field_index(part)
    if index < 0:
        return {}
    struct = batch.column(index)
    kind = struct.type
    return {
        kind.field(i).name: _field_values(child, kind.field(i))
        for i, child in enumerate(struct.flatten())
    }


def decode_rows(data: Any) -> Iterator[dict[str, Any]]:
    """Every example of a segment's bytes, oldest first, as the JSON-lines reader gives."""
    reader = pa.ipc.open_file(pa.BufferReader(data))
    meta = reader.schema.metadata or {}
    model, version = meta.get(b"model", b"").decode(), meta.get(b"version", b"").decode()
    for b in range(reader.num_record_batches):
        batch = reader.get_batch(b)
        inputs, outputs = decoded_fields(batch, "inputs"), decoded_fields(batch, "outputs")
        cols = {
            name: batch.column(name).to_pylist()
            for name in ("request_id", "row", "rows", "ts", "latency_ms", "key")
        }
        for i in range(batch.num_rows):
            yield {
                "request_id": cols["request_id"][i],
                "model": model,
                "version": version,
                "ts": cols["ts"][i],
                "latency_ms": cols["latency_ms"][i],
                "key": cols["key"][i],
                "rows": cols["rows"][i],
                "row": cols["row"][i],
                "inputs": {name: values[i] for name, values in inputs.items()},
                "outputs": {name: values[i] for name, values in outputs.items()},
            }


def decode_requests(data: Any) -> Iterator[dict[str, Any]]:
    """Every request of a segment's bytes: its examples' fields gathered into lists."""
    current: dict[str, Any] | None = None
    for row in decode_rows(data):
        if row["row"] == 0:
            if current is not None:
                yield current
            current = {k: v for k, v in row.items() if k not in ("row", "inputs", "outputs")}
            current["inputs"] = {k: [v] for k, v in row["inputs"].items()}
            current["outputs"] = {k: [v] for k, v in row["outputs"].items()}
        elif current is not None:
            for part in ("inputs", "outputs"):
                for k, v in row[part].items():
                    current[part][k].append(v)
    if current is not None:
        yield current


def _is_number(kind: pa.DataType) -> bool:
    return bool(pa.types.is_integer(kind) or pa.types.is_floating(kind))


def numeric_window(data: Any, part: str) -> dict[str, npt.NDArray[Any]]:
    """A segment's numeric tensor fields of ``part`` as arrays, one example per row.

    No Python object per value is made: drift reads the log this way.
    """
    reader = pa.ipc.open_file(pa.BufferReader(data))
    columns: dict[str, list[npt.NDArray[Any]]] = {}
    for b in range(reader.num_record_batches):
        batch = reader.get_batch(b)
        index = batch.schema.get_field_index(part)
        if index < 0:
            continue
        struct = batch.column(index)
        for i, child in enumerate(struct.flatten()):
            field = struct.type.field(i)
            meta = field.metadata or {}
            kind = field.type
            if pa.types.is_fixed_size_list(kind) and _is_number(kind.value_type):
                shape = orjson.loads(meta[b"shape"])
                values = _numpy(child.flatten())
                columns.setdefault(field.name, []).append(values.reshape(len(child), *shape))
            elif _is_number(kind):
                columns.setdefault(field.name, []).append(_numpy(child))
    return {name: _concat(parts) for name, parts in columns.items()}


def outputs_at(data: Any, rows: Sequence[int]) -> tuple[list[float], list[dict[str, Any]]]:
    """The time and logged outputs of the segment's examples at ``rows`` (the feedback join)."""
    reader = pa.ipc.open_file(pa.BufferReader(data))
    if not rows:
        return [], []
    has_outputs = reader.schema.get_field_index("outputs") >= 0
    table = reader.read_all().select(["ts", "outputs"] if has_outputs else ["ts"])
    taken = table.take(_primitive(np.asarray(rows, dtype=np.int64))).combine_chunks()
    (batch,) = taken.to_batches()
    times = batch.column(0).to_pylist()
    fields = decoded_fields(batch, "outputs")
    return times, [{name: values[i] for name, values in fields.items()} for i in range(len(rows))]


def read_segment(path: Path, keys: KeyProvider | None = None) -> bytes:
    """A segment's Arrow IPC bytes, decrypted in memory when it is an encrypted envelope.

    Raises:
        EncryptionKeyMissing: it is encrypted and ``keys`` is None or lacks its key.
        DecryptionFailed: wrong key, altered, or renamed (the name is authenticated).
    """
    data = path.read_bytes()
    if is_encrypted(data):
        return decrypt_bytes(data, keys, aad=path.name.encode())
    return data


def without_inputs(path: Path, keys: KeyProvider | None = None) -> int | None:
    """Rewrite a segment with its outputs only (atomically); return its new size.

    None when it has no inputs left to drop. Rows stay in place, so the feedback index's
    row numbers still point at the right outputs. An encrypted segment stays encrypted.
    """
    raw = path.read_bytes()
    sealed = is_encrypted(raw)
    reader = pa.ipc.open_file(
        pa.BufferReader(decrypt_bytes(raw, keys, aad=path.name.encode()) if sealed else raw)
    )
    schema = reader.schema
    if schema.get_field_index("inputs") < 0:
        return None
    table = reader.read_all().select([n for n in schema.names if n != "inputs"])
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    data = sink.getvalue().to_pybytes()
    if sealed:
        assert keys is not None  # it decrypted
        data = encrypt_bytes(data, keys, aad=path.name.encode())
    atomic_write_bytes(path, data)
    fsync_dir(path.parent)
    return len(data)
