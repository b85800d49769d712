"""What rendering produces: plain data. A bundle is everything one node needs.

Every delivery route (directory export, SSH, Ignition) consumes these objects, so they hold
bytes and metadata only: no I/O, no knowledge of how they will be delivered.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from enum import Enum


class Phase(str, Enum):
    """Cluster-wide activation phases, in order (deploy/ walks them)."""

    host = "host"  # sysctls, modules, routes
    etcd = "etcd"
    control_plane = "control-plane"
    load_balancer = "load-balancer"
    worker = "worker"


@dataclass(frozen=True)
class File:
    path: str  # absolute path on the node
    content: bytes
    mode: int = 0o644
    owner: str = "root:root"

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()


@dataclass(frozen=True)
class Unit:
    name: str  # e.g. "kube-apiserver.service"
    phase: Phase
    # A change to any of these paths restarts the unit (its own unit file always does).
    restart_on: tuple[str, ...] = ()
    # Oneshot units are run, not kept running.
    oneshot: bool = False
    # A change to any of these paths reloads the unit instead (`systemctl reload`): it keeps
    # its listening sockets, so clients see no refused connection (HAProxy, keepalived).
    reload_on: tuple[str, ...] = ()
    # Directories the unit's program fills while it runs (hardway writes no file there):
    # `hardway reset` removes each one the host did not have before hardway's first push.
    data: tuple[str, ...] = ()


@dataclass(frozen=True)
class Binary:
    name: str  # the executable, installed as /usr/local/bin/<name> (CNI: /opt/cni/bin)
    artifact: str  # the artifact it comes from: kubernetes-server, etcd, containerd, runc, cni-plugins


@dataclass
class Bundle:
    node: str
    roles: tuple[str, ...]
    files: dict[str, File] = field(default_factory=dict)
    units: list[Unit] = field(default_factory=list)
    sysctls: dict[str, str] = field(default_factory=dict)
    modules: list[str] = field(default_factory=list)
    binaries: list[Binary] = field(default_factory=list)
    packages: list[str] = field(default_factory=list)  # Debian packages (haproxy, keepalived)
    images: list[str] = field(default_factory=list)  # OCI tarballs to import into containerd

    def add(self, file: File) -> None:
        if file.path in self.files and self.files[file.path] != file:
            raise ValueError(f"{self.node}: two different renderings of {file.path}")
        self.files[file.path] = file

    def add_unit(self, unit: Unit, content: str) -> None:
        path = f"/etc/systemd/system/{unit.name}"
        self.add(File(path, content.encode()))
        self.units.append(replace(unit, restart_on=tuple(dict.fromkeys((path, *unit.restart_on)))))

    def add_binaries(self, artifact: str, *names: str) -> None:
        for name in names:
            b = Binary(name, artifact)
            if b not in self.binaries:
                self.binaries.append(b)


@dataclass
class ClusterBundle:
    """All node bundles plus the objects applied to the cluster through the API."""

    nodes: dict[str, Bundle]
    manifests: dict[str, bytes]  # file name -> multi-document YAML
