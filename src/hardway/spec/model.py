"""The cluster spec: what `cluster.yaml` may say.

Field-level rules (types, enums, DNS labels, addresses) live here as pydantic types, so
pydantic reports all of them at once with their location. Rules that relate several fields
(overlapping networks, duplicate names, the VIP) live in `checks.py`, which also reports all
problems at once. Keys are camelCase in YAML, snake_case in Python.
"""

from __future__ import annotations

import ipaddress
import re
from enum import Enum
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def _dns_label(value: str) -> str:
    if not DNS1123_LABEL.match(value):
        raise ValueError(
            f"{value!r} is not a DNS-1123 label: use at most 63 lowercase letters, digits "
            "and '-', starting and ending with a letter or digit"
        )
    return value


def _version(value: str) -> str:
    if not re.fullmatch(r"v?\d+\.\d+\.\d+", value):
        raise ValueError(f"{value!r} is not a version like 1.20.2")
    return value.lstrip("v")


def _sha256_pin(value: str) -> str:
    if not re.fullmatch(r"sha256:[0-9a-fA-F]{64}", value):
        raise ValueError(f"{value!r} is not a digest like sha256:<64 hex digits>")
    return value.lower()


DnsLabel = Annotated[str, AfterValidator(_dns_label)]
Version = Annotated[str, AfterValidator(_version)]
Sha256Pin = Annotated[str, AfterValidator(_sha256_pin)]


class Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=True,
    )


class Role(str, Enum):
    controller = "controller"  # etcd member + apiserver + controller manager + scheduler
    worker = "worker"  # containerd + kubelet + kube-proxy
    lb = "lb"  # HAProxy in front of the apiservers (loadBalancer.mode: haproxy)


class Ssh(Model):
    user: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    key: str | None = None


class Node(Model):
    name: DnsLabel
    address: ipaddress.IPv4Address
    roles: list[Role] = Field(min_length=1)
    pod_cidr: ipaddress.IPv4Network | None = Field(default=None, alias="podCIDR")
    ssh: Ssh = Ssh()

    def has(self, role: Role) -> bool:
        return role in self.roles


def _supported(value: str) -> str:
    from . import versions  # the catalogue; imported late to keep model.py light

    if not versions.is_supported(value):
        supported = ", ".join(f"{m}.x" for m in versions.SUPPORTED_MINORS)
        raise ValueError(f"Kubernetes {value} is not supported; supported: {supported}")
    return value


class Kubernetes(Model):
    version: Annotated[Version, AfterValidator(_supported)]


class Network(Model):
    pod_cidr: ipaddress.IPv4Network = Field(
        default=ipaddress.IPv4Network("10.200.0.0/16"), alias="podCIDR"
    )
    service_cidr: ipaddress.IPv4Network = Field(
        default=ipaddress.IPv4Network("10.32.0.0/24"), alias="serviceCIDR"
    )
    cluster_domain: str = "cluster.local"
    # The subnet the node addresses live in. Absent: the /24 around the first node.
    node_subnet: ipaddress.IPv4Network | None = None
    # Absent: the tenth address of the service CIDR (KTHW's 10.32.0.10).
    cluster_dns: ipaddress.IPv4Address | None = Field(default=None, alias="clusterDNS")
    # Size of the pod CIDR derived for a node that does not set one.
    node_pod_cidr_mask_size: int = Field(default=24, ge=8, le=30, alias="nodePodCIDRMaskSize")
    service_node_port_range: str = Field(default="30000-32767", pattern=r"^\d+-\d+$")


class LoadBalancerMode(str, Enum):
    none = "none"
    haproxy = "haproxy"
    keepalived = "keepalived"


