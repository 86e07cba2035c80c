"""Authenticated encryption of bytes at rest (AES-256-GCM) and the key-provider seam.

Used by the artifact store (``registry``) for blobs and by anything in ``monitoring`` that
writes data at rest (prediction-log segments), so it lives at L1. ``cryptography`` is
imported inside the functions that need it (extra ``shipyard[crypto]``).

Envelope (all in one byte string)::

    b"SHPYENC1" | len(key_id): 1 byte | key_id (ascii) | nonce: 12 bytes | ciphertext + tag

The header (magic and key id) and the caller's ``aad`` are authenticated, so a blob moved
to another address, or given another key id, fails to decrypt. The key id is a fingerprint
of the key (16 hex digits of its sha256): it names the key for rotation without
revealing it. Keys never appear in messages, reprs or logs.

Imports: errors.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from shipyard.errors import DecryptionFailed, EncryptionKeyMissing, MissingDependency

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "MAGIC",
    "KeyProvider",
    "StaticKeyProvider",
    "decrypt_bytes",
    "encrypt_bytes",
    "envelope_key_id",
    "is_encrypted",
    "key_id_of",
    "key_provider_from",
    "parse_key",
]

MAGIC = b"SHPYENC1"
KEY_BYTES = 32
NONCE_BYTES = 12


@runtime_checkable
class KeyProvider(Protocol):
    """Where encryption keys come from (an env var or file now; a KMS later).

    Example:
        >>> provider = StaticKeyProvider([os.urandom(32)])
        >>> blob = encrypt_bytes(b"secret", provider)
        >>> decrypt_bytes(blob, provider)
        b'secret'
    """

    @property
    def current_key_id(self) -> str:
        """The id of the key that new data is encrypted with."""
        ...

    def key(self, key_id: str) -> bytes:
        """The 32-byte key with this id.

        Raises:
            EncryptionKeyMissing: no key with that id is configured.
        """
        ...


def key_id_of(key: bytes) -> str:
    """A key's public fingerprint: 16 hex digits of its sha256."""
    return hashlib.sha256(b"shipyard-key-id:" + key).hexdigest()[:16]


def parse_key(text: str, *, where: str) -> bytes:
    """Decode a base64 key of exactly 32 bytes.

    Args:
        text: The base64 text (surrounding whitespace ignored).
        where: Named in the error (an env var or file), never the key itself.

    Raises:
        EncryptionKeyMissing: not base64, or not 32 bytes once decoded.
    """
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise EncryptionKeyMissing(
            f"The encryption key in {where} must be base64. It is not.",
            hint='Make one with: python -c "import os,base64;'
            'print(base64.b64encode(os.urandom(32)).decode())"',
        ) from None
    if len(key) != KEY_BYTES:
        raise EncryptionKeyMissing(
            f"The encryption key in {where} must decode to {KEY_BYTES} bytes. "
            f"Got {len(key)} bytes instead.",
            hint="Generate 32 random bytes and base64-encode them.",
        )
    return key


class StaticKeyProvider:
    """Keys held in memory: the first encrypts, every one decrypts (rotation).

    Args:
        keys: 32-byte keys, current first.
    """

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise EncryptionKeyMissing("A key provider must hold at least one key. Got none.")
        for key in keys:
            if len(key) != KEY_BYTES:
                raise EncryptionKeyMissing(
                    f"An encryption key must be {KEY_BYTES} bytes. Got {len(key)} bytes instead."
                )
        self._keys: Mapping[str, bytes] = {key_id_of(k): bytes(k) for k in keys}
        self._current = key_id_of(keys[0])

    @property
    def current_key_id(self) -> str:
        """The id of the first key."""
        return self._current

    def key(self, key_id: str) -> bytes:
        """The key with this id.

        Raises:
            EncryptionKeyMissing: no such key.
        """
        try:
            return self._keys[key_id]
        except KeyError:
            raise EncryptionKeyMissing(
                f"Data encrypted with key {key_id!r} needs that key. "
                f"Got keys {sorted(self._keys)} instead.",
                hint="Add the old key to the key file (one base64 key a line) to rotate.",
            ) from None

    def __repr__(self) -> str:
        return f"StaticKeyProvider(key_ids={sorted(self._keys)!r})"


