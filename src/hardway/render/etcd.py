"""etcd: one member per controller, mutual TLS for clients and peers, its own CA."""

from __future__ import annotations

from .. import ports
from ..artifacts.layout import etcd_binaries
from ..material import Material
from ..membership import FOUNDERS, Membership
from ..quoting import systemd_env_value
from ..spec.model import ClusterSpec, Node
from ..spec.versions import etcd_has
from .bundle import Bundle, File, Phase, Unit
from .common import BIN, ETCD_DATA, ETCD_PKI, SECRET, header, systemd_unit

CLIENT_PORT = ports.port("etcd-client")
PEER_PORT = ports.port("etcd-peer")
OWNER = "etcd:etcd"
# The settings etcd reads only at a member's first start (ETCD_* variables are its flags).
INITIAL_CLUSTER_ENV = "/etc/etcd/initial-cluster.env"


def etcd_servers(spec: ClusterSpec, node: Node | None = None) -> str:
    """The etcd endpoints a client uses; an apiserver on an etcd member (stacked, as every
    preset is) uses its own member only, as kubeadm does: etcd stops with TLS by cancelling
    every RPC in flight (embed.stopServers), so during a member's restart a write through
    it fails. `up` drains the apiserver on that host in HAProxy first (roll.py): with its own
    member only, no client request meets the restart."""
    if node is not None and any(m.name == node.name for m in spec.etcd_members):
        return f"https://{node.address}:{CLIENT_PORT}"
    return ",".join(f"https://{m.address}:{CLIENT_PORT}" for m in spec.etcd_members)


def peer_url(member: Node) -> str:
    return f"https://{member.address}:{PEER_PORT}"


def default_token(spec: ClusterSpec) -> str:
    return f"{spec.name}-etcd"


def cluster_token(spec: ClusterSpec, material: Material) -> str:
    """--initial-cluster-token: derived from the cluster's name, until `hardway etcd restore`
    made the members anew with a token of their own (recorded in the cluster directory, read
    into `material.etcd_token`), so a later `up` renders the same files."""
    return material.etcd_token or default_token(spec)


def etcdctl(member: Node) -> list[str]:
    """etcdctl on `member`, as root, talking to that member with the etcdctl identity."""
    return ["env", "ETCDCTL_API=3", f"{BIN}/etcdctl", f"--endpoints=https://{member.address}:{CLIENT_PORT}",
            f"--cacert={ETCD_PKI}/ca.crt", f"--cert={ETCD_PKI}/etcdctl.crt", f"--key={ETCD_PKI}/etcdctl.key"]


def offline_tool(version: str) -> list[str]:
    """What reads and restores snapshot files on a member: etcdutl from 3.5 (etcdctl's
    `snapshot status|restore` are deprecated there and gone in 3.6), etcdctl before."""
    return [f"{BIN}/etcdutl"] if etcd_has(version, "etcdutl") else ["env", "ETCDCTL_API=3", f"{BIN}/etcdctl"]


def initial_cluster(spec: ClusterSpec, member: Node, membership: Membership) -> tuple[str, list[tuple[str, str]]]:
    """How `member` first starts: `new` with every member (it forms the cluster), or, for one
    that joined a running cluster, `existing` with the members etcd has when it is added (the
    spec's, and those still to be removed after it joined; etcd checks the list is exactly its
    membership)."""
    members = [(m.name, peer_url(m)) for m in spec.etcd_members]
    if member.name in membership.joined:
        return "existing", members + [m for m in membership.leaving if m not in members]
    return "new", members


def members_list(members: list[tuple[str, str]]) -> str:
    """etcd's --initial-cluster form: name=peer URL, comma-separated."""
    return ",".join(f"{name}={url}" for name, url in members)


def initial_cluster_env(spec: ClusterSpec, member: Node, membership: Membership, token: str) -> str:
    state, members = initial_cluster(spec, member, membership)
    values = {
        "ETCD_INITIAL_CLUSTER": members_list(members),
        "ETCD_INITIAL_CLUSTER_STATE": state,
        "ETCD_INITIAL_CLUSTER_TOKEN": token,
    }
    return (header() + "# Read by etcd at this member's first start only: once its data directory exists it\n"
            "# ignores these, so a change here restarts nothing. `new`: it formed the cluster;\n"
            "# `existing`: it joined a running one (hardway up added it with etcdctl member add).\n"
            + "".join(f"{k}={systemd_env_value(v)}\n" for k, v in values.items()))


def etcd_flags(spec: ClusterSpec, member: Node) -> list[str]:
    ip = member.address
    # Clients connect on the member address only (no 127.0.0.1): members on one host, as in
    # the loopback test cluster, must not fight over one port. The --initial-cluster* settings
    # are in INITIAL_CLUSTER_ENV: they change when controllers come and go, and a member that
    # has started ignores them, so they must not restart it (a unit file change would).
    return [
        f"--name={member.name}",
        f"--data-dir={ETCD_DATA}",
        f"--listen-client-urls=https://{ports.host_port('etcd-client', spec, member)}",
        f"--advertise-client-urls=https://{ip}:{CLIENT_PORT}",
        f"--listen-peer-urls=https://{ports.host_port('etcd-peer', spec, member)}",
        f"--initial-advertise-peer-urls={peer_url(member)}",
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


def render_etcd(spec: ClusterSpec, member: Node, material: Material, bundle: Bundle,
                membership: Membership = FOUNDERS) -> None:
    files = {
        "ca.crt": (material.trust("etcd-ca"), 0o644),
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
    bundle.add(File(INITIAL_CLUSTER_ENV, initial_cluster_env(spec, member, membership, cluster_token(spec, material)).encode()))
    unit = systemd_unit(
        "etcd: the cluster's key-value store (hardway)",
        [f"{BIN}/etcd", *etcd_flags(spec, member)],
        service={
            "EnvironmentFile": INITIAL_CLUSTER_ENV,
            "Type": "notify",
            "User": "etcd",
            "Restart": "on-failure",
            "RestartSec": "5",
            "LimitNOFILE": "65536",
        },
        doc="https://etcd.io/docs/",
    )
    # Not INITIAL_CLUSTER_ENV: a started member ignores it.
    bundle.add_unit(
        Unit("etcd.service", Phase.etcd, restart_on=tuple(f"{ETCD_PKI}/{n}" for n in files), data=(ETCD_DATA,)),
        unit
    )
    # etcdctl (and etcdutl from 3.5) on every member: health checks, snapshots and restores
    # (deploy/etcd_backup.py) run there.
    bundle.add_binaries("etcd", *etcd_binaries(spec.artifacts.versions.etcd))
