"""The cluster's secret material: made once, kept in the cluster directory, read for rendering.

`ensure_material` is what `hardway pki init` runs: the PKI, the service-account key pair, the
encryption key and the kubeconfigs, each written only when missing or changed.
`load_material` reads them into a plain `Material` value so rendering stays free of I/O.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .clusterdir import ClusterDir
from .errors import OperationError
from .fsio import write_atomic
from .pki.ensure import PkiReport, ensure_pki
from .pki.profiles import SERVICE_ACCOUNT, certificate_plan
from .spec.model import ClusterSpec


@dataclass(frozen=True)
class Material:
    certs: Mapping[str, bytes]  # PEM by profile name
    keys: Mapping[str, bytes]  # PEM by profile name, plus "sa"
    sa_pub: bytes
    encryption_key: str  # base64 of 32 random bytes

    def cert(self, name: str) -> bytes:
        return self.certs[name]

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
    cd: ClusterDir, spec: ClusterSpec, reissue: tuple[str, ...] = ()
) -> MaterialReport:
    from .render.kubeconfig import cluster_kubeconfigs  # render imports Material

    report = MaterialReport(ensure_pki(cd, spec, reissue))
    if not cd.encryption_key.exists():
        key = base64.b64encode(os.urandom(32)).decode() + "\n"
        write_atomic(cd.encryption_key, key.encode(), 0o600)
        report.written.append(cd.encryption_key)
    material = load_material(cd, spec)
    for name, content in cluster_kubeconfigs(spec, material).items():
        path = cd.kubeconfig(name)
        if write_atomic(path, content, 0o600):
            report.written.append(path)
    return report


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
        keys[profile.name] = read(cd.key(profile.name))
    keys[SERVICE_ACCOUNT] = read(cd.key(SERVICE_ACCOUNT))
    sa_pub = read(cd.pki / f"{SERVICE_ACCOUNT}.pub")
    enc = read(cd.encryption_key).decode().strip()
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise OperationError(f"missing in {cd.root}: {shown}; run `hardway pki init` first")
    return Material(certs, keys, sa_pub, enc)
