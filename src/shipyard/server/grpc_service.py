"""The Open Inference Protocol over gRPC (``inference.GRPCInferenceService``).

Wire-compatible with the Triton and KServe clients (see ``grpc/inference.proto``).
Tensors travel as ``raw_input_contents``/``raw_output_contents`` (little-endian, row-major;
BYTES as 4-byte length prefixes) or as typed ``contents``; outputs are always sent raw,
which every OIP client reads and which costs no per-element protobuf allocation.

Imports: L0-L4, grpc, the server's own modules.
"""

from __future__ import annotations

import _thread
import asyncio
import collections
import functools
import logging
import time
from collections.abc import Coroutine
from concurrent import futures
from typing import TYPE_CHECKING, Any

import grpc
import numpy as np

from shipyard._utils.version import __version__
from shipyard.errors import InvalidData, InvalidInputError, PayloadTooLarge, ShipyardError
from shipyard.server._grpc_auth import current_actor
from shipyard.server.codec import MAX_RANK, decode_bytes_raw, encode_bytes_raw
from shipyard.server.dataplane import DataPlane
from shipyard.server.errors import status_for
from shipyard.server.grpc import inference_pb2 as pb
from shipyard.server.grpc import inference_pb2_grpc as pb_grpc
from shipyard.spec import DType, ModelRef

if TYPE_CHECKING:
    import numpy.typing as npt

    from shipyard.config import Settings

__all__ = ["GrpcServer", "InferenceServicer", "start_grpc_server"]

logger = logging.getLogger(__name__)

_GRPC_CODE = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.ALREADY_EXISTS,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}

_NO_DEADLINE_S = 10 * 365 * 86400.0

_CONTENTS_FIELD = {
    DType.BOOL: "bool_contents",
    DType.INT8: "int_contents",
    DType.INT16: "int_contents",
    DType.INT32: "int_contents",
    DType.INT64: "int64_contents",
    DType.UINT8: "uint_contents",
    DType.UINT16: "uint_contents",
    DType.UINT32: "uint_contents",
    DType.UINT64: "uint64_contents",
    DType.FP32: "fp32_contents",
    DType.FP64: "fp64_contents",
    DType.BYTES: "bytes_contents",
}


def _dtype(name: str) -> DType:
    try:
        return DType(name)
    except ValueError:
        raise InvalidInputError(
            f"A datatype must be one of {[d.value for d in DType]}. Got {name!r} instead."
        ) from None


def _count(shape: Any) -> int:
    """The element count, counting an empty tensor's non-zero dims.

    A [2**62, 2**62, 0] shape is as large as [2**62, 2**62] to the limit: numpy never sees it.
    """
    n = 1
    nonzero = 1
    for d in shape:
        if d < 0:
            raise InvalidInputError(
                f"Shape dimensions must be >= 0. Got {list(shape)[:16]} instead."
            )
        n *= int(d)
        nonzero *= int(d) or 1
    return max(n, nonzero)


