"""The cluster directory: the operator's source of truth (back it up).

    DIR/cluster.yaml        the spec (the user edits it)
    DIR/pki/NAME.crt|key    certificates and keys (keys 0600); sa.key/sa.pub
    DIR/pki/ca-rotation     the steps done of a CA rotation under way, with NAME.next|old.* (pki/rotation.py)
    DIR/kubeconfigs/*.kubeconfig
    DIR/secrets/encryption-key   (and vrrp-password with keepalived): see cluster_secrets.py
    DIR/secrets/encryption-rotation   the steps done of a key rotation under way (keyrotation.py)
    DIR/bundles/NODE/...    `hardway render` output (default location)
    DIR/artifacts.lock      sha256 of every artifact, recorded at the first fetch (artifacts/lock.py)
    DIR/etcd-cluster-token  etcd's --initial-cluster-token, once `hardway etcd restore` chose a new one
    DIR/backups/            `hardway etcd snapshot` files (0600) and their .sha256
    DIR/etcd-members.json   the controllers that joined the running etcd cluster (membership.py)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import UsageError

SPEC_FILE = "cluster.yaml"
# the directories hardway keeps in a cluster directory, and what for
_ROLE = {"pki": "certificates and keys", "kubeconfigs": "kubeconfigs", "secrets": "the encryption keys",
         "bundles": "`hardway render` output", "bin": "the cluster's kubectl", "lab": "the lab's machines",
         "backups": "etcd snapshots"}


@dataclass(frozen=True)
class ClusterDir:
    root: Path

    @classmethod
    def at(cls, path: str | Path) -> "ClusterDir":
        """The cluster directory at `path`, its layout checked (see `check_layout`)."""
        cd = cls(Path(path))
        cd.check_layout()
        return cd

    def check_layout(self) -> None:
        """A file where hardway keeps a directory is named here, as an error to act on, instead
        of surfacing half-way through a command as a NotADirectoryError."""
        for d, role in ((self.root, "the cluster directory"), *((self.root / n, r) for n, r in _ROLE.items())):
            if d.exists() and not d.is_dir():
                raise UsageError(f"{d} is a file, but hardway keeps a directory there ({role}): "
                                 "move the file away (or restore the directory from a backup), then "
                                 "run the command again")

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
    def etcd_members(self) -> Path:
        return self.root / "etcd-members.json"

    @property
    def kubectl(self) -> Path:
        """The cluster's own kubectl, put there by `hardway up`: its presence means `up` ran."""
        return self.root / "bin" / "kubectl"

    @property
    def encryption_key(self) -> Path:
        return self.secret("encryption-key")

    @property
    def etcd_token(self) -> Path:
        """etcd's cluster token when a restore chose it (render/etcd.py cluster_token)."""
        return self.root / "etcd-cluster-token"

    @property
    def backups(self) -> Path:
        return self.root / "backups"

    @property
    def encryption_rotation(self) -> Path:
        return self.secret("encryption-rotation")
