"""Workers: containerd + runc + CNI, kubelet and kube-proxy."""

from __future__ import annotations

import json

from .. import ports
from ..material import Material
from ..spec import versions
from ..spec.model import ClusterSpec, Node
from .bundle import Bundle, File, Phase, Unit
from .common import (BIN, FLEX_VOLUME_DIR, K8S, KUBELET_DIR, PKI, SECRET, TLS_CIPHER_SUITES,
                     TLS_MIN_VERSION, flags, header, optional, systemd_unit, template, yaml_file)

CONTAINERD_SOCK = "unix:///run/containerd/containerd.sock"
CONTAINERD_CONFIG = "/etc/containerd/config.toml"
KUBELET_CONF = f"{K8S}/kubelet.conf"  # kubeconfig (kube-bench's $kubeletkubeconfig)
KUBELET_CONFIG = f"{KUBELET_DIR}/config.yaml"
# The client certificate the kubelet actually uses (rotateCertificates): at its first start it
# copies the one embedded in KUBELET_CONF here, then renews it through CSRs the controller
# manager signs. It falls back to KUBELET_CONF's only once this one has expired.
KUBELET_CLIENT_CURRENT = f"{KUBELET_DIR}/pki/kubelet-client-current.pem"
PROXY_CONF = f"{K8S}/proxy.conf"  # kubeconfig (kube-bench's $proxykubeconfig)
PROXY_CONFIG = "/var/lib/kube-proxy/config.yaml"
CNI_DIR = "/etc/cni/net.d"
CNI_BRIDGE = "cni0"  # the bridge plugin's interface; pods' veths are its ports
# What containerd fills while it runs: its root and state (its defaults), its plugin directory,
# the CNI plugins' state (host-local's leases, the result cache) and the pods' network namespaces
# (both written by the plugins containerd runs).
CONTAINERD_DATA = ("/var/lib/containerd", "/run/containerd", "/opt/containerd", "/var/lib/cni", "/run/netns")
# The kubelet's: its root (pods, volumes, plugins; config.yaml and pki/ are hardway's files
# there), the containers' logs and the flex volume plugin directory.
KUBELET_DATA = (KUBELET_DIR, "/var/log/pods", "/var/log/containers", FLEX_VOLUME_DIR)


def pause_image(spec: ClusterSpec) -> str:
    return spec.artifacts.versions.pause_image or (
        f"registry.k8s.io/pause:{versions.default(spec.minor, 'pause')}"
    )


def containerd_config(spec: ClusterSpec) -> str:
    version = spec.artifacts.versions.containerd
    major = int(version.split(".")[0])
    return template(
        "containerd-v1.toml.j2" if major == 1 else "containerd-v2.toml.j2",
        version=version,
        pause_image=pause_image(spec),
        restrict_oom_score_adj=spec.container_runtime.restrict_oom_score_adj,
        runc=f"{BIN}/runc",
        systemd_cgroup="true" if spec.container_runtime.cgroup_driver == "systemd" else "false",
    )


def containerd_unit(spec: ClusterSpec) -> str:
    service: dict = {
        "ExecStartPre": "-/sbin/modprobe overlay",
        "Type": "notify",
        "Delegate": "yes",
        "KillMode": "process",
        "Restart": "always",
        "RestartSec": "5",
        "LimitNPROC": "infinity",
        "LimitCORE": "infinity",
        "LimitNOFILE": "infinity",
        "TasksMax": "infinity",
    }
    if not spec.container_runtime.restrict_oom_score_adj:
        # Where oom_score_adj cannot be lowered, systemd would fail the unit over this line.
        service["OOMScoreAdjust"] = "-999"
    return systemd_unit(
        "containerd container runtime (hardway)",
        [f"{BIN}/containerd", f"--config={CONTAINERD_CONFIG}"],
        after=("network.target", "local-fs.target"),
        wants=(),
        service=service,
        doc="https://containerd.io",
    )