class LoadBalancer(Model):
    mode: LoadBalancerMode = LoadBalancerMode.none
    vip: ipaddress.IPv4Address | None = None
    # Port clients use to reach the API through the LB/VIP. Absent: 6443 on a dedicated lb
    # node; 8443 with keepalived, because HAProxy shares each controller with an apiserver
    # that already owns 6443.
    port: int | None = Field(default=None, ge=1, le=65535)
    # DNS name put in the apiserver certificate for the LB/VIP. Absent: "<name>-api".
    name: DnsLabel | None = None
    # keepalived: the network interface on the controllers that carries the node subnet.
    interface: str = Field(default="eth0", pattern=r"^[A-Za-z0-9_.:-]{1,15}$")
    # keepalived VRRP router id, unique on the L2 segment.
    virtual_router_id: int = Field(default=51, ge=1, le=255)


KeyType = Literal["ecdsa-p256", "rsa-2048", "rsa-4096", "ed25519"]


class Pki(Model):
    key_type: KeyType = "ecdsa-p256"
    # Kubernetes signs service-account tokens with RSA or ECDSA only; RSA is the most
    # widely accepted by external token consumers.
    service_account_key_type: Literal["rsa-2048", "rsa-4096", "ecdsa-p256"] = "rsa-2048"
    ca_validity_days: int = Field(default=3650, ge=1)
    cert_validity_days: int = Field(default=365, ge=1)
    # flat: three self-signed CAs. root: one root CA signing the three as intermediates.
    layout: Literal["flat", "root"] = "flat"


class Encryption(Model):
    provider: Literal["aescbc", "secretbox", "aesgcm"] = "aescbc"


class ContainerRuntime(Model):
    # Nested hosts (containers, the hardway lab) cannot lower oom_score_adj; runc then fails
    # every sandbox unless containerd stops asking for it.
    restrict_oom_score_adj: bool = Field(default=False, alias="restrictOOMScoreAdj")
    cgroup_driver: Literal["systemd", "cgroupfs"] = "systemd"


class Kubelet(Model):
    # "{node}" is replaced by the node name: nested nodes sharing one cgroup tree need one each.
    cgroup_root: str | None = None
    resolv_conf: str = "/etc/resolv.conf"
    max_pods: int = Field(default=110, ge=1)
    # KubeletConfiguration failCgroupV1 (1.31+; true by default from 1.35, when the kubelet
    # refuses to start on a cgroup v1 host). None: the kubelet's default. Not rendered for
    # minors without the field, which run on cgroup v1 anyway.
    fail_cgroup_v1: bool | None = Field(default=None, alias="failCgroupV1")


class KubeProxy(Model):
    mode: Literal["iptables", "ipvs"] = "iptables"
    # None leaves kube-proxy's default; 0 stops it raising the global nf_conntrack_max,
    # which a node in a network namespace may not do.
    conntrack_max_per_core: int | None = Field(default=None, ge=0)


class ArtifactVersions(Model):
    etcd: Version = "3.4.23"
    containerd: Version = "1.6.20"
    runc: Version = "1.1.5"
    cni_plugins: Version = Field(default="1.1.1", alias="cniPlugins")
    coredns: Version | None = None  # absent: the version kubeadm pins for the minor
    pause_image: str | None = None  # absent: registry.k8s.io/pause:<kubeadm's tag>


class Artifacts(Model):
    # A URL laid out like the upstream release sites, or a local directory with that layout.
    mirror: str | None = None
    versions: ArtifactVersions = ArtifactVersions()
    # OCI image tarballs to import into containerd on every node (clusters without a registry).
    images: list[str] = []
    # Download key ("kubernetes-server/kubelet", "etcd", "image/pause-3.2") -> "sha256:<hex>":
    # the file must have this digest, whatever the source's checksum file says.
    digests: dict[str, Sha256Pin] = {}


