"""predict_file: score a whole data file in batches and write the predictions atomically.

Input is streamed (CSV, Parquet, ``.npy``; see :mod:`shipyard.workflows.data`). Output
format follows ``out``'s extension: CSV (``pyarrow.csv.CSVWriter``) and Parquet
(``ParquetWriter``) are written batch by batch; ``.npz`` is **not** streaming: every
column is held in memory until the end, because a zip member cannot be appended to.
The output is written to a temporary file beside ``out``, fsynced, and renamed into
place, so ``out`` is either absent, the old file, or complete.

Columns: classifiers give ``label`` and ``proba_<class>`` (one per class, when the model
has scores); regressors ``prediction`` (``prediction_<i>`` for several targets); other
models each output flattened to ``<output>_<i>`` (``<output>`` when it is 1-D).

Imports: registry, runtime, workflows.data, config, spec, errors, _utils.fs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Literal

import numpy as np
import numpy.typing as npt

from shipyard._utils.fs import atomic_writer
from shipyard.errors import InvalidData, InvalidInputError
from shipyard.runtime.onnx import OnnxRuntime
from shipyard.spec import ModelRef, TaskType
from shipyard.workflows._readout import Readout
from shipyard.workflows.data import iter_batches

if TYPE_CHECKING:
    import pyarrow as pa

    from shipyard.config import RuntimeSettings
    from shipyard.registry import ModelRegistry

__all__ = ["PredictSummary", "predict_file"]

logger = logging.getLogger(__name__)

OutputFormat = Literal["csv", "parquet", "npz"]
_OUT_SUFFIXES: dict[str, OutputFormat] = {
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".npz": "npz",
}


@dataclass(frozen=True)
class PredictSummary:
    """What a batch scoring run wrote.

    Attributes:
        ref: The version that scored, ``name:version``.
        rows: Rows scored and written.
        out: The output file.
        batches: Runtime calls made.
        columns: The output's column names, in order.
    """

    ref: str
    rows: int
    out: Path
    batches: int
    columns: tuple[str, ...]


def _output_format(out: Path) -> OutputFormat:
    try:
        return _OUT_SUFFIXES[out.suffix.lower()]
    except KeyError:
        raise InvalidInputError(
            f"The output file must end in one of {sorted(_OUT_SUFFIXES)}. "
            f"Got {out.suffix or 'no extension'!r} ({out.name!r}) instead."
        ) from None


def _flat(name: str, arr: npt.NDArray[Any]) -> dict[str, npt.NDArray[Any]]:
    if arr.ndim <= 1:
        return {name: arr.reshape(-1)}
    rows = arr.reshape(arr.shape[0], -1)
    return {f"{name}_{i}": rows[:, i] for i in range(rows.shape[1])}


def _columns(readout: Readout, outputs: dict[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
    if readout.task is TaskType.CLASSIFICATION:
        cols = {"label": readout.labels(outputs)}
        scores = readout.scores(outputs)
        if scores is not None and scores.ndim == 2:
            for j, cls in enumerate(readout.class_names(scores.shape[1])):
                cols[f"proba_{cls}"] = scores[:, j]
        return cols
    if readout.task is TaskType.REGRESSION:
        return _flat("prediction", readout.values(outputs))
    cols = {}
    for name in readout.output_names:
        cols.update(_flat(name, outputs[name]))
    return cols


def _arrow_table(cols: dict[str, npt.NDArray[Any]]) -> pa.Table:
    import pyarrow as pa

    arrays = [pa.array(v.tolist() if v.dtype.kind == "O" else v) for v in cols.values()]
    return pa.Table.from_arrays(arrays, names=list(cols))


class _Writer:
    """Writes column batches to an open binary file in one format."""

    def __init__(self, fmt: OutputFormat, fh: BinaryIO) -> None:
        self.fmt = fmt
        self.fh = fh
        self._writer: Any = None
        self._schema: pa.Schema | None = None
        self._held: dict[str, list[npt.NDArray[Any]]] = {}

    def write(self, cols: dict[str, npt.NDArray[Any]]) -> None:
        if self.fmt == "npz":
            for name, arr in cols.items():
                self._held.setdefault(name, []).append(arr)
            return
        table = _arrow_table(cols)
        if self._writer is None:
            import pyarrow.csv as pacsv
            import pyarrow.parquet as pq

            self._schema = table.schema
            if self.fmt == "csv":
                self._writer = pacsv.CSVWriter(self.fh, table.schema)
            else:
                self._writer = pq.ParquetWriter(self.fh, table.schema)
        elif table.schema != self._schema:
            table = table.cast(self._schema)
        self._writer.write_table(table)

    def close(self) -> None:
        if self.fmt == "npz":
            arrays = {
                name: np.concatenate(parts)
                if parts[0].dtype.kind != "O"
                # object arrays cannot be saved without pickle; strings can
                else np.concatenate(parts).astype(str)
                for name, parts in self._held.items()
            }
            np.savez(self.fh, **arrays)  # type: ignore[arg-type]
        elif self._writer is not None:
            self._writer.close()


def predict_file(
    registry: ModelRegistry,
    ref: str | ModelRef,
    data: Path,
    out: Path,
    *,
    batch_size: int = 1024,
    progress: Callable[[int], None] | None = None,
    runtime_settings: RuntimeSettings | None = None,
) -> PredictSummary:
    """Score every row of ``data`` with a version and write the predictions to ``out``.

    Feature columns follow the version's ``feature_names`` when it has them; otherwise the
    file's columns in order, where extra trailing columns (a label column, say) are ignored
    with a logged warning.

    Args:
        registry: Where the version lives.
        ref: ``name``, ``name:3`` or ``name@alias``.
        data: CSV, Parquet, ``.npz`` or ``.npy`` input.
        out: ``.csv``, ``.parquet``/``.pq`` or ``.npz`` output (format from the extension);
            replaced atomically.
        batch_size: Rows per runtime call.
        progress: Called after each batch with the number of rows that batch added (a
            delta, as a progress bar's ``advance`` takes).
        runtime_settings: ONNX Runtime threads and providers.

    Returns:
        Rows written, the output path and its columns.

    Raises:
        NotFoundError: unknown ref or data file.
        InvalidInputError: unsupported output extension or batch size below 1.
        InvalidData: the data cannot be read or has non-numeric features.
        SignatureMismatch: the data does not fit the model's inputs.
        RuntimeLoadError, InferenceError: the engine failed.

    Example:
        >>> predict_file(reg, "iris@prod", Path("in.csv"), Path("out.parquet"))  # doctest: +SKIP
        PredictSummary(ref='iris:2', rows=150, ...)
    """
    fmt = _output_format(out)
    mv = registry.get(ref)
    manifest = mv.manifest
    batches = iter_batches(
        Path(data),
        signature=manifest.signature,
        batch_size=batch_size,
        feature_names=manifest.task.feature_names,
        allow_extra_columns=True,
    )
    readout = Readout(manifest)
    started = time.perf_counter()
    runtime = OnnxRuntime(runtime_settings)
    runtime.load(registry.read_artifact(mv), manifest)
    rows = 0
    n_batches = 0
    columns: tuple[str, ...] = ()
    try:
        with atomic_writer(out) as fh:
            writer = _Writer(fmt, fh)
            for tensors, _ in batches:
                cols = _columns(readout, runtime.predict(tensors))
                writer.write(cols)
                n = len(next(iter(cols.values())))
                rows += n
                n_batches += 1
                columns = columns or tuple(cols)
                if progress is not None:
                    progress(n)
            if rows == 0:
                raise InvalidData(
                    f"Data file {str(data)!r} must hold at least one row. It is empty."
                )
            writer.close()
    finally:
        runtime.unload()
    logger.info(
        "Scored %d rows of %s with %s into %s in %.1f s",
        rows,
        data,
        mv.ref,
        out,
        time.perf_counter() - started,
    )
    return PredictSummary(ref=mv.ref, rows=rows, out=out, batches=n_batches, columns=columns)
