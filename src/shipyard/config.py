"""Settings: one pydantic-settings tree, loaded once at the edge and passed down.

Precedence, highest first: explicit overrides (CLI flags), ``SHIPYARD_*`` environment
variables (``__`` separates sections: ``SHIPYARD_BATCHING__MAX_WAIT_MS=5``), a
``shipyard.toml`` file, defaults.

Imports: spec, errors.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from shipyard.errors import ConfigError

__all__ = [
    "BatchingSettings",
    "LoggingSettings",
    "MonitoringSettings",
    "RegistrySettings",
    "RuntimeSettings",
    "SecuritySettings",
    "ServerSettings",
    "Settings",
    "default_home",
    "layered",
    "load_settings",
    "with_overrides",
]


def default_home() -> Path:
    """``$SHIPYARD_HOME``, else ``~/.shipyard``."""
    env = os.environ.get("SHIPYARD_HOME")
    return Path(env).expanduser() if env else Path.home() / ".shipyard"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


class RegistrySettings(_Section):
    """Where models are stored."""

    metadata_url: str | None = None
    """SQLAlchemy URL of the metadata database; default ``sqlite:///<home>/registry.db``."""
    store_path: Path | None = None
    """Folder of the content-addressed artifact store; default ``<home>/store``."""
    busy_timeout_s: float = Field(30.0, gt=0)
    """How long a writer waits for another writer's lock before failing."""
    encrypt: bool = False
    """Encrypt new blobs at rest with AES-256-GCM (needs a key; see SECURITY.md)."""
    encryption_key_env: str = Field("SHIPYARD_ENCRYPTION_KEY", min_length=1)
    """Environment variable holding the key: base64 of 32 random bytes."""
    encryption_key_file: Path | None = None
    """File of base64 keys, one a line: the first encrypts, all decrypt (rotation)."""


class RuntimeSettings(_Section):
    """How the engine runs models."""

    intra_op_threads: int = Field(0, ge=0)
    """Threads inside one operator (0 lets ONNX Runtime choose: one per core)."""
    inter_op_threads: int = Field(1, ge=0)
    """Threads running independent operators in parallel (0 lets ONNX Runtime choose)."""
    providers: tuple[str, ...] = ("auto",)
    """ONNX Runtime execution providers, in order of preference; ``auto``: CUDA when this
    onnxruntime build and machine have it (``onnxruntime-gpu``), then the CPU."""
    graph_optimization: Literal["disable", "basic", "extended", "all"] = "all"
    """ONNX Runtime's online graph optimization level."""
    allowed_op_domains: tuple[str, ...] = ("", "ai.onnx", "ai.onnx.ml", "com.microsoft")
    """Operator domains a model may use; a model importing any other is refused at load."""


class BatchingSettings(_Section):
    """Dynamic batching per model."""

    max_batch_size: int = Field(32, ge=1)
    """Most requests merged into one runtime call."""
    max_wait_ms: float = Field(0.0, ge=0)
    """How long the first request of a batch waits for company."""
    max_queue_size: int = Field(256, ge=1)
    """Requests queued past this are rejected as Overloaded (503)."""


class ServerSettings(_Section):
    """The inference server's listeners and limits."""

    host: str = "127.0.0.1"
    """Interface the public (inference) listener binds to."""
    port: int = Field(8710, ge=0, le=65535)
    """Public REST port (not 8000/8080/8501: those belong to other servers)."""
    grpc_port: int = Field(8711, ge=0, le=65535)
    """Public gRPC port."""
    grpc_workers: int = Field(64, ge=1, le=4096)
    """gRPC calls in flight at once (one waiting thread each); batches form across them."""
    grpc_max_concurrent_rpcs: int | None = Field(1024, ge=1)
    """gRPC calls accepted at once, waiting ones included; past it RESOURCE_EXHAUSTED."""
    management_host: str = "127.0.0.1"
    """Interface of the management listener (load/unload); loopback by default."""
    management_port: int = Field(8712, ge=0, le=65535)
    """Management REST port."""
    max_body_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    """Largest request body accepted (413 past it)."""
    max_header_bytes: int = Field(64 * 1024, ge=1024)
    """Largest request line plus headers accepted (431 past it, before they are buffered)."""
    client_timeout_s: float = Field(10.0, gt=0)
    """Longest a client may take to send its request line and headers, or stay silent in
    the middle of a body (408 past it): slow clients (slowloris) cannot hold connections."""
    keep_alive_s: float = Field(30.0, gt=0)
    """How long an idle HTTP keep-alive connection stays open between requests."""
    max_json_depth: int = Field(32, ge=2)
    """Deepest JSON nesting accepted in a request body."""
    max_bytes_element_bytes: int = Field(16 * 1024 * 1024, ge=1)
    """Largest single BYTES element accepted."""
    allow_nan: bool = True
    """Accept NaN and Inf in numeric inputs."""
    registry_poll_s: float = Field(2.0, ge=0)
    """How often the server checks the registry for moved aliases (0 turns polling off)."""
    memory_budget_bytes: int | None = Field(None, ge=1)
    """Most bytes of model artifacts loaded at once; None means no limit."""
    drain_timeout_s: float = Field(30.0, ge=0)
    """On SIGTERM, how long in-flight requests may take to finish."""

    @model_validator(mode="after")
    def _ports_distinct(self) -> ServerSettings:
        ports = [p for p in (self.port, self.grpc_port, self.management_port) if p]
        if len(set(ports)) != len(ports):
            raise ValueError(
                "port, grpc_port and management_port must differ. "
                f"Got {self.port}, {self.grpc_port}, {self.management_port} instead."
            )
        return self


