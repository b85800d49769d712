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
SpecPath = tuple[str | int, ...]


class Usage(str, Enum):
    ca = "ca"
    server = "server"
    client = "client"
    both = "server+client"


@dataclass(frozen=True)
class Origin:
    """A name in a certificate (CN, O or DNS SAN) built from a spec field: validation bounds
    every such name and blames the field (spec/checks.py)."""

    name: str  # as it appears in the certificate, e.g. "system:node:worker-0"
    field: SpecPath  # the spec field it is built from, e.g. ("nodes", 2, "name")
    value: str  # that field's value, e.g. "worker-0"


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
    origins: tuple[Origin, ...] = field(default=(), compare=False)
    # A self-signed twin of that CA: its subject and its key (no key of its own), signed by that
    # key, valid exactly as long. OpenSSL wants a self-signed trust anchor; the twin anchors
    # exactly what that CA signs, as the CA itself does for Go clients (which accept a
    # non-self-signed anchor).
    twin_of: str | None = None

    @property
    def is_ca(self) -> bool:
        return self.usage is Usage.ca

    @property
    def key_name(self) -> str:
        """The profile whose key file this certificate's key is (a twin has none of its own)."""
        return self.twin_of or self.name

    @property
    def depends_on(self) -> str | None:
        """What must be sound before this certificate can be: its issuer, or its twin's CA."""
        return self.issuer or self.twin_of

    @property
    def sans(self) -> tuple[str, ...]:
        return self.dns_names + tuple(str(ip) for ip in self.ips)


ROOT_CA = "root-ca"
CA = "ca"
CA_CN = "kubernetes-ca"
CA_ANCHOR = "ca-anchor"  # the self-signed twin of `ca` (root layout, where HAProxy runs)
ETCD_CA = "etcd-ca"
FRONT_PROXY_CA = "front-proxy-ca"
SERVICE_ACCOUNT = "sa"  # a key pair, not a certificate: see store.py


def _dedupe(items: list) -> tuple:
    return tuple(dict.fromkeys(items))