def cni_configs(spec: ClusterSpec, node: Node) -> dict[str, bytes]:
    cidr = spec.pod_cidr(node)
    bridge = {
        "type": "bridge",
        "bridge": CNI_BRIDGE,
        "isGateway": True,
        "ipMasq": True,
        # A pod reaching a Service whose endpoint is itself leaves and re-enters through the
        # same bridge port; without hairpin mode the bridge drops it (seen on one node).
        "hairpinMode": True,
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": str(cidr)}]],
            "routes": [{"dst": "0.0.0.0/0"}],
        },
    }
    # A pod's hostPort is the portmap plugin's work (DNAT on the node, and SNAT so that the node
    # itself, 127.0.0.1 included, reaches it): without it a hostPort is silently ignored, and
    # the conformance test "no conflict between pods with same hostPort but different hostIP
    # and protocol" failed.
    portmap = {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True}
    chain = {"cniVersion": "0.4.0", "name": "bridge", "plugins": [bridge, portmap]}
    loopback = {"cniVersion": "0.4.0", "name": "lo", "type": "loopback"}
    # JSON allows no comments; the header goes in a key CNI ignores.
    note = header().replace("# ", "").replace("\n", " ").strip()
    return {
        f"{CNI_DIR}/10-bridge.conflist": (json.dumps({"_generated": note, **chain}, indent=2) + "\n").encode(),
        f"{CNI_DIR}/99-loopback.conf": (json.dumps({"_generated": note, **loopback}, indent=2) + "\n").encode(),
    }


def kubelet_config(spec: ClusterSpec, node: Node) -> dict:
    m = spec.minor
    cfg: dict = {
        "apiVersion": versions.config_api(m, "KubeletConfiguration"),
        "kind": "KubeletConfiguration",
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": f"{PKI}/ca.crt"},
        },
        "authorization": {"mode": "Webhook"},
        "cgroupDriver": spec.container_runtime.cgroup_driver,
        "clusterDomain": spec.network.cluster_domain,
        "clusterDNS": [str(spec.cluster_dns)],
        "podCIDR": str(spec.pod_cidr(node)),
        "resolvConf": spec.kubelet.resolv_conf,
        "maxPods": spec.kubelet.max_pods,
        "runtimeRequestTimeout": "15m",
        "tlsCertFile": f"{KUBELET_DIR}/pki/kubelet.crt",
        "tlsPrivateKeyFile": f"{KUBELET_DIR}/pki/kubelet.key",
        "tlsCipherSuites": list(TLS_CIPHER_SUITES),
        "tlsMinVersion": TLS_MIN_VERSION,
        # Every listener from the ports table; the unauthenticated read-only port (10255) off.
        "address": ports.address("kubelet", node),
        "port": ports.port("kubelet"),
        "healthzBindAddress": ports.address("kubelet-healthz", node),
        "healthzPort": ports.port("kubelet-healthz"),
        "readOnlyPort": 0,
        # The sysctls the kubelet insists on are set by /etc/sysctl.d before it starts
        # (host.py), so it need not (and may not) change kernel settings itself.
        "protectKernelDefaults": True,
        "makeIPTablesUtilChains": True,
        "streamingConnectionIdleTimeout": "5m",
        # Renews its client certificate through a CSR the controller manager signs and
        # auto-approves (RBAC in manifests.py): no kubelet stops a year after `up`.
        "rotateCertificates": True,
        "serverTLSBootstrap": False,
    }
    if spec.kubelet.cgroup_root:
        cfg["cgroupRoot"] = spec.kubelet.cgroup_root.replace("{node}", node.name)
    if versions.kubelet_field(m, "containerRuntimeEndpoint"):
        cfg["containerRuntimeEndpoint"] = CONTAINERD_SOCK
    if spec.kubelet.fail_cgroup_v1 is not None and versions.kubelet_field(m, "failCgroupV1"):
        cfg["failCgroupV1"] = spec.kubelet.fail_cgroup_v1
    return cfg


def kubelet_refuses_cgroup_v1(spec: ClusterSpec) -> bool:
    """Whether the kubelet rendered for `spec` exits on a cgroup v1 host (failCgroupV1, set or
    by default: 1.35's default is true). `up` checks workers' cgroup version against it."""
    if not versions.kubelet_field(spec.minor, "failCgroupV1"):
        return False
    if spec.kubelet.fail_cgroup_v1 is not None:
        return spec.kubelet.fail_cgroup_v1
    return bool(versions.kubelet_default(spec.minor, "failCgroupV1"))