def decode_request(
    request: Any,
    max_elements: int,
    max_element_bytes: int = 16 * 1024 * 1024,
    *,
    allow_nan: bool = True,
) -> dict[str, npt.NDArray[Any]]:
    """ModelInferRequest → named arrays, checking element counts before allocating."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidInputError(
            f"raw_input_contents must have one entry per input ({len(request.inputs)}). "
            f"Got {len(raw)} instead."
        )
    tensors: dict[str, npt.NDArray[Any]] = {}
    for i, tensor in enumerate(request.inputs):
        dtype = _dtype(tensor.datatype)
        shape = tuple(tensor.shape)
        if len(shape) > MAX_RANK:
            raise InvalidInputError(
                f"Input {tensor.name!r} must have at most {MAX_RANK} dimensions. "
                f"Got {len(shape)} instead."
            )
        bound = _count(shape)
        count = bound if 0 not in shape else 0
        if bound > max_elements:
            raise PayloadTooLarge(
                f"Input {tensor.name!r} must have at most {max_elements} elements. "
                f"Got {bound} instead."
            )
        if raw:
            data = raw[i]
            if dtype is DType.BYTES:
                arr = decode_bytes_raw(data, count, max_element_bytes)
            else:
                np_dtype = dtype.to_numpy()
                if len(data) != count * np_dtype.itemsize:
                    raise InvalidInputError(
                        f"Input {tensor.name!r} with shape {list(shape)} must have "
                        f"{count * np_dtype.itemsize} bytes of {dtype.value}. "
                        f"Got {len(data)} instead."
                    )
                arr = np.frombuffer(data, dtype=np_dtype)
        else:
            if dtype is DType.FP16:
                raise InvalidInputError(
                    f"Input {tensor.name!r}: FP16 must be sent in raw_input_contents."
                )
            values = getattr(tensor.contents, _CONTENTS_FIELD[dtype])
            if len(values) != count:
                raise InvalidInputError(
                    f"Input {tensor.name!r} with shape {list(shape)} must have {count} "
                    f"elements. Got {len(values)} instead."
                )
            if dtype is DType.BYTES:
                arr = np.empty(count, dtype=object)
                arr[:] = list(values)
            else:
                arr = np.asarray(values, dtype=dtype.to_numpy())
        if not allow_nan and arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise InvalidData(
                f"Input {tensor.name!r} must hold finite numbers. Got NaN or Inf instead.",
                hint="NaN/Inf are refused by SHIPYARD_SERVER__ALLOW_NAN=false.",
            )
        if tensor.name in tensors:
            raise InvalidInputError(f"Input names must be unique. Got {tensor.name!r} twice.")
        tensors[tensor.name] = arr.reshape(shape)
    return tensors


def _out_dtype(arr: npt.NDArray[Any]) -> DType:
    return DType.from_numpy(arr.dtype)


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """gRPC endpoints, translating to and from the DataPlane."""

    def __init__(self, dataplane: DataPlane, settings: Settings) -> None:
        self.dataplane = dataplane
        self.settings = settings
        # every element takes at least one byte on the wire
        self.max_elements = settings.server.max_body_bytes
        host = settings.server.host
        self.allow_management = host in ("127.0.0.1", "localhost", "::1")

    async def _abort(self, context: Any, exc: BaseException, model: Any = None) -> None:
        status = int(status_for(exc))
        code = _GRPC_CODE.get(status, grpc.StatusCode.INTERNAL)
        if isinstance(exc, ShipyardError):
            err_code = exc.code
            # the stable code leads, as in the auth interceptor's details
            message = f"{err_code}: {exc.message}" + (f" Hint: {exc.hint}" if exc.hint else "")
        else:
            logger.error("Unhandled gRPC error", exc_info=exc)
            message, err_code = "internal: Internal server error.", "internal"
        if model is not None:
            self.dataplane.metrics.error(model.name, model.version_str, "grpc", err_code)
        await context.abort(code, message)

    async def ServerLive(self, request: Any, context: Any) -> Any:  # noqa: N802
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: Any) -> Any:  # noqa: N802
        return pb.ServerReadyResponse(ready=self.dataplane.ready())

    async def ModelReady(self, request: Any, context: Any) -> Any:  # noqa: N802
        return pb.ModelReadyResponse(
            ready=self.dataplane.model_ready(request.name, request.version or None)
        )

    async def ServerMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802
        return pb.ServerMetadataResponse(
            name="shipyard",
            version=__version__,
            extensions=["binary_tensor_data", "model_repository"],
        )

    async def ModelMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802
        try:
            meta = self.dataplane.model_metadata(request.name, request.version or None)
        except ShipyardError as exc:
            await self._abort(context, exc)
        resp = pb.ModelMetadataResponse(
            name=meta["name"], versions=meta["versions"], platform=meta["platform"]
        )
        for t in meta["inputs"]:
            resp.inputs.add(name=t["name"], datatype=t["datatype"], shape=t["shape"])
        for t in meta["outputs"]:
            resp.outputs.add(name=t["name"], datatype=t["datatype"], shape=t["shape"])
        return resp

    async def ModelInfer(self, request: Any, context: Any) -> Any:  # noqa: N802
        started = time.perf_counter()
        model = None
        try:
            with self.dataplane.acquire(request.model_name, request.model_version or None) as model:
                inputs = decode_request(
                    request,
                    self.max_elements,
                    self.settings.server.max_bytes_element_bytes,
                    allow_nan=self.settings.server.allow_nan,
                )
                remaining = context.time_remaining()
                # no deadline: grpc.aio says None, the threaded server a huge number
                deadline = (
                    None
                    if remaining is None or remaining > _NO_DEADLINE_S
                    else time.monotonic() + remaining
                )
                outputs = await self.dataplane.infer(
                    model, inputs, deadline=deadline, key=request.id or None
                )
        except Exception as exc:
            await self._abort(context, exc, model)
            raise  # pragma: no cover - abort raises
        wanted = [o.name for o in request.outputs] or list(outputs)
        resp = pb.ModelInferResponse(
            model_name=request.model_name, model_version=model.version_str, id=request.id
        )
        raw = resp.raw_output_contents
        for name in wanted:
            arr = outputs.get(name)
            if arr is None:
                await self._abort(
                    context,
                    InvalidInputError(
                        f"Requested output must be one of {sorted(outputs)}. Got {name!r} instead."
                    ),
                    model,
                )
                raise AssertionError("abort raises")  # pragma: no cover
            dtype = _out_dtype(arr)
            resp.outputs.add(name=name, datatype=dtype.value, shape=arr.shape)
            if dtype is DType.BYTES:
                raw.append(encode_bytes_raw(arr))
            else:
                raw.append(np.ascontiguousarray(arr).tobytes())
        bound = model.metrics("grpc")
        bound.requests.inc()
        bound.latency.observe(time.perf_counter() - started)
        return resp

    async def RepositoryIndex(self, request: Any, context: Any) -> Any:  # noqa: N802
        resp = pb.RepositoryIndexResponse()
        for row in self.dataplane.index():
            if request.ready and row["state"] != "READY":
                continue
            resp.models.add(**row)
        return resp

    async def _refuse_management(self, context: Any) -> None:
        await context.abort(
            grpc.StatusCode.PERMISSION_DENIED,
            "Repository load/unload over the public gRPC port is only allowed when the server "
            "binds to loopback. Use the management REST port.",
        )

    async def _audited(self, action: str, name: str, context: Any, call: Any) -> None:
        """Run an admin call, and append who/what/when/where to the registry's audit log."""
        details: dict[str, Any] = {"ok": False}
        try:
            await call(name)
            details["ok"] = True
        except ShipyardError as exc:
            details["code"] = exc.code
            await self._abort(context, exc)
        finally:
            peer = getattr(context, "peer", None)
            await asyncio.to_thread(
                self.dataplane.pool.registry.record_audit,
                action,
                name,
                actor=getattr(context, "actor", None) or "anonymous",
                source=f"grpc:{peer() if peer else 'unknown'}",
                details=details,
            )

    async def RepositoryModelLoad(self, request: Any, context: Any) -> Any:  # noqa: N802
        if not self.allow_management:
            await self._refuse_management(context)

        async def load(ref: str) -> None:
            ModelRef.parse(ref)  # an invalid ref is refused before the index records it
            await self.dataplane.load(ref)

        await self._audited("server.load", request.model_name, context, load)
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(self, request: Any, context: Any) -> Any:  # noqa: N802
        if not self.allow_management:
            await self._refuse_management(context)
        await self._audited("server.unload", request.model_name, context, self.dataplane.unload)
        return pb.RepositoryModelUnloadResponse()


