"""Rules that relate several fields of a parsed spec. Pure: spec in, problems out.

All problems are collected, so a user fixes a file in one pass, not one error per run.
"""

from __future__ import annotations

import ipaddress
import difflib
from collections import Counter
from dataclasses import dataclass
from itertools import combinations
from pathlib import PurePosixPath

from ..artifacts.layout import downloads_for_spec
from ..pki.profiles import certificate_plan
from .model import DNS_NAME_MAX, ClusterSpec, LoadBalancerMode, Role


@dataclass(frozen=True)
class Problem:
    path: tuple[str | int, ...]
    message: str
    error: bool = True


def check_spec(spec: ClusterSpec) -> list[Problem]:
    out: list[Problem] = []
    out += _nodes(spec)
    out += _networks(spec)
    out += _pod_cidrs(spec)
    out += _load_balancer(spec)
    out += _certificates(spec)
    out += _artifacts(spec)
    out += _misc(spec)
    out += _artifact_pins(spec)
    return out


def _nodes(spec: ClusterSpec) -> list[Problem]:
    out: list[Problem] = []
    for attr, what in (("name", "name"), ("address", "address")):
        counts = Counter(getattr(n, attr) for n in spec.nodes)
        for i, n in enumerate(spec.nodes):
            value = getattr(n, attr)
            if counts[value] > 1:
                first = next(j for j, m in enumerate(spec.nodes) if getattr(m, attr) == value)
                if first != i:
                    out.append(
                        Problem(
                            ("nodes", i, attr),
                            f"duplicate node {what} {str(value)!r} (also nodes[{first}])",
                        )
                    )
    for i, n in enumerate(spec.nodes):
        if len(set(n.roles)) != len(n.roles):
            out.append(Problem(("nodes", i, "roles"), "a role is listed twice"))
        if n.has(Role.lb) and n.has(Role.controller):
            out.append(
                Problem(
                    ("nodes", i, "roles"),
                    "a node cannot be both lb and controller: HAProxy and the apiserver would "
                    "both want port 6443; use loadBalancer.mode: keepalived for LB on controllers",
                )
            )
    if not spec.controllers:
        out.append(Problem(("nodes",), "no node has the role controller; add one"))
    elif len(spec.etcd_members) % 2 == 0:
        out.append(
            Problem(
                ("nodes",),
                f"{len(spec.etcd_members)} etcd members (one per controller): an even number "
                "tolerates no more failures than one fewer; use an odd number",
                error=False,
            )
        )
    if not spec.workers:
        out.append(
            Problem(("nodes",), "no node has the role worker: nothing can run pods", error=False)
        )
    return out


def _networks(spec: ClusterSpec) -> list[Problem]:
    out: list[Problem] = []
    net = spec.network
    subnet = spec.node_subnet
    named = {
        ("network", "nodeSubnet"): subnet,
        ("network", "podCIDR"): net.pod_cidr,
        ("network", "serviceCIDR"): net.service_cidr,
    }
    for (pa, a), (pb, b) in combinations(named.items(), 2):
        if a.overlaps(b):
            label = "" if net.node_subnet is not None or "nodeSubnet" not in pa else " (derived)"
            out.append(
                Problem(pb, f"{b} overlaps {pa[-1]} {a}{label}; the networks must be disjoint")
            )
    for i, n in enumerate(spec.nodes):
        if n.address not in subnet:
            hint = "" if net.node_subnet else " (derived from the first node; set network.nodeSubnet)"
            out.append(
                Problem(("nodes", i, "address"), f"{n.address} is outside the node subnet {subnet}{hint}")
            )
        elif n.address in (subnet.network_address, subnet.broadcast_address):
            out.append(
                Problem(("nodes", i, "address"), f"{n.address} is the network or broadcast address of {subnet}")
            )
    if net.service_cidr.prefixlen < 12:
        out.append(
            Problem(("network", "serviceCIDR"), "the apiserver accepts at most a /12 service CIDR")
        )
    dns = spec.cluster_dns
    if net.service_cidr.prefixlen > MIN_SERVICE_CIDR:
        out.append(
            Problem(
                ("network", "serviceCIDR"),
                f"a /{net.service_cidr.prefixlen} is too small: the apiserver refuses fewer than 8 "
                "addresses, the kubernetes service takes the 1st and cluster DNS the 10th; use at least "
                f"a /{MIN_SERVICE_CIDR} (16 addresses, 12 left for services), usually a /24 or larger",
            )
        )
    elif dns not in net.service_cidr:
        out.append(
            Problem(
                ("network", "clusterDNS"),
                f"cluster DNS IP {dns} is outside the service CIDR {net.service_cidr}",
            )
        )
    elif dns in (net.service_cidr.network_address, spec.kubernetes_service_ip):
        out.append(
            Problem(
                ("network", "clusterDNS"),
                f"{dns} is reserved (network address or the kubernetes service IP); pick another",
            )
        )
    lo, _, hi = net.service_node_port_range.partition("-")
    if not 1 <= int(lo) < int(hi) <= 65535:
        out.append(
            Problem(("network", "serviceNodePortRange"), "must be LOW-HIGH with 1 <= LOW < HIGH <= 65535")
        )
    return out


