"""set_reference: store a version's drift reference, built from a data file and its predictions.

The file is read as ``evaluate`` and ``predict`` read theirs (:mod:`shipyard.workflows.data`),
run through the version's ONNX model batch by batch, and a uniform sample of its rows
(features and the model's prediction on them) is stored as
``<monitoring dir>/references/<model>/<version>.ref`` (see
:mod:`shipyard.monitoring.watch`). ``evaluate`` stores its data the same way when the
version has no reference yet.

Imports: registry, runtime, monitoring, workflows.data, config, spec, errors.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shipyard.monitoring.watch import REFERENCE_MAX_ROWS, ReferenceSample, reference_path
from shipyard.runtime.onnx import OnnxRuntime
from shipyard.spec import ModelRef
from shipyard.workflows.data import data_format, iter_batches

if TYPE_CHECKING:
    from shipyard.config import RuntimeSettings
    from shipyard.registry import ModelRegistry, ModelVersion

__all__ = ["file_feature_names", "new_sample", "set_reference"]

logger = logging.getLogger(__name__)


def file_feature_names(path: Path, target: str | None, width: int) -> list[str] | None:
    """A table's feature column names, as ``workflows.data`` picks them, when they fit.

    Only for CSV and Parquet whose non-target columns number exactly ``width``; None
    otherwise (the features are then named ``<input>[j]``).
    """
    try:
        fmt = data_format(path)
        if fmt == "csv":
            import pyarrow.csv as pacsv

            with pacsv.open_csv(path) as reader:
                names = list(reader.schema.names)
        elif fmt == "parquet":
            import pyarrow.parquet as pq

            names = list(pq.read_schema(path).names)
        else:
            return None
    except Exception:  # the reader proper reports unreadable files, with its own message
        logger.debug("no column names from %s", path, exc_info=True)
        return None
    chosen = [n for n in names if n != target]
    return chosen if len(chosen) == width else None


def new_sample(
    mv: ModelVersion, path: Path, target: str | None, max_rows: int = REFERENCE_MAX_ROWS
) -> ReferenceSample:
    """A :class:`ReferenceSample` for ``mv``, its features named by the task or the file."""
    manifest = mv.manifest
    names: Sequence[str] | None = None
    inputs = manifest.signature.inputs
    if manifest.task.feature_names is None and len(inputs) == 1 and len(inputs[0].shape) == 2:
        width = inputs[0].shape[1]
        if width is not None and width > 1:
            names = file_feature_names(path, target, int(width))
    return ReferenceSample(
        manifest.signature, manifest.task, feature_names=names, max_rows=max_rows
    )


def set_reference(
    registry: ModelRegistry,
    ref: str | ModelRef,
    data: Path,
    *,
    root: Path,
    target: str | None = None,
    runtime_settings: RuntimeSettings | None = None,
    batch_size: int = 4096,
    max_rows: int = REFERENCE_MAX_ROWS,
) -> dict[str, Any]:
    """Build a version's drift reference from ``data`` and its predictions on it, and store it.

    Args:
        registry: Where the version lives.
        ref: ``name``, ``name:3`` or ``name@alias``.
        data: A CSV, Parquet, ``.npz`` or ``.npy`` file of the model's inputs (see
            :mod:`shipyard.workflows.data`).
        root: The monitoring folder.
        target: A label column in ``data`` to leave out of the features.
        runtime_settings: ONNX Runtime threads and providers.
        batch_size: Rows per runtime call.
        max_rows: The most rows kept (a uniform sample of the file).

    Returns:
        ``{"ref", "path", "rows", "rows_seen", "features", "prediction_output"}``.

    Raises:
        NotFoundError: unknown ref or data file.
        InvalidData: the file cannot be read or has no row; a feature column is missing
            or not numeric.
        SignatureMismatch: the data does not fit the model's inputs.
        RuntimeLoadError, InferenceError: the engine failed.

    Example:
        >>> set_reference(reg, "iris@prod", Path("train.csv"), root=mon)  # doctest: +SKIP
    """
    mv = registry.get(ref)
    manifest = mv.manifest
    path = Path(data)
    reference_path(root, mv.name, mv.version)  # refuse a bad name before any work
    started = time.perf_counter()
    batches = iter_batches(
        path,
        signature=manifest.signature,
        batch_size=batch_size,
        target=target,
        feature_names=manifest.task.feature_names,
    )
    sample = new_sample(mv, path, target, max_rows)
    runtime = OnnxRuntime(runtime_settings)
    runtime.load(registry.read_artifact(mv), manifest)
    try:
        for tensors, _ in batches:
            sample.add(tensors, runtime.predict(tensors))
    finally:
        runtime.unload()
    stored = sample.save(root, mv.name, mv.version, source=str(path), how="set-reference")
    logger.info(
        "Stored the drift reference of %s (%d of %d rows of %s) in %.2f s",
        mv.ref,
        sample.rows,
        sample.seen,
        path,
        time.perf_counter() - started,
    )
    return {
        "ref": mv.ref,
        "path": str(reference_path(root, mv.name, mv.version)),
        "rows": sample.rows,
        "rows_seen": sample.seen,
        "features": list(stored.reference.features),
        "prediction_output": stored.prediction_output,
    }
