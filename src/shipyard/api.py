"""The Python façade: what the CLI does, callable from a notebook, with in-memory models too.

Example:
    >>> import shipyard
    >>> mv = shipyard.register(clf, name="iris", sample_input=X[:16])   # doctest: +SKIP
    >>> shipyard.evaluate("iris", "iris.csv", target="species")          # doctest: +SKIP

Each function opens the registry from settings (``$SHIPYARD_HOME``) unless one is passed.

Imports: registry, convert, workflows, config, spec, errors.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shipyard.config import Settings, load_settings, with_overrides
from shipyard.errors import DataNotFound, InvalidData
from shipyard.spec import ModelRef, TaskType

if TYPE_CHECKING:
    from shipyard.monitoring.feedback import FeedbackResult, FeedbackStore
    from shipyard.registry import ModelRegistry, ModelVersion
    from shipyard.security import TokenStore
    from shipyard.server.runner import BackgroundServer
    from shipyard.workflows.edge import EdgeBundle
    from shipyard.workflows.evaluate import EvaluationResult
    from shipyard.workflows.optimize import OptimizeResult
    from shipyard.workflows.predict import PredictSummary
    from shipyard.workflows.tune import TuneResult

__all__ = [
    "audit_log",
    "encrypt_registry",
    "evaluate",
    "export_edge",
    "load_sample_input",
    "monitor_feedback",
    "monitor_report",
    "monitor_set_reference",
    "monitor_status",
    "open_registry",
    "optimize",
    "predict",
    "register",
    "serve",
    "start_server",
    "tune",
]


def open_registry(settings: Settings | None = None) -> ModelRegistry:
    """Open (creating if needed) the registry named by ``settings`` (default: environment)."""
    from shipyard.registry import ModelRegistry

    return ModelRegistry.open(settings or load_settings())


def open_token_store(settings: Settings | None = None) -> TokenStore:
    """Open (creating if needed) the API token store, ``<home>/security.db``."""
    from shipyard.security import TokenStore

    return TokenStore((settings or load_settings()).home / "security.db")


@contextlib.contextmanager
def _registry(registry: ModelRegistry | None, settings: Settings | None) -> Iterator[ModelRegistry]:
    if registry is not None:
        yield registry
        return
    reg = open_registry(settings)
    try:
        yield reg
    finally:
        reg.close()


@contextlib.contextmanager
def _feedback_store(settings: Settings) -> Iterator[FeedbackStore]:
    """The monitoring folder's feedback database, closed on exit."""
    from shipyard.monitoring.feedback import FeedbackStore
    from shipyard.monitoring.predlog import keys_for

    store = FeedbackStore.open(settings.monitoring_dir, keys=keys_for(settings))
    try:
        yield store
    finally:
        store.close()


def load_sample_input(path: str | Path) -> Any:
    """Read sample inputs for parity checks from ``.npy``, ``.npz``, ``.csv`` or ``.parquet``.

    ``.npz`` gives a dict of named arrays; the others give one array. Pickled arrays are
    refused (``allow_pickle=False``).

    Raises:
        DataNotFound: the file does not exist.
        InvalidData: the file cannot be read as arrays.
    """
    import numpy as np

    p = Path(path)
    if not p.is_file():
        raise DataNotFound(f"Sample input file {str(p)!r} must exist. It was not found.")
    suffix = p.suffix.lower()
    try:
        if suffix == ".npy":
            return np.load(p, allow_pickle=False)
        if suffix == ".npz":
            with np.load(p, allow_pickle=False) as npz:
                return {k: npz[k] for k in npz.files}
        if suffix in (".csv", ".parquet", ".pq"):
            import pyarrow as pa

            if suffix == ".csv":
                import pyarrow.csv as pacsv

                tab: pa.Table = pacsv.read_csv(p)
            else:
                import pyarrow.parquet as pq

                tab = pq.read_table(p)
            return np.column_stack([c.to_numpy(zero_copy_only=False) for c in tab.columns])
    except (ValueError, OSError) as exc:
        raise InvalidData(
            f"Sample input {str(p)!r} must be readable as arrays: {exc}",
            hint="Save it with numpy.save (.npy) or numpy.savez (.npz).",
        ) from exc
    raise InvalidData(
        f"Sample input must be .npy, .npz, .csv or .parquet. Got {suffix or 'no extension'!r} "
        "instead."
    )


