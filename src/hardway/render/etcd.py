"""etcd: one member per controller, mutual TLS for clients and peers, its own CA."""

from __future__ import annotations

from .. import ports
from ..material import Material
from ..spec.model import ClusterSpec, Node
from .bundle import Bundle, File, Phase, Unit
from .common import BIN, ETCD_DATA, ETCD_PKI, SECRET, header, systemd_unit

CLIENT_PORT = ports.port("etcd-client")
PEER_PORT = ports.port("etcd-peer")
OWNER = "etcd:etcd"


def etcd_servers(spec: ClusterSpec) -> str:
    return ",".join(f"https://{m.address}:{CLIENT_PORT}" for m in spec.etcd_members)


def etcd_flags(spec: ClusterSpec, member: Node) -> list[str]:
    ip = member.address
    initial = ",".join(f"{m.name}=https://{m.address}:{PEER_PORT}" for m in spec.etcd_members)
    # Clients connect on the member address only (no 127.0.0.1): members on one host, as in
    # the loopback test cluster, must not fight over one port.
    return [
        f"--name={member.name}",
        f"--data-dir={ETCD_DATA}",
        f"--listen-client-urls=https://{ports.host_port('etcd-client', spec, member)}",
        f"--advertise-client-urls=https://{ip}:{CLIENT_PORT}",
        f"--listen-peer-urls=https://{ports.host_port('etcd-peer', spec, member)}",
        f"--initial-advertise-peer-urls=https://{ip}:{PEER_PORT}",
        f"--initial-cluster={initial}",
        f"--initial-cluster-token={spec.name}-etcd",
        "--initial-cluster-state=new",
        f"--cert-file={ETCD_PKI}/server.crt",
        f"--key-file={ETCD_PKI}/server.key",
        f"--trusted-ca-file={ETCD_PKI}/ca.crt",
        "--client-cert-auth=true",
        f"--peer-cert-file={ETCD_PKI}/peer.crt",
        f"--peer-key-file={ETCD_PKI}/peer.key",
        f"--peer-trusted-ca-file={ETCD_PKI}/ca.crt",
        "--peer-client-cert-auth=true",
        "--auto-tls=false",
        "--peer-auto-tls=false",
        "--logger=zap",
    ]


def render_etcd(spec: ClusterSpec, member: Node, material: Material, bundle: Bundle) -> None:
    files = {
        "ca.crt": (material.cert("etcd-ca"), 0o644),
        "server.crt": (material.cert(f"etcd-server-{member.name}"), 0o644),
        "server.key": (material.key(f"etcd-server-{member.name}"), SECRET),
        "peer.crt": (material.cert(f"etcd-peer-{member.name}"), 0o644),
        "peer.key": (material.key(f"etcd-peer-{member.name}"), SECRET),
    }
    for name, (content, mode) in files.items():
        bundle.add(File(f"{ETCD_PKI}/{name}", content, mode, OWNER))
    # etcdctl's identity for health checks and backups; root's, not etcd's.
    bundle.add(File(f"{ETCD_PKI}/etcdctl.crt", material.cert("etcd-admin")))
    bundle.add(File(f"{ETCD_PKI}/etcdctl.key", material.key("etcd-admin"), SECRET))
    # A system user owns the data directory (CIS 1.1.11/1.1.12); systemd-sysusers and
    # systemd-tmpfiles create both before etcd starts.
    bundle.add(File("/etc/sysusers.d/hardway-etcd.conf",
                    (header() + f'u etcd - "etcd (hardway)" {ETCD_DATA} /usr/sbin/nologin\n').encode()))
    bundle.add(File("/etc/tmpfiles.d/hardway-etcd.conf",
                    (header() + f"d {ETCD_DATA} 0700 etcd etcd -\n").encode()))
    unit = systemd_unit(
        "etcd: the cluster's key-value store (hardway)",
        [f"{BIN}/etcd", *etcd_flags(spec, member)],
        service={
            "Type": "notify",
            "User": "etcd",
            "Restart": "on-failure",
            "RestartSec": "5",
            "LimitNOFILE": "65536",
        },
        doc="https://etcd.io/docs/",
    )
    bundle.add_unit(
        Unit("etcd.service", Phase.etcd, restart_on=tuple(f"{ETCD_PKI}/{n}" for n in files), data=(ETCD_DATA,)),
        unit
    )
    bundle.add_binaries("etcd", "etcd", "etcdctl")
