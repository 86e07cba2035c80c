"""Read datasets for evaluation and batch scoring: CSV, Parquet, ``.npz`` and ``.npy``.

A *tabular* model has one 2-D input (N, F): its feature columns are the task schema's
``feature_names`` when given, else every non-target column in file order. A model whose
inputs are all single columns ((N,) or (N, 1)) is fed one column per input, by name.
``.npz`` files hold arrays keyed by input name (or ``X``/``x`` for a single input) plus
the target (``y`` unless told otherwise); ``.npy`` holds the single input.

:func:`iter_batches` streams: CSV through ``pyarrow.csv.open_csv``, Parquet through
``ParquetFile.iter_batches``, ``.npy`` memory-mapped. ``.npz`` members are read whole
(numpy cannot memory-map inside a zip) and then sliced.

Imports: spec, errors, numpy, pyarrow (lazily).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

from shipyard.errors import DataNotFound, InvalidData, ShipyardError, SignatureMismatch
from shipyard.spec import DType

if TYPE_CHECKING:
    import pyarrow as pa

    from shipyard.spec import Signature, TensorSpec

__all__ = ["Batch", "DataFormat", "data_format", "iter_batches", "load_table"]

logger = logging.getLogger(__name__)

DataFormat = Literal["csv", "parquet", "npz", "npy"]
_SUFFIXES: dict[str, DataFormat] = {
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".npz": "npz",
    ".npy": "npy",
}
_CSV_BLOCK_BYTES = 1 << 20

Batch = tuple[dict[str, npt.NDArray[Any]], npt.NDArray[Any] | None]
"""Arrays by input name, and the target (None when no target was asked for)."""


def data_format(path: Path) -> DataFormat:
    """The format of a data file, from its extension.

    Raises:
        InvalidData: the extension is not one of ``.csv``, ``.parquet``/``.pq``, ``.npz``,
            ``.npy``.
    """
    try:
        return _SUFFIXES[path.suffix.lower()]
    except KeyError:
        raise InvalidData(
            f"A data file must end in one of {sorted(_SUFFIXES)}. "
            f"Got {path.suffix or 'no extension'!r} ({path.name!r}) instead."
        ) from None


def _require_file(path: Path) -> DataFormat:
    fmt = data_format(path)
    if not path.is_file():
        raise DataNotFound(
            f"Data file {str(path)!r} must exist. It was not found.",
            hint="Check the path (relative paths start from the current directory).",
        )
    return fmt


def _dims(spec: TensorSpec) -> str:
    return "(" + ", ".join("N" if d is None else str(d) for d in spec.shape) + ")"


# ---------------------------------------------------------------------------- tables


@dataclass(frozen=True)
class _TablePlan:
    """Which columns feed which inputs, decided once from a file's schema."""

    mode: Literal["matrix", "columns"]
    inputs: tuple[tuple[str, np.dtype[Any] | None, tuple[str, ...], int], ...]
    """(input name, numpy dtype or None for BYTES, source columns, rank)."""
    target: str | None

    @property
    def columns(self) -> list[str]:
        cols = [c for _, _, cols, _ in self.inputs for c in cols]
        if self.target is not None and self.target not in cols:
            cols.append(self.target)
        return cols

    def convert(self, table: pa.Table | pa.RecordBatch) -> Batch:
        n = table.num_rows
        names = table.schema.names
        tensors: dict[str, npt.NDArray[Any]] = {}
        for name, dtype, cols, rank in self.inputs:
            if self.mode == "matrix":
                out = np.empty((n, len(cols)), dtype=dtype)
                for j, col in enumerate(cols):
                    out[:, j] = table.column(names.index(col)).to_numpy(zero_copy_only=False)
                tensors[name] = out
            else:
                raw = table.column(names.index(cols[0])).to_numpy(zero_copy_only=False)
                arr = raw.astype(object) if dtype is None else raw.astype(dtype, copy=False)
                tensors[name] = arr.reshape(n, 1) if rank == 2 else arr
        y = None
        if self.target is not None:
            y = table.column(names.index(self.target)).to_numpy(zero_copy_only=False)
        return tensors, y


def _is_numeric(typ: pa.DataType) -> bool:
    import pyarrow as pa

    return bool(
        pa.types.is_integer(typ)
        or pa.types.is_floating(typ)
        or pa.types.is_boolean(typ)
        or pa.types.is_null(typ)
    )


