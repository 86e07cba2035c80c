"""Run the model of this shipyard edge bundle: python run.py INPUT [--out FILE].

Needs only onnxruntime and numpy (see requirements.txt); it does not import shipyard.
Before anything is loaded, every file listed in manifest.json is hashed and compared with
its sha256 there; a missing or changed file stops the run with exit code 3.

INPUT is a .npy file (for a one-input model), a .npz file of named arrays, or a .json
file: {"input name": [[...], ...]} or a bare nested list for a one-input model.
Outputs are printed as JSON ({"outputs": {name: nested list}}), or written to --out
(.npz for arrays, .json for JSON).

Exit codes: 0 ok, 2 bad usage or input, 3 bundle verification failed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

EXIT_OK = 0
EXIT_BAD_INPUT = 2
EXIT_TAMPERED = 3

NUMPY_DTYPES = {
    "BOOL": "bool",
    "UINT8": "uint8",
    "UINT16": "uint16",
    "UINT32": "uint32",
    "UINT64": "uint64",
    "INT8": "int8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
    "FP16": "float16",
    "FP32": "float32",
    "FP64": "float64",
    "BYTES": "object",
}


class BundleError(Exception):
    """A problem this runner reports as one line and an exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify(bundle: Path) -> dict[str, Any]:
    """Check every file against manifest.json; returns the manifest."""
    try:
        manifest: dict[str, Any] = json.loads((bundle / "manifest.json").read_text("utf-8"))
        files: dict[str, str] = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BundleError(
            f"The bundle must have a readable manifest.json with 'files'. Got: {exc}",
            EXIT_TAMPERED,
        ) from exc
    for name, expected in sorted(files.items()):
        path = (bundle / name).resolve()
        if bundle.resolve() not in path.parents:
            raise BundleError(f"Manifest entry {name!r} points outside the bundle.", EXIT_TAMPERED)
        if not path.is_file():
            raise BundleError(f"Bundle file {name!r} is missing.", EXIT_TAMPERED)
        actual = sha256_file(path)
        if actual != expected:
            raise BundleError(
                f"Bundle file {name!r} must have sha256 {expected}. Got {actual} instead: "
                "the file was changed or corrupted; refusing to run it.",
                EXIT_TAMPERED,
            )
    return manifest


def read_inputs(path: Path, specs: list[dict[str, Any]]) -> dict[str, Any]:
    """Read named input arrays from .npy, .npz or .json and cast them to the signature."""
    import numpy as np

    names = [s["name"] for s in specs]
    suffix = path.suffix.lower()
    try:
        raw: dict[str, Any]
        if suffix == ".npy":
            raw = {names[0]: np.load(path, allow_pickle=False)} if len(names) == 1 else {}
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                raw = {k: npz[k] for k in npz.files}
        elif suffix == ".json":
            data = json.loads(path.read_text("utf-8"))
            raw = data if isinstance(data, dict) else {names[0]: data}
        else:
            raise BundleError(
                f"INPUT must be a .npy, .npz or .json file. Got {path.name!r} instead.",
                EXIT_BAD_INPUT,
            )
    except (OSError, ValueError) as exc:
        raise BundleError(f"INPUT {str(path)!r} could not be read: {exc}", EXIT_BAD_INPUT) from exc
    missing = [n for n in names if n not in raw]
    if missing:
        raise BundleError(
            f"INPUT must provide the model's inputs {names}. Got {sorted(raw)} instead.",
            EXIT_BAD_INPUT,
        )
    out: dict[str, Any] = {}
    for spec in specs:
        arr = np.asarray(raw[spec["name"]], dtype=NUMPY_DTYPES.get(spec["dtype"]))
        if len(spec["shape"]) == arr.ndim + 1:
            arr = arr[None, ...]  # one row given without its batch dimension
        out[spec["name"]] = arr
    return out


def main(argv: list[str] | None = None) -> int:
    """Verify the bundle, run the model on INPUT, and print or write the outputs."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("input", nargs="?", type=Path, help=".npy, .npz or .json inputs")
    parser.add_argument("--out", type=Path, default=None, help="write outputs (.npz or .json)")
    parser.add_argument("--verify-only", action="store_true", help="only check the hashes")
    parser.add_argument(
        "--bundle", type=Path, default=None, help="bundle folder (default: this file's folder)"
    )
    args = parser.parse_args(argv)
    bundle = (args.bundle or Path(__file__).parent).resolve()
    try:
        manifest = verify(bundle)
        if args.verify_only:
            print(f"ok: {len(manifest['files'])} files match manifest.json")
            return EXIT_OK
        if args.input is None:
            raise BundleError("INPUT is required (or pass --verify-only).", EXIT_BAD_INPUT)
        import numpy as np
        import onnxruntime as ort

        signature = manifest["signature"]
        inputs = read_inputs(args.input, signature["inputs"])
        options = ort.SessionOptions()
        session = ort.InferenceSession(
            str(bundle / manifest.get("model", "model.onnx")),
            options,
            providers=["CPUExecutionProvider"],
        )
        names = [o.name for o in session.get_outputs()]
        try:
            values = session.run(names, inputs)
        except Exception as exc:  # onnxruntime raises its own pybind error types
            raise BundleError(f"The model refused INPUT: {exc}", EXIT_BAD_INPUT) from exc
        outputs = dict(zip(names, values, strict=True))
    except BundleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    if args.out is not None and args.out.suffix.lower() == ".npz":
        np.savez(args.out, **outputs)
        return EXIT_OK
    text = json.dumps({"outputs": {k: np.asarray(v).tolist() for k, v in outputs.items()}})
    if args.out is not None:
        args.out.write_text(text + "\n", encoding="utf-8")
    else:
        print(text)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
