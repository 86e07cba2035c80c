"""edge: write a minimal, self-checking bundle of one version for small devices.

The bundle is a folder that needs only onnxruntime and numpy::

    model.onnx        the version's ONNX artifact (e.g. an int8 version), byte for byte
    run.py            the runner (template ``_edge_run.py``); verifies hashes, then runs
    requirements.txt  onnxruntime and numpy pinned to the versions in use here
    manifest.json     name, version, signature, sha256 of every other file, shipyard version
    README.txt        how to install and run it

The folder is built beside ``out`` and renamed into place, so a reader never sees half a
bundle.

Imports: registry, _utils, spec, errors.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata, resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shipyard._utils.fs import fsync_dir, sha256_file
from shipyard._utils.version import __version__
from shipyard.errors import OutputExists

if TYPE_CHECKING:
    from shipyard.registry import ModelRegistry

__all__ = ["BUNDLE_FILES", "EdgeBundle", "export_edge", "requirements"]

logger = logging.getLogger(__name__)

BUNDLE_FILES = ("README.txt", "manifest.json", "model.onnx", "requirements.txt", "run.py")
RUNTIME_PACKAGES = ("onnxruntime", "numpy")

_README = """\
{ref}: a shipyard edge bundle ({created_at})

Install (Python {python}+; nothing else from shipyard is needed):
    python -m venv .venv && .venv/bin/pip install -r requirements.txt

Run:
    .venv/bin/python run.py input.npy            # or .npz of named arrays, or .json
    .venv/bin/python run.py input.npz --out predictions.npz
    .venv/bin/python run.py --verify-only

run.py checks the sha256 of every file against manifest.json before loading the model and
refuses to run (exit code 3) when any file was changed.

Inputs:
{inputs}
Outputs:
{outputs}
"""


@dataclass(frozen=True)
class EdgeBundle:
    """What was written."""

    ref: str
    path: Path
    files: dict[str, str]
    """File name -> sha256 (manifest.json itself excluded)."""
    size_bytes: int

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view."""
        return {
            "ref": self.ref,
            "path": str(self.path),
            "files": self.files,
            "size_bytes": self.size_bytes,
        }


def requirements() -> str:
    """``requirements.txt``: the runner's packages pinned to the versions installed here."""
    lines = []
    for name in RUNTIME_PACKAGES:
        try:
            lines.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:  # pragma: no cover - both are core dependencies
            lines.append(name)
    return "\n".join(lines) + "\n"


def _runner_source() -> bytes:
    return resources.files("shipyard.workflows").joinpath("_edge_run.py").read_bytes()


def _describe(specs: Any) -> str:
    return "".join(f"    {s.name}: {s.dtype.value} {list(s.wire_shape())}\n" for s in specs)


def export_edge(registry: ModelRegistry, ref: str, out: Path, *, force: bool = False) -> EdgeBundle:
    """Write the edge bundle of ``ref`` into the folder ``out``.

    Args:
        registry: Where ``ref`` lives.
        ref: The version to bundle (typically an int8 one).
        out: The bundle folder; created. If it exists it must be empty unless ``force``.
        force: Replace an existing non-empty ``out``.

    Returns:
        The bundle's path and file hashes.

    Raises:
        NotFoundError: unknown ref.
        OutputExists: ``out`` exists and is not empty, and ``force`` is off.
        ArtifactCorrupted: the stored artifact fails its hash check.
    """
    import platform

    mv = registry.get(ref)
    out = out.expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise OutputExists(
            f"The bundle folder {str(out)!r} must not exist or be empty. It has files.",
            hint="Choose another --out, or pass --force to replace it.",
        )
    model_path = registry.artifact_path(mv)  # re-hashed against the registry first
    created_at = datetime.now(UTC).isoformat(timespec="seconds")
    sig = mv.manifest.signature
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".tmp-{out.name}-"))
    try:
        shutil.copyfile(model_path, stage / "model.onnx")
        (stage / "run.py").write_bytes(_runner_source())
        (stage / "requirements.txt").write_text(requirements(), encoding="utf-8")
        python = ".".join(platform.python_version_tuple()[:2])
        (stage / "README.txt").write_text(
            _README.format(
                ref=mv.ref,
                created_at=created_at,
                python=python,
                inputs=_describe(sig.inputs),
                outputs=_describe(sig.outputs),
            ),
            encoding="utf-8",
        )
        files = {
            name: sha256_file(stage / name) for name in BUNDLE_FILES if name != "manifest.json"
        }
        manifest = {
            "format": "shipyard-edge",
            "format_version": 1,
            "name": mv.name,
            "version": mv.version,
            "ref": mv.ref,
            "model": "model.onnx",
            "signature": sig.model_dump(mode="json"),
            "task": mv.manifest.task.model_dump(mode="json"),
            "opset": mv.manifest.opset,
            "files": files,
            "shipyard_version": __version__,
            "created_at": created_at,
        }
        (stage / "manifest.json").write_text(
            json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        for name in BUNDLE_FILES:
            with open(stage / name, "rb") as fh:
                os.fsync(fh.fileno())
        fsync_dir(stage)
        _swap_into_place(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    size = sum((out / name).stat().st_size for name in BUNDLE_FILES)
    logger.info("Wrote edge bundle of %s to %s (%d bytes)", mv.ref, out, size)
    return EdgeBundle(ref=mv.ref, path=out, files=files, size_bytes=size)


def _swap_into_place(stage: Path, out: Path) -> None:
    """Rename ``stage`` to ``out``; an existing ``out`` is moved aside first, then removed."""
    old: Path | None = None
    if out.exists():
        if out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        else:
            old = out.with_name(f".old-{out.name}-{os.getpid()}")
            os.replace(out, old)
    os.replace(stage, out)
    fsync_dir(out.parent)
    if old is not None:
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                old.unlink()
