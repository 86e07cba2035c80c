"""Token store and Authenticator against a real SQLite file."""

from __future__ import annotations

import hmac
import logging
import time
from pathlib import Path

import pytest

from shipyard import errors
from shipyard.security import Authenticator, TokenStore
from shipyard.security import tokens as tokens_mod


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def store(tmp_path: Path) -> TokenStore:
    s = TokenStore(tmp_path / "security.db")
    yield s
    s.close()


def test_token_format_entropy_and_only_hash_stored(store: TokenStore, tmp_path: Path) -> None:
    raw, info = store.create("ci", ["infer"])
    prefix, token_id, secret = raw.split("_")
    assert prefix == "shy" and token_id == info.token_id
    assert len(secret) >= 43  # 32 random bytes, base64url: 256 bits > 128
    assert secret.encode() not in (tmp_path / "security.db").read_bytes()
    assert store.verify(raw) is not None
    other, _ = store.create("ci", ["infer"])
    assert other != raw


def test_verify_rejects_wrong_secret_unknown_id_and_garbage(store: TokenStore) -> None:
    raw, _ = store.create("a", ["read"])
    assert store.verify(raw[:-1] + ("A" if raw[-1] != "A" else "B")) is None
    assert store.verify(f"shy_{'0' * 16}_{raw.split('_')[2]}") is None
    for junk in ["", "shy", "shy__x", "Bearer x", "shy_a_b_c"]:
        assert store.verify(junk) is None


def test_compare_is_constant_time(store: TokenStore, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, str]] = []
    real = hmac.compare_digest

    def spy(a: str, b: str) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(tokens_mod.hmac, "compare_digest", spy)
    raw, _ = store.create("a", ["read"])
    assert store.verify(raw) is not None
    assert len(calls) == 1


def test_scopes_validated_and_expiry(store: TokenStore) -> None:
    with pytest.raises(errors.InvalidInputError, match="scopes must be"):
        store.create("a", ["root"])
    with pytest.raises(errors.InvalidInputError):
        store.create("a", [])
    raw, _ = store.create("a", ["read"], expires_in_s=0.05)
    assert store.verify(raw) is not None
    time.sleep(0.1)
    assert store.verify(raw) is None


def test_list_and_revoke(store: TokenStore) -> None:
    raw, info = store.create("a", ["read", "infer"])
    assert [t.token_id for t in store.list()] == [info.token_id]
    assert store.list()[0].to_dict()["scopes"] == ["infer", "read"]
    assert "secret" not in str(store.list()[0].to_dict())
    revoked = store.revoke(info.token_id)
    assert revoked.revoked_at is not None
    assert store.verify(raw) is None
    with pytest.raises(errors.NotFoundError):
        store.revoke("nope")


def test_authenticator_statuses_and_same_body(store: TokenStore) -> None:
    auth = Authenticator(store)
    raw, info = store.create("a", ["read"])
    p = auth.authenticate(f"Bearer {raw}", "read", "c")
    assert p.token_id == info.token_id
    bodies = []
    for value in [None, "", "Basic x", f"Bearer {raw}x", "Bearer shy_0_0", f"Token {raw}"]:
        with pytest.raises(errors.Unauthenticated) as ei:
            auth.authenticate(value, "read", "c")
        bodies.append(ei.value.to_dict())
    assert all(b == bodies[0] for b in bodies)
    with pytest.raises(errors.Forbidden) as fe:
        auth.authenticate(f"Bearer {raw}", "infer", "c")
    assert fe.value.code == "forbidden"
    admin, _ = store.create("root", ["admin"])
    assert auth.authenticate(f"Bearer {admin}", "infer", "c").name == "root"


def test_revocation_takes_effect_within_cache_ttl(store: TokenStore) -> None:
    clock = Clock()
    auth = Authenticator(store, cache_ttl_s=1.0, clock=clock)
    raw, info = store.create("a", ["infer"])
    auth.authenticate(f"Bearer {raw}", "infer")
    store.revoke(info.token_id)
    auth.authenticate(f"Bearer {raw}", "infer")  # still cached inside the bound
    clock.t += 1.01
    with pytest.raises(errors.Unauthenticated):
        auth.authenticate(f"Bearer {raw}", "infer")


def test_cached_token_does_not_hit_the_store(
    store: TokenStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    auth = Authenticator(store)
    raw, _ = store.create("a", ["infer"])
    auth.authenticate(f"Bearer {raw}", "infer")
    hits: list[str] = []
    monkeypatch.setattr(store, "verify", lambda r: hits.append(r))
    for _ in range(100):
        auth.authenticate(f"Bearer {raw}", "infer")
    assert hits == []


def test_failures_rate_limited_per_client(store: TokenStore) -> None:
    clock = Clock()
    auth = Authenticator(store, burst=3, refill_per_s=1.0, clock=clock)
    raw, _ = store.create("a", ["infer"])
    for _ in range(3):
        with pytest.raises(errors.Unauthenticated):
            auth.authenticate("Bearer bad", "infer", "10.0.0.1")
    with pytest.raises(errors.RateLimited) as ei:
        auth.authenticate(f"Bearer {raw}", "infer", "10.0.0.1")
    assert ei.value.code == "rate-limited" and ei.value.details["retry_after_s"] >= 1
    assert auth.authenticate(f"Bearer {raw}", "infer", "10.0.0.2").name == "a"
    clock.t += 1.0
    assert auth.authenticate(f"Bearer {raw}", "infer", "10.0.0.1").name == "a"


def test_secret_never_logged(store: TokenStore, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    auth = Authenticator(store)
    raw, _ = store.create("a", ["read"])
    secret = raw.split("_")[2]
    auth.authenticate(f"Bearer {raw}", "read")
    with pytest.raises(errors.Forbidden) as ei:
        auth.authenticate(f"Bearer {raw}", "admin")
    assert secret not in caplog.text
    assert secret not in str(ei.value.to_dict())
