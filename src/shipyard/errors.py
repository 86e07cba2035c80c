"""The shipyard exception tree: one root, subclassed by what the caller can do about it.

Imports: stdlib only. This module is the leaf of the layering.

```
ShipyardError
├── ConfigError ─ MissingDependency
├── NotFoundError ─ ModelNotFound, VersionNotFound, AliasNotFound, DataNotFound
├── ConflictError ─ VersionExists, AliasInUse, OutputExists
├── InvalidInputError(ShipyardError, ValueError)
│     ├── InvalidModelRef, InvalidName, SignatureMismatch, InvalidData, UnsafeArtifact
├── ConversionError ─ UnsupportedModel, ParityCheckFailed
├── IntegrityError ─ ArtifactCorrupted
├── RuntimeLoadError, InferenceError, ModelNotReady
├── CapacityExceeded (memory budget), SloNotMet (shipyard tune)
└── Overloaded (queue full), DeadlineExceeded, PayloadTooLarge, HeadersTooLarge,
    MalformedRequest, RequestTimeout
```

Every class has a stable kebab-case ``code`` (a reference users can search for) and an
optional ``hint``: the next action that fixes the problem. Messages follow one template:
*X must be Y. Got Z instead.*
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "AliasInUse",
    "AliasNotFound",
    "ArtifactCorrupted",
    "CapacityExceeded",
    "ConfigError",
    "ConflictError",
    "ConversionError",
    "CustomOpNotAllowed",
    "DataNotFound",
    "DeadlineExceeded",
    "DecryptionFailed",
    "EncryptionKeyMissing",
    "FeatureMismatch",
    "Forbidden",
    "HeadersTooLarge",
    "InferenceError",
    "IntegrityError",
    "InvalidData",
    "InvalidInputError",
    "InvalidModelRef",
    "InvalidName",
    "MalformedRequest",
    "MissingDependency",
    "ModelNotFound",
    "ModelNotReady",
    "NotFoundError",
    "OutputExists",
    "Overloaded",
    "ParityCheckFailed",
    "PayloadTooLarge",
    "RateLimited",
    "RequestTimeout",
    "RuntimeLoadError",
    "ShipyardError",
    "ShipyardWarning",
    "SignatureMismatch",
    "SloNotMet",
    "Unauthenticated",
    "UnsafeArtifact",
    "UnsupportedModel",
    "VersionExists",
    "VersionNotFound",
]


class ShipyardError(Exception):
    """Root of every error shipyard raises on purpose.

    Attributes:
        code: Stable kebab-case reference for this kind of error.
        message: One sentence saying what went wrong.
        hint: The next action that fixes it, or None.
        details: Structured extra data (for example a parity report), JSON-serializable.
    """

    code: ClassVar[str] = "shipyard-error"

    def __init__(
        self, message: str, *, hint: str | None = None, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.details = details or {}

    def to_dict(self) -> dict[str, Any]:
        """The error as a JSON-serializable mapping (`error`, `code`, `hint`)."""
        out: dict[str, Any] = {"error": self.message, "code": self.code}
        if self.hint:
            out["hint"] = self.hint
        return out


class ShipyardWarning(UserWarning):
    """Degraded but working (for example CUDA asked for, only CPU available)."""


class ConfigError(ShipyardError):
    """Settings or the installation are wrong."""

    code = "config-error"


class MissingDependency(ConfigError):
    """An optional dependency is not installed; the hint names the extra."""

    code = "missing-dependency"


class NotFoundError(ShipyardError):
    """Something named by the caller does not exist."""

    code = "not-found"


class ModelNotFound(NotFoundError):
    """No model of that name."""

    code = "model-not-found"


class VersionNotFound(NotFoundError):
    """The model exists but not that version."""

    code = "version-not-found"


class AliasNotFound(NotFoundError):
    """The model exists but has no such alias (or no history to roll back to)."""

    code = "alias-not-found"


class DataNotFound(NotFoundError):
    """A file or path given by the caller does not exist."""

    code = "data-not-found"


class ConflictError(ShipyardError):
    """The request conflicts with the current state."""

    code = "conflict"


class VersionExists(ConflictError):
    """A version with that number already exists (imports)."""

    code = "version-exists"


class AliasInUse(ConflictError):
    """A version cannot be deleted while an alias points at it."""

    code = "alias-in-use"


class InvalidInputError(ShipyardError, ValueError):
    """The caller passed a value that breaks a documented rule."""

    code = "invalid-input"


class InvalidModelRef(InvalidInputError):
    """A ref is not `name`, `name:N` or `name@alias`."""

    code = "invalid-model-ref"


class InvalidName(InvalidInputError):
    """A model or alias name breaks the naming rules."""

    code = "invalid-name"


class SignatureMismatch(InvalidInputError):
    """Inputs do not match the model's signature (names, dtypes, shapes)."""

    code = "signature-mismatch"


