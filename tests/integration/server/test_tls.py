"""TLS and mutual TLS on a real server, with a CA and certificates made in the test."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from shipyard.registry import ModelRegistry
from tests.integration.server.conftest import (
    RunningServer,
    register_tiny,
    server_settings,
    start_server,
    stop_server,
)


def _key() -> object:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _write_pki(d: Path) -> dict[str, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def cert(subject: str, key: object, issuer: str, signer: object, *, ca: bool, san: bool):  # type: ignore[no-untyped-def]
        b = (
            x509.CertificateBuilder()
            .subject_name(name(subject))
            .issuer_name(name(issuer))
            .public_key(key.public_key())  # type: ignore[attr-defined]
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if san:
            b = b.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
        return b.sign(signer, hashes.SHA256())  # type: ignore[arg-type]

    def pem_key(key: object) -> bytes:
        return key.private_bytes(  # type: ignore[attr-defined, no-any-return]
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    ca_key, srv_key, cli_key = _key(), _key(), _key()
    ca = cert("test-ca", ca_key, "test-ca", ca_key, ca=True, san=False)
    srv = cert("127.0.0.1", srv_key, "test-ca", ca_key, ca=False, san=True)
    cli = cert("client", cli_key, "test-ca", ca_key, ca=False, san=False)
    out = {}
    for label, data in {
        "ca.pem": ca.public_bytes(serialization.Encoding.PEM),
        "server.pem": srv.public_bytes(serialization.Encoding.PEM),
        "server.key": pem_key(srv_key),
        "client.pem": cli.public_bytes(serialization.Encoding.PEM),
        "client.key": pem_key(cli_key),
    }.items():
        (d / label).write_bytes(data)
        out[label] = d / label
    return out


def _serve(home: Path, tmp: Path, security: dict[str, str]) -> RunningServer:
    settings = server_settings(home, security=security)
    reg = ModelRegistry.open(settings)
    register_tiny(reg, tmp, "tiny")
    reg.close()
    return start_server(["tiny"], settings)


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    d = tmp_path / "pki"
    d.mkdir()
    return _write_pki(d)


@pytest.fixture
def tls_server(home: Path, tmp_path: Path, pki: dict[str, Path]) -> Iterator[RunningServer]:
    server = _serve(
        home, tmp_path, {"tls_cert": str(pki["server.pem"]), "tls_key": str(pki["server.key"])}
    )
    yield server
    stop_server(server)


def test_rest_and_grpc_over_tls(tls_server: RunningServer, pki: dict[str, Path]) -> None:
    import tritonclient.grpc as grpcclient

    https = tls_server.http.replace("http://", "https://")
    ctx = ssl.create_default_context(cafile=str(pki["ca.pem"]))
    with httpx.Client(verify=ctx, timeout=10) as c:
        assert c.get(f"{https}/v2/health/ready").status_code == 200
    with pytest.raises(httpx.HTTPError), httpx.Client(timeout=5) as plain:
        plain.get(f"{tls_server.http}/v2/health/ready")
    client = grpcclient.InferenceServerClient(
        tls_server.grpc, ssl=True, root_certificates=str(pki["ca.pem"])
    )
    assert client.is_server_live()
    client.close()


@pytest.fixture
def mtls_server(home: Path, tmp_path: Path, pki: dict[str, Path]) -> Iterator[RunningServer]:
    """A server that requires client certificates signed by the test CA."""
    server = _serve(
        home,
        tmp_path,
        {
            "tls_cert": str(pki["server.pem"]),
            "tls_key": str(pki["server.key"]),
            "tls_client_ca": str(pki["ca.pem"]),
        },
    )
    yield server
    stop_server(server)


def test_mutual_tls_refuses_a_client_without_a_certificate(
    mtls_server: RunningServer, pki: dict[str, Path]
) -> None:
    https = mtls_server.http.replace("http://", "https://")
    ctx = ssl.create_default_context(cafile=str(pki["ca.pem"]))
    with pytest.raises(httpx.HTTPError), httpx.Client(verify=ctx, timeout=5) as c:
        c.get(f"{https}/v2/health/ready")
    ctx.load_cert_chain(str(pki["client.pem"]), str(pki["client.key"]))
    with httpx.Client(verify=ctx, timeout=10) as c:
        assert c.get(f"{https}/v2/health/ready").status_code == 200


def test_grpc_mutual_tls_refuses_a_client_without_a_certificate(
    mtls_server: RunningServer, pki: dict[str, Path]
) -> None:
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    anonymous = grpcclient.InferenceServerClient(
        mtls_server.grpc, ssl=True, root_certificates=str(pki["ca.pem"])
    )
    with pytest.raises(InferenceServerException):
        anonymous.is_server_live(client_timeout=5)
    anonymous.close()
    client = grpcclient.InferenceServerClient(
        mtls_server.grpc,
        ssl=True,
        root_certificates=str(pki["ca.pem"]),
        private_key=str(pki["client.key"]),
        certificate_chain=str(pki["client.pem"]),
    )
    assert client.is_server_live(client_timeout=5)
    client.close()
