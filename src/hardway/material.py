"""The cluster's secret material: made once, kept in the cluster directory, read for rendering.

`ensure_material` is what `hardway pki init` runs: the PKI, the service-account key pair, the
secrets (cluster_secrets.py) and the kubeconfigs, each written only when missing or changed,
all or nothing. `load_material` reads them into a plain `Material` value so rendering stays
free of I/O; `current_material` is what render, diff and up build from: it refuses a stale PKI.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .cluster_secrets import SECRET_MODE, EncryptionKey, needed, parse_keys, read_secrets
from .clusterdir import ClusterDir
from .errors import OperationError, UsageError
from .fsio import all_or_nothing, write_atomic
from .pki import rotation
from .pki.ensure import PkiReport, StalePki, ensure_pki
from .pki.profiles import SERVICE_ACCOUNT, certificate_plan
from .spec.model import ClusterSpec


@dataclass(frozen=True)
class Material:
    certs: Mapping[str, bytes]  # PEM by profile name
    keys: Mapping[str, bytes]  # PEM by profile name, plus "sa"
    sa_pub: bytes
    encryption_keys: tuple[EncryptionKey, ...]  # the write key first, then read-only ones
    vrrp_password: str = ""  # keepalived's, when the spec has that load balancer
    etcd_token: str = ""  # set by `hardway etcd restore`; "": derived (render/etcd.py cluster_token)
    # A CA's bundle on the nodes and in kubeconfigs, where it is more than the CA itself: during
    # a rotation (pki/rotation.py), the old and the new CA.
    bundles: Mapping[str, bytes] = field(default_factory=dict)
    # The controller manager's CSR signer (certificate, key) where it cannot read ca.crt/ca.key
    # (a bundle of two during a rotation of `ca`); None: ca.crt/ca.key.
    signer: tuple[bytes, bytes] | None = None

    def cert(self, name: str) -> bytes:
        return self.certs[name]

    def trust(self, name: str) -> bytes:
        """What trusts CA `name`'s certificates (a CA file on a node, a kubeconfig's
        certificate-authority-data): the CA itself, or the bundle of a rotation under way."""
        return self.bundles.get(name) or self.certs[name]

    def key(self, name: str) -> bytes:
        return self.keys[name]


@dataclass
class MaterialReport:
    pki: PkiReport
    written: list[Path] = field(default_factory=list)

    @property
    def all_written(self) -> list[Path]:
        return self.pki.written + self.written


def ensure_material(
    cd: ClusterDir, spec: ClusterSpec, reissue: tuple[str, ...] = (), keep_keys: bool = False,
    validity_days: int | None = None, now: dt.datetime | None = None,
) -> MaterialReport:
    """Make what is missing, and reissue `reissue` (pki/ensure.py: `keep_keys`, `validity_days`);
    every kubeconfig embedding a reissued certificate is rewritten. An error on the way (a
    certificate that cannot be issued, a full disk, Ctrl-C) puts every file back as it was:
    never half a PKI."""
    from .render.kubeconfig import cluster_kubeconfigs  # render imports Material

    with all_or_nothing():
        report = MaterialReport(ensure_pki(cd, spec, reissue, now, keep_keys, validity_days))
        for secret in needed(spec):
            path = cd.secret(secret.name)
            if not path.exists():
                if secret.irreplaceable and cd.kubectl.exists():
                    raise UsageError(f"{path} is missing, and this cluster has run (`hardway up` put "
                                     f"{cd.kubectl} there): {secret.if_lost}. If it never held data, delete "
                                     f"{cd.kubectl} and run the command again to make a new one")
                write_atomic(path, (secret.make() + "\n").encode(), SECRET_MODE)
                report.written.append(path)
        if report.pki.stale:
            # A kubeconfig embeds the CA and a client certificate: while anything is stale the
            # ones on disk stay as they were, so a foreign ca.crt never reaches them.
            return report
        material = load_material(cd, spec)
        for name, content in cluster_kubeconfigs(spec, material).items():
            path = cd.kubeconfig(name)
            if write_atomic(path, content, 0o600):
                report.written.append(path)
    return report


def current_material(cd: ClusterDir, spec: ClusterSpec, command: str,
                     reissue: tuple[str, ...] = ()) -> tuple[MaterialReport, Material]:
    """The material `command` (render, diff, up) builds from, made as needed (and `reissue`
    reissued, as `pki init --reissue` does); StalePki (exit 2, naming each stale item and its
    fix) while anything on disk does not match the spec."""
    report = ensure_material(cd, spec, reissue)
    if report.pki.stale:
        raise StalePki(cd, report.pki.stale, f"`hardway {command}` stopped before using it")
    return report, load_material(cd, spec)


def load_material(cd: ClusterDir, spec: ClusterSpec) -> Material:
    certs: dict[str, bytes] = {}
    keys: dict[str, bytes] = {}
    missing: list[str] = []

    def read(path: Path) -> bytes:
        try:
            return path.read_bytes()
        except FileNotFoundError:
            missing.append(str(path))
            return b""

    for profile in certificate_plan(spec):
        certs[profile.name] = read(cd.cert(profile.name))
        if not profile.twin_of:  # a twin's key is its CA's
            keys[profile.name] = read(cd.key(profile.name))
    keys[SERVICE_ACCOUNT] = read(cd.key(SERVICE_ACCOUNT))
    sa_pub = read(cd.pki / f"{SERVICE_ACCOUNT}.pub")
    secrets, problems = read_secrets(cd, spec)
    bundles, signer = _rotation_material(cd, read)
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        problems.insert(0, f"missing in {cd.root}: {shown}; run `hardway pki init` first")
    token = read_etcd_token(cd, problems)
    if problems:
        raise OperationError("\n".join(problems))
    return Material(certs, keys, sa_pub, parse_keys(secrets["encryption-key"])[0], secrets.get("vrrp-password", ""),
                    token, bundles, signer)


def _rotation_material(cd: ClusterDir, read) -> tuple[dict[str, bytes], tuple[bytes, bytes] | None]:
    """The bundles and the signer of a CA rotation under way (pki/rotation.py); none without one."""
    r = rotation.load_rotation(cd)
    if r is None:
        return {}, None
    names = rotation.trust_names(cd, r.ca, r)
    bundles = {r.ca: b"".join(read(cd.cert(n)) for n in names)} if len(names) > 1 else {}
    signer_name = rotation.signer_name(cd, r)
    signer = (read(cd.cert(signer_name)), read(cd.key(signer_name))) if signer_name else None
    return bundles, signer


# What `hardway etcd restore` writes (deploy/etcd_backup.py new_token): one systemd word, no quoting.
ETCD_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def read_etcd_token(cd: ClusterDir, problems: list[str]) -> str:
    """The token a restore recorded, "" when there is none; a damaged file is a problem."""
    try:
        text = cd.etcd_token.read_text(errors="replace").strip()
    except FileNotFoundError:
        return ""
    if not ETCD_TOKEN.fullmatch(text):
        problems.append(f"{cd.etcd_token} does not hold an etcd cluster token (1 to 128 letters, digits, "
                        "'.', '_', '-'): `hardway etcd restore` wrote the token the etcd members were made "
                        "with there; put it back (it is in each controller's etcd.service, "
                        "--initial-cluster-token)")
        return ""
    return text