def register(
    model: object | str | Path,
    *,
    name: str,
    framework: str = "auto",
    sample_input: Any = None,
    task: TaskType | str | None = None,
    class_labels: Sequence[Any] | None = None,
    feature_names: Sequence[str] | None = None,
    opset: int | None = None,
    atol: float = 1e-4,
    rtol: float = 1e-3,
    allow_mismatch: bool = False,
    trust_pickle: bool = False,
    keep_source: bool = True,
    description: str | None = None,
    tags: Mapping[str, str] | None = None,
    metrics: Mapping[str, Any] | None = None,
    actor: str | None = None,
    settings: Settings | None = None,
    registry: ModelRegistry | None = None,
) -> ModelVersion:
    """Convert a model to ONNX, prove parity, and register it as a new version.

    ``model`` is an in-memory model (scikit-learn, XGBoost, LightGBM, PyTorch, Keras) or a
    path to a model file (``.onnx``, ``.keras``, ``.h5``, TorchScript ``.pt``, XGBoost
    ``.json``, LightGBM ``.txt``; pickles only with ``trust_pickle=True``). The new version
    becomes the model's ``default`` alias.

    Returns:
        The registered version.

    Raises:
        InvalidName: ``name`` breaks the naming rules.
        UnsupportedModel: the framework cannot be converted.
        ParityCheckFailed: ONNX outputs differ beyond ``atol``/``rtol`` (nothing is stored).
        MissingDependency: the framework's extra is not installed.
        UnsafeArtifact: a pickle without ``trust_pickle``, or an ONNX file reaching outside
            its folder.
    """
    from shipyard.convert import convert

    ModelRef.parse(name)  # validate before doing any work
    if isinstance(sample_input, str | Path):
        sample_input = load_sample_input(sample_input)
    with tempfile.TemporaryDirectory(prefix="shipyard-convert-") as workdir:
        result = convert(
            model,
            workdir=Path(workdir),
            framework=framework,
            sample_input=sample_input,
            task=task,
            class_labels=class_labels,
            feature_names=feature_names,
            opset=opset,
            atol=atol,
            rtol=rtol,
            allow_mismatch=allow_mismatch,
            trust_pickle=trust_pickle,
        )
        files: dict[str, Path] = {"model.onnx": result.onnx_path}
        if keep_source and result.source_path is not None and result.source_path.is_file():
            files["source"] = result.source_path
        with _registry(registry, settings) as reg:
            return reg.register(
                name,
                result.new_version,
                files,
                actor=actor,
                metrics=dict(metrics) if metrics else None,
                description=description,
                tags=tags,
            )


def evaluate(
    ref: str | ModelRef,
    data: str | Path,
    *,
    target: str | None = None,
    store: bool = True,
    actor: str | None = None,
    settings: Settings | None = None,
    registry: ModelRegistry | None = None,
) -> EvaluationResult:
    """Run a registered version on a labelled dataset and compute its quality metrics.

    Classification: accuracy, precision, recall, F1 (macro and per class), confusion matrix.
    Regression: MAE, RMSE, R². With ``store`` the metrics are saved on the version. A
    version with no drift reference yet gets this data as its reference
    (:func:`monitor_set_reference`).

    Raises:
        NotFoundError: unknown ref or data file.
        InvalidData: the data does not fit the model.
    """
    from shipyard.workflows.evaluate import evaluate as _evaluate

    settings = settings or load_settings()
    with _registry(registry, settings) as reg:
        return _evaluate(
            reg,
            ref,
            Path(data),
            target=target,
            runtime_settings=settings.runtime,
            store=store,
            actor=actor,
            reference_root=settings.monitoring_dir,
        )