def _plan(
    schema: pa.Schema,
    signature: Signature,
    *,
    target: str | None,
    feature_names: Sequence[str] | None,
    allow_extra_columns: bool,
    source: str,
) -> _TablePlan:
    columns = list(schema.names)
    types = dict(zip(schema.names, schema.types, strict=True))
    if target is not None and target not in types:
        raise InvalidData(
            f"Target column {target!r} must be in {source}. Available columns: {columns}.",
            hint="Pass the name of the label column with --target (python: target=...).",
        )
    specs = signature.inputs
    if len(specs) == 1 and len(specs[0].shape) == 2:
        spec = specs[0]
        n_feat = spec.shape[1]
        if feature_names is not None:
            chosen = list(feature_names)
            missing = [c for c in chosen if c not in types]
            if missing:
                raise InvalidData(
                    f"Feature columns {missing} must be in {source}. Available columns: {columns}.",
                    hint="The model's feature names come from its task schema "
                    "(`shipyard models show`).",
                )
        else:
            chosen = [c for c in columns if c != target]
            if n_feat is not None and len(chosen) > n_feat and allow_extra_columns:
                logger.warning(
                    "Using the first %d columns %s of %s as features and ignoring %s; "
                    "register the model with feature_names to pick columns by name.",
                    n_feat,
                    chosen[:n_feat],
                    source,
                    chosen[n_feat:],
                )
                chosen = chosen[:n_feat]
        if n_feat is not None and len(chosen) != n_feat:
            raise SignatureMismatch(
                f"Input {spec.name!r} must have shape {_dims(spec)}: {n_feat} feature columns. "
                f"Got {len(chosen)} columns {chosen} instead.",
                hint="Name the label column with --target so it is not used as a feature.",
            )
        if spec.dtype is DType.BYTES:
            raise InvalidData(
                f"A tabular input must be numeric. Input {spec.name!r} is BYTES; use .npz."
            )
        for col in chosen:
            if not _is_numeric(types[col]):
                raise InvalidData(
                    f"Feature column {col!r} must be numeric. Got {types[col]} instead.",
                    hint="Encode categories as numbers, or drop the column.",
                )
        return _TablePlan("matrix", ((spec.name, spec.dtype.to_numpy(), tuple(chosen), 2),), target)
    if all(len(s.shape) == 1 or (len(s.shape) == 2 and s.shape[1] == 1) for s in specs):
        missing = [s.name for s in specs if s.name not in types]
        if missing:
            raise InvalidData(
                f"Columns {missing} (one per model input) must be in {source}. "
                f"Available columns: {columns}."
            )
        plan_inputs = []
        for s in specs:
            if s.dtype is not DType.BYTES and not _is_numeric(types[s.name]):
                raise InvalidData(
                    f"Column {s.name!r} must be numeric for input of type {s.dtype.value}. "
                    f"Got {types[s.name]} instead."
                )
            dtype = None if s.dtype is DType.BYTES else s.dtype.to_numpy()
            plan_inputs.append((s.name, dtype, (s.name,), len(s.shape)))
        return _TablePlan("columns", tuple(plan_inputs), target)
    shapes = ", ".join(f"{s.name!r} {_dims(s)}" for s in specs)
    raise InvalidData(
        f"CSV and Parquet files must feed a tabular model (one (N, F) input or one column "
        f"per input). This model takes {shapes} instead.",
        hint="Save the inputs with numpy.savez, keyed by input name, and pass the .npz.",
    )


def _csv_options(plan: _TablePlan, schema: pa.Schema) -> Any:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    types: dict[str, pa.DataType] = {}
    for _, dtype, cols, _ in plan.inputs:
        for col in cols:
            # fixing the type stops a later block from being inferred differently
            types[col] = pa.from_numpy_dtype(dtype) if dtype is not None else pa.string()
    if plan.target is not None and plan.target not in types:
        types[plan.target] = schema.field(plan.target).type
    return pacsv.ConvertOptions(column_types=types, include_columns=plan.columns)


def _arrow_error(path: Path, exc: Exception) -> InvalidData:
    return InvalidData(f"Data file {str(path)!r} must be readable: {exc}")


def _table_schema(path: Path, fmt: DataFormat) -> pa.Schema:
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    try:
        if fmt == "csv":
            with pacsv.open_csv(
                path, read_options=pacsv.ReadOptions(block_size=_CSV_BLOCK_BYTES)
            ) as reader:
                return reader.schema
        return pq.ParquetFile(path).schema_arrow
    except (pa.ArrowException, OSError) as exc:
        raise _arrow_error(path, exc) from exc


