"""A real shipyard server on loopback, in a background thread with its own event loop."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shipyard.config import Settings, load_settings
from shipyard.registry import ModelRegistry
from shipyard.server.runner import serve_async
from shipyard.spec import DType, NewVersion, Signature, TaskSchema, TaskType, TensorSpec
from shipyard.testing import save_tiny_onnx_model


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RunningServer:
    settings: Settings
    registry: ModelRegistry
    http: str
    grpc: str
    management: str
    loop: asyncio.AbstractEventLoop
    stop: asyncio.Event
    thread: threading.Thread

    @property
    def http_hostport(self) -> str:
        return self.http.removeprefix("http://")

    @property
    def management_hostport(self) -> str:
        return self.management.removeprefix("http://")


def register_tiny(registry: ModelRegistry, tmp: Path, name: str, *, seed: int = 0) -> int:
    """Register y = x·W + b (x: FP32 (N, 4), y: FP32 (N, 2)) and return its version."""
    path = save_tiny_onnx_model(tmp / f"{name}-{seed}.onnx", seed=seed)
    sig = Signature(
        inputs=(TensorSpec(name="x", dtype=DType.FP32, shape=(None, 4)),),
        outputs=(TensorSpec(name="y", dtype=DType.FP32, shape=(None, 2)),),
    )
    mv = registry.register(
        name,
        NewVersion(signature=sig, task=TaskSchema(task=TaskType.OTHER), framework="onnx"),
        {"model.onnx": path},
    )
    return mv.version


def tiny_expected(x: np.ndarray, seed: int = 0) -> np.ndarray:
    from onnx import numpy_helper

    from shipyard.testing import make_tiny_onnx_model

    model = make_tiny_onnx_model(seed=seed)
    init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    return x.astype(np.float32) @ init["W"] + init["b"]


def start_server(refs: list[str], settings: Settings, runtime_factory: Any = None) -> RunningServer:
    registry = ModelRegistry.open(settings)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder: dict[str, asyncio.Event] = {}
    errors: list[BaseException] = []

    async def main() -> None:
        stop = asyncio.Event()
        holder["stop"] = stop
        started = asyncio.Event()

        async def signal_ready() -> None:
            await started.wait()
            ready.set()

        waiter = asyncio.create_task(signal_ready())
        try:
            await serve_async(
                refs,
                settings,
                ready_event=started,
                stop_event=stop,
                runtime_factory=runtime_factory,
            )
        except BaseException as exc:  # surfaced to the test thread
            errors.append(exc)
            ready.set()
        finally:
            waiter.cancel()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    if not ready.wait(60) or errors:
        raise RuntimeError(f"server did not start: {errors}")
    s = settings.server
    return RunningServer(
        settings=settings,
        registry=registry,
        http=f"http://127.0.0.1:{s.port}",
        grpc=f"127.0.0.1:{s.grpc_port}",
        management=f"http://127.0.0.1:{s.management_port}",
        loop=loop,
        stop=holder["stop"],
        thread=thread,
    )


def stop_server(server: RunningServer) -> None:
    server.loop.call_soon_threadsafe(server.stop.set)
    server.thread.join(30)
    server.loop.close()
    server.registry.close()


def server_settings(home: Path, **overrides: object) -> Settings:
    server = {
        "port": free_port(),
        "grpc_port": free_port(),
        "management_port": free_port(),
        "registry_poll_s": 0.2,
    }
    server.update(overrides.pop("server", {}))  # type: ignore[arg-type]
    return load_settings({"home": str(home), "server": server, **overrides})


@pytest.fixture
def served(home: Path, tmp_path: Path) -> Iterator[RunningServer]:
    """A server for `tiny` (versions 1 and 2 registered; serving `tiny` and `tiny:1`)."""
    settings = server_settings(home)
    reg = ModelRegistry.open(settings)
    register_tiny(reg, tmp_path, "tiny", seed=0)
    register_tiny(reg, tmp_path, "tiny", seed=1)
    reg.close()
    server = start_server(["tiny", "tiny:1"], settings)
    yield server
    stop_server(server)


def spawn_server(home: Path, *args: str) -> tuple[subprocess.Popen[str], str]:
    """``shipyard serve ARGS`` as a real process on free ports: (process, base URL).

    Not waited for; its stdout and stderr are one text pipe.
    """
    port = free_port()
    exe = str(Path(sys.executable).with_name("shipyard"))
    proc = subprocess.Popen(
        [
            exe,
            "serve",
            *args,
            "--port",
            str(port),
            "--grpc-port",
            str(free_port()),
            "--management-port",
            str(free_port()),
        ],
        env={**os.environ, "SHIPYARD_HOME": str(home)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return proc, f"http://127.0.0.1:{port}"