class ClusterSpec(Model):
    name: DnsLabel
    kubernetes: Kubernetes
    nodes: list[Node] = Field(min_length=1)
    network: Network = Network()
    load_balancer: LoadBalancer = LoadBalancer()
    ssh: Ssh = Ssh()
    pki: Pki = Pki()
    encryption: Encryption = Encryption()
    container_runtime: ContainerRuntime = ContainerRuntime()
    kubelet: Kubelet = Kubelet()
    kube_proxy: KubeProxy = KubeProxy()
    artifacts: Artifacts = Artifacts()

    # ---- derived views (pure; no I/O) ----

    def with_role(self, role: Role) -> list[Node]:
        return [n for n in self.nodes if n.has(role)]

    @property
    def controllers(self) -> list[Node]:
        return self.with_role(Role.controller)

    @property
    def workers(self) -> list[Node]:
        return self.with_role(Role.worker)

    @property
    def etcd_members(self) -> list[Node]:
        return self.controllers

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    @property
    def minor(self) -> str:
        major, minor, _ = self.kubernetes.version.split(".")
        return f"{major}.{minor}"

    @property
    def node_subnet(self) -> ipaddress.IPv4Network:
        if self.network.node_subnet is not None:
            return self.network.node_subnet
        return ipaddress.IPv4Network(f"{self.nodes[0].address}/24", strict=False)

    @property
    def cluster_dns(self) -> ipaddress.IPv4Address:
        if self.network.cluster_dns is not None:
            return self.network.cluster_dns
        return self.network.service_cidr.network_address + 10

    @property
    def kubernetes_service_ip(self) -> ipaddress.IPv4Address:
        """The first service IP: the `kubernetes` service, hence in the apiserver cert."""
        return self.network.service_cidr.network_address + 1

    @property
    def lb_node(self) -> Node | None:
        lbs = self.with_role(Role.lb)
        return lbs[0] if lbs else None

    @property
    def api_host(self) -> ipaddress.IPv4Address:
        """Where clients outside the control plane reach the API."""
        lb = self.load_balancer
        if lb.mode is LoadBalancerMode.keepalived and lb.vip is not None:
            return lb.vip
        if lb.mode is LoadBalancerMode.haproxy and self.lb_node is not None:
            return self.lb_node.address
        return self.controllers[0].address

    @property
    def api_port(self) -> int:
        lb = self.load_balancer
        if lb.mode is LoadBalancerMode.none:
            return APISERVER_PORT
        if lb.port is not None:
            return lb.port
        return 8443 if lb.mode is LoadBalancerMode.keepalived else APISERVER_PORT

    @property
    def api_server_url(self) -> str:
        return f"https://{self.api_host}:{self.api_port}"

    @property
    def lb_name(self) -> str | None:
        if self.load_balancer.mode is LoadBalancerMode.none:
            return None
        return self.load_balancer.name or f"{self.name}-api"

    def pod_cidr(self, node: Node) -> ipaddress.IPv4Network | None:
        """The node's pod CIDR: explicit, or derived from its address.

        Derived from the address offset within the node subnet (10.240.0.21 -> the 21st
        /24 of 10.200.0.0/16), so adding, removing or reordering nodes never moves another
        node's pods. Only workers run pods.
        """
        if not node.has(Role.worker):
            return None
        if node.pod_cidr is not None:
            return node.pod_cidr
        return derived_pod_cidr(
            self.network.pod_cidr,
            self.network.node_pod_cidr_mask_size,
            self.node_subnet,
            node.address,
        )

    def ssh_for(self, node: Node) -> Ssh:
        return Ssh(
            user=node.ssh.user or self.ssh.user or "root",
            port=node.ssh.port or self.ssh.port or 22,
            key=node.ssh.key or self.ssh.key,
        )


APISERVER_PORT = 6443


def derived_pod_cidr(
    pod_cidr: ipaddress.IPv4Network,
    mask: int,
    node_subnet: ipaddress.IPv4Network,
    address: ipaddress.IPv4Address,
) -> ipaddress.IPv4Network | None:
    if mask < pod_cidr.prefixlen:
        return None
    offset = int(address) - int(node_subnet.network_address)
    count = 2 ** (mask - pod_cidr.prefixlen)
    if not 0 <= offset < count:
        return None
    size = 2 ** (32 - mask)
    return ipaddress.IPv4Network((int(pod_cidr.network_address) + offset * size, mask))