def _iter_table(
    path: Path, fmt: DataFormat, plan: _TablePlan, schema: pa.Schema, batch_size: int
) -> Iterator[Batch]:
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    try:
        if fmt == "csv":
            reader = pacsv.open_csv(
                path,
                read_options=pacsv.ReadOptions(block_size=_CSV_BLOCK_BYTES),
                convert_options=_csv_options(plan, schema),
            )
            with reader:
                for record_batch in reader:
                    yield plan.convert(record_batch)
        else:
            pfile = pq.ParquetFile(path)
            try:
                for record_batch in pfile.iter_batches(batch_size=batch_size, columns=plan.columns):
                    yield plan.convert(record_batch)
            finally:
                pfile.close()
    except (pa.ArrowException, OSError) as exc:
        raise _arrow_error(path, exc) from exc


# ------------------------------------------------------------------------------ numpy


def _npz_arrays(
    arrays: Any, keys: Sequence[str], signature: Signature, target: str | None, source: str
) -> Batch:
    specs = signature.inputs
    tensors: dict[str, npt.NDArray[Any]] = {}
    if all(s.name in keys for s in specs):
        for s in specs:
            tensors[s.name] = arrays[s.name]
    elif len(specs) == 1 and ("X" in keys or "x" in keys):
        tensors[specs[0].name] = arrays["X" if "X" in keys else "x"]
    else:
        raise InvalidData(
            f"{source} must hold one array per model input {[s.name for s in specs]} "
            f"(or 'X' for a single input). Got arrays {sorted(keys)} instead."
        )
    y = None
    if target is not None:
        if target not in keys:
            raise InvalidData(
                f"Target array {target!r} must be in {source}. Available arrays: {sorted(keys)}.",
                hint="Pass the target's key with --target (python: target=...).",
            )
        y = arrays[target]
    return tensors, y


def _check_arrays(batch: Batch, signature: Signature, source: str) -> Batch:
    tensors, y = batch
    lengths = {name: len(arr) if arr.ndim else 0 for name, arr in tensors.items()}
    if y is not None:
        lengths["<target>"] = len(y) if y.ndim else 0
    if len(set(lengths.values())) > 1:
        raise InvalidData(
            f"Every array in {source} must have the same number of rows. Got {lengths} instead."
        )
    out: dict[str, npt.NDArray[Any]] = {}
    for spec in signature.inputs:
        arr = tensors[spec.name]
        if arr.ndim != len(spec.shape) or any(
            d is not None and d != got for d, got in zip(spec.shape, arr.shape, strict=True)
        ):
            raise SignatureMismatch(
                f"Input {spec.name!r} must have shape {_dims(spec)}. Got {arr.shape} instead."
            )
        if spec.dtype is DType.BYTES:
            out[spec.name] = arr
            continue
        want = spec.dtype.to_numpy()
        if arr.dtype.kind in "OSU" or not np.can_cast(arr.dtype, want, "same_kind"):
            raise InvalidData(
                f"Array {spec.name!r} must be numeric and cast safely to {spec.dtype.value}. "
                f"Got {arr.dtype} instead."
            )
        out[spec.name] = arr
    return out, y


def _load_numpy(path: Path, fmt: DataFormat, signature: Signature, target: str | None) -> Batch:
    source = repr(str(path))
    try:
        if fmt == "npy":
            if target is not None:
                raise InvalidData(
                    f"A .npy file holds one array and no target ({target!r} was asked for).",
                    hint="Save inputs and target together with numpy.savez.",
                )
            if len(signature.inputs) != 1:
                raise InvalidData(
                    f"A .npy file can feed only a single-input model. This model takes "
                    f"{[s.name for s in signature.inputs]}; use .npz."
                )
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
            return _check_arrays(({signature.inputs[0].name: arr}, None), signature, source)
        with np.load(path, allow_pickle=False) as npz:
            keys = list(npz.files)
            batch = _npz_arrays(npz, keys, signature, target, source)
    except (OSError, ValueError, EOFError) as exc:
        if isinstance(exc, ShipyardError):
            raise
        raise InvalidData(f"Data file {source} must be a readable numpy file: {exc}") from exc
    return _check_arrays(batch, signature, source)


# --------------------------------------------------------------------------- batching


def _concat(parts: list[Batch]) -> Batch:
    if len(parts) == 1:
        return parts[0]
    tensors = {k: np.concatenate([p[0][k] for p in parts]) for k in parts[0][0]}
    ys = [p[1] for p in parts]
    y = None if ys[0] is None else np.concatenate([v for v in ys if v is not None])
    return tensors, y


