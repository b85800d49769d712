"""kube-apiserver, kube-controller-manager and kube-scheduler as systemd units on controllers."""

from __future__ import annotations

from .. import ports
from ..material import Material
from ..pki.profiles import SERVICE_ACCOUNT
from ..spec import versions
from ..spec.model import ClusterSpec, Node
from .bundle import Bundle, File, Phase, Unit
from .common import (BIN, ETCD_PKI, FLEX_VOLUME_DIR, K8S, PKI, SECRET, TLS_CIPHER_SUITES, TLS_MIN_VERSION,
                     flags, optional, systemd_unit, yaml_file)
from .encryption import AUDIT_POLICY, ENCRYPTION_CONFIG, audit_policy, encryption_config
from .etcd import etcd_servers

CONTROLLER_MANAGER_CONF = f"{K8S}/controller-manager.conf"
SCHEDULER_CONF = f"{K8S}/scheduler.conf"
SCHEDULER_CONFIG = f"{K8S}/kube-scheduler.yaml"
AUDIT_LOG_DIR = "/var/log/kubernetes"
# The controller manager's CSR signer while ca.crt is a bundle of two CAs (pki/rotation.py).
SIGNER_CRT = f"{PKI}/ca-signer.crt"
SIGNER_KEY = f"{PKI}/ca-signer.key"  # the apiserver creates it for its audit log

# Certificates and keys each controller carries, by pki profile -> file stem in /etc/kubernetes/pki.
_CONTROLLER_PKI = {
    "ca": "ca",
    "apiserver": "apiserver",
    "apiserver-kubelet-client": "apiserver-kubelet-client",
    "apiserver-etcd-client": "apiserver-etcd-client",
    "front-proxy-client": "front-proxy-client",
}


def apiserver_flags(spec: ClusterSpec, node: Node) -> list[str]:
    m = spec.minor
    c = "kube-apiserver"
    issuer = f"https://kubernetes.default.svc.{spec.network.cluster_domain}"
    return flags(c, m, [
        ("--advertise-address", node.address),
        ("--bind-address", ports.address("kube-apiserver", node)),
        ("--secure-port", ports.port("kube-apiserver")),
        *optional(c, m, "--insecure-port", 0),
        ("--allow-privileged", True),
        ("--anonymous-auth", False),
        ("--authorization-mode", "Node,RBAC"),
        ("--enable-admission-plugins", "NodeRestriction"),
        ("--client-ca-file", f"{PKI}/ca.crt"),
        ("--tls-cert-file", f"{PKI}/apiserver.crt"),
        ("--tls-private-key-file", f"{PKI}/apiserver.key"),
        ("--tls-cipher-suites", ",".join(TLS_CIPHER_SUITES)),
        ("--tls-min-version", TLS_MIN_VERSION),
        ("--etcd-servers", etcd_servers(spec, node)),
        ("--etcd-cafile", f"{ETCD_PKI}/ca.crt"),
        ("--etcd-certfile", f"{PKI}/apiserver-etcd-client.crt"),
        ("--etcd-keyfile", f"{PKI}/apiserver-etcd-client.key"),
        ("--kubelet-certificate-authority", f"{PKI}/ca.crt"),
        ("--kubelet-client-certificate", f"{PKI}/apiserver-kubelet-client.crt"),
        ("--kubelet-client-key", f"{PKI}/apiserver-kubelet-client.key"),
        ("--kubelet-preferred-address-types", "InternalIP,Hostname"),
        # Admission and conversion webhooks and aggregated APIs are reached at their Service's
        # endpoints (pod IPs, routed to every controller) instead of its ClusterIP, which only
        # kube-proxy on a worker can translate: controllers run no kube-proxy.
        ("--enable-aggregator-routing", True),
        ("--proxy-client-cert-file", f"{PKI}/front-proxy-client.crt"),
        ("--proxy-client-key-file", f"{PKI}/front-proxy-client.key"),
        ("--requestheader-client-ca-file", f"{PKI}/front-proxy-ca.crt"),
        ("--requestheader-allowed-names", "front-proxy-client"),
        ("--requestheader-extra-headers-prefix", "X-Remote-Extra-"),
        ("--requestheader-group-headers", "X-Remote-Group"),
        ("--requestheader-username-headers", "X-Remote-User"),
        ("--service-account-issuer", issuer),
        ("--service-account-key-file", f"{PKI}/{SERVICE_ACCOUNT}.pub"),
        ("--service-account-signing-key-file", f"{PKI}/{SERVICE_ACCOUNT}.key"),
        ("--service-account-lookup", True),
        ("--service-cluster-ip-range", spec.network.service_cidr),
        ("--service-node-port-range", spec.network.service_node_port_range),
        ("--encryption-provider-config", ENCRYPTION_CONFIG),
        ("--audit-policy-file", AUDIT_POLICY),
        ("--audit-log-path", f"{AUDIT_LOG_DIR}/audit.log"),
        ("--audit-log-maxage", 30),
        ("--audit-log-maxbackup", 10),
        ("--audit-log-maxsize", 100),
        ("--event-ttl", "1h"),
        ("--profiling", False),
        ("--v", 2),
    ])


