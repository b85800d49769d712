"""PKI state on disk: certificates and keys in DIR/pki, read and written atomically."""

from __future__ import annotations

import re
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ..clusterdir import ClusterDir
from ..errors import OperationError
from ..fsio import write_atomic
from .issue import PrivateKey, cert_pem, key_pem, public_pem

KEY_MODE = 0o600
CERT_MODE = 0o644

_CERT_BLOCK = re.compile(rb"-----BEGIN CERTIFICATE-----\r?\n.*?-----END CERTIFICATE-----", re.S)


def cert_blocks(data: bytes) -> list[bytes]:
    """Every PEM certificate in `data` (a certificate file, a bundle of one with its key), each
    as `-----BEGIN ...-----` to `-----END ...-----` with one newline after: comparable with
    what `issue.cert_pem` writes."""
    return [m.group(0).replace(b"\r\n", b"\n") + b"\n" for m in _CERT_BLOCK.finditer(data)]


def load_cert(path: Path) -> x509.Certificate | None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError as e:
        raise OperationError(f"{path} is not a PEM certificate ({e}); restore it from a backup or delete it to reissue") from None


def load_key(path: Path, validate: bool = False) -> PrivateKey | None:
    """`validate` runs RSA's full consistency check (~35 ms a key): `pki check` wants it;
    the idempotency check of `pki init` only compares public halves and skips it."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        key = serialization.load_pem_private_key(
            data, password=None, unsafe_skip_rsa_key_validation=not validate
        )
    except (ValueError, TypeError) as e:
        raise OperationError(f"{path} is not an unencrypted PEM private key ({e})") from None
    return key  # type: ignore[return-value]


def save_pair(cd: ClusterDir, name: str, cert: x509.Certificate, key: PrivateKey) -> list[Path]:
    written = []
    # The key first: a crash between the two leaves a key without a certificate, which the
    # next run reissues, never a certificate whose key is gone.
    if write_atomic(cd.key(name), key_pem(key), KEY_MODE):
        written.append(cd.key(name))
    return written + save_cert(cd, name, cert)


def save_cert(cd: ClusterDir, name: str, cert: x509.Certificate) -> list[Path]:
    """A certificate whose key is another's (a CA's twin)."""
    return [cd.cert(name)] if write_atomic(cd.cert(name), cert_pem(cert), CERT_MODE) else []


def save_keypair(cd: ClusterDir, name: str, key: PrivateKey) -> list[Path]:
    written = []
    if write_atomic(cd.key(name), key_pem(key), KEY_MODE):
        written.append(cd.key(name))
    pub = cd.pki / f"{name}.pub"
    if write_atomic(pub, public_pem(key), CERT_MODE):
        written.append(pub)
    return written