def certificate_plan(spec: ClusterSpec) -> list[CertProfile]:
    """Every certificate the cluster needs, CAs first, in a stable order."""
    controllers = [n.name for n in spec.controllers]
    api_dns = _apiserver_dns(spec)
    root = spec.pki.layout == "root"
    ca_issuer = ROOT_CA if root else None
    # The nodes that run HAProxy (and keepalived's check): they probe the apiservers.
    lb_hosts = [spec.lb_node.name] if spec.lb_node else []
    if spec.load_balancer.mode.value == "keepalived":
        lb_hosts = list(controllers)
    plan: list[CertProfile] = []
    if root:
        cn = f"{spec.name}-root-ca"
        plan.append(
            CertProfile(ROOT_CA, None, cn, Usage.ca,
                        "offline trust anchor: signs the three CAs below (never leaves the operator)",
                        origins=(Origin(cn, ("name",), spec.name),))
        )
    plan += [
        CertProfile(CA, ca_issuer, CA_CN, Usage.ca,
                    "cluster CA: signs component and user certificates; the controller manager signs CSRs with it",
                    nodes=tuple(controllers)),
        CertProfile(ETCD_CA, ca_issuer, "etcd-ca", Usage.ca,
                    "etcd CA: trusted only by etcd, so a Kubernetes client cert cannot talk to etcd"),
        CertProfile(FRONT_PROXY_CA, ca_issuer, "front-proxy-ca", Usage.ca,
                    "front-proxy CA: authenticates the apiserver to aggregated API servers"),
    ]
    if root and lb_hosts:
        # HAProxy verifies each apiserver with OpenSSL, which accepts only a self-signed anchor
        # (its `ca-file`): the intermediate `ca` is not one, and the root would also let a
        # certificate of another domain (etcd-ca's, under the same root) pass. The twin has
        # ca's subject and key, so exactly what `ca` signs chains to it. In the flat layout
        # `ca` is self-signed already.
        plan.append(
            CertProfile(CA_ANCHOR, None, CA_CN, Usage.ca,
                        "self-signed twin of ca (its subject and key, signed by that key): the anchor "
                        "OpenSSL clients (HAProxy, keepalived's check) trust for what ca signs",
                        nodes=tuple(lb_hosts), twin_of=CA)
        )
    plan += [
        CertProfile("apiserver", CA, "kube-apiserver", Usage.server,
                    "kube-apiserver serving certificate", dns_names=tuple(o.name for o in api_dns),
                    ips=_apiserver_ips(spec), nodes=tuple(controllers),
                    origins=tuple(o for o in api_dns if o.field)),
        CertProfile("apiserver-kubelet-client", CA, "kube-apiserver-kubelet-client", Usage.client,
                    "apiserver -> kubelet (logs, exec, port-forward); bound to a ClusterRole for nodes/proxy",
                    nodes=tuple(controllers)),
        CertProfile("apiserver-etcd-client", ETCD_CA, "kube-apiserver-etcd-client", Usage.client,
                    "apiserver -> etcd", nodes=tuple(controllers)),
        CertProfile("front-proxy-client", FRONT_PROXY_CA, "front-proxy-client", Usage.client,
                    "apiserver -> aggregated API servers (metrics-server)", nodes=tuple(controllers)),
    ]
    for node in spec.workers:
        cn = f"system:node:{node.name}"
        plan.append(
            CertProfile(f"kubelet-{node.name}", CA, cn, Usage.both,
                        "kubelet: client to the apiserver (Node authorizer) and its own HTTPS server",
                        orgs=("system:nodes",), dns_names=(node.name,), ips=(node.address,),
                        nodes=(node.name,), origins=(_of_node(spec, node, cn), _of_node(spec, node, node.name)))
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
    if lb_hosts:
        plan.append(
            CertProfile("healthcheck", CA, "hardway:healthcheck", Usage.client,
                        "HAProxy and keepalived probing /readyz (no rights beyond health endpoints)",
                        nodes=tuple(lb_hosts))
        )
    for member in spec.etcd_members:
        named = (_of_node(spec, member, member.name),)
        plan += [
            CertProfile(f"etcd-server-{member.name}", ETCD_CA, member.name, Usage.both,
                        "etcd client-facing server certificate",
                        dns_names=(member.name, "localhost"),
                        ips=(member.address, ipaddress.IPv4Address("127.0.0.1")),
                        nodes=(member.name,), origins=named),
            # etcd (>= 3.2) checks a peer's *source* address against its certificate's
            # SANs. Members sharing a host (the loopback test cluster) connect from
            # 127.0.0.1, so the loopback names are in peer certificates too.
            CertProfile(f"etcd-peer-{member.name}", ETCD_CA, member.name, Usage.both,
                        "etcd member <-> member (raft) certificate",
                        dns_names=(member.name, "localhost"),
                        ips=(member.address, ipaddress.IPv4Address("127.0.0.1")),
                        nodes=(member.name,), origins=named),
        ]
    plan.append(
        CertProfile("etcd-admin", ETCD_CA, "etcd-admin", Usage.client,
                    "etcdctl for the operator and for health checks", nodes=tuple(controllers))
    )
    return plan


def _of_node(spec: ClusterSpec, node: Node, name: str) -> Origin:
    index = next(i for i, n in enumerate(spec.nodes) if n is node)
    return Origin(name, ("nodes", index, "name"), node.name)


def _apiserver_dns(spec: ClusterSpec) -> tuple[Origin, ...]:
    """The apiserver's DNS SANs, each with the spec field it comes from (none: a constant)."""
    domain = spec.network.cluster_domain
    names = [Origin(n, (), n) for n in ("kubernetes", "kubernetes.default", "kubernetes.default.svc")]
    names.append(Origin(f"kubernetes.default.svc.{domain}", ("network", "clusterDomain"), domain))
    names += [_of_node(spec, n, n.name) for n in spec.controllers]
    if spec.lb_name:
        given = spec.load_balancer.name
        names.append(Origin(spec.lb_name, ("loadBalancer", "name") if given else ("name",), given or spec.name))
    lb = spec.lb_node
    if lb is not None:
        names.append(_of_node(spec, lb, lb.name))
    names.append(Origin("localhost", (), "localhost"))
    first: dict[str, Origin] = {}
    for o in names:
        first.setdefault(o.name, o)
    return tuple(first.values())


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


def openssl_anchor(spec: ClusterSpec, ca: str = CA) -> str:
    """The certificate an OpenSSL client trusts for what `ca` signs: its self-signed twin when
    the table has one (root layout), else `ca` itself (self-signed in the flat layout)."""
    return next((p.name for p in certificate_plan(spec) if p.twin_of == ca), ca)
