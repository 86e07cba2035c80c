"""TensorFlow Serving REST compatibility (and KServe V1 ``:predict``, which has its shape).

``/v1/models/{name}[/versions/{n}|/labels/{label}]``: status (GET), ``/metadata`` (GET),
``:predict``, ``:classify``, ``:regress`` (POST). Labels map to shipyard aliases: the ref
``name@label`` must be served. Errors carry ``{"error": ...}`` (what TF Serving clients
read) plus our ``code``, ``hint`` and ``request_id``.

Imports: L0-L4, starlette, the server's own modules.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from shipyard.errors import InvalidData, InvalidInputError, NotFoundError, PayloadTooLarge
from shipyard.server import codec
from shipyard.server.errors import error_body
from shipyard.spec import DType, TaskType

if TYPE_CHECKING:
    from shipyard.server.dataplane import DataPlane, ServedModel

__all__ = ["tfserving_routes"]

_TF_DTYPES = {
    DType.BOOL: "DT_BOOL",
    DType.UINT8: "DT_UINT8",
    DType.UINT16: "DT_UINT16",
    DType.UINT32: "DT_UINT32",
    DType.UINT64: "DT_UINT64",
    DType.INT8: "DT_INT8",
    DType.INT16: "DT_INT16",
    DType.INT32: "DT_INT32",
    DType.INT64: "DT_INT64",
    DType.FP16: "DT_HALF",
    DType.FP32: "DT_FLOAT",
    DType.FP64: "DT_DOUBLE",
    DType.BYTES: "DT_STRING",
}
_VERBS = ("predict", "classify", "regress")


def _respond(status: int, payload: Any) -> Response:
    return Response(
        orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY),
        status,
        media_type="application/json",
    )


def _error(exc: BaseException, request: Request) -> Response:
    request_id = request.headers.get("x-request-id") or os.urandom(8).hex()
    status, body, headers = error_body(exc, request_id)
    resp = Response(body, status, media_type="application/json")
    for key, value in headers:
        resp.headers[key.decode()] = value.decode()
    return resp


async def _read_limited(request: Request, limit: int) -> bytes:
    """The body, refused with 413 past ``limit`` bytes (by Content-Length before reading)."""
    declared = request.headers.get("content-length", "")
    size = int(declared) if declared.isdigit() else 0
    chunks: list[bytes] = []
    if size <= limit:
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                break
            chunks.append(chunk)
    if size > limit:
        raise PayloadTooLarge(
            f"A request body must be at most {limit} bytes. Got more than that instead.",
            hint="Raise SHIPYARD_SERVER__MAX_BODY_BYTES or split the request.",
        )
    return b"".join(chunks)


def _parse(rest: str) -> tuple[str, str | None, str | None, str]:
    """``iris/versions/2:predict`` → (name, version, label, action)."""
    action = "status"
    if ":" in rest.rsplit("/", 1)[-1]:
        rest, _, action = rest.rpartition(":")
        if action not in _VERBS:
            raise NotFoundError(
                f"A TF Serving method must be one of {list(_VERBS)}. Got {action!r} instead."
            )
    parts = rest.split("/")
    if parts and parts[-1] == "metadata":
        parts = parts[:-1]
        action = "metadata"
    if len(parts) == 1:
        return parts[0], None, None, action
    if len(parts) == 3 and parts[1] == "versions":
        return parts[0], parts[2], None, action
    if len(parts) == 3 and parts[1] == "labels":
        return parts[0], None, parts[2], action
    raise NotFoundError(
        f"A TF Serving path must be /v1/models/NAME[/versions/N|/labels/L]. Got /v1/models/{rest}."
    )


def _route(name: str, version: str | None, label: str | None) -> tuple[str, str | None]:
    """A TF Serving label is a shipyard alias: the served ref ``name@label``."""
    return (f"{name}@{label}", None) if label is not None else (name, version)


def _lookup(dataplane: DataPlane, name: str, version: str | None, label: str | None) -> ServedModel:
    return dataplane.lookup(*_route(name, version, label))


def _status(
    dataplane: DataPlane, name: str, version: str | None, label: str | None
) -> dict[str, Any]:
    if version is None and label is None:
        versions = dataplane.versions(name)
        if not versions:
            dataplane.lookup(name)  # raises the right not-found / not-ready error
    else:
        versions = [_lookup(dataplane, name, version, label).version_str]
    return {
        "model_version_status": [
            {
                "version": v,
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
            for v in versions
        ]
    }


def _tensor_info(name: str, dtype: DType, shape: tuple[int | None, ...]) -> dict[str, Any]:
    return {
        "dtype": _TF_DTYPES[dtype],
        "tensor_shape": {
            "dim": [{"size": str(-1 if d is None else d), "name": ""} for d in shape],
            "unknown_rank": False,
        },
        "name": name,
    }


def _metadata(model: ServedModel) -> dict[str, Any]:
    sig = model.signature
    return {
        "model_spec": {"name": model.name, "signature_name": "", "version": model.version_str},
        "metadata": {
            "signature_def": {
                "signature_def": {
                    "serving_default": {
                        "inputs": {
                            t.name: _tensor_info(t.name, t.dtype, t.shape) for t in sig.inputs
                        },
                        "outputs": {
                            t.name: _tensor_info(t.name, t.dtype, t.shape) for t in sig.outputs
                        },
                        "method_name": "tensorflow/serving/predict",
                    }
                }
            }
        },
    }


def _examples_to_inputs(model: ServedModel, body: dict[str, Any]) -> dict[str, Any]:
    """tf.Example-style ``examples`` (+ shared ``context``) → the model's single 2-D input."""
    examples = body.get("examples")
    if not isinstance(examples, list) or not examples:
        raise InvalidData("A classify/regress body must have a non-empty 'examples' list.")
    context = body.get("context") or {}
    sig = model.signature
    if len(sig.inputs) != 1 or len(sig.inputs[0].shape) != 2:
        raise InvalidInputError(
            "classify/regress need a model with one 2-D input (a feature table). "
            f"This one has inputs {[t.name for t in sig.inputs]}."
        )
    spec = sig.inputs[0]
    features = model.manifest.task.feature_names
    rows: list[list[Any]] = []
    for i, ex in enumerate(examples):
        if not isinstance(ex, dict):
            raise InvalidData(
                f"Example {i} must be an object of features. Got {type(ex).__name__}."
            )
        merged = {**context, **ex}
        if features:
            missing = [f for f in features if f not in merged]
            if missing:
                raise InvalidData(f"Example {i} must have features {missing}. They are missing.")
            rows.append([merged[f] for f in features])
        elif len(merged) == 1:
            only = next(iter(merged.values()))
            rows.append(list(only) if isinstance(only, list) else [only])
        else:
            raise InvalidInputError(
                "Examples with several features need the model's feature names.",
                hint="Register the model with feature names (fit it on a DataFrame).",
            )
    try:
        with np.errstate(over="ignore"):  # past FP32 is ±inf, as on the V2 path
            arr = np.asarray(rows, dtype=spec.dtype.to_numpy())
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidData(f"Example features must be numbers: {exc}") from exc
    return {spec.name: arr}


