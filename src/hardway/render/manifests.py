"""Objects applied to the cluster through the API once it is up: RBAC and CoreDNS."""

from __future__ import annotations

from ..quoting import corefile_token
from ..spec import versions
from ..spec.model import ClusterSpec
from .common import yaml_file


MANAGED = {"app.kubernetes.io/managed-by": "hardway"}


def binding(name: str, role: str, kind: str, subject: str) -> dict:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name, "labels": MANAGED},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": subject}],
    }


def rbac() -> bytes:
    return yaml_file(
        # The apiserver's kubelet-client identity may use the kubelet API (logs, exec,
        # port-forward, metrics): without this those are Forbidden.
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "system:kube-apiserver-to-kubelet", "labels": MANAGED},
            "rules": [{"apiGroups": [""],
                       "resources": ["nodes/proxy", "nodes/stats", "nodes/log", "nodes/spec", "nodes/metrics"],
                       "verbs": ["*"]}],
        },
        binding("system:kube-apiserver", "system:kube-apiserver-to-kubelet",
                "User", "kube-apiserver-kubelet-client"),
        # Kubelets renew their own client certificates (rotateCertificates): the controller
        # manager approves a node's CSR for itself when the node may create one.
        binding("hardway:node-autoapprove-certificate-rotation",
                "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
                "Group", "system:nodes"),
    )


def coredns_image(spec: ClusterSpec) -> str:
    v = spec.artifacts.versions.coredns or versions.default(spec.minor, "coredns")
    # Until 1.21 the image lived at k8s.gcr.io/coredns:1.7.0; registry.k8s.io mirrors both.
    if versions.parse_minor(spec.minor) < (1, 21):
        return f"registry.k8s.io/coredns:{v}"
    return f"registry.k8s.io/coredns/coredns:v{v}"


def coredns(spec: ClusterSpec) -> bytes:
    domain = corefile_token(spec.network.cluster_domain)
    labels = {"k8s-app": "kube-dns"}
    corefile = (
        ".:53 {\n"
        "    errors\n"
        "    health {\n        lameduck 5s\n    }\n"
        "    ready\n"
        f"    kubernetes {domain} in-addr.arpa ip6.arpa {{\n"
        "        pods insecure\n        fallthrough in-addr.arpa ip6.arpa\n        ttl 30\n    }\n"
        "    prometheus :9153\n"
        "    forward . /etc/resolv.conf {\n        max_concurrent 1000\n    }\n"
        "    cache 30\n    loop\n    reload\n    loadbalance\n"
        "}\n"
    )
    meta = {"namespace": "kube-system", "labels": MANAGED}
    return yaml_file(
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "coredns", **meta}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "system:coredns"},
            "rules": [
                {"apiGroups": [""], "resources": ["endpoints", "services", "pods", "namespaces"],
                 "verbs": ["list", "watch"]},
                {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]},
                {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
                 "verbs": ["list", "watch"]},
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "system:coredns"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:coredns"},
            "subjects": [{"kind": "ServiceAccount", "name": "coredns", "namespace": "kube-system"}],
        },
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "coredns", **meta},
         "data": {"Corefile": corefile}},
        {
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "coredns", **meta},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": labels},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "serviceAccountName": "coredns",
                        "priorityClassName": "system-cluster-critical",
                        "tolerations": [{"key": "CriticalAddonsOnly", "operator": "Exists"}],
                        "containers": [{
                            "name": "coredns",
                            "image": coredns_image(spec),
                            "imagePullPolicy": "IfNotPresent",
                            "args": ["-conf", "/etc/coredns/Corefile"],
                            "resources": {"limits": {"memory": "170Mi"},
                                          "requests": {"cpu": "100m", "memory": "70Mi"}},
                            "volumeMounts": [{"name": "config-volume", "mountPath": "/etc/coredns", "readOnly": True}],
                            "ports": [
                                {"containerPort": 53, "name": "dns", "protocol": "UDP"},
                                {"containerPort": 53, "name": "dns-tcp", "protocol": "TCP"},
                                {"containerPort": 9153, "name": "metrics", "protocol": "TCP"},
                            ],
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "capabilities": {"add": ["NET_BIND_SERVICE"], "drop": ["all"]},
                                "readOnlyRootFilesystem": True,
                            },
                            "livenessProbe": {"httpGet": {"path": "/health", "port": 8080},
                                              "initialDelaySeconds": 60, "timeoutSeconds": 5},
                            "readinessProbe": {"httpGet": {"path": "/ready", "port": 8181}},
                        }],
                        "dnsPolicy": "Default",
                        "volumes": [{"name": "config-volume", "configMap": {
                            "name": "coredns", "items": [{"key": "Corefile", "path": "Corefile"}]}}],
                    },
                },
            },
        },
        {
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kube-dns", **meta,
                         "labels": {**meta["labels"], **labels, "kubernetes.io/name": "CoreDNS"}},
            "spec": {
                "selector": labels,
                "clusterIP": str(spec.cluster_dns),
                "ports": [
                    {"name": "dns", "port": 53, "protocol": "UDP"},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
                    {"name": "metrics", "port": 9153, "protocol": "TCP"},
                ],
            },
        },
    )


def cluster_manifests(spec: ClusterSpec) -> dict[str, bytes]:
    return {"10-rbac.yaml": rbac(), "20-coredns.yaml": coredns(spec)}
