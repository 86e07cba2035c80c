"""Encryption at rest: AES-256-GCM blobs in a real store, real SQLite, real ONNX Runtime."""

from __future__ import annotations

import base64
import logging
import os
from pathlib import Path

import numpy as np
import pytest

from shipyard._utils.crypto import (
    MAGIC,
    StaticKeyProvider,
    decrypt_bytes,
    encrypt_bytes,
    envelope_key_id,
    key_id_of,
    key_provider_from,
    parse_key,
)
from shipyard.config import Settings, load_settings
from shipyard.errors import (
    ArtifactCorrupted,
    DataNotFound,
    DecryptionFailed,
    EncryptionKeyMissing,
)
from shipyard.registry import LocalArtifactStore, ModelRegistry
from shipyard.runtime.pool import ModelPool
from tests.unit.registry.conftest import tiny_new


def _key() -> tuple[bytes, str]:
    raw = os.urandom(32)
    return raw, base64.b64encode(raw).decode()


def _settings(home: Path, **registry: object) -> Settings:
    return load_settings({"home": str(home), "registry": registry})


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> tuple[bytes, str]:
    raw, text = _key()
    monkeypatch.setenv("SHIPYARD_ENCRYPTION_KEY", text)
    return raw, text


@pytest.fixture
def enc_settings(home: Path, key: tuple[bytes, str]) -> Settings:
    return _settings(home, encrypt=True)


def _all_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def test_encrypted_blobs_hold_no_plaintext_and_read_back_verified(
    enc_settings: Settings, tiny_onnx: Path
) -> None:
    plain = tiny_onnx.read_bytes()
    with ModelRegistry.open(enc_settings) as reg:
        mv = reg.register("iris", tiny_new(), {"model.onnx": tiny_onnx})
        sha = mv.manifest.files["model.onnx"].sha256
        blob = reg.store.blob_file(sha)  # type: ignore[attr-defined]
        stored = blob.read_bytes()
        assert stored.startswith(MAGIC)
        assert plain not in stored and plain[-64:] not in stored
        assert reg.store.local_path(sha) is None  # no plaintext file exists
        assert reg.read_artifact(mv) == plain  # address stays the plaintext's sha256
        assert reg.verify().ok
        # the manifest blob is encrypted too: no model name in clear on disk
        for path in _all_files(enc_settings.store_path):
            if path.name != "encryption.json":
                assert b'"signature"' not in path.read_bytes()


def test_attack_read_encrypted_registry_without_key_is_refused(
    enc_settings: Settings, tiny_onnx: Path, monkeypatch: pytest.MonkeyPatch, home: Path
) -> None:
    with ModelRegistry.open(enc_settings) as reg:
        reg.register("iris", tiny_new(), {"model.onnx": tiny_onnx})
    monkeypatch.delenv("SHIPYARD_ENCRYPTION_KEY")
    with pytest.raises(EncryptionKeyMissing) as info:
        ModelRegistry.open(_settings(home))
    assert info.value.code == "encryption-key-missing"
    assert "SHIPYARD_ENCRYPTION_KEY" in (info.value.hint or "")


def test_attack_wrong_key_loads_nothing(
    enc_settings: Settings, tiny_onnx: Path, monkeypatch: pytest.MonkeyPatch, home: Path
) -> None:
    with ModelRegistry.open(enc_settings) as reg:
        reg.register("iris", tiny_new(), {"model.onnx": tiny_onnx})
    monkeypatch.setenv("SHIPYARD_ENCRYPTION_KEY", _key()[1])
    with ModelRegistry.open(_settings(home)) as reg:
        pool = ModelPool(reg)
        with pytest.raises(EncryptionKeyMissing, match="needs that key"):
            pool.load("iris")
        assert pool.loaded() == []


def test_attack_tampered_ciphertext_fails_to_authenticate(
    enc_settings: Settings, tiny_onnx: Path
) -> None:
    with ModelRegistry.open(enc_settings) as reg:
        mv = reg.register("iris", tiny_new(), {"model.onnx": tiny_onnx})
        sha = mv.manifest.files["model.onnx"].sha256
        blob = reg.store.blob_file(sha)  # type: ignore[attr-defined]
        data = bytearray(blob.read_bytes())
        data[-20] ^= 0x01
        os.chmod(blob, 0o644)
        blob.write_bytes(bytes(data))
        pool = ModelPool(reg)
        with pytest.raises(DecryptionFailed) as info:
            pool.load("iris")
        assert info.value.code == "decryption-failed"
        assert pool.loaded() == []
        report = reg.verify()
        assert [m["got"] for m in report.mismatches] == ["undecryptable"]
        # registering the same content again repairs the blob
        reg.register("iris", tiny_new(), {"model.onnx": tiny_onnx})
        assert reg.verify().ok


