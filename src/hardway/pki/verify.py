"""Does a certificate on disk still match its profile? Pure comparisons, shared by
`pki init` (to report stale certificates) and `pki check`."""

from __future__ import annotations

import ipaddress

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


def differences(
    profile: CertProfile,
    cert: x509.Certificate,
    key: PrivateKey | None,
    issuer: x509.Certificate | None,
    key_type: str,
) -> list[str]:
    """Why `cert` no longer matches `profile` (empty: it matches)."""
    out: list[str] = []
    cn, orgs = names_of(cert)
    if cn != profile.cn:
        out.append(f"CN is {cn!r}, spec wants {profile.cn!r}")
    if set(orgs) != set(profile.orgs):
        out.append(f"O is {list(orgs)}, spec wants {list(profile.orgs)}")
    have, want = _norm(sans_of(cert)), _norm(profile.sans)
    if have != want:
        parts = []
        if want - have:
            parts.append("missing " + ", ".join(sorted(want - have)))
        if have - want:
            parts.append("extra " + ", ".join(sorted(have - want)))
        out.append("SANs differ from the spec: " + "; ".join(parts))
    have_type = key_type_of(cert.public_key())  # type: ignore[arg-type]
    if have_type != key_type:
        out.append(f"key type is {have_type}, spec wants {key_type}")
    if key is not None and not key_matches(cert, key):
        out.append("the private key does not match the certificate")
    expected_issuer = issuer if issuer is not None else cert
    if not signed_by(cert, expected_issuer):
        who = names_of(expected_issuer)[0]
        out.append(f"not signed by {who} (issuer is {cert.issuer.rfc4514_string()})")
    return out


def _norm(sans: tuple[str, ...]) -> set[str]:
    out = set()
    for s in sans:
        try:
            out.add(str(ipaddress.ip_address(s)))
        except ValueError:
            out.add(s.lower())
    return out