def controller_manager_flags(spec: ClusterSpec, own_signer: bool = False) -> list[str]:
    """`own_signer`: sign CSRs with SIGNER_CRT/KEY instead of ca.crt/ca.key (a CA rotation)."""
    m = spec.minor
    signer = (SIGNER_CRT, SIGNER_KEY) if own_signer else (f"{PKI}/ca.crt", f"{PKI}/ca.key")
    c = "kube-controller-manager"
    return flags(c, m, [
        ("--bind-address", ports.address(c)),
        ("--secure-port", ports.port(c)),
        # The insecure port off: plain HTTP without authentication on 0.0.0.0:10252 by default
        # in 1.20 and 1.21 (a no-op that accepts only 0 in 1.22 and 1.23; gone in 1.24).
        *optional(c, m, "--port", 0),
        ("--kubeconfig", CONTROLLER_MANAGER_CONF),
        ("--authentication-kubeconfig", CONTROLLER_MANAGER_CONF),
        ("--authorization-kubeconfig", CONTROLLER_MANAGER_CONF),
        ("--client-ca-file", f"{PKI}/ca.crt"),
        ("--requestheader-client-ca-file", f"{PKI}/front-proxy-ca.crt"),
        ("--cluster-name", spec.name),
        # Pod CIDRs are assigned by hardway (kubelet podCIDR + static routes), not allocated.
        ("--allocate-node-cidrs", False),
        ("--cluster-signing-cert-file", signer[0]),
        ("--cluster-signing-key-file", signer[1]),
        ("--root-ca-file", f"{PKI}/ca.crt"),
        ("--service-account-private-key-file", f"{PKI}/{SERVICE_ACCOUNT}.key"),
        ("--service-cluster-ip-range", spec.network.service_cidr),
        ("--use-service-account-credentials", True),
        ("--leader-elect", True),
        ("--terminated-pod-gc-threshold", 10),
        ("--profiling", False),
        ("--v", 2),
    ])


def scheduler_uses_config(minor: str) -> bool:
    """Whether the scheduler runs from a KubeSchedulerConfiguration file. Not in 1.20-1.22:
    there a config file keeps the plain-HTTP healthz/metrics port (10251) open whatever
    --port says, and cannot turn it off (catalogue.SCHEDULER_CONFIG_FIELDS); started from flags
    with --port=0 the scheduler serves only its authenticated secure port, as kubeadm of those
    minors runs it."""
    return not versions.scheduler_field(minor, "healthzBindAddress")


def scheduler_flags(spec: ClusterSpec) -> list[str]:
    m = spec.minor
    c = "kube-scheduler"
    if scheduler_uses_config(m):
        source = [("--config", SCHEDULER_CONFIG)]
    else:  # what the config file would say, as flags
        source = [("--kubeconfig", SCHEDULER_CONF), ("--leader-elect", True)]
    return flags(c, m, [
        *source,
        ("--bind-address", ports.address(c)),
        ("--secure-port", ports.port(c)),
        # The insecure port off where the flag exists (1.20-1.23; with --config, 1.23, it is a
        # no-op that accepts only 0).
        *optional(c, m, "--port", 0),
        ("--authentication-kubeconfig", SCHEDULER_CONF),
        ("--authorization-kubeconfig", SCHEDULER_CONF),
        # With --config the config says enableProfiling: false; kept where the flag exists
        # because CIS 1.4.1 looks for it on the command line.
        *optional(c, m, "--profiling", False),
        ("--v", 2),
    ])


