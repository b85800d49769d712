"""Every TCP/UDP port a hardway node listens on, in one table.

Each row names the component (its systemd unit, and its process as `ss -p` shows it), what the
port serves, the protocol, the port (or how the spec derives it), the address it binds and its
access class. The renderers take their port numbers and bind addresses from here (flags,
KubeletConfiguration, KubeProxyConfiguration, KubeSchedulerConfiguration, etcd URLs, HAProxy);
`check_listeners` compares a live node's `ss -ltnupH` with it; firewall rules can be derived
from it: what other hosts may reach is exactly the rows not bound to loopback.

Access classes: every listener reachable from another host must need TLS client authentication
(`tls-client-auth`: a client without a certificate is refused at the handshake or with 401), or
be a named unauthenticated health port (`health`), SSH, or a Service's NodePort (`nodeport`:
workload traffic, by design). Anything else binds 127.0.0.1 only (`loopback`).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from .spec.model import APISERVER_PORT, ClusterSpec, LoadBalancerMode, Node, Role


class Access(str, Enum):
    tls_client_auth = "tls-client-auth"
    health = "health"
    ssh = "ssh"
    loopback = "loopback"
    nodeport = "nodeport"


# The access classes a listener outside loopback may have.
REMOTE_ACCESS = frozenset({Access.tls_client_auth, Access.health, Access.ssh, Access.nodeport})


class Bind(str, Enum):
    any = "0.0.0.0"  # every address (Go programs take IPv6 too: ss shows `*`)
    node = "node"  # the node's own address from the spec
    loopback = "127.0.0.1"


TCP, UDP = "tcp", "udp"


@dataclass(frozen=True)
class Port:
    key: str
    unit: str
    process: str  # the executable; `ss -p` shows its first 15 characters (the kernel's comm)
    serves: str
    protocols: tuple[str, ...]
    port: int | str  # a number, or the name of a derivation from the spec (_DERIVED)
    bind: Bind
    access: Access
    runs_on: str  # the name of a node predicate (_RUNS_ON)
    # Must listen whenever the component runs (the listener check reports it missing otherwise).
    required: bool = True
    # tls-client-auth: a path to request without a client certificate; 401 or a refused
    # handshake proves the port authenticates.
    probe: str | None = None


API_PORT = "the API port (spec: loadBalancer.port; 6443, or 8443 with keepalived)"
NODE_PORTS = "network.serviceNodePortRange"
SSH_PORT = "the node's ssh.port (default 22)"
EPHEMERAL = "any (chosen by the kernel)"

PORTS: tuple[Port, ...] = (
    Port("etcd-client", "etcd.service", "etcd", "etcd clients: the apiservers, etcdctl",
         (TCP,), 2379, Bind.node, Access.tls_client_auth, "controller", probe="/version"),
    Port("etcd-peer", "etcd.service", "etcd", "etcd peers",
         (TCP,), 2380, Bind.node, Access.tls_client_auth, "controller", probe="/version"),
    # 0.0.0.0, not the node address: keepalived's check and the local controller manager and
    # scheduler use 127.0.0.1:6443.
    Port("kube-apiserver", "kube-apiserver.service", "kube-apiserver", "the Kubernetes API",
         (TCP,), APISERVER_PORT, Bind.any, Access.tls_client_auth, "controller", probe="/api"),
    Port("kube-controller-manager", "kube-controller-manager.service", "kube-controller-manager",
         "healthz and metrics over HTTPS", (TCP,), 10257, Bind.loopback, Access.loopback, "controller"),
    Port("kube-scheduler", "kube-scheduler.service", "kube-scheduler",
         "healthz and metrics over HTTPS", (TCP,), 10259, Bind.loopback, Access.loopback, "controller"),
    Port("haproxy", "haproxy.service", "haproxy",
         "the API through the load balancer (TCP, passed through to the apiservers)",
         (TCP,), API_PORT, Bind.any, Access.tls_client_auth, "load balancer", probe="/api"),
    Port("kubelet", "kubelet.service", "kubelet", "the kubelet API: logs, exec, port-forward, metrics",
         (TCP,), 10250, Bind.any, Access.tls_client_auth, "worker", probe="/pods"),
    Port("kubelet-healthz", "kubelet.service", "kubelet", "healthz over plain HTTP",
         (TCP,), 10248, Bind.loopback, Access.loopback, "worker"),
    Port("kube-proxy-healthz", "kube-proxy.service", "kube-proxy",
         "healthz over plain HTTP (for load balancers' health checks)",
         (TCP,), 10256, Bind.any, Access.health, "worker"),
    Port("kube-proxy-metrics", "kube-proxy.service", "kube-proxy", "metrics over plain HTTP",
         (TCP,), 10249, Bind.loopback, Access.loopback, "worker"),
    # kube-proxy holds a NodePort Service's port open so that nothing else takes it.
    Port("kube-proxy-nodeports", "kube-proxy.service", "kube-proxy", "Services' NodePorts",
         (TCP, UDP), NODE_PORTS, Bind.any, Access.nodeport, "worker", required=False),
    # containerd's defaults (stream_server_address 127.0.0.1, stream_server_port "0").
    Port("containerd-stream", "containerd.service", "containerd",
         "CRI streaming (exec, attach, port-forward) for the kubelet",
         (TCP,), EPHEMERAL, Bind.loopback, Access.loopback, "worker", required=False),
    # Not hardway's: the SSH server `up` connects through (Debian's unit name).
    Port("sshd", "ssh.service", "sshd", "SSH, hardway's way in",
         (TCP,), SSH_PORT, Bind.any, Access.ssh, "every node"),
)

BY_KEY: dict[str, Port] = {p.key: p for p in PORTS}


def runs_load_balancer(spec: ClusterSpec, node: Node) -> bool:
    """HAProxy runs on the lb node, and on every controller with keepalived."""
    return node.has(Role.lb) or (
        node.has(Role.controller) and spec.load_balancer.mode is LoadBalancerMode.keepalived)


_RUNS_ON: dict[str, Callable[[ClusterSpec, Node], bool]] = {
    "controller": lambda spec, node: node.has(Role.controller),
    "worker": lambda spec, node: node.has(Role.worker),
    "load balancer": runs_load_balancer,
    "every node": lambda spec, node: True,
}

# Derived ports -> (first, last), or None for any port.
_DERIVED: dict[str, Callable[[ClusterSpec, Node | None], tuple[int, int] | None]] = {
    API_PORT: lambda spec, node: (spec.api_port, spec.api_port),
    NODE_PORTS: lambda spec, node: _port_range(spec.network.service_node_port_range),
    SSH_PORT: lambda spec, node: (spec.ssh_for(_needs(node, SSH_PORT)).port,) * 2,
    EPHEMERAL: lambda spec, node: None,
}


def _needs(node: Node | None, what: str) -> Node:
    if node is None:
        raise ValueError(f"{what} differs per node: which node?")
    return node


def _port_range(text: str) -> tuple[int, int]:
    first, last = text.split("-")
    return int(first), int(last)


def port_range(key: str, spec: ClusterSpec | None = None, node: Node | None = None) -> tuple[int, int] | None:
    row = BY_KEY[key]
    if isinstance(row.port, int):
        return row.port, row.port
    if spec is None:
        raise ValueError(f"the port of {key} is derived from the spec ({row.port})")
    return _DERIVED[row.port](spec, node)


def port(key: str, spec: ClusterSpec | None = None, node: Node | None = None) -> int:
    """The one port of `key` (a fixed number, or derived from `spec` and `node`)."""
    r = port_range(key, spec, node)
    if r is None or r[0] != r[1]:
        raise ValueError(f"{key} has no single port ({BY_KEY[key].port})")
    return r[0]


def address(key: str, node: Node | None = None) -> str:
    """The address `key` binds, as the components spell it."""
    bind = BY_KEY[key].bind
    return str(_needs(node, f"the address of {key}").address) if bind is Bind.node else bind.value


def host_port(key: str, spec: ClusterSpec | None = None, node: Node | None = None) -> str:
    return f"{address(key, node)}:{port(key, spec, node)}"


@dataclass(frozen=True)
class Expected:
    """A row of the table as it applies to one node."""

    row: Port
    ports: tuple[int, int] | None  # None: any port
    address: str

    def shows(self) -> str:
        p = "*" if self.ports is None else (
            str(self.ports[0]) if self.ports[0] == self.ports[1] else f"{self.ports[0]}-{self.ports[1]}")
        return f"{'/'.join(self.row.protocols)} {self.address}:{p}"


def node_ports(spec: ClusterSpec, node: Node) -> list[Expected]:
    """Every row that applies to `node`, resolved against the spec."""
    return [Expected(p, port_range(p.key, spec, node), address(p.key, node))
            for p in BY_KEY.values() if _RUNS_ON[p.runs_on](spec, node)]


# ---------------------------------------------------------------------------------------------
# the listener check: `ss -ltnupH` of a live node against the table


@dataclass(frozen=True)
class Listener:
    """One listening socket from `ss`."""

    protocol: str  # tcp or udp
    address: str  # as ss shows it, without brackets or %interface: *, 0.0.0.0, ::, 10.240.0.10
    port: int
    processes: tuple[str, ...]  # empty when ss could not say (not root, or no -p)

    def __str__(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        who = ",".join(dict.fromkeys(self.processes)) or "process unknown"
        return f"{self.protocol} {host}:{self.port} ({who})"


_PROCESS = re.compile(r'\("([^"]*)",pid=')
_STATE_PROTOCOL = {"LISTEN": TCP, "UNCONN": UDP}


def parse_ss(text: str) -> tuple[list[Listener], list[str]]:
    """The listeners in `ss -ltnupH` (or -ltnu, with or without -p and -H) output, and the
    lines that are not one."""
    out, bad = [], []
    for line in text.splitlines():
        fields = line.split()
        if not fields or fields[0] in ("Netid", "State"):  # blank, or a header
            continue
        if fields[0] in _STATE_PROTOCOL:  # one protocol asked for: no Netid column
            fields = [_STATE_PROTOCOL[fields[0]], *fields]
        try:
            protocol, local = fields[0], fields[4]
            host, _, number = local.rpartition(":")
            host = host.split("%", 1)[0].strip("[]")  # 127.0.0.53%lo, [fe80::1]%eth0
            if protocol not in (TCP, UDP) or not host:
                raise ValueError(line)
            out.append(Listener(protocol, host, int(number), tuple(_PROCESS.findall(" ".join(fields[6:])))))
        except (IndexError, ValueError):
            bad.append(line)
    return out, bad


_ANY_ADDRESSES = {"*", "0.0.0.0", "::"}


def _scope(addr: str) -> str:
    """`any`, `loopback`, or the address itself."""
    if addr in _ANY_ADDRESSES:
        return "any"
    ip = ipaddress.ip_address(addr)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return "loopback" if ip.is_loopback else str(ip)


def _binds_as_expected(e: Expected, listener: Listener) -> bool:
    want = {Bind.any: "any", Bind.loopback: "loopback"}.get(e.row.bind, e.address)
    return _scope(listener.address) == want


def _process_matches(row: Port, listener: Listener) -> bool:
    return row.process[:15] in listener.processes


def check_listeners(spec: ClusterSpec, node: Node, ss_output: str) -> list[str]:
    """What is wrong with `node`'s listening sockets (`ss -ltnupH`) against the table: a
    listener no row of the node's roles explains, one on the wrong address, one outside
    loopback whose access class is not allowed there, a required one missing. Empty: all well."""
    listeners, bad = parse_ss(ss_output)
    where = f"{node.name} ({','.join(r.value for r in node.roles)})"
    problems = [f"{where}: cannot read this line of ss: {line!r}" for line in bad]
    expected = node_ports(spec, node)
    seen: set[str] = set()
    for ln in listeners:
        here = [e for e in expected if ln.protocol in e.row.protocols
                and (e.ports is None or e.ports[0] <= ln.port <= e.ports[1])]
        if ln.processes:
            mine = [e for e in here if _process_matches(e.row, ln)]
            taken = [e for e in here if e.ports is not None]
            if taken and not mine:
                problems.append(f"{where}: {ln} holds the port of {', '.join(e.row.key for e in taken)} "
                                f"({', '.join(dict.fromkeys(e.row.process for e in taken))} in the ports table)")
                continue
            here = mine
        else:
            here = [e for e in here if e.ports is not None]  # an any-port row needs its process
        if not here:
            problems.append(f"{where}: {ln} is not in the ports table for this node "
                            f"(hardway.ports.PORTS; a stray service, or a row missing)")
            continue
        right = [e for e in here if _binds_as_expected(e, ln)]
        if not right:
            e = here[0]
            seen.add(e.row.key)  # there, on the wrong address: reported once, not also as missing
            problems.append(f"{where}: {ln} is {e.row.key} ({e.row.serves}), which must listen on "
                            f"{e.shows()} only ({e.row.access.value})")
            continue
        for e in right:
            seen.add(e.row.key)
            if _scope(ln.address) != "loopback" and e.row.access not in REMOTE_ACCESS:
                problems.append(f"{where}: {ln} is {e.row.key}, reachable from other hosts "
                                f"but its access class is {e.row.access.value}")
    for e in expected:
        if e.row.required and e.row.key not in seen:
            problems.append(f"{where}: nothing listens on {e.shows()} ({e.row.key}: {e.row.serves}; "
                            f"{e.row.unit})")
    return problems
