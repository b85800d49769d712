"""The cluster directory: the operator's source of truth (back it up).

    DIR/cluster.yaml        the spec (the user edits it)
    DIR/pki/NAME.crt|key    certificates and keys (keys 0600); sa.key/sa.pub
    DIR/kubeconfigs/*.kubeconfig
    DIR/secrets/encryption-key   (and vrrp-password with keepalived): see cluster_secrets.py
    DIR/bundles/NODE/...    `hardway render` output (default location)
    DIR/artifacts.lock      sha256 of every artifact, recorded at the first fetch (artifacts/lock.py)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SPEC_FILE = "cluster.yaml"


@dataclass(frozen=True)
class ClusterDir:
    root: Path

    @classmethod
    def at(cls, path: str | Path) -> "ClusterDir":
        return cls(Path(path))

    @property
    def spec(self) -> Path:
        return self.root / SPEC_FILE

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def kubeconfigs(self) -> Path:
        return self.root / "kubeconfigs"

    @property
    def secrets(self) -> Path:
        return self.root / "secrets"

    @property
    def bundles(self) -> Path:
        return self.root / "bundles"

    def cert(self, name: str) -> Path:
        return self.pki / f"{name}.crt"

    def key(self, name: str) -> Path:
        return self.pki / f"{name}.key"

    def kubeconfig(self, name: str) -> Path:
        return self.kubeconfigs / f"{name}.kubeconfig"

    def secret(self, name: str) -> Path:
        return self.secrets / name

    @property
    def artifacts_lock(self) -> Path:
        return self.root / "artifacts.lock"

    @property
    def encryption_key(self) -> Path:
        return self.secret("encryption-key")