class InvalidData(InvalidInputError):
    """A data file or payload cannot be read or is malformed."""

    code = "invalid-data"


class UnsafeArtifact(InvalidInputError):
    """An artifact would run code or reach outside its folder."""

    code = "unsafe-artifact"


class ConversionError(ShipyardError):
    """A model could not be converted to ONNX."""

    code = "conversion-error"


class UnsupportedModel(ConversionError):
    """The framework or model type is not supported."""

    code = "unsupported-model"


class ParityCheckFailed(ConversionError):
    """ONNX outputs differ from the source model's beyond tolerance.

    ``details["parity"]`` holds the full parity report.
    """

    code = "parity-check-failed"


class IntegrityError(ShipyardError):
    """Stored data does not match what was recorded."""

    code = "integrity-error"


class ArtifactCorrupted(IntegrityError):
    """An artifact's sha256 no longer matches its manifest."""

    code = "artifact-corrupted"


class RuntimeLoadError(ShipyardError):
    """The engine could not load a model."""

    code = "runtime-load-error"


class InferenceError(ShipyardError):
    """The engine failed while running a model."""

    code = "inference-error"


class ModelNotReady(ShipyardError):
    """The model is loading, failed to load, or was unloaded."""

    code = "model-not-ready"


class CapacityExceeded(ShipyardError):
    """A load would exceed the memory budget for loaded models."""

    code = "capacity-exceeded"


class Overloaded(ShipyardError):
    """The request queue is full; retry later."""

    code = "overloaded"


class DeadlineExceeded(ShipyardError):
    """The caller's deadline passed before the request could run."""

    code = "deadline-exceeded"


class PayloadTooLarge(InvalidInputError):
    """A request or element exceeds a configured size limit."""

    code = "payload-too-large"


class HeadersTooLarge(InvalidInputError):
    """A request's line and headers exceed the configured size limit."""

    code = "headers-too-large"


class MalformedRequest(InvalidInputError):
    """An HTTP request the parser refuses (bad framing, smuggling shapes, obs-fold)."""

    code = "malformed-request"


class RequestTimeout(InvalidInputError):
    """A client sent its headers, or a gap in its body, slower than the server waits."""

    code = "request-timeout"


class OutputExists(ConflictError):
    """An output folder or file already exists and would be overwritten."""

    code = "output-exists"


class SloNotMet(ShipyardError):
    """No measured serving setting met the latency objective (``shipyard tune``)."""

    code = "slo-not-met"


class DecryptionFailed(IntegrityError):
    """An encrypted blob could not be decrypted: wrong key, or the ciphertext was altered."""

    code = "decryption-failed"


class EncryptionKeyMissing(ConfigError):
    """Encrypted data needs a key and none was configured (or the key is malformed)."""

    code = "encryption-key-missing"


class CustomOpNotAllowed(UnsafeArtifact):
    """A model uses an operator domain outside ``runtime.allowed_op_domains``."""

    code = "custom-op-not-allowed"


class FeatureMismatch(InvalidData):
    """Monitoring data does not have the features its reference was built from."""

    code = "feature-mismatch"


class Unauthenticated(ShipyardError):
    """No valid API token (missing, malformed, unknown, expired or revoked): one body for all."""

    code = "unauthenticated"


class Forbidden(ShipyardError):
    """A valid token that lacks the scope the endpoint needs."""

    code = "forbidden"


class RateLimited(ShipyardError):
    """Too many failed authentications from one client; retry after ``details['retry_after_s']``."""

    code = "rate-limited"
