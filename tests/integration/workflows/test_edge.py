"""`shipyard export --edge`: the bundle, its runner, and its hash check."""

from __future__ import annotations

import json
import os
import re
import subprocess
import venv
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from shipyard.cli.main import main
from shipyard.errors import OutputExists
from shipyard.registry import ModelRegistry
from shipyard.workflows import _edge_run
from shipyard.workflows.edge import BUNDLE_FILES, export_edge


def _expected(bundle: Path, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    return np.asarray(sess.run(["y"], {"x": x})[0])


def test_bundle_holds_the_model_runner_pins_and_hashes(
    registry: ModelRegistry, tiny: str, tmp_path: Path
) -> None:
    bundle = export_edge(registry, "tiny", tmp_path / "edge")
    out = bundle.path
    assert sorted(p.name for p in out.iterdir()) == sorted(BUNDLE_FILES)
    assert (out / "model.onnx").read_bytes() == registry.read_artifact(tiny)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["name"] == "tiny" and manifest["version"] == 1
    assert manifest["signature"]["inputs"][0]["name"] == "x"
    assert manifest["shipyard_version"]
    assert set(manifest["files"]) == set(BUNDLE_FILES) - {"manifest.json"}
    import hashlib

    for name, sha in manifest["files"].items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == sha
    reqs = (out / "requirements.txt").read_text().split()
    assert reqs == [f"onnxruntime=={ort.__version__}", f"numpy=={np.__version__}"]
    runner = (out / "run.py").read_text()
    assert (out / "run.py").read_bytes() == Path(_edge_run.__file__).read_bytes()
    assert not re.search(r"^\s*(import|from)\s+shipyard", runner, re.MULTILINE)


def test_runner_matches_onnx_runtime_and_refuses_a_tampered_model(
    registry: ModelRegistry, tiny: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = export_edge(registry, tiny, tmp_path / "edge").path
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "x.npz", x=x)
    (tmp_path / "x.json").write_text(json.dumps({"x": x.tolist()}))
    expected = _expected(out, x)

    assert _edge_run.main([str(tmp_path / "x.npy"), "--bundle", str(out)]) == 0
    got = np.asarray(json.loads(capsys.readouterr().out)["outputs"]["y"], np.float32)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)

    args = [str(tmp_path / "x.npz"), "--bundle", str(out), "--out", str(tmp_path / "y.npz")]
    assert _edge_run.main(args) == 0
    with np.load(tmp_path / "y.npz") as y:
        np.testing.assert_allclose(y["y"], expected, rtol=1e-6, atol=1e-6)

    args = [str(tmp_path / "x.json"), "--bundle", str(out), "--out", str(tmp_path / "y.json")]
    assert _edge_run.main(args) == 0
    got = np.asarray(json.loads((tmp_path / "y.json").read_text())["outputs"]["y"])
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)

    (tmp_path / "bad.json").write_text(json.dumps({"z": [1.0]}))
    assert _edge_run.main([str(tmp_path / "bad.json"), "--bundle", str(out)]) == 2
    assert "must provide the model's inputs ['x']" in capsys.readouterr().err
    assert _edge_run.main([str(tmp_path / "x.csv"), "--bundle", str(out)]) == 2
    assert _edge_run.main(["--bundle", str(out)]) == 2
    assert _edge_run.main(["--verify-only", "--bundle", str(out)]) == 0

    model = out / "model.onnx"
    model.write_bytes(model.read_bytes() + b"\0")
    assert _edge_run.main([str(tmp_path / "x.npy"), "--bundle", str(out)]) == 3
    err = capsys.readouterr().err
    assert "'model.onnx' must have sha256" in err and "refusing" in err
    model.unlink()
    assert _edge_run.main(["--verify-only", "--bundle", str(out)]) == 3
    assert "missing" in capsys.readouterr().err


def test_export_refuses_to_overwrite_unless_forced(
    registry: ModelRegistry, tiny: str, tmp_path: Path
) -> None:
    target = tmp_path / "edge"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(OutputExists, match="must not exist or be empty"):
        export_edge(registry, tiny, target)
    assert (target / "keep.txt").exists()
    export_edge(registry, tiny, target, force=True)
    assert not (target / "keep.txt").exists()
    assert (target / "model.onnx").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # nothing left over


def test_cli_export_edge_and_archive(
    registry: ModelRegistry, tiny: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--json", "export", tiny, "--edge", "--out", str(tmp_path / "b")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["format"] == "edge" and set(out["files"]) == set(BUNDLE_FILES) - {"manifest.json"}
    assert main(["export", tiny, "--edge", "--out", str(tmp_path / "b")]) == 4  # conflict
    assert "output-exists" in capsys.readouterr().err
    assert main(["export", tiny, "--edge", "--force", "--out", str(tmp_path / "b")]) == 0
    assert "run.py" in capsys.readouterr().out
    assert main(["export", tiny, "--out", str(tmp_path / "a.tar.gz")]) == 0
    assert (tmp_path / "a.tar.gz").is_file()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_bundle_runs_in_a_fresh_venv_with_only_its_requirements(
    registry: ModelRegistry, tiny: str, tmp_path: Path
) -> None:
    """Installs requirements.txt (onnxruntime, numpy) from the package index or pip's cache."""
    out = export_edge(registry, tiny, tmp_path / "edge").path
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    py = env_dir / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    install = subprocess.run(
        [
            str(py),
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "-q",
            "-r",
            str(out / "requirements.txt"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=540,
        check=False,
    )
    if install.returncode != 0:  # no index and no cache: nothing of ours to test
        pytest.skip(f"pip could not install the requirements: {install.stderr[-400:]}")
    probe = subprocess.run(
        [str(py), "-c", "import shipyard"], capture_output=True, env=env, check=False
    )
    assert probe.returncode != 0  # the venv really lacks shipyard

    x = np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    run = subprocess.run(
        [str(py), str(out / "run.py"), str(tmp_path / "x.npy")],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    got = np.asarray(json.loads(run.stdout)["outputs"]["y"], np.float32)
    np.testing.assert_allclose(got, _expected(out, x), rtol=1e-6, atol=1e-6)

    (out / "model.onnx").write_bytes(b"not the model")
    run = subprocess.run(
        [str(py), str(out / "run.py"), str(tmp_path / "x.npy")],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert run.returncode == 3
    assert "refusing to run" in run.stderr
    assert run.stdout == ""


def test_an_int8_version_bundles_and_runs(
    registry: ModelRegistry, tiny: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from shipyard.spec import NewVersion

    q_path = tmp_path / "tiny-int8.onnx"
    quantize_dynamic(registry.artifact_path(tiny), q_path, weight_type=QuantType.QInt8)
    mv = registry.get(tiny)
    int8 = registry.register(
        "tiny",
        NewVersion(signature=mv.manifest.signature, task=mv.manifest.task, framework="onnx"),
        {"model.onnx": q_path},
    )
    out = export_edge(registry, int8.ref, tmp_path / "edge-int8").path
    assert (out / "model.onnx").read_bytes() == q_path.read_bytes()
    import onnx

    ops = {n.op_type for n in onnx.load(out / "model.onnx").graph.node}
    assert ops & {"MatMulInteger", "DynamicQuantizeLinear", "QLinearMatMul"}
    x = np.random.default_rng(2).standard_normal((4, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    assert _edge_run.main([str(tmp_path / "x.npy"), "--bundle", str(out)]) == 0
    got = np.asarray(json.loads(capsys.readouterr().out)["outputs"]["y"], np.float32)
    np.testing.assert_allclose(got, _expected(out, x), rtol=1e-6, atol=1e-6)