def scheduler_config(spec: ClusterSpec) -> dict:
    return {
        "apiVersion": versions.config_api(spec.minor, "KubeSchedulerConfiguration"),
        "kind": "KubeSchedulerConfiguration",
        "clientConnection": {"kubeconfig": SCHEDULER_CONF},
        "leaderElection": {"leaderElect": True},
        "enableProfiling": False,
    }


def render_control_plane(
    spec: ClusterSpec, node: Node, material: Material, kubeconfigs: dict[str, bytes], bundle: Bundle
) -> None:
    pki_files = []
    for profile, stem in _CONTROLLER_PKI.items():
        # A CA's file is its bundle: during a rotation, the old and the new CA.
        bundle.add(File(f"{PKI}/{stem}.crt", material.trust(profile) if profile == "ca" else material.cert(profile)))
        pki_files.append(f"{PKI}/{stem}.crt")
        # Including ca.key: the controller manager's CSR signer needs it (kubelet
        # certificate rotation). It never goes to a worker.
        bundle.add(File(f"{PKI}/{stem}.key", material.key(profile), SECRET))
        pki_files.append(f"{PKI}/{stem}.key")
    bundle.add(File(f"{PKI}/front-proxy-ca.crt", material.trust("front-proxy-ca")))
    signer_files: tuple[str, ...] = ()
    if material.signer is not None:
        # The CSR signer reads exactly one certificate, and ca.crt holds two during a rotation.
        bundle.add(File(SIGNER_CRT, material.signer[0]))
        bundle.add(File(SIGNER_KEY, material.signer[1], SECRET))
        signer_files = (SIGNER_CRT, SIGNER_KEY)
    bundle.add(File(f"{PKI}/{SERVICE_ACCOUNT}.key", material.key(SERVICE_ACCOUNT), SECRET))
    bundle.add(File(f"{PKI}/{SERVICE_ACCOUNT}.pub", material.sa_pub))
    bundle.add(File(ENCRYPTION_CONFIG, encryption_config(spec, material), SECRET))
    bundle.add(File(AUDIT_POLICY, audit_policy(spec)))
    bundle.add(File(CONTROLLER_MANAGER_CONF, kubeconfigs["kube-controller-manager"], SECRET))
    bundle.add(File(SCHEDULER_CONF, kubeconfigs["kube-scheduler"], SECRET))
    scheduler_files = (SCHEDULER_CONF,)
    if scheduler_uses_config(spec.minor):
        bundle.add(File(SCHEDULER_CONFIG, yaml_file(scheduler_config(spec))))
        scheduler_files += (SCHEDULER_CONFIG,)
    shared = (f"{PKI}/ca.crt", f"{PKI}/front-proxy-ca.crt")

    bundle.add_unit(
        Unit("kube-apiserver.service", Phase.control_plane, restart_on=(
            *pki_files, f"{PKI}/front-proxy-ca.crt", f"{PKI}/{SERVICE_ACCOUNT}.key",
            f"{PKI}/{SERVICE_ACCOUNT}.pub", f"{ETCD_PKI}/ca.crt", ENCRYPTION_CONFIG, AUDIT_POLICY),
            data=(AUDIT_LOG_DIR,)),
        systemd_unit(
            "Kubernetes API server (hardway)",
            [f"{BIN}/kube-apiserver", *apiserver_flags(spec, node)],
            service={"Restart": "on-failure", "RestartSec": "5", "LimitNOFILE": "65536"},
        ),
    )
    bundle.add_unit(
        Unit("kube-controller-manager.service", Phase.control_plane, restart_on=(
            CONTROLLER_MANAGER_CONF, f"{PKI}/ca.key", f"{PKI}/{SERVICE_ACCOUNT}.key", *shared, *signer_files),
            data=(FLEX_VOLUME_DIR,)),
        systemd_unit(
            "Kubernetes controller manager (hardway)",
            [f"{BIN}/kube-controller-manager", *controller_manager_flags(spec, bool(signer_files))],
            service={"Restart": "on-failure", "RestartSec": "5"},
        ),
    )
    bundle.add_unit(
        Unit("kube-scheduler.service", Phase.control_plane,
             restart_on=(*scheduler_files, *shared)),
        systemd_unit(
            "Kubernetes scheduler (hardway)",
            [f"{BIN}/kube-scheduler", *scheduler_flags(spec)],
            service={"Restart": "on-failure", "RestartSec": "5"},
        ),
    )
    bundle.add_binaries("kubernetes-server", "kube-apiserver", "kube-controller-manager",
                        "kube-scheduler", "kubectl")