def predict(
    ref: str | ModelRef,
    data: str | Path,
    out: str | Path,
    *,
    batch_size: int = 1024,
    progress: Callable[[int], None] | None = None,
    settings: Settings | None = None,
    registry: ModelRegistry | None = None,
) -> PredictSummary:
    """Score a whole file (CSV, Parquet, ``.npz``) in batches and write the predictions.

    Raises:
        NotFoundError: unknown ref or data file.
        InvalidData: the data does not fit the model.
    """
    from shipyard.workflows.predict import predict_file

    with _registry(registry, settings) as reg:
        return predict_file(
            reg, ref, Path(data), Path(out), batch_size=batch_size, progress=progress
        )


def optimize(
    ref: str | ModelRef,
    data: str | Path,
    *,
    target: str | None = None,
    max_drop: float = 0.01,
    objective: str = "throughput",
    techniques: Sequence[str] | None = None,
    calibration_methods: Sequence[str] | None = None,
    threads: int = 1,
    promote: str | None = None,
    register: bool = True,
    report: str | Path | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    actor: str | None = None,
    settings: Settings | None = None,
    registry: ModelRegistry | None = None,
    **options: Any,
) -> OptimizeResult:
    """Build fp16, int8, pruned and graph-optimized variants of a version and gate them.

    Each variant is measured against fp32 (ONNX Runtime ``ORT_ENABLE_ALL``, the same
    ``threads``) in one run; those whose quality drops by at most ``max_drop`` (absolute
    points: 0.01 is one point of accuracy) are registered as new versions with lineage.
    ``default`` never moves; ``promote`` points an alias at the best by ``objective``.
    ``options`` go to :func:`shipyard.workflows.optimize.optimize` (``sparsity``,
    ``channel_fractions``, ``calibration_rows``, ``budget``, ``seed``).

    Raises:
        NotFoundError: unknown ref or data file.
        InvalidInputError: unknown technique or objective, negative max_drop, no target.
        InvalidData: the data does not fit the model.
    """
    from shipyard.convert.transforms import CALIBRATION_METHODS
    from shipyard.workflows.optimize import TECHNIQUES
    from shipyard.workflows.optimize import optimize as _optimize

    settings = settings or load_settings()
    with _registry(registry, settings) as reg:
        return _optimize(
            reg,
            ref,
            Path(data),
            target=target,
            max_drop=max_drop,
            objective=objective,
            techniques=techniques or TECHNIQUES,
            calibration_methods=calibration_methods or CALIBRATION_METHODS,
            threads=threads,
            promote=promote,
            register=register,
            report_path=None if report is None else Path(report),
            progress=progress,
            actor=actor,
            **options,
        )


def serve(
    refs: Sequence[str],
    *,
    settings: Settings | None = None,
    host: str | None = None,
    port: int | None = None,
    grpc_port: int | None = None,
    management_port: int | None = None,
    model_settings: Mapping[str, Mapping[str, dict[str, Any]]] | None = None,
) -> None:
    """Serve registered models over REST (OIP V2) and gRPC until SIGTERM/SIGINT.

    ``refs`` are ``name``, ``name:3`` or ``name@prod``; several models and several versions
    of one model can be served at once. ``model_settings`` maps a ref to per-model
    ``{"batching": {...}, "runtime": {...}}`` overrides, applied over the global settings
    and the version's serving settings in the registry. Blocks until the server stops.

    Raises:
        ConfigError: bad settings (for example clashing ports).
    """
    from shipyard.server.runner import run_server

    overrides: dict[str, Any] = {}
    for key, value in (
        ("host", host),
        ("port", port),
        ("grpc_port", grpc_port),
        ("management_port", management_port),
    ):
        if value is not None:
            overrides[key] = value
    base = settings or load_settings()
    if overrides:
        base = with_overrides(base, {"server": overrides})
    run_server(list(refs), base, model_settings)