class SecuritySettings(_Section):
    """API tokens on the REST and gRPC listeners (``shipyard tokens``)."""

    auth: Literal["auto", "on", "off"] = "auto"
    """``auto``: tokens required unless the public host is loopback; ``off`` logs a warning."""
    token_db: Path | None = None
    """The token store; default ``<home>/security.db``."""
    token_cache_s: float = Field(1.0, ge=0, le=60)
    """How long a verified token is trusted without a database look-up (revocation delay)."""
    fail_burst: int = Field(10, ge=1)
    """Failed authentications one client address may make before 429."""
    fail_refill_per_s: float = Field(1.0, gt=0)
    """Rate at which a client's failure budget refills."""
    tls_cert: Path | None = None
    """PEM certificate (chain) for REST and gRPC; with ``tls_key`` turns TLS on."""
    tls_key: Path | None = None
    """PEM private key of ``tls_cert``."""
    tls_client_ca: Path | None = None
    """PEM CA bundle; when set, clients must present a certificate it signed (mutual TLS)."""


class MonitoringSettings(_Section):
    """Production monitoring: the prediction log and ground-truth feedback."""

    # prediction log
    log_predictions: bool = True
    """Record inferences (off the request path) for live quality and drift."""
    sample_rate: float = Field(1.0, ge=0.0, le=1.0)
    """Share of requests recorded (1.0: all)."""
    dir: Path | None = None
    """Where segments and the feedback database live; default ``<home>/monitoring``."""
    inputs: Literal["full", "summary", "none"] = "full"
    """Inputs as sent, as per-row summaries (count, mean, min, max, NaN count), or not at all."""
    redact: dict[str, Literal["drop", "hash", "summary"]] = {}
    """Per input or output name: drop it, keep a salted sha256 of it, or a summary only."""
    hash_salt: str = ""
    """Salt mixed into hashed fields (set it to make hashes unlinkable across deployments)."""
    queue_size: int = Field(10_000, ge=1)
    """Requests (a batch counts once) held in memory before the writer; past it records are
    dropped and counted."""
    flush_interval_s: float = Field(1.0, gt=0)
    """How often a segment is written: a SIGKILL loses at most this much."""
    max_age_days: float = Field(30.0, gt=0)
    """Segments older than this are deleted."""
    encrypt: bool = False
    """Encrypt segments at rest (AES-256-GCM) with the registry's key
    (``SHIPYARD_ENCRYPTION_KEY`` or the key file); decrypted in memory only."""
    max_bytes: int = Field(1024**3, ge=1024)
    """Total size of segments kept: past it the oldest lose their inputs (their outputs
    stay, for late labels), then the oldest go."""
    # live quality and alerts
    quality_windows: list[str] = ["5m", "1h", "last_1000"]
    """Sliding windows for live quality: '<n><s|m|h|d>' by time or 'last_<N>' by count."""
    quality_capacity: int = Field(100_000, ge=1)
    """Labelled rows kept per model version for live quality (a ring buffer)."""
    alerts_file: Path | None = None
    """TOML file of alert rules and webhooks (see shipyard.monitoring.alerts), loaded when
    the server starts (a bad file stops the start); none: off. ``shipyard serve --alerts``."""
    alerts_interval_s: float | None = Field(None, gt=0)
    """How often the server evaluates alert rules; none: the alerts file's ``interval_s``
    (15 s unless it says otherwise)."""
    # drift and estimated quality
    drift_window: int = Field(10_000, ge=1)
    """Newest logged rows of a version compared with its drift reference (and used for the
    label-free quality estimate)."""
    drift_ks_p_value: float = Field(0.05, gt=0.0, lt=1.0)
    """Kolmogorov-Smirnov test: a numeric feature drifted when its p-value is below this."""
    drift_psi: float = Field(0.2, gt=0.0)
    """Population stability index: a numeric feature drifted when its PSI is above this."""
    drift_chi2_p_value: float = Field(0.05, gt=0.0, lt=1.0)
    """Chi² test: a categorical feature drifted when its p-value is below this."""
    drift_verdict: Literal["any", "all", "ks", "psi"] = "any"
    """Which numeric tests decide a numeric feature's verdict: either, both, or one."""
    drift_cache_s: float = Field(10.0, ge=0.0)
    """How long the server reuses a version's computed drift and estimate (0: never)."""