def tfserving_routes(dataplane: DataPlane) -> list[Route]:
    """Routes for ``/v1/models/...`` (status, metadata, predict, classify, regress)."""

    async def get(request: Request) -> Response:
        try:
            name, version, label, action = _parse(request.path_params["rest"])
            if action == "status":
                return _respond(200, _status(dataplane, name, version, label))
            if action == "metadata":
                return _respond(200, _metadata(_lookup(dataplane, name, version, label)))
            raise NotFoundError(f"GET does not serve :{action}; POST to it.")
        except Exception as exc:
            return _error(exc, request)

    limits = codec.DecodeLimits.from_settings(dataplane.settings.server)
    max_body = dataplane.settings.server.max_body_bytes

    async def post(request: Request) -> Response:
        try:
            name, version, label, action = _parse(request.path_params["rest"])
            if action not in _VERBS:
                raise NotFoundError("POST needs a method: :predict, :classify or :regress.")
            with dataplane.acquire(*_route(name, version, label)) as model:
                body = await _read_limited(request, max_body)
                if action == "predict":
                    inputs, form = codec.decode_tfs_predict(body, model.signature, limits=limits)
                    outputs = await dataplane.infer(model, inputs)
                    return Response(
                        codec.encode_tfs_predict(outputs, form), 200, media_type="application/json"
                    )
                parsed = codec.loads_tolerant(body, allow_nan=limits.allow_nan)
                if not isinstance(parsed, dict):
                    raise InvalidData("A classify/regress body must be a JSON object.")
                task = model.manifest.task
                outputs = await dataplane.infer(model, _examples_to_inputs(model, parsed))
                if action == "regress":
                    if task.task is not TaskType.REGRESSION:
                        raise InvalidInputError(
                            f"':regress' needs a regression model. "
                            f"{model.name!r} is {task.task.value}."
                        )
                    out = outputs[task.scores_output or model.output_names[0]]
                    return _respond(
                        200, {"result": np.asarray(out, dtype=np.float64).reshape(-1).tolist()}
                    )
                if task.task is not TaskType.CLASSIFICATION or not task.scores_output:
                    raise InvalidInputError(
                        f"':classify' needs a classification model with scores. {model.name!r} is "
                        f"{task.task.value}."
                    )
                scores = np.asarray(outputs[task.scores_output], dtype=np.float64)
                labels = [str(c) for c in (task.class_labels or range(scores.shape[1]))]
                result = [
                    [[lab, float(s)] for lab, s in zip(labels, row, strict=False)] for row in scores
                ]
                return _respond(200, {"result": result})
        except Exception as exc:
            return _error(exc, request)

    return [
        Route("/v1/models/{rest:path}", get, methods=["GET"]),
        Route("/v1/models/{rest:path}", post, methods=["POST"]),
    ]
