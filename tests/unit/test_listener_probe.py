"""The e2e listener check's proof of client authentication (tests/e2e/listeners.refusal),
against small TLS servers on 127.0.0.1: one that requires a client certificate (as etcd does),
one that answers 401 (the apiserver, the kubelet), and ones that answer anyway."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.e2e.listeners import refusal


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "probe-test")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    d = tmp_path_factory.mktemp("probe")
    (d / "tls.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / "tls.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
    return d / "tls.crt", d / "tls.key"


@contextmanager
def server(pair, answer: bytes | None, require_cert: bool) -> Iterator[int]:
    """A TLS server on 127.0.0.1 for one connection: `answer` to any request, or, with
    `require_cert`, a handshake that refuses a client without a certificate."""
    crt, key = pair
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(crt), str(key))
    if require_cert:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cafile=str(crt))
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            with ctx.wrap_socket(conn, server_side=True) as s:
                s.recv(4096)
                if answer is not None:
                    s.sendall(answer)
        except (ssl.SSLError, OSError):
            pass
        finally:
            conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield port
    finally:
        t.join(10)
        listener.close()


def test_a_required_client_certificate_is_a_refusal(pair):
    with server(pair, b"HTTP/1.1 200 OK\r\n\r\n{}", require_cert=True) as port:
        refused, how = refusal("127.0.0.1", port, "/version")
    assert refused, how
    assert how.startswith("TLS refused")


def test_401_is_a_refusal(pair):
    with server(pair, b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n", require_cert=False) as port:
        assert refusal("127.0.0.1", port, "/api") == (True, "HTTP/1.1 401 Unauthorized")


@pytest.mark.parametrize("status", [b"200 OK", b"403 Forbidden", b"404 Not Found"])
def test_any_other_answer_is_not(pair, status):
    # 403: the server took the client for `system:anonymous` (anonymous authentication is on).
    with server(pair, b"HTTP/1.1 " + status + b"\r\nContent-Length: 0\r\n\r\n", require_cert=False) as port:
        refused, how = refusal("127.0.0.1", port, "/pods")
    assert not refused and how == "HTTP/1.1 " + status.decode()


def test_nothing_listening_is_not_a_proof():
    s = socket.create_server(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    refused, how = refusal("127.0.0.1", port, "/api", timeout=2)
    assert not refused and how.startswith("cannot connect")