class LoggingSettings(_Section):
    """Log output."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Lowest level written."""
    format: Literal["text", "json"] = "text"
    """Text for people, JSON for log collectors."""
    access_log: bool = True
    """Write one line per request to the ``shipyard.access`` logger."""


class Settings(BaseSettings):
    """All of shipyard's settings."""

    model_config = SettingsConfigDict(
        env_prefix="SHIPYARD_",
        env_nested_delimiter="__",
        extra="forbid",
        use_attribute_docstrings=True,
    )

    home: Path = Field(default_factory=default_home)
    """Root folder for the registry and logs (``SHIPYARD_HOME``)."""
    registry: RegistrySettings = RegistrySettings()
    """Where models are stored."""
    runtime: RuntimeSettings = RuntimeSettings()
    """How the engine runs models."""
    batching: BatchingSettings = BatchingSettings()
    """Dynamic batching defaults for every model."""
    server: ServerSettings = ServerSettings()
    """Server listeners and limits."""
    logging: LoggingSettings = LoggingSettings()
    """Log output."""
    security: SecuritySettings = SecuritySettings()
    """API tokens and authentication."""
    monitoring: MonitoringSettings = MonitoringSettings()
    """Prediction log, feedback and live quality."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings)

    @property
    def metadata_url(self) -> str:
        """The metadata database URL, defaulted under ``home``."""
        return self.registry.metadata_url or f"sqlite:///{self.home / 'registry.db'}"

    @property
    def monitoring_dir(self) -> Path:
        """The monitoring folder, defaulted under ``home``."""
        return self.monitoring.dir or self.home / "monitoring"

    @property
    def store_path(self) -> Path:
        """The artifact store folder, defaulted under ``home``."""
        return self.registry.store_path or self.home / "store"


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def load_settings(
    overrides: dict[str, Any] | None = None, config_file: Path | None = None
) -> Settings:
    """Build Settings from defaults, a TOML file, the environment and explicit overrides.

    Environment variables beat the file; overrides beat both. The file defaults to
    ``./shipyard.toml`` when it exists.

    Raises:
        ConfigError: the file is unreadable or a value breaks a constraint.
    """
    file_values: dict[str, Any] = {}
    path = config_file or (Path("shipyard.toml") if Path("shipyard.toml").is_file() else None)
    if path is not None:
        try:
            file_values = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(
                f"Config file {str(path)!r} must exist. It was not found.",
                hint="Pass an existing file with --config.",
            ) from None
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"Config file {str(path)!r} must be valid TOML: {exc}") from exc
    try:
        env_only = Settings()
    except ValidationError as exc:
        raise _config_error(exc) from exc
    merged = _deep_merge(file_values, env_only.model_dump(exclude_unset=True))
    return _validate(_deep_merge(merged, overrides or {}))


def with_overrides(settings: Settings, overrides: dict[str, Any]) -> Settings:
    """A copy of ``settings`` with nested ``overrides`` applied and validated.

    Raises:
        ConfigError: a value breaks a constraint.
    """
    return _validate(_deep_merge(settings.model_dump(), overrides))


SectionT = TypeVar("SectionT", bound=BaseModel)


def layered(base: SectionT, *layers: dict[str, Any] | None, where: str = "") -> SectionT:
    """``base`` with each layer's keys applied in order, validated (per-model settings).

    Raises:
        ConfigError: a layer names an unknown setting or breaks a constraint.
    """
    values = base.model_dump()
    for layer in layers:
        if layer:
            values.update(layer)
    try:
        return type(base).model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        raise ConfigError(
            f"Setting {key!r}{' of ' + where if where else ''} is invalid: {first['msg']}."
        ) from exc


def _validate(values: dict[str, Any]) -> Settings:
    try:
        return Settings.model_validate(values)
    except ValidationError as exc:
        raise _config_error(exc) from exc


def _config_error(exc: ValidationError) -> ConfigError:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    return ConfigError(
        f"Setting {where!r} is invalid: {first['msg']}.",
        hint=f"Check SHIPYARD_{where.upper().replace('.', '__')} and your config file.",
    )