def kubelet_flags(spec: ClusterSpec, node: Node) -> list[str]:
    m = spec.minor
    c = "kubelet"
    endpoint = [] if versions.kubelet_field(m, "containerRuntimeEndpoint") else [
        ("--container-runtime-endpoint", CONTAINERD_SOCK)]
    return flags(c, m, [
        ("--config", KUBELET_CONFIG),
        ("--kubeconfig", KUBELET_CONF),
        *optional(c, m, "--container-runtime", "remote"),
        *endpoint,
        *optional(c, m, "--network-plugin", "cni"),
        # Registers under the spec's name whatever the OS hostname is: the certificate says
        # system:node:<name>, and the Node authorizer holds the kubelet to it.
        ("--hostname-override", node.name),
        ("--node-ip", node.address),
        ("--v", 2),
    ])


def kube_proxy_config(spec: ClusterSpec, node: Node) -> dict:
    cfg: dict = {
        "apiVersion": versions.config_api(spec.minor, "KubeProxyConfiguration"),
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": PROXY_CONF},
        "hostnameOverride": node.name,
        "mode": spec.kube_proxy.mode,
        "clusterCIDR": str(spec.network.pod_cidr),
        "healthzBindAddress": ports.host_port("kube-proxy-healthz", spec, node),
        "metricsBindAddress": ports.host_port("kube-proxy-metrics", spec, node),
    }
    if spec.kube_proxy.conntrack_max_per_core is not None:
        cfg["conntrack"] = {"maxPerCore": spec.kube_proxy.conntrack_max_per_core}
    return cfg


def render_worker(
    spec: ClusterSpec, node: Node, material: Material, kubeconfigs: dict[str, bytes], bundle: Bundle
) -> None:
    bundle.add(File(CONTAINERD_CONFIG, containerd_config(spec).encode()))
    bundle.add_unit(
        Unit("containerd.service", Phase.worker, restart_on=(CONTAINERD_CONFIG,), data=CONTAINERD_DATA),
        containerd_unit(spec),
    )
    for path, content in cni_configs(spec, node).items():
        bundle.add(File(path, content))

    kubelet_pki = {
        f"{PKI}/ca.crt": (material.trust("ca"), 0o644),
        f"{KUBELET_DIR}/pki/kubelet.crt": (material.cert(f"kubelet-{node.name}"), 0o644),
        f"{KUBELET_DIR}/pki/kubelet.key": (material.key(f"kubelet-{node.name}"), SECRET),
    }
    for path, (content, mode) in kubelet_pki.items():
        bundle.add(File(path, content, mode))
    bundle.add(File(KUBELET_CONF, kubeconfigs[f"kubelet-{node.name}"], SECRET))
    bundle.add(File(KUBELET_CONFIG, yaml_file(kubelet_config(spec, node))))
    bundle.add_unit(
        Unit("kubelet.service", Phase.worker,
             restart_on=(KUBELET_CONF, KUBELET_CONFIG, *kubelet_pki), data=KUBELET_DATA),
        systemd_unit(
            "Kubernetes node agent (hardway)",
            [f"{BIN}/kubelet", *kubelet_flags(spec, node)],
            after=("containerd.service",),
            wants=(),
            requires=("containerd.service",),
            service={"Restart": "on-failure", "RestartSec": "5"},
        ),
    )

    bundle.add(File(PROXY_CONF, kubeconfigs["kube-proxy"], SECRET))
    bundle.add(File(PROXY_CONFIG, yaml_file(kube_proxy_config(spec, node))))
    bundle.add_unit(
        Unit("kube-proxy.service", Phase.worker, restart_on=(PROXY_CONF, PROXY_CONFIG)),
        systemd_unit(
            "Kubernetes service proxy (hardway)",
            [f"{BIN}/kube-proxy", *flags("kube-proxy", spec.minor, [("--config", PROXY_CONFIG)])],
            service={"Restart": "on-failure", "RestartSec": "5"},
        ),
    )
    bundle.add_binaries("kubernetes-server", "kubelet", "kube-proxy")
    bundle.add_binaries("containerd", "containerd", "containerd-shim-runc-v2", "ctr")
    bundle.add_binaries("runc", "runc")
    bundle.add_binaries("cni-plugins", "bridge", "host-local", "loopback", "portmap")
    bundle.images.extend(spec.artifacts.images)
