"""Keys and certificates from profiles, with `cryptography`. Pure: no files here."""

from __future__ import annotations

import datetime as dt
import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .profiles import CertProfile, Usage

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey

# Issued certificates start a little in the past so a node whose clock lags the operator's
# does not reject them as "not yet valid".
BACKDATE = dt.timedelta(minutes=5)


def generate_key(key_type: str) -> PrivateKey:
    if key_type == "ecdsa-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type.startswith("rsa-"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(key_type[4:]))
    if key_type == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(f"unknown key type {key_type!r}")


def key_type_of(key: PrivateKey | PublicKey) -> str:
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        return f"ecdsa-{'p256' if key.curve.name == 'secp256r1' else key.curve.name}"
    if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        return f"rsa-{key.key_size}"
    if isinstance(key, (ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey)):
        return "ed25519"
    return type(key).__name__


def key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_pem(key: PrivateKey | PublicKey) -> bytes:
    pub = key.public_key() if hasattr(key, "private_bytes") else key
    return pub.public_bytes(  # type: ignore[union-attr]
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def subject_of(profile: CertProfile) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in profile.orgs]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, profile.cn))
    return x509.Name(attrs)


def _hash_for(key: PrivateKey) -> hashes.HashAlgorithm | None:
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def build_certificate(
    profile: CertProfile,
    key: PrivateKey,
    issuer: tuple[x509.Certificate, PrivateKey] | None,
    validity_days: int,
    now: dt.datetime,
    path_length: int | None = 0,
) -> x509.Certificate:
    """Sign `key`'s public half for `profile`; self-signed when `issuer` is None."""
    subject = subject_of(profile)
    public = key.public_key()
    issuer_name, signing_key = (issuer[0].subject, issuer[1]) if issuer else (subject, key)
    not_after = now + dt.timedelta(days=validity_days)
    if issuer is not None:
        # Never past the issuer's own end: a leaf issued late in its CA's life would
        # otherwise claim a validity no client honours (the chain dies with the CA).
        not_after = min(not_after, issuer[0].not_valid_after_utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer[1].public_key()),
            critical=False,
        )
    # keyEncipherment only makes sense for RSA key transport (RFC 9295 forbids it for
    # Ed25519; kubeadm adds it for RSA only).
    rsa_key = isinstance(key, rsa.RSAPrivateKey)
    if profile.is_ca:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=True, path_length=path_length), critical=True
        ).add_extension(_key_usage(cert_sign=True, encipher=False), critical=True)
    else:
        builder = (
            builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(cert_sign=False, encipher=rsa_key), critical=True)
            .add_extension(x509.ExtendedKeyUsage(_ekus(profile.usage)), critical=False)
        )
    if profile.sans:
        names: list[x509.GeneralName] = [x509.DNSName(d) for d in profile.dns_names]
        names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in profile.ips]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(signing_key, _hash_for(signing_key))


def build_twin(ca: x509.Certificate, key: PrivateKey) -> x509.Certificate:
    """A self-signed twin of the CA `ca` (whose key is `key`): the same subject, public key
    (hence SubjectKeyIdentifier), constraints and validity, signed by that key. Whatever `ca`
    signs verifies against the twin as its anchor, and nothing else does: OpenSSL, which
    insists on a self-signed anchor, then trusts exactly what a Go client trusting `ca` does."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(ca.subject)
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(ca.not_valid_before_utc)
        .not_valid_after(ca.not_valid_after_utc)
    )
    # No AuthorityKeyIdentifier: self-issued, as build_certificate makes a self-signed CA.
    for ext_type in (x509.SubjectKeyIdentifier, x509.BasicConstraints, x509.KeyUsage):
        ext = ca.extensions.get_extension_for_class(ext_type)
        builder = builder.add_extension(ext.value, critical=ext.critical)
    return builder.sign(key, _hash_for(key))


def _key_usage(cert_sign: bool, encipher: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=encipher,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _ekus(usage: Usage) -> list[x509.ObjectIdentifier]:
    out = []
    if usage in (Usage.server, Usage.both):
        out.append(ExtendedKeyUsageOID.SERVER_AUTH)
    if usage in (Usage.client, Usage.both):
        out.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    return out
