"""Does a certificate on disk still match its profile? Pure comparisons, shared by
`pki init` (to report stale certificates) and `pki check`."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import Enum

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import NameOID

from .issue import PrivateKey, key_type_of, public_pem
from .profiles import CertProfile


def names_of(cert: x509.Certificate) -> tuple[str, tuple[str, ...]]:
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    orgs = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    return (str(cn[0].value) if cn else "", tuple(str(o.value) for o in orgs))


def sans_of(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    return tuple(ext.get_values_for_type(x509.DNSName)) + tuple(
        str(ip) for ip in ext.get_values_for_type(x509.IPAddress)
    )


def signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def key_matches(cert: x509.Certificate, key: PrivateKey) -> bool:
    return public_pem(cert.public_key()) == public_pem(key)  # type: ignore[arg-type]


class Why(str, Enum):
    """What kind of difference: the advice for fixing it depends on it (ensure.py)."""

    names = "names"  # CN or O
    sans = "sans"
    key_type = "key type"
    key_mismatch = "key mismatch"
    issuer = "issuer"
    twin = "twin"  # a twin no longer matches its CA


@dataclass(frozen=True)
class Difference:
    why: Why
    text: str
    have: str = ""  # the value on disk, where advice needs it (the key type)

    def __str__(self) -> str:
        return self.text


def differences(
    profile: CertProfile,
    cert: x509.Certificate,
    key: PrivateKey | None,
    issuer: x509.Certificate | None,
    key_type: str,
    twin_of: x509.Certificate | None = None,
) -> list[Difference]:
    """Why `cert` no longer matches `profile` (empty: it matches). For a twin (profile.twin_of),
    `key` is its CA's key and `twin_of` its CA's certificate."""
    out: list[Difference] = []
    cn, orgs = names_of(cert)
    if cn != profile.cn:
        out.append(Difference(Why.names, f"CN is {cn!r}, spec wants {profile.cn!r}"))
    if set(orgs) != set(profile.orgs):
        out.append(Difference(Why.names, f"O is {list(orgs)}, spec wants {list(profile.orgs)}"))
    have, want = _norm(sans_of(cert)), _norm(profile.sans)
    if have != want:
        parts = []
        if want - have:
            parts.append("missing " + ", ".join(sorted(want - have)))
        if have - want:
            parts.append("extra " + ", ".join(sorted(have - want)))
        out.append(Difference(Why.sans, "SANs differ from the spec: " + "; ".join(parts)))
    have_type = key_type_of(cert.public_key())  # type: ignore[arg-type]
    if have_type != key_type:
        out.append(Difference(Why.key_type, f"key type is {have_type}, spec wants {key_type}", have_type))
    if key is not None and not key_matches(cert, key):
        out.append(Difference(Why.key_mismatch, "the private key does not match the certificate"))
    expected_issuer = issuer if issuer is not None else cert
    if not signed_by(cert, expected_issuer):
        who = names_of(expected_issuer)[0]
        out.append(Difference(Why.issuer, f"not signed by {who} of {profile.issuer or profile.name}.crt "
                              f"(it names {cert.issuer.rfc4514_string()} as issuer, but the signature "
                              "does not verify)"))
    if twin_of is not None:
        out += _twin_differences(profile, cert, twin_of)
    return out


def _twin_differences(profile: CertProfile, cert: x509.Certificate, ca: x509.Certificate) -> list[Difference]:
    """A twin must be its CA's subject, key and validity: otherwise it anchors something else
    (or for another time) than what the CA signs."""
    source = f"{profile.twin_of}.crt"
    out = []
    if cert.subject != ca.subject:
        out.append(Difference(Why.twin, f"subject is {cert.subject.rfc4514_string()!r}, {source}'s is "
                              f"{ca.subject.rfc4514_string()!r}"))
    if public_pem(cert.public_key()) != public_pem(ca.public_key()):  # type: ignore[arg-type]
        out.append(Difference(Why.twin, f"its public key is not {source}'s"))
    have = (cert.not_valid_before_utc, cert.not_valid_after_utc)
    want = (ca.not_valid_before_utc, ca.not_valid_after_utc)
    if have != want:
        out.append(Difference(Why.twin, f"valid {have[0]:%Y-%m-%d %H:%M} to {have[1]:%Y-%m-%d %H:%M}, "
                              f"{source} {want[0]:%Y-%m-%d %H:%M} to {want[1]:%Y-%m-%d %H:%M}"))
    try:
        ca_flag = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        ca_flag = False
    if not ca_flag:
        out.append(Difference(Why.twin, "not a CA certificate (BasicConstraints CA:TRUE missing)"))
    return out


def _norm(sans: tuple[str, ...]) -> set[str]:
    out = set()
    for s in sans:
        try:
            out.add(str(ipaddress.ip_address(s)))
        except ValueError:
            out.add(s.lower())
    return out