def _pod_cidrs(spec: ClusterSpec) -> list[Problem]:
    out: list[Problem] = []
    net = spec.network
    if net.node_pod_cidr_mask_size < net.pod_cidr.prefixlen:
        out.append(
            Problem(
                ("network", "nodePodCIDRMaskSize"),
                f"/{net.node_pod_cidr_mask_size} is larger than the pod CIDR {net.pod_cidr}",
            )
        )
        return out
    taken: dict[ipaddress.IPv4Network, int] = {}
    for i, n in enumerate(spec.nodes):
        if n.pod_cidr is not None and not n.has(Role.worker):
            out.append(Problem(("nodes", i, "podCIDR"), "only workers run pods; remove podCIDR"))
            continue
        if not n.has(Role.worker):
            continue
        cidr = spec.pod_cidr(n)
        path = ("nodes", i, "podCIDR")
        if cidr is None:
            out.append(
                Problem(
                    ("nodes", i, "address"),
                    f"cannot derive a /{net.node_pod_cidr_mask_size} pod CIDR from {n.address}: "
                    f"its offset in {spec.node_subnet} exceeds the subnets of {net.pod_cidr}; "
                    "set nodes[].podCIDR explicitly",
                )
            )
            continue
        if not cidr.subnet_of(net.pod_cidr):
            out.append(Problem(path, f"{cidr} is not inside network.podCIDR {net.pod_cidr}"))
        for other, j in taken.items():
            if cidr.overlaps(other):
                out.append(Problem(path, f"pod CIDR {cidr} overlaps that of nodes[{j}] ({other})"))
        taken[cidr] = i
    return out


def _load_balancer(spec: ClusterSpec) -> list[Problem]:
    out: list[Problem] = []
    lb = spec.load_balancer
    lb_nodes = [i for i, n in enumerate(spec.nodes) if n.has(Role.lb)]
    if lb.mode is LoadBalancerMode.haproxy:
        if not lb_nodes:
            out.append(
                Problem(("loadBalancer", "mode"), "mode haproxy needs a node with the role lb")
            )
        for i in lb_nodes[1:]:
            out.append(Problem(("nodes", i, "roles"), "only one node may have the role lb"))
    elif lb_nodes:
        out.append(
            Problem(
                ("nodes", lb_nodes[0], "roles"),
                f"role lb is used only with loadBalancer.mode: haproxy (mode is {lb.mode.value})",
            )
        )
    if lb.mode is LoadBalancerMode.keepalived:
        if lb.vip is None:
            out.append(Problem(("loadBalancer", "vip"), "mode keepalived needs a vip"))
        if len(spec.controllers) < 2:
            out.append(
                Problem(
                    ("loadBalancer", "mode"),
                    "a keepalived VIP over fewer than 2 controllers fails over to nothing",
                    error=False,
                )
            )
    elif lb.vip is not None:
        out.append(
            Problem(("loadBalancer", "vip"), f"vip is used only with mode keepalived (mode is {lb.mode.value})")
        )
    if lb.vip is not None:
        subnet = spec.node_subnet
        if lb.vip not in subnet:
            out.append(Problem(("loadBalancer", "vip"), f"VIP {lb.vip} is outside the node subnet {subnet}"))
        elif lb.vip in (subnet.network_address, subnet.broadcast_address):
            out.append(Problem(("loadBalancer", "vip"), f"VIP {lb.vip} is the network or broadcast address"))
        for i, n in enumerate(spec.nodes):
            if n.address == lb.vip:
                out.append(
                    Problem(("loadBalancer", "vip"), f"VIP {lb.vip} is the address of nodes[{i}] ({n.name})")
                )
    if lb.port is not None and lb.mode is LoadBalancerMode.keepalived and lb.port == 6443:
        out.append(
            Problem(
                ("loadBalancer", "port"),
                "with keepalived, HAProxy runs beside the apiserver, which owns 6443; pick another port (default 8443)",
            )
        )
    return out


# The smallest service CIDR: the apiserver refuses fewer than 8 addresses (a /29), and the
# default cluster DNS address is the 10th, which a /29 lacks.
MIN_SERVICE_CIDR = 28