def test_attack_swapped_ciphertexts_are_refused(
    enc_settings: Settings, tiny_onnx: Path, other_onnx: Path
) -> None:
    with ModelRegistry.open(enc_settings) as reg:
        a = reg.register("a", tiny_new(), {"model.onnx": tiny_onnx})
        b = reg.register("b", tiny_new(), {"model.onnx": other_onnx})
        blob_a = reg.store.blob_file(a.manifest.files["model.onnx"].sha256)  # type: ignore[attr-defined]
        blob_b = reg.store.blob_file(b.manifest.files["model.onnx"].sha256)  # type: ignore[attr-defined]
        os.chmod(blob_b, 0o644)
        blob_b.write_bytes(blob_a.read_bytes())  # same key, valid envelope, wrong address
        with pytest.raises(DecryptionFailed):
            reg.read_artifact(b)


def test_pool_serves_from_an_encrypted_registry_without_writing_plaintext(
    enc_settings: Settings, tiny_onnx: Path, home: Path
) -> None:
    plain = tiny_onnx.read_bytes()
    tiny_onnx.unlink()  # the only plaintext copy outside the store goes away
    src = home.parent / "src.onnx"
    src.write_bytes(plain)
    with ModelRegistry.open(enc_settings) as reg:
        reg.register("iris", tiny_new(), {"model.onnx": src})
        src.unlink()
        pool = ModelPool(reg)
        loaded = pool.load("iris")
        out = loaded.runtime.predict({"x": np.ones((2, 4), dtype=np.float32)})
        assert out["y"].shape == (2, 2)
        pool.close()
    for path in _all_files(home):
        assert plain not in path.read_bytes(), path


def test_artifact_path_of_an_encrypted_blob_is_refused(
    enc_settings: Settings, tiny_onnx: Path
) -> None:
    with ModelRegistry.open(enc_settings) as reg:
        mv = reg.register("iris", tiny_new(), {"model.onnx": tiny_onnx})
        with pytest.raises(DataNotFound, match="encrypts at rest"):
            reg.artifact_path(mv)


def test_export_of_an_encrypted_version_round_trips(
    enc_settings: Settings, tiny_onnx: Path, tmp_path: Path
) -> None:
    with ModelRegistry.open(enc_settings) as reg:
        mv = reg.register("iris", tiny_new(), {"model.onnx": tiny_onnx})
        archive = reg.export_version(mv.ref, tmp_path / "iris.tar.gz")
        copy = reg.import_archive(archive, name="copy")
        assert reg.read_artifact(copy) == tiny_onnx.read_bytes()


def test_encrypt_blobs_migrates_a_plaintext_registry(
    home: Path, tiny_onnx: Path, key: tuple[bytes, str]
) -> None:
    with ModelRegistry.open(_settings(home)) as reg:  # encryption off: plaintext blobs
        mv = reg.register("iris", tiny_new(), {"model.onnx": tiny_onnx})
        sha = mv.manifest.files["model.onnx"].sha256
        assert not reg.store.blob_file(sha).read_bytes().startswith(MAGIC)  # type: ignore[attr-defined]
        with pytest.raises(EncryptionKeyMissing, match="encryption on"):
            reg.encrypt_blobs()
    with ModelRegistry.open(_settings(home, encrypt=True)) as reg:
        assert reg.encrypt_blobs() == 2  # model and manifest
        assert reg.encrypt_blobs() == 0
        assert reg.store.blob_file(sha).read_bytes().startswith(MAGIC)  # type: ignore[attr-defined]
        assert reg.read_artifact("iris") == tiny_onnx.read_bytes()
        assert [e.action for e in reg.audit_log(action="encrypt")] == ["encrypt", "encrypt"]