def start_server(refs: Sequence[str], *, settings: Settings | None = None) -> BackgroundServer:
    """Serve ``refs`` on a background thread; returns the running server (call ``stop()``).

    Raises:
        ConfigError: the server could not start (for example, a port in use).
    """
    from shipyard.server.runner import BackgroundServer

    return BackgroundServer(list(refs), settings or load_settings()).start()


def tune(
    ref: str | ModelRef,
    *,
    slo_p99_ms: float,
    concurrency: int,
    budget_s: float = 60.0,
    sample_input: Any = None,
    write: bool = True,
    actor: str | None = None,
    progress: Callable[[int], None] | None = None,
    on_plan: Callable[[int], None] | None = None,
    settings: Settings | None = None,
    registry: ModelRegistry | None = None,
) -> TuneResult:
    """Measure serving settings for ``ref`` on this machine and store the best within the SLO.

    Intra-op threads, then batch size, then batch wait are measured against a real server
    on 127.0.0.1 under a closed-loop load of ``concurrency`` from a separate process, within
    ``budget_s``. The winner (most requests per second with p99 <= ``slo_p99_ms``) is
    written into the version's ``serving`` settings, which ``shipyard serve`` uses. When no
    candidate meets the SLO, nothing is written and ``result.chosen`` is None.

    Example:
        >>> r = shipyard.api.tune("iris:1", slo_p99_ms=10, concurrency=16)  # doctest: +SKIP
        >>> r.chosen.candidate                                               # doctest: +SKIP

    Raises:
        NotFoundError: unknown ref or sample file.
        InvalidInputError: a bad SLO, concurrency or budget, or a sample the model refuses.
        InferenceError: the load generator failed.
    """
    from shipyard.workflows.tune import tune as _tune

    if isinstance(sample_input, str | Path):
        sample_input = load_sample_input(sample_input)
    settings = settings or load_settings()
    with _registry(registry, settings) as reg:
        return _tune(
            reg,
            str(ref),
            slo_p99_ms=slo_p99_ms,
            concurrency=concurrency,
            settings=settings,
            budget_s=budget_s,
            sample=sample_input,
            write=write,
            actor=actor,
            progress=progress,
            on_plan=on_plan,
        )


def export_edge(
    ref: str | ModelRef,
    out: str | Path,
    *,
    force: bool = False,
    settings: Settings | None = None,
    registry: ModelRegistry | None = None,
) -> EdgeBundle:
    """Write a minimal bundle for small devices: the ONNX model, a runner, pins and hashes.

    The folder holds ``model.onnx``, ``run.py`` (needs only onnxruntime and numpy, checks
    every file's sha256 against ``manifest.json`` before loading), ``requirements.txt``,
    ``manifest.json`` and ``README.txt``.

    Raises:
        NotFoundError: unknown ref.
        OutputExists: ``out`` exists and is not empty (pass ``force`` to replace it).
        ArtifactCorrupted: the stored artifact fails its hash check.
    """
    from shipyard.workflows.edge import export_edge as _export_edge

    with _registry(registry, settings) as reg:
        return _export_edge(reg, str(ref), Path(out), force=force)


def monitor_feedback(
    model: str,
    labels: str | Path | Sequence[Mapping[str, Any]],
    *,
    settings: Settings | None = None,
) -> FeedbackResult:
    """Join ground-truth labels to ``model``'s logged predictions, however late.

    ``labels``: a CSV, JSON-lines or Parquet file (columns ``label`` and ``request_id``
    with optional ``row``, or ``key``), or the items themselves.

    Raises:
        InvalidData: malformed labels.
        DataNotFound: no such file.
    """
    from shipyard.monitoring.feedback import parse_labels
    from shipyard.workflows.monitor import read_labels

    settings = settings or load_settings()
    items = read_labels(Path(labels)) if isinstance(labels, str | Path) else list(labels)
    with _feedback_store(settings) as store:
        return store.add_labels(model, parse_labels(items))


