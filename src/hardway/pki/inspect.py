"""`hardway pki show` and `hardway pki check`: read the PKI on disk and judge it."""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass

from cryptography import x509

from ..cluster_secrets import SECRET_MODE, needed, read_secrets
from ..clusterdir import ClusterDir
from ..errors import OperationError
from ..spec.model import ClusterSpec
from . import rotation, store
from .ensure import renew_advice
from .expiry import MAX_WINDOW_DAYS, State, check_window, judge
from .issue import key_type_of, public_pem
from .profiles import SERVICE_ACCOUNT, certificate_plan
from .verify import differences, names_of, sans_of


@dataclass(frozen=True)
class CertRow:
    name: str
    issuer: str
    cn: str
    orgs: tuple[str, ...]
    sans: tuple[str, ...]
    not_after: dt.datetime | None
    key_type: str


def show(cd: ClusterDir, spec: ClusterSpec) -> list[CertRow]:
    rows = []
    for profile in certificate_plan(spec):
        cert = store.load_cert(cd.cert(profile.name))
        if cert is None:
            rows.append(CertRow(profile.name, "-", "(missing)", (), (), None, "-"))
            continue
        cn, orgs = names_of(cert)
        issuer_cn = cert.issuer.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)
        rows.append(
            CertRow(profile.name, str(issuer_cn[0].value) if issuer_cn else "?", cn, orgs,
                    sans_of(cert), cert.not_valid_after_utc, key_type_of(cert.public_key()))  # type: ignore[arg-type]
        )
    sa = store.load_key(cd.key(SERVICE_ACCOUNT))
    rows.append(CertRow(SERVICE_ACCOUNT, "(key pair)", "service-account signing key", (), (), None,
                        key_type_of(sa) if sa else "(missing)"))
    return rows


# `pki check --days`: 0 flags only what has expired; a century covers any validity hardway issues.
MAX_CHECK_DAYS = MAX_WINDOW_DAYS


def check(cd: ClusterDir, spec: ClusterSpec, days: int = 30, now: dt.datetime | None = None) -> list[str]:
    """Every problem found; empty means the PKI and the secrets are sound for this spec."""
    check_window(days, "--days")
    now = now or dt.datetime.now(dt.timezone.utc)
    problems: list[str] = []
    loaded: dict[str, x509.Certificate] = {}
    for profile in certificate_plan(spec):
        # A twin's key is its CA's: judged (missing, mode) with the CA, compared here.
        cert_path, key_path = cd.cert(profile.name), cd.key(profile.key_name)
        try:
            cert = store.load_cert(cert_path)
            key = store.load_key(key_path, validate=True)
        except OperationError as e:
            problems.append(str(e))
            continue
        if cert is None:
            problems.append(f"{profile.name}: {cert_path} is missing (run `hardway pki init`)")
            continue
        loaded[profile.name] = cert
        if key is None and not profile.twin_of:
            problems.append(f"{profile.name}: {key_path} is missing")
        issuer = loaded.get(profile.issuer) if profile.issuer else None
        twin_of = loaded.get(profile.twin_of) if profile.twin_of else None
        if profile.depends_on and (issuer or twin_of) is None:
            what = "issuer" if profile.issuer else "CA (it is that CA's twin)"
            problems.append(f"{profile.name}: its {what} {profile.depends_on} is missing, chain unverifiable")
        else:
            for reason in differences(profile, cert, key, issuer, spec.pki.key_type, twin_of):
                problems.append(f"{profile.name}: {reason}")
        if profile.twin_of:
            continue  # valid exactly as long as its CA (checked above): the CA's expiry says it all
        when = judge(cert, now, days)
        if when.state is State.expiring:
            problems.append(f"{profile.name}: {when.describe()}, within --days {days}; "
                            f"{renew_advice(cd, profile)}")
        elif not when.ok:
            problems.append(f"{profile.name}: {when.describe()}")
        problems += _mode_problems(key_path, 0o600)
    problems += _service_account(cd)
    for path in sorted(cd.kubeconfigs.glob("*.kubeconfig")):
        problems += _mode_problems(path, 0o600)
    problems += read_secrets(cd, spec)[1]
    for secret in needed(spec):
        problems += _mode_problems(cd.secret(secret.name), SECRET_MODE)
    problems += _mode_problems(cd.encryption_rotation, SECRET_MODE)
    problems += _rotation_problems(cd)
    return problems


def _rotation_problems(cd: ClusterDir) -> list[str]:
    """A CA rotation under way (pki/rotation.py): its record readable and private, and the other
    CA (the new one before step 2, the old one after) a sound pair. Its bundles are judged
    nowhere else: the nodes trust both CAs until the last step."""
    try:
        r = rotation.load_rotation(cd)
    except OperationError as e:
        return [str(e)]
    out = _mode_problems(rotation.record_path(cd), rotation.RECORD_MODE)
    if r is None:
        return out
    for name in (rotation.next_name(r.ca), rotation.old_name(r.ca)):
        try:
            cert, key = store.load_cert(cd.cert(name)), store.load_key(cd.key(name), validate=True)
        except OperationError as e:
            out.append(str(e))
            continue
        if cert is None:
            continue
        if key is None:
            out.append(f"{name}: {cd.key(name)} is missing (the rotation of {r.ca} needs it until its last step): "
                       "restore it from your backup")
        elif public_pem(cert.public_key()) != public_pem(key):  # type: ignore[arg-type]
            out.append(f"{name}: {cd.key(name)} is not the key of {cd.cert(name)}: restore both from your backup")
        out += _mode_problems(cd.key(name), 0o600)
    return out


def _mode_problems(path, want: int) -> list[str]:
    try:
        mode = os.stat(path).st_mode & 0o777
    except FileNotFoundError:
        return []
    if mode & ~want:
        return [f"{path}: mode {mode:04o} lets others read it; run `chmod {want:o} {path}`"]
    return []


def _service_account(cd: ClusterDir) -> list[str]:
    key_path, pub_path = cd.key(SERVICE_ACCOUNT), cd.pki / f"{SERVICE_ACCOUNT}.pub"
    key = store.load_key(key_path, validate=True)
    if key is None:
        return [f"{SERVICE_ACCOUNT}: {key_path} is missing (run `hardway pki init`)"]
    out = _mode_problems(key_path, 0o600)
    kind = key_type_of(key)
    if not kind.startswith(("rsa-", "ecdsa-")):
        out.append(f"{SERVICE_ACCOUNT}: {kind} cannot sign service-account tokens (RSA or ECDSA only)")
    try:
        if pub_path.read_bytes() != public_pem(key):
            out.append(f"{SERVICE_ACCOUNT}: {pub_path} is not the public half of {key_path}")
    except FileNotFoundError:
        out.append(f"{SERVICE_ACCOUNT}: {pub_path} is missing")
    return out