def test_key_rotation_through_a_key_file(
    home: Path, tiny_onnx: Path, other_onnx: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old_raw, old = _key()
    new_raw, new = _key()
    keyfile = home.parent / "keys"
    keyfile.write_text(f"# current first\n{old}\n")
    monkeypatch.delenv("SHIPYARD_ENCRYPTION_KEY", raising=False)
    s = _settings(home, encrypt=True, encryption_key_file=str(keyfile))
    with ModelRegistry.open(s) as reg:
        a = reg.register("a", tiny_new(), {"model.onnx": tiny_onnx})
    keyfile.write_text(f"{new}\n\n{old}\n")
    with ModelRegistry.open(s) as reg:
        b = reg.register("b", tiny_new(), {"model.onnx": other_onnx})
        blob_a = reg.store.blob_file(a.manifest.files["model.onnx"].sha256)  # type: ignore[attr-defined]
        blob_b = reg.store.blob_file(b.manifest.files["model.onnx"].sha256)  # type: ignore[attr-defined]
        assert envelope_key_id(blob_a.read_bytes()) == key_id_of(old_raw)
        assert envelope_key_id(blob_b.read_bytes()) == key_id_of(new_raw)
        assert reg.read_artifact(a) == tiny_onnx.read_bytes()
        assert reg.verify().ok


def test_encrypt_without_a_key_is_a_config_error(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SHIPYARD_ENCRYPTION_KEY", raising=False)
    with pytest.raises(EncryptionKeyMissing, match="must have a key"):
        ModelRegistry.open(_settings(home, encrypt=True))
    with pytest.raises(EncryptionKeyMissing, match="must exist"):
        ModelRegistry.open(_settings(home, encryption_key_file=str(home / "nope")))


@pytest.mark.parametrize(
    ("text", "match"),
    [("not base64!!", "must be base64"), (base64.b64encode(b"short").decode(), "32 bytes")],
)
def test_malformed_keys_are_refused_without_echoing_them(text: str, match: str) -> None:
    with pytest.raises(EncryptionKeyMissing, match=match) as info:
        key_provider_from("K", None, environ={"K": text})
    assert text not in str(info.value) and text not in (info.value.hint or "")


def test_envelope_round_trip_aad_and_truncation() -> None:
    provider = StaticKeyProvider([os.urandom(32)])
    blob = encrypt_bytes(b"segment", provider, aad=b"predlog/0001")
    assert decrypt_bytes(blob, provider, aad=b"predlog/0001") == b"segment"
    assert encrypt_bytes(b"segment", provider) != encrypt_bytes(b"segment", provider)  # nonce
    with pytest.raises(DecryptionFailed):
        decrypt_bytes(blob, provider, aad=b"predlog/0002")
    with pytest.raises(DecryptionFailed, match="truncated"):
        decrypt_bytes(blob[:30], provider)
    with pytest.raises(DecryptionFailed, match="envelope"):
        decrypt_bytes(b"plain", provider)
    with pytest.raises(EncryptionKeyMissing, match="None is configured"):
        decrypt_bytes(blob, None)
    with pytest.raises(EncryptionKeyMissing):
        StaticKeyProvider([])
    with pytest.raises(EncryptionKeyMissing, match="32 bytes"):
        StaticKeyProvider([b"x" * 16])
    assert key_provider_from("K", None, environ={}) is None
    assert len(parse_key(base64.b64encode(b"k" * 32).decode(), where="test")) == 32


def test_keys_never_appear_in_errors_logs_or_reprs(
    enc_settings: Settings,
    tiny_onnx: Path,
    key: tuple[bytes, str],
    home: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    raw, text = key
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    with ModelRegistry.open(enc_settings) as reg:
        mv = reg.register("iris", tiny_new(), {"model.onnx": tiny_onnx})
        seen.append(repr(reg.store.keys))  # type: ignore[attr-defined]
        blob = reg.store.blob_file(mv.manifest.files["model.onnx"].sha256)  # type: ignore[attr-defined]
        os.chmod(blob, 0o644)
        blob.write_bytes(blob.read_bytes()[:-1] + b"\0")
        for exc_type in (DecryptionFailed, ArtifactCorrupted):
            try:
                ModelPool(reg).load("iris")
            except exc_type as exc:
                seen += [str(exc), exc.hint or "", repr(exc.details)]
            except Exception as exc:
                seen.append(str(exc))
    monkeypatch.setenv("SHIPYARD_ENCRYPTION_KEY", _key()[1])
    with ModelRegistry.open(_settings(home)) as reg:
        try:
            reg.read_artifact("iris")
        except EncryptionKeyMissing as exc:
            seen += [str(exc), exc.hint or ""]
    seen += [r.getMessage() for r in caplog.records]
    text_all = "\n".join(seen)
    assert "decryption-failed" in text_all or "must authenticate" in text_all
    assert text not in text_all
    assert raw.hex() not in text_all
    assert repr(raw) not in text_all
    assert text.encode() not in (enc_settings.store_path / "encryption.json").read_bytes()


def test_store_without_keys_refuses_encrypt(tmp_path: Path) -> None:
    with pytest.raises(EncryptionKeyMissing):
        LocalArtifactStore(tmp_path / "s", encrypt=True)


def test_cli_encrypt_and_a_wrong_key_error_without_the_key(
    home: Path, tiny_onnx: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    from click.testing import CliRunner

    from shipyard.cli.main import cli, main

    with ModelRegistry.open(_settings(home)) as reg:
        reg.register("iris", tiny_new(), {"model.onnx": tiny_onnx})
    _, good = _key()
    monkeypatch.setenv("SHIPYARD_HOME", str(home))
    monkeypatch.setenv("SHIPYARD_ENCRYPTION_KEY", good)
    monkeypatch.setenv("SHIPYARD_REGISTRY__ENCRYPT", "true")
    runner = CliRunner()
    res = runner.invoke(cli, ["models", "encrypt", "--json"])
    assert res.exit_code == 0, res.output
    assert '"encrypted_blobs": 2' in res.output
    _, wrong = _key()
    monkeypatch.setenv("SHIPYARD_ENCRYPTION_KEY", wrong)
    capfd.readouterr()
    code = main(["-v", "models", "show", "iris"])
    text = "".join(capfd.readouterr())
    assert code == 1
    assert "encryption-key-missing" in text and "needs that key" in text
    assert wrong not in text and good not in text
