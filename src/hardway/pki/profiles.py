"""THE certificate table: one row per certificate, derived from the spec. Pure data.

The issuer walks this list in order (CAs first). Identities follow Kubernetes' conventions:
the CN is the user and each O a group (the Node authorizer needs system:node:<name> in
system:nodes; kube-proxy is bound by the default system:node-proxier role; the controller
manager and scheduler have default roles bound to their CNs; admin is in system:masters).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from enum import Enum

from ..spec.model import ClusterSpec, Node

IP = ipaddress.IPv4Address | ipaddress.IPv6Address


class Usage(str, Enum):
    ca = "ca"
    server = "server"
    client = "client"
    both = "server+client"


@dataclass(frozen=True)
class CertProfile:
    name: str  # file stem in pki/, e.g. "kubelet-worker-0"
    issuer: str | None  # name of the signing CA's profile; None: self-signed
    cn: str
    usage: Usage
    purpose: str
    orgs: tuple[str, ...] = ()
    dns_names: tuple[str, ...] = ()
    ips: tuple[IP, ...] = ()
    # Nodes whose bundle carries this certificate and its key.
    nodes: tuple[str, ...] = field(default=(), compare=False)

    @property
    def is_ca(self) -> bool:
        return self.usage is Usage.ca

    @property
    def sans(self) -> tuple[str, ...]:
        return self.dns_names + tuple(str(ip) for ip in self.ips)


ROOT_CA = "root-ca"
CA = "ca"
ETCD_CA = "etcd-ca"
FRONT_PROXY_CA = "front-proxy-ca"
SERVICE_ACCOUNT = "sa"  # a key pair, not a certificate: see store.py


def _dedupe(items: list) -> tuple:
    return tuple(dict.fromkeys(items))


def certificate_plan(spec: ClusterSpec) -> list[CertProfile]:
    """Every certificate the cluster needs, CAs first, in a stable order."""
    controllers = [n.name for n in spec.controllers]
    root = spec.pki.layout == "root"
    ca_issuer = ROOT_CA if root else None
    plan: list[CertProfile] = []
    if root:
        plan.append(
            CertProfile(ROOT_CA, None, f"{spec.name}-root-ca", Usage.ca,
                        "offline trust anchor: signs the three CAs below (never leaves the operator)")
        )
    plan += [
        CertProfile(CA, ca_issuer, "kubernetes-ca", Usage.ca,
                    "cluster CA: signs component and user certificates; the controller manager signs CSRs with it",
                    nodes=tuple(controllers)),
        CertProfile(ETCD_CA, ca_issuer, "etcd-ca", Usage.ca,
                    "etcd CA: trusted only by etcd, so a Kubernetes client cert cannot talk to etcd"),
        CertProfile(FRONT_PROXY_CA, ca_issuer, "front-proxy-ca", Usage.ca,
                    "front-proxy CA: authenticates the apiserver to aggregated API servers"),
        CertProfile("apiserver", CA, "kube-apiserver", Usage.server,
                    "kube-apiserver serving certificate", dns_names=_apiserver_dns(spec),
                    ips=_apiserver_ips(spec), nodes=tuple(controllers)),
        CertProfile("apiserver-kubelet-client", CA, "kube-apiserver-kubelet-client", Usage.client,
                    "apiserver -> kubelet (logs, exec, port-forward); bound to a ClusterRole for nodes/proxy",
                    nodes=tuple(controllers)),
        CertProfile("apiserver-etcd-client", ETCD_CA, "kube-apiserver-etcd-client", Usage.client,
                    "apiserver -> etcd", nodes=tuple(controllers)),
        CertProfile("front-proxy-client", FRONT_PROXY_CA, "front-proxy-client", Usage.client,
                    "apiserver -> aggregated API servers (metrics-server)", nodes=tuple(controllers)),
    ]
    for node in spec.workers:
        plan.append(
            CertProfile(f"kubelet-{node.name}", CA, f"system:node:{node.name}", Usage.both,
                        "kubelet: client to the apiserver (Node authorizer) and its own HTTPS server",
                        orgs=("system:nodes",), dns_names=(node.name,), ips=(node.address,),
                        nodes=(node.name,))
        )
    plan += [
        CertProfile("kube-proxy", CA, "system:kube-proxy", Usage.client,
                    "kube-proxy -> apiserver (bound to system:node-proxier)",
                    orgs=("system:node-proxier",), nodes=tuple(n.name for n in spec.workers)),
        CertProfile("kube-controller-manager", CA, "system:kube-controller-manager", Usage.client,
                    "controller manager -> apiserver", nodes=tuple(controllers)),
        CertProfile("kube-scheduler", CA, "system:kube-scheduler", Usage.client,
                    "scheduler -> apiserver", nodes=tuple(controllers)),
        CertProfile("admin", CA, "admin", Usage.client,
                    "the operator's kubectl identity (system:masters: unrestricted)",
                    orgs=("system:masters",)),
    ]
    lb_hosts = [spec.lb_node.name] if spec.lb_node else []
    if spec.load_balancer.mode.value == "keepalived":
        lb_hosts = list(controllers)
    if lb_hosts:
        plan.append(
            CertProfile("healthcheck", CA, "hardway:healthcheck", Usage.client,
                        "HAProxy and keepalived probing /readyz (no rights beyond health endpoints)",
                        nodes=tuple(lb_hosts))
        )
    for member in spec.etcd_members:
        plan += [
            CertProfile(f"etcd-server-{member.name}", ETCD_CA, member.name, Usage.both,
                        "etcd client-facing server certificate",
                        dns_names=(member.name, "localhost"),
                        ips=(member.address, ipaddress.IPv4Address("127.0.0.1")),
                        nodes=(member.name,)),
            # etcd (>= 3.2) checks a peer's *source* address against its certificate's
            # SANs. Members sharing a host (the loopback test cluster) connect from
            # 127.0.0.1, so the loopback names are in peer certificates too.
            CertProfile(f"etcd-peer-{member.name}", ETCD_CA, member.name, Usage.both,
                        "etcd member <-> member (raft) certificate",
                        dns_names=(member.name, "localhost"),
                        ips=(member.address, ipaddress.IPv4Address("127.0.0.1")),
                        nodes=(member.name,)),
        ]
    plan.append(
        CertProfile("etcd-admin", ETCD_CA, "etcd-admin", Usage.client,
                    "etcdctl for the operator and for health checks", nodes=tuple(controllers))
    )
    return plan


def _apiserver_dns(spec: ClusterSpec) -> tuple[str, ...]:
    domain = spec.network.cluster_domain
    names = ["kubernetes", "kubernetes.default", "kubernetes.default.svc",
             f"kubernetes.default.svc.{domain}"]
    names += [n.name for n in spec.controllers]
    if spec.lb_name:
        names.append(spec.lb_name)
    lb = spec.lb_node
    if lb is not None:
        names.append(lb.name)
    names.append("localhost")
    return _dedupe(names)


def _apiserver_ips(spec: ClusterSpec) -> tuple[IP, ...]:
    ips: list[IP] = [spec.kubernetes_service_ip]
    ips += [n.address for n in spec.controllers]
    if spec.load_balancer.vip is not None:
        ips.append(spec.load_balancer.vip)
    lb: Node | None = spec.lb_node
    if lb is not None:
        ips.append(lb.address)
    ips.append(ipaddress.IPv4Address("127.0.0.1"))
    return _dedupe(ips)


def profiles_by_name(spec: ClusterSpec) -> dict[str, CertProfile]:
    return {p.name: p for p in certificate_plan(spec)}
