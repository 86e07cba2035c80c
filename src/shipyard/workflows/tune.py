"""tune: find the serving settings that give the most throughput within a p99 latency SLO.

Each candidate (intra-op threads, max batch size, max wait) is served by a real server on
127.0.0.1 and driven closed-loop at the requested concurrency by a separate load process
(:mod:`shipyard.workflows._loadgen`, so the load does not share the server's GIL). The
search is staged, not a grid: first the current settings (the baseline: tune never picks
something it measured worse than what is served now), then intra-op threads (ORT's own
choice, then 1, 2, 4, ... up to the cores), then batch sizes at the best thread count,
then batch waits at the best batch size, then the two leaders once more (a candidate
measured twice must meet the SLO both times and is scored on its mean throughput, a guard
against one lucky run). It stops when the time budget is spent. The winner is written
into the version's ``serving`` metadata (``batching`` and ``runtime`` sections), which
``shipyard serve`` layers over the global settings.

Imports: registry, server (runner), config, spec, errors.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shipyard.config import Settings, with_overrides
from shipyard.errors import InferenceError, InvalidData, InvalidInputError
from shipyard.spec import DType, Signature

if TYPE_CHECKING:
    import numpy.typing as npt

    from shipyard.registry import ModelRegistry

__all__ = [
    "Candidate",
    "Trial",
    "TuneResult",
    "plan_batch_sizes",
    "plan_threads",
    "plan_waits",
    "sample_request",
    "tune",
]

logger = logging.getLogger(__name__)

TRIAL_OVERHEAD_S = 0.4
"""Rough cost of starting a server and a load process for one trial (used for planning)."""
MIN_TRIAL_S = 0.3
MAX_TRIAL_S = 5.0
WAITS_MS = (0.5, 1.0, 2.0, 5.0, 10.0)


@dataclass(frozen=True)
class Candidate:
    """One point of the search: the settings a server runs with."""

    intra_op_threads: int
    max_batch_size: int
    max_wait_ms: float

    def serving(self) -> dict[str, dict[str, Any]]:
        """The per-model settings layers (``batching``, ``runtime``) of this candidate."""
        return {
            "batching": {"max_batch_size": self.max_batch_size, "max_wait_ms": self.max_wait_ms},
            "runtime": {"intra_op_threads": self.intra_op_threads},
        }


@dataclass(frozen=True)
class Trial:
    """A candidate and what it measured."""

    candidate: Candidate
    phase: str
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    meets_slo: bool


@dataclass(frozen=True)
class TuneResult:
    """Every trial, the chosen one (None when none met the SLO), and whether it was written."""

    ref: str
    slo_p99_ms: float
    concurrency: int
    budget_s: float
    elapsed_s: float
    cores: int
    trials: list[Trial]
    chosen: Trial | None
    written: bool
    skipped: int = 0
    serving: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view."""
        return asdict(self)


def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


def plan_threads(cores: int) -> list[int]:
    """Intra-op thread counts to try: 0, then powers of two up to the cores, and the cores.

    0 is ONNX Runtime's own choice. It is tried on its own because it configures the pool
    differently from an explicit count (it measured faster on the 2-core benchmark host).
    """
    out = [1]
    while out[-1] * 2 <= cores:
        out.append(out[-1] * 2)
    if out[-1] != cores and cores > 1:
        out.append(cores)
    return [0, *out]


def plan_batch_sizes(concurrency: int, limit: int = 256) -> list[int]:
    """Batch sizes to try: 1, then powers of two up to the concurrency, and the concurrency.

    With at most ``concurrency`` requests in flight, a larger batch never fills.
    """
    top = max(1, min(concurrency, limit))
    out = [1]
    while out[-1] * 2 <= top:
        out.append(out[-1] * 2)
    if out[-1] != top:
        out.append(top)
    return out


def plan_waits(slo_p99_ms: float) -> list[float]:
    """Batch waits to try: ones that use at most a quarter of the latency budget."""
    return [w for w in WAITS_MS if w <= slo_p99_ms / 4]


def _batchable(signature: Signature) -> bool:
    return all(
        len(s.shape) >= 1 and s.shape[0] is None for s in (*signature.inputs, *signature.outputs)
    )