def key_provider_from(
    env_var: str, key_file: Path | None, *, environ: Mapping[str, str] | None = None
) -> StaticKeyProvider | None:
    """The keys that settings name, or None when neither source holds one.

    Args:
        env_var: An environment variable with one base64 key.
        key_file: A file with base64 keys, one a line; blank lines and ``#`` comments are
            skipped. Its keys come after the env var's (the env var's key encrypts).
        environ: Instead of ``os.environ`` (tests).

    Raises:
        EncryptionKeyMissing: a key is malformed, or the key file does not exist.
    """
    env = os.environ if environ is None else environ
    keys: list[bytes] = []
    if env.get(env_var):
        keys.append(parse_key(env[env_var], where=f"${env_var}"))
    if key_file is not None:
        path = Path(key_file)
        if not path.is_file():
            raise EncryptionKeyMissing(
                f"Key file {str(path)!r} must exist. It was not found.",
                hint="Fix SHIPYARD_REGISTRY__ENCRYPTION_KEY_FILE.",
            )
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip() and not line.lstrip().startswith("#"):
                keys.append(parse_key(line, where=f"{path.name} line {n}"))
    return StaticKeyProvider(keys) if keys else None


def _aesgcm(key: bytes) -> AESGCM:
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError:  # pragma: no cover - depends on the environment
        raise MissingDependency(
            "Encryption at rest needs the 'cryptography' package. It is not installed.",
            hint="pip install 'shipyard[crypto]'",
        ) from None
    return AESGCM(key)


def is_encrypted(data: bytes) -> bool:
    """Whether ``data`` starts with the envelope's magic."""
    return data[: len(MAGIC)] == MAGIC


def _header(key_id: str) -> bytes:
    raw = key_id.encode("ascii")
    return MAGIC + bytes([len(raw)]) + raw


def envelope_key_id(data: bytes) -> str:
    """The key id of an envelope.

    Raises:
        DecryptionFailed: ``data`` is not an envelope.
    """
    if not is_encrypted(data) or len(data) < len(MAGIC) + 1:
        raise DecryptionFailed("Encrypted data must start with the shipyard envelope. It does not.")
    n = data[len(MAGIC)]
    raw = data[len(MAGIC) + 1 : len(MAGIC) + 1 + n]
    if len(raw) != n:
        raise DecryptionFailed("An encrypted envelope must hold its key id. It is truncated.")
    return raw.decode("ascii", errors="replace")


def encrypt_bytes(data: bytes, provider: KeyProvider, *, aad: bytes = b"") -> bytes:
    """Encrypt with the provider's current key (AES-256-GCM, a fresh random nonce).

    Args:
        data: The plaintext.
        provider: Where the key comes from.
        aad: Extra data bound to the ciphertext (e.g. the blob's address); the same must
            be given to :func:`decrypt_bytes`.

    Returns:
        The envelope.
    """
    key_id = provider.current_key_id
    header = _header(key_id)
    nonce = os.urandom(NONCE_BYTES)
    cipher = _aesgcm(provider.key(key_id))
    return header + nonce + cipher.encrypt(nonce, data, header + aad)


def decrypt_bytes(data: bytes, provider: KeyProvider | None, *, aad: bytes = b"") -> bytes:
    """Decrypt an envelope made by :func:`encrypt_bytes`, in memory.

    Raises:
        EncryptionKeyMissing: no provider, or it lacks the envelope's key.
        DecryptionFailed: wrong key, altered ciphertext, or a different ``aad``.
    """
    key_id = envelope_key_id(data)
    if provider is None:
        raise EncryptionKeyMissing(
            f"Encrypted data (key {key_id!r}) needs a key. None is configured.",
            hint="Set SHIPYARD_ENCRYPTION_KEY or SHIPYARD_REGISTRY__ENCRYPTION_KEY_FILE.",
        )
    header = _header(key_id)
    body = memoryview(data)[len(header) :]  # no copy of a model-sized buffer
    if len(body) < NONCE_BYTES + 16:
        raise DecryptionFailed(
            "An encrypted envelope must hold a nonce and a tag. It is truncated."
        )
    cipher = _aesgcm(provider.key(key_id))
    from cryptography.exceptions import InvalidTag

    try:
        out: bytes = cipher.decrypt(bytes(body[:NONCE_BYTES]), body[NONCE_BYTES:], header + aad)
    except InvalidTag:
        raise DecryptionFailed(
            f"Data encrypted with key {key_id!r} must authenticate. It does not: "
            "the key is wrong or the data was altered.",
            hint="Check the configured key; run `shipyard models verify`.",
        ) from None
    return out
