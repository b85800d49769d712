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
from pathlib import PurePosixPath
from collections.abc import Callable
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

# Patterns are matched whole (fullmatch): `$` would let a trailing newline through.
DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_LABEL = r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?"
# RFC 1123 host names as Kubernetes validates them (IsDNS1123Subdomain): no trailing dot.
DNS1123_SUBDOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
DNS_NAME_MAX = 253

# The image reference grammar of the OCI distribution spec / docker's
# distribution/reference (regexp.go): [host[:port]/]path[:tag][@digest].
_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
IMAGE_NAME = rf"(?:{_HOST}(?::[0-9]+)?/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
IMAGE_REFERENCE = re.compile(rf"(?P<name>{IMAGE_NAME})(?::{_TAG})?(?:@{_DIGEST})?")
IMAGE_NAME_MAX = 255  # distribution/reference NameTotalLengthMax

# Paths on a node: absolute, normalised, and made of the POSIX portable filename characters
# (A-Z a-z 0-9 . _ -), so they read the same in YAML, a unit, TOML and a shell script.
_PORTABLE = r"[A-Za-z0-9._-]+"
NODE_PATH = re.compile(rf"/|(?:/(?!\.\.?(?:/|$)){_PORTABLE})+")  # no "." or ".." components
# A file name that lands on every node (an image tarball under /var/lib/hardway/images/).
FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
# POSIX user names (portable filename characters, not starting with '-'); Linux allows 32.
USER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}")


def _matching(pattern: re.Pattern[str], what: str) -> Callable[[str], str]:
    """A validator: the whole value matches `pattern`, else "'value' is not <what>"."""

    def check(value: str) -> str:
        if not pattern.fullmatch(value):
            raise ValueError(f"{value!r} is not {what}")
        return value

    return check


_dns_label = _matching(
    DNS1123_LABEL,
    "a DNS-1123 label: use at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit",
)
_node_path = _matching(
    NODE_PATH,
    "an absolute path on the node: '/' followed by names made of letters, digits, '.', '_' and '-' "
    "(no '.' or '..' components, no trailing '/')",
)
_user_name = _matching(
    USER_NAME,
    "a user name: letters, digits, '.', '_' and '-', not starting with '-' or a digit, at most 32 characters",
)


def _dns_subdomain(value: str) -> str:
    if value.endswith(".") and DNS1123_SUBDOMAIN.fullmatch(value[:-1]):
        raise ValueError(f"{value!r}: write the domain without the trailing dot ({value[:-1]!r})")
    if len(value) > DNS_NAME_MAX or not DNS1123_SUBDOMAIN.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a DNS subdomain: dot-separated labels of lowercase letters, digits "
            f"and '-' (each 1-63 characters, starting and ending with a letter or digit), at most "
            f"{DNS_NAME_MAX} characters in all, like cluster.local"
        )
    return value


def _image_reference(value: str) -> str:
    m = IMAGE_REFERENCE.fullmatch(value)
    if not m or len(m["name"]) > IMAGE_NAME_MAX:
        raise ValueError(
            f"{value!r} is not an image reference: [registry[:port]/]path[:tag][@sha256:digest], "
            "the path in lowercase letters, digits and . _ - separators, like registry.k8s.io/pause:3.2"
        )
    return value


def _no_control(value: str, what: str) -> str:
    if not value:
        raise ValueError(f"{what} must not be empty")
    if any(ord(c) < 0x20 or c == "\x7f" for c in value):
        raise ValueError(f"{value!r}: a {what} must not contain control characters (newline, tab, ...)")
    return value


def _cgroup_root(value: str) -> str:
    # "{node}" is replaced by the node name (a DNS label, itself a valid path name).
    try:
        _node_path(value.replace("{node}", "node"))
    except ValueError:
        raise ValueError(
            f"{value!r} is not an absolute cgroup path: '/' followed by names made of letters, "
            "digits, '.', '_' and '-', optionally with {node} (the node's name), like /kubepods.slice"
        ) from None
    return value