class _Abort(Exception):
    """An abort raised on the loop, re-raised through the real context on the RPC's thread."""

    def __init__(self, code: Any, details: str) -> None:
        super().__init__(details)
        self.code, self.details = code, details


class _LoopContext:
    """The part of a servicer context the async servicer uses, for a call run on the loop."""

    __slots__ = ("_ctx", "actor")

    def __init__(self, ctx: Any, actor: str | None = None) -> None:
        self._ctx = ctx
        self.actor = actor  # the token's name, for the audit log (None with auth off)

    async def abort(self, code: Any, details: str) -> None:
        raise _Abort(code, details)

    def time_remaining(self) -> float | None:
        return self._ctx.time_remaining()  # type: ignore[no-any-return]

    def peer(self) -> str:
        return str(self._ctx.peer())


_RPCS = (
    "ServerLive",
    "ServerReady",
    "ModelReady",
    "ServerMetadata",
    "ModelMetadata",
    "ModelInfer",
    "RepositoryIndex",
    "RepositoryModelLoad",
    "RepositoryModelUnload",
)


class _Inbox:
    """Coroutines handed from gRPC's threads to the event loop, each thread waiting on its own.

    A burst of calls costs the loop one wake-up (``call_soon_threadsafe`` writes to the
    loop's self-pipe), not one per call, and each waiting thread blocks on a bare lock
    rather than a ``concurrent.futures.Future`` and its condition variable. No lock
    guards the deque: appends and pops are atomic, and the drain clears its flag before
    it empties the deque, so a call appended at any moment is drained by this drain or
    by one its producer schedules (two producers may schedule one each: the second
    drain finds nothing).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._calls: collections.deque[tuple[Coroutine[Any, Any, Any], list[Any]]] = (
            collections.deque()
        )
        self._scheduled = False

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        """Run ``coro`` on the loop and wait for its result (on a gRPC thread)."""
        done = _thread.allocate_lock()
        done.acquire()
        slot: list[Any] = [done, None, None]  # the lock, the result, the exception
        self._calls.append((coro, slot))
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon_threadsafe(self._drain)
        done.acquire()
        if slot[2] is not None:
            raise slot[2]
        return slot[1]

    def _drain(self) -> None:
        self._scheduled = False
        calls, loop = self._calls, self._loop
        while calls:
            coro, slot = calls.popleft()
            loop.create_task(coro).add_done_callback(functools.partial(_settle, slot))


def _settle(slot: list[Any], task: asyncio.Task[Any]) -> None:
    if task.cancelled():
        slot[2] = _Abort(grpc.StatusCode.UNAVAILABLE, "The server is shutting down.")
    else:
        exc = task.exception()
        if exc is None:
            slot[1] = task.result()
        else:
            slot[2] = exc
    slot[0].release()


def _on_loop(servicer: InferenceServicer, loop: asyncio.AbstractEventLoop) -> Any:
    """A sync servicer whose every RPC runs ``servicer``'s coroutine on ``loop``.

    Each RPC's thread waits on its coroutine, so the loop sees every in-flight request at
    once and the batcher forms batches across gRPC and REST alike.
    """
    inbox = _Inbox(loop)

    def delegate(name: str) -> Any:
        method = getattr(servicer, name)

        def call(request: Any, context: Any) -> Any:
            ctx = _LoopContext(context, current_actor())
            try:
                return inbox.run(method(request, ctx))
            except _Abort as a:
                context.abort(a.code, a.details)

        call.__name__ = name
        return staticmethod(call)

    threaded = type(
        "ThreadedInferenceServicer",
        (pb_grpc.GRPCInferenceServiceServicer,),
        {name: delegate(name) for name in _RPCS},
    )
    return threaded()


class GrpcServer:
    """A running gRPC listener; ``await stop(grace)`` drains it without blocking the loop."""

    def __init__(self, server: Any, port: int) -> None:
        self._server = server
        self.port = port

    async def stop(self, grace: float | None) -> None:
        """Refuse new RPCs, let in-flight ones finish within ``grace`` seconds, then stop."""
        done = self._server.stop(grace)
        await asyncio.get_running_loop().run_in_executor(None, done.wait)


def _add_port(server: Any, address: str, settings: Settings) -> int:
    """Bind plain or TLS (mutual when ``security.tls_client_ca`` is set)."""
    sec = settings.security
    if sec.tls_cert is None or sec.tls_key is None:
        return int(server.add_insecure_port(address))
    ca = sec.tls_client_ca.read_bytes() if sec.tls_client_ca is not None else None
    creds = grpc.ssl_server_credentials(
        [(sec.tls_key.read_bytes(), sec.tls_cert.read_bytes())],
        root_certificates=ca,
        require_client_auth=ca is not None,
    )
    return int(server.add_secure_port(address, creds))


def _auth_interceptors(settings: Settings) -> list[Any]:
    """The token interceptor when auth is on (none at all when it is off: zero cost)."""
    from shipyard.server._auth import auth_enabled, make_authenticator
    from shipyard.server._grpc_auth import AuthInterceptor

    if not auth_enabled(settings):
        return []
    return [AuthInterceptor(make_authenticator(settings))]


async def start_grpc_server(dataplane: DataPlane, settings: Settings) -> GrpcServer:
    """Start the gRPC listener on ``settings.server.host:grpc_port``.

    The listener is grpc's threaded server, not grpc.aio: each RPC's thread hands its call
    to this event loop and waits. Measured on 2 cores (benchmarks/serve/grpc_load.py), this
    answers about twice the requests per second of a grpc.aio server on the same loop, whose
    poller thread contends with the loop for the GIL on every call.
    """
    s = settings.server
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=s.grpc_workers, thread_name_prefix="grpc"),
        options=[
            ("grpc.max_receive_message_length", s.max_body_bytes),
            ("grpc.max_send_message_length", s.max_body_bytes),
            ("grpc.so_reuseport", 0),
        ],
        maximum_concurrent_rpcs=s.grpc_max_concurrent_rpcs,
        interceptors=_auth_interceptors(settings),
    )
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(  # type: ignore[no-untyped-call]
        _on_loop(InferenceServicer(dataplane, settings), asyncio.get_running_loop()), server
    )
    port = _add_port(server, f"{s.host}:{s.grpc_port}", settings)
    server.start()
    return GrpcServer(server, port)