# RFC 5280 upper bounds (ub-common-name, ub-organization-name); cryptography refuses a
# longer CN, so `pki init` would fail half-way. DNS SANs follow RFC 1035.
SUBJECT_BOUNDS = {"CN": 64, "O": 64}
DNS_LABEL_MAX = 63


def _overlong(kind: str, name: str) -> tuple[int, int, str] | None:
    """(length, bound, which rule) when `name` breaks its bound as a `kind`, else None."""
    if kind in SUBJECT_BOUNDS:
        bound = SUBJECT_BOUNDS[kind]
        return (len(name), bound, f"X.509 allows a {kind} of at most {bound}") if len(name) > bound else None
    if len(name) > DNS_NAME_MAX:
        return len(name), DNS_NAME_MAX, f"a DNS name has at most {DNS_NAME_MAX}"
    label = max(name.split("."), key=len)
    if len(label) > DNS_LABEL_MAX:
        return len(label), DNS_LABEL_MAX, f"a DNS label ({label!r}) has at most {DNS_LABEL_MAX}"
    return None


def _certificates(spec: ClusterSpec) -> list[Problem]:
    """Every name the certificate table derives from the spec fits X.509 and DNS, checked
    against the table itself (pki/profiles.py), so a new row is bounded too; and no leaf
    outlives its CA."""
    out: list[Problem] = []
    pki = spec.pki
    if pki.cert_validity_days > pki.ca_validity_days:
        out.append(
            Problem(
                ("pki", "certValidityDays"),
                f"{pki.cert_validity_days} days is longer than caValidityDays ({pki.ca_validity_days}): "
                "a certificate must not outlive the CA that signs it (clients reject it once the CA "
                "expires); make it at most caValidityDays",
            )
        )
    seen: set[tuple] = set()
    for p in certificate_plan(spec):
        origins = {o.name: o for o in p.origins}
        names = [("CN", p.cn), *(("O", o) for o in p.orgs), *(("DNS name", d) for d in p.dns_names)]
        for kind, name in names:
            bad = _overlong(kind, name)
            if bad is None:
                continue
            length, bound, rule = bad
            o = origins.get(name)
            if o is None:  # a constant of the table: hardway's own mistake
                out.append(Problem((), f"certificate {p.name}: {kind} {name!r} is too long ({rule}); a hardway bug"))
                continue
            key = (o.field, kind, name)
            if key in seen:
                continue
            seen.add(key)
            out.append(
                Problem(
                    o.field,
                    f"{o.value!r} is too long: certificate {p.name} would carry the {kind} {name!r}, "
                    f"{length} characters, and {rule}; use at most {len(o.value) - (length - bound)} "
                    "characters here",
                )
            )
    return out


def _artifacts(spec: ClusterSpec) -> list[Problem]:
    out: list[Problem] = []
    stems: dict[str, int] = {}
    for i, entry in enumerate(spec.artifacts.images):
        stem = PurePosixPath(entry).name.removesuffix(".tar")
        if stem in stems:
            out.append(
                Problem(
                    ("artifacts", "images", i),
                    f"{entry!r} would be stored as images/{stem}.tar on every node, like "
                    f"artifacts.images[{stems[stem]}]; rename one of the files",
                )
            )
        stems.setdefault(stem, i)
    return out


def _misc(spec: ClusterSpec) -> list[Problem]:
    out: list[Problem] = []
    major = int(spec.artifacts.versions.containerd.split(".")[0])
    if major not in (1, 2):
        out.append(
            Problem(("artifacts", "versions", "containerd"), "containerd 1.x and 2.x are supported")
        )
    if spec.pki.key_type == "ed25519":
        out.append(
            Problem(
                ("pki", "keyType"),
                "ed25519 certificates work with Go's TLS but no mainstream installer uses them; "
                "some add-ons (CNI plugins, FIPS builds) reject them",
                error=False,
            )
        )
    if spec.kube_proxy.mode == "ipvs":
        out.append(
            Problem(
                ("kubeProxy", "mode"),
                "ipvs mode needs the ip_vs kernel modules on every worker",
                error=False,
            )
        )
    return out


def _artifact_pins(spec: ClusterSpec) -> list[Problem]:
    """A pin must name a fetched artifact: a mistyped key would leave the file unpinned."""
    keys = sorted(d.key for d in downloads_for_spec(spec))
    out = []
    for key in spec.artifacts.digests:
        if key not in keys:
            close = difflib.get_close_matches(key, keys, n=1, cutoff=0.5)
            hint = f"did you mean {close[0]!r}? " if close else ""
            out.append(Problem(("artifacts", "digests", key),
                               f"this spec fetches no artifact {key!r}; {hint}the keys are: {', '.join(keys)}"))
    return out