def _local_path(value: str) -> str:
    return _no_control(value, "path")


def _image_entry(value: str) -> str:
    """A mirror image name (pause-3.2: the mirror's images/pause-3.2.tar) or the path of a
    local OCI tarball. Either way its name becomes a file on every node."""
    _no_control(value, "image entry")
    stem = PurePosixPath(value).name.removesuffix(".tar")
    if not FILE_NAME.fullmatch(stem):
        raise ValueError(
            f"{value!r}: the image's file name {stem!r} becomes /var/lib/hardway/images/{stem}.tar on "
            "every node; use letters, digits, '.', '_' and '-' only, starting with a letter or digit"
        )
    return value


def _mirror(value: str) -> str:
    _no_control(value, "mirror")
    scheme, sep, rest = value.partition("://")
    if sep and scheme not in ("http", "https", "file"):
        raise ValueError(f"{value!r}: a mirror is an http(s):// or file:// URL, or a directory")
    if scheme in ("http", "https") and (" " in value or not urlsplit(value).hostname):
        raise ValueError(f"{value!r} is not a URL like http://127.0.0.1:8080 (no spaces)")
    return value


def _version(value: str) -> str:
    if not re.fullmatch(r"v?\d+\.\d+\.\d+", value):
        raise ValueError(f"{value!r} is not a version like 1.20.2")
    return value.lstrip("v")


def _sha256_pin(value: str) -> str:
    if not re.fullmatch(r"sha256:[0-9a-fA-F]{64}", value):
        raise ValueError(f"{value!r} is not a digest like sha256:<64 hex digits>")
    return value.lower()
# X.509 can encode dates up to 9999-12-31 and Python's datetime overflows past that, so an
# unbounded count of days crashes certificate issuance. No key or algorithm stays trustworthy
# for a century: anything longer is a typo.
MAX_VALIDITY_DAYS = 36500


def _validity_days(value: int) -> int:
    if not 1 <= value <= MAX_VALIDITY_DAYS:
        raise ValueError(
            f"{value} days is out of range: use 1 to {MAX_VALIDITY_DAYS} (100 years); X.509 dates "
            "end in 9999 and no key stays trustworthy for longer than a century"
        )
    return value


DnsLabel = Annotated[str, AfterValidator(_dns_label)]
DnsSubdomain = Annotated[str, AfterValidator(_dns_subdomain)]
ImageReference = Annotated[str, AfterValidator(_image_reference)]
NodePath = Annotated[str, AfterValidator(_node_path)]
CgroupRoot = Annotated[str, AfterValidator(_cgroup_root)]
LocalPath = Annotated[str, AfterValidator(_local_path)]
ImageEntry = Annotated[str, AfterValidator(_image_entry)]
Mirror = Annotated[str, AfterValidator(_mirror)]
UserName = Annotated[str, AfterValidator(_user_name)]
Version = Annotated[str, AfterValidator(_version)]
Sha256Pin = Annotated[str, AfterValidator(_sha256_pin)]
ValidityDays = Annotated[int, AfterValidator(_validity_days)]


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
    user: UserName | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    key: LocalPath | None = None  # on the operator's machine


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
    cluster_domain: DnsSubdomain = "cluster.local"
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
    ca_validity_days: ValidityDays = 3650
    cert_validity_days: ValidityDays = 365  # at most caValidityDays (checks.py)
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
    cgroup_root: CgroupRoot | None = None
    resolv_conf: NodePath = "/etc/resolv.conf"
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
    pause_image: ImageReference | None = None  # absent: registry.k8s.io/pause:<kubeadm's tag>


class Artifacts(Model):
    # A URL laid out like the upstream release sites, or a local directory with that layout.
    mirror: Mirror | None = None
    versions: ArtifactVersions = ArtifactVersions()
    # OCI image tarballs to import into containerd on every node (clusters without a registry).
    images: list[ImageEntry] = []
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