def _slice(batch: Batch, start: int, stop: int | None) -> Batch:
    tensors, y = batch
    return {k: v[start:stop] for k, v in tensors.items()}, None if y is None else y[start:stop]


def _rows(batch: Batch) -> int:
    return len(next(iter(batch[0].values())))


def _rebatch(parts: Iterator[Batch], batch_size: int) -> Iterator[Batch]:
    """Regroup chunks of any size into batches of exactly ``batch_size`` rows (last: fewer).

    Each chunk is copied at most once (when a batch spans two chunks); otherwise slices are
    views.
    """
    pending: list[Batch] = []
    count = 0
    for part in parts:
        n = _rows(part)
        if n == 0:
            continue
        pending.append(part)
        count += n
        while count >= batch_size:
            merged = _concat(pending)
            yield _slice(merged, 0, batch_size)
            count -= batch_size
            pending = [_slice(merged, batch_size, None)] if count else []
    if count:
        yield _concat(pending)


# ------------------------------------------------------------------------------- API


def load_table(
    path: Path,
    *,
    signature: Signature,
    target: str | None = None,
    feature_names: Sequence[str] | None = None,
    allow_extra_columns: bool = False,
) -> Batch:
    """Read a whole data file into model inputs and, optionally, its target.

    Args:
        path: A ``.csv``, ``.parquet``/``.pq``, ``.npz`` or ``.npy`` file.
        signature: The model's signature; decides which columns feed which input and
            their dtypes.
        target: The label column (tables) or array key (``.npz``); None reads no target.
        feature_names: The feature columns of a tabular model, in order (the task
            schema's ``feature_names``); default: every non-target column in file order.
        allow_extra_columns: Without ``feature_names``, use the first F columns when a
            file has more than the F the model takes (the rest are ignored, with a logged
            warning) instead of refusing the file.

    Returns:
        ``(arrays by input name, target array or None)``.

    Raises:
        DataNotFound: the file does not exist.
        InvalidData: unsupported extension, unreadable file, missing target or feature
            column (the message lists the available ones), non-numeric feature column.
        SignatureMismatch: the number of features or an array's shape does not fit.

    Example:
        >>> x, y = load_table(Path("iris.csv"), signature=sig, target="species")  # doctest: +SKIP
    """
    fmt = _require_file(path)
    if fmt in ("npz", "npy"):
        return _load_numpy(path, fmt, signature, target)
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    schema = _table_schema(path, fmt)
    plan = _plan(
        schema,
        signature,
        target=target,
        feature_names=feature_names,
        allow_extra_columns=allow_extra_columns,
        source=repr(str(path)),
    )
    try:
        if fmt == "csv":
            table = pacsv.read_csv(path, convert_options=_csv_options(plan, schema))
        else:
            table = pq.read_table(path, columns=plan.columns)
    except (pa.ArrowException, OSError) as exc:
        raise _arrow_error(path, exc) from exc
    return plan.convert(table)


def iter_batches(
    path: Path,
    *,
    signature: Signature,
    batch_size: int,
    target: str | None = None,
    feature_names: Sequence[str] | None = None,
    allow_extra_columns: bool = False,
) -> Iterator[Batch]:
    """Stream a data file as batches of exactly ``batch_size`` rows (the last may be short).

    Same arguments, checks and errors as :func:`load_table`; the schema is checked before
    the first batch is yielded. CSV and Parquet are read incrementally and ``.npy`` is
    memory-mapped, so memory stays bounded by the batch size; ``.npz`` members are read
    whole, then sliced.

    Raises:
        InvalidInputError: ``batch_size`` is below 1.
        DataNotFound: the file does not exist.
        InvalidData: see :func:`load_table`; also a malformed row found mid-file.
        SignatureMismatch: see :func:`load_table`.
    """
    from shipyard.errors import InvalidInputError

    if batch_size < 1:
        raise InvalidInputError(f"batch_size must be at least 1. Got {batch_size} instead.")
    fmt = _require_file(path)
    if fmt in ("npz", "npy"):
        whole = _load_numpy(path, fmt, signature, target)
        return _rebatch(iter([whole]), batch_size)
    schema = _table_schema(path, fmt)
    plan = _plan(
        schema,
        signature,
        target=target,
        feature_names=feature_names,
        allow_extra_columns=allow_extra_columns,
        source=repr(str(path)),
    )
    return _rebatch(_iter_table(path, fmt, plan, schema, batch_size), batch_size)