def sample_request(signature: Signature, sample: Any = None, *, seed: int = 0) -> bytes:
    """An OIP V2 JSON request body of one row, from ``sample`` or made up from the signature.

    ``sample`` is an array (for a single-input model) or a mapping of input name to array;
    its first row is used. Without it, floats are drawn from N(0, 1), integers and booleans
    are zero, strings are empty.

    Raises:
        InvalidData: ``sample`` does not name the model's inputs.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    given: Mapping[str, Any] = {}
    if sample is not None:
        if isinstance(sample, Mapping):
            given = sample
        elif len(signature.inputs) == 1:
            given = {signature.inputs[0].name: sample}
        else:
            raise InvalidData(
                f"The sample input must be a mapping of the {len(signature.inputs)} input names "
                f"{[s.name for s in signature.inputs]}. Got one array instead."
            )
    inputs: list[dict[str, Any]] = []
    for spec in signature.inputs:
        arr: npt.NDArray[Any]
        if spec.name in given:
            arr = np.asarray(given[spec.name])
            if spec.shape and spec.shape[0] is None and arr.ndim == len(spec.shape):
                arr = arr[:1]
        elif sample is not None:
            raise InvalidData(
                f"The sample input must have the model's input {spec.name!r}. "
                f"Got {sorted(given)} instead."
            )
        else:
            shape = tuple(1 if d is None else d for d in spec.shape)
            if spec.dtype in (DType.FP16, DType.FP32, DType.FP64):
                arr = rng.standard_normal(shape).astype(spec.dtype.to_numpy())
            elif spec.dtype == DType.BYTES:
                arr = np.full(shape, "", dtype=object)
            else:
                arr = np.zeros(shape, dtype=spec.dtype.to_numpy())
        inputs.append(
            {
                "name": spec.name,
                "shape": list(arr.shape),
                "datatype": spec.dtype.value,
                "data": arr.ravel().tolist(),
            }
        )
    return json.dumps({"inputs": inputs}).encode()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _trial_settings(base: Settings, port: int) -> Settings:
    return with_overrides(
        base,
        {
            "server": {
                "host": "127.0.0.1",
                "port": port,
                "grpc_port": 0,
                "management_port": 0,
                "registry_poll_s": 0,
                "drain_timeout_s": 2,
            },
            "monitoring": {"log_predictions": False},
        },
    )


def _preflight(url: str, body: bytes, ref: str) -> None:
    """One request, so that a sample the model refuses fails clearly rather than as errors."""
    req = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            resp.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace")[:300]
        raise InvalidData(
            f"The sample input must be accepted by {ref}. The server answered {exc.code}: {detail}",
            hint="Pass a sample of the model's inputs with --sample FILE (.npy or .npz).",
        ) from exc


def _drive(
    port: int, path: str, body_file: Path, concurrency: int, duration_s: float, warmup_s: float
) -> dict[str, Any]:
    cmd = [
        sys.executable,
        "-m",
        "shipyard.workflows._loadgen",
        "127.0.0.1",
        str(port),
        path,
        str(body_file),
        str(concurrency),
        str(duration_s),
        str(warmup_s),
    ]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=duration_s + warmup_s + 60, check=False
    )
    if proc.returncode != 0:
        raise InferenceError(
            f"The load generator must exit 0. It exited {proc.returncode}: "
            f"{proc.stderr.strip()[-300:]}"
        )
    summary: dict[str, Any] = json.loads(proc.stdout)
    return summary


def _ranked(trials: list[Trial]) -> list[Trial]:
    """Candidates best first, one (their latest) trial each.

    A candidate measured more than once meets the SLO only if every run did, and is
    scored on its mean throughput; among those missing the SLO, the lowest worst p99 wins.
    """
    groups: dict[Candidate, list[Trial]] = {}
    for t in trials:
        groups.setdefault(t.candidate, []).append(t)

    def key(runs: list[Trial]) -> tuple[bool, float]:
        meets = all(r.meets_slo for r in runs)
        if meets:
            return (True, sum(r.rps for r in runs) / len(runs))
        return (False, -max(r.p99_ms for r in runs))

    ordered = sorted(groups.values(), key=key, reverse=True)
    return [runs[-1] if all(r.meets_slo for r in runs) else _worst(runs) for runs in ordered]


def _worst(runs: list[Trial]) -> Trial:
    return max(runs, key=lambda r: (not r.meets_slo, r.p99_ms))


CONFIRM = 2
"""How many leading candidates are measured a second time, budget allowing (noise guard)."""


def tune(
    registry: ModelRegistry,
    ref: str,
    *,
    slo_p99_ms: float,
    concurrency: int,
    settings: Settings,
    budget_s: float = 60.0,
    sample: Any = None,
    write: bool = True,
    actor: str | None = None,
    cores: int | None = None,
    progress: Callable[[int], None] | None = None,
    on_plan: Callable[[int], None] | None = None,
) -> TuneResult:
    """Measure candidate serving settings for ``ref`` and write the best that meets the SLO.

    Args:
        registry: Where ``ref`` lives and where the chosen settings are written.
        ref: The version to tune (its serving settings are written on that version).
        slo_p99_ms: The p99 latency objective, in milliseconds.
        concurrency: Requests in flight at once (closed loop).
        settings: Base settings (global batching and runtime are the starting point).
        budget_s: Wall-clock budget for the whole search; trials past it are skipped.
        sample: Inputs to send (array or mapping); made up from the signature when None.
        write: Write the chosen settings into the version's serving metadata.
        actor: Who made the change (recorded in the metadata history).
        cores: Cores to plan thread counts for (default: the cores this process may use).
        progress: Called with 1 after each trial.
        on_plan: Called once with the number of planned trials.

    Returns:
        Every trial, the chosen one, and whether it was written.

    Raises:
        InvalidInputError: SLO, concurrency or budget out of range.
        NotFoundError: unknown ref.
        InvalidData: the sample is refused by the model.
        InferenceError: the load generator failed.
        ConfigError: a trial server could not start.
    """
    from shipyard.server.runner import BackgroundServer

    if not (slo_p99_ms > 0 and math.isfinite(slo_p99_ms)):
        raise InvalidInputError(f"--slo-p99-ms must be a positive number. Got {slo_p99_ms}.")
    if concurrency < 1:
        raise InvalidInputError(f"--concurrency must be at least 1. Got {concurrency}.")
    if budget_s <= 0:
        raise InvalidInputError(f"--budget-s must be positive. Got {budget_s}.")
    started = time.perf_counter()
    mv = registry.get(ref)
    pinned = mv.ref
    signature = mv.manifest.signature
    n_cores = cores or available_cores()
    batchable = _batchable(signature)
    threads = plan_threads(n_cores)
    batches = plan_batch_sizes(concurrency) if batchable else [1]
    first_batch = batches[-1]
    waits = plan_waits(slo_p99_ms) if batchable else []
    current = _current(settings, mv.serving)
    planned = 1 + len(threads) + (len(batches) - 1) + len(waits) + CONFIRM
    per_trial_s = budget_s / planned - TRIAL_OVERHEAD_S  # warm-up and measurement
    warmup_s = min(0.5, max(0.1, per_trial_s / 5))
    trial_s = min(MAX_TRIAL_S, max(MIN_TRIAL_S, per_trial_s - warmup_s))
    if on_plan is not None:
        on_plan(planned)
    path = f"/v2/models/{pinned}/infer"
    trials: list[Trial] = []
    skipped = 0

    with tempfile.TemporaryDirectory(prefix="shipyard-tune-") as tmp:
        body_file = Path(tmp) / "request.json"
        body_file.write_bytes(sample_request(signature, sample))

        def run(candidate: Candidate, phase: str) -> Trial | None:
            nonlocal skipped
            if phase != "confirm" and any(
                _effective(t.candidate, concurrency) == _effective(candidate, concurrency)
                for t in trials
            ):
                if progress is not None:
                    progress(1)  # measured already (e.g. the current settings)
                return None
            spent = time.perf_counter() - started
            if trials and spent + trial_s + warmup_s + TRIAL_OVERHEAD_S > budget_s:
                skipped += 1
                if progress is not None:
                    progress(1)
                return None
            port = _free_port()
            server = BackgroundServer(
                [pinned],
                _trial_settings(settings, port),
                model_settings={pinned: candidate.serving()},
            )
            with server:
                if not trials:
                    _preflight(f"http://127.0.0.1:{port}{path}", body_file.read_bytes(), pinned)
                summary = _drive(port, path, body_file, concurrency, trial_s, warmup_s)
            ok = (
                summary["errors"] == 0
                and summary["requests"] > 0
                and summary["p99_ms"] <= slo_p99_ms
            )
            trial = Trial(
                candidate=candidate,
                phase=phase,
                rps=float(summary["rps"]),
                p50_ms=float(summary["p50_ms"]),
                p99_ms=float(summary["p99_ms"]),
                requests=int(summary["requests"]),
                errors=int(summary["errors"]),
                meets_slo=ok,
            )
            logger.info(
                "tune %s: %s -> %.0f req/s, p99 %.2f ms (%s)",
                pinned,
                candidate,
                trial.rps,
                trial.p99_ms,
                "ok" if ok else "misses SLO",
            )
            trials.append(trial)
            if progress is not None:
                progress(1)
            return trial

        run(current, "current")
        for t in threads:
            run(Candidate(t, first_batch, 0.0), "threads")
        top_threads = _ranked(trials)[0].candidate.intra_op_threads
        for b in batches[:-1]:
            run(Candidate(top_threads, b, 0.0), "batch")
        lead = _ranked(trials)[0].candidate
        if lead.max_batch_size > 1:
            for w in waits:
                run(Candidate(lead.intra_op_threads, lead.max_batch_size, w), "wait")
        elif waits and progress is not None:
            progress(len(waits))  # a wait means nothing without batches
        leaders = _ranked(trials)[:CONFIRM]
        for leader in leaders:
            run(leader.candidate, "confirm")
        if progress is not None and len(leaders) < CONFIRM:
            progress(CONFIRM - len(leaders))

    leader = _ranked(trials)[0]
    chosen = leader if leader.meets_slo else None
    serving: dict[str, Any] = {}
    written = False
    if chosen is not None:
        serving = _merged_serving(mv.serving, chosen, slo_p99_ms, concurrency, n_cores)
        if write:
            registry.update_metadata(pinned, serving=serving, actor=actor)
            written = True
            logger.info("Wrote tuned serving settings on %s: %s", pinned, chosen.candidate)
    return TuneResult(
        ref=pinned,
        slo_p99_ms=slo_p99_ms,
        concurrency=concurrency,
        budget_s=budget_s,
        elapsed_s=time.perf_counter() - started,
        cores=n_cores,
        trials=trials,
        chosen=chosen,
        written=written,
        skipped=skipped,
        serving=serving,
    )


def _effective(c: Candidate, concurrency: int) -> Candidate:
    """What a candidate does at this concurrency: a batch never holds more than is in flight."""
    return Candidate(c.intra_op_threads, min(c.max_batch_size, concurrency), c.max_wait_ms)


def _current(settings: Settings, serving: Mapping[str, Any]) -> Candidate:
    """What `shipyard serve` would run with now: global settings < the version's serving."""
    batching = {**settings.batching.model_dump(), **dict(serving.get("batching") or {})}
    runtime = {**settings.runtime.model_dump(), **dict(serving.get("runtime") or {})}
    return Candidate(
        int(runtime["intra_op_threads"]),
        int(batching["max_batch_size"]),
        float(batching["max_wait_ms"]),
    )


def _merged_serving(
    current: Mapping[str, Any], chosen: Trial, slo_p99_ms: float, concurrency: int, cores: int
) -> dict[str, Any]:
    layers = chosen.candidate.serving()
    batching = {**dict(current.get("batching") or {}), **layers["batching"]}
    runtime = {**dict(current.get("runtime") or {}), **layers["runtime"]}
    return {
        "batching": batching,
        "runtime": runtime,
        "tuned": {
            "slo_p99_ms": slo_p99_ms,
            "concurrency": concurrency,
            "cores": cores,
            "rps": round(chosen.rps, 1),
            "p99_ms": round(chosen.p99_ms, 3),
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
        },
    }