def monitor_status(
    ref: str | ModelRef,
    *,
    window: int = 1000,
    drift_window: int | None = None,
    settings: Settings | None = None,
    registry: ModelRegistry | None = None,
) -> dict[str, Any]:
    """Logged and labelled rows, live quality and offline metrics, per version of a model.

    Each version also gets ``drift`` (its newest ``drift_window`` logged rows, default
    ``monitoring.drift_window``, against its reference, with the configured thresholds)
    and ``estimated`` (label-free quality, CBPE, for classifiers with scores). ``live``
    holds the ``monitoring.quality_windows`` (by time and by count) beside ``all``.

    Raises:
        NotFoundError: unknown model or version.
        InvalidModelRef: a malformed ref.
    """
    from shipyard.monitoring.watch import thresholds_from
    from shipyard.workflows.monitor import status

    settings = settings or load_settings()
    with _feedback_store(settings) as store, _registry(registry, settings) as reg:
        return status(
            reg,
            store,
            ref,
            window,
            root=settings.monitoring_dir,
            drift_window=drift_window or settings.monitoring.drift_window,
            thresholds=thresholds_from(settings.monitoring),
            quality_windows=settings.monitoring.quality_windows,
            quality_capacity=settings.monitoring.quality_capacity,
        )


def monitor_set_reference(
    ref: str | ModelRef,
    data: str | Path,
    *,
    target: str | None = None,
    settings: Settings | None = None,
    registry: ModelRegistry | None = None,
) -> dict[str, Any]:
    """Store a version's drift reference: ``data``'s features and the version's predictions.

    ``data`` is any file ``evaluate`` reads (CSV, Parquet, ``.npz``, ``.npy``); ``target``
    names a label column to leave out. The reference goes to
    ``<monitoring dir>/references/<model>/<version>.ref``, replacing any earlier one.

    Raises:
        NotFoundError: unknown ref or data file.
        InvalidData: the file cannot be read, or a feature column is missing.
        SignatureMismatch: the data does not fit the model's inputs.

    Example:
        >>> monitor_set_reference("iris@prod", "eval.csv", target="y")  # doctest: +SKIP
    """
    from shipyard.workflows.reference import set_reference

    settings = settings or load_settings()
    with _registry(registry, settings) as reg:
        return set_reference(
            reg,
            ref,
            Path(data),
            root=settings.monitoring_dir,
            target=target,
            runtime_settings=settings.runtime,
        )


def audit_log(
    *,
    target: str | None = None,
    action: str | None = None,
    limit: int | None = None,
    settings: Settings | None = None,
    registry: ModelRegistry | None = None,
) -> list[dict[str, Any]]:
    """The registry's audit log (who, what, when, from where), oldest first, as dicts.

    Args:
        target: Only entries about this model (``name``, ``name:3``, ``name@alias``).
        action: Only this action (``register``, ``alias.promote``, ``delete``, ``gc``, ...).
        limit: Only the latest ``limit`` entries.
    """
    with _registry(registry, settings) as reg:
        return [e.to_dict() for e in reg.audit_log(target=target, action=action, limit=limit)]


def encrypt_registry(
    *, settings: Settings | None = None, registry: ModelRegistry | None = None
) -> int:
    """Encrypt every plaintext blob of a registry opened with encryption on; returns how many.

    Raises:
        EncryptionKeyMissing: encryption is off, or no key is configured.
    """
    with _registry(registry, settings) as reg:
        return reg.encrypt_blobs()


def monitor_report(
    ref: str,
    out: str | Path,
    *,
    settings: Settings | None = None,
    registry: ModelRegistry | None = None,
) -> dict[str, Any]:
    """Write a self-contained HTML report of a model's monitoring (plots, no network).

    Drift is judged on the newest ``monitoring.drift_window`` logged rows with the
    configured thresholds.
    """
    from shipyard.monitoring.watch import thresholds_from
    from shipyard.workflows.monitor_report import write_report

    settings = settings or load_settings()
    with _feedback_store(settings) as store, _registry(registry, settings) as reg:
        return write_report(
            reg,
            store,
            settings.monitoring_dir,
            ref,
            Path(out),
            drift_window=settings.monitoring.drift_window,
            thresholds=thresholds_from(settings.monitoring),
        )
