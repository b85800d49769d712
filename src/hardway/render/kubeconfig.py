"""Kubeconfigs with embedded certificates, one per identity. Pure."""

from __future__ import annotations

import base64
from dataclasses import dataclass

import yaml

from ..material import Material
from ..spec.model import APISERVER_PORT, ClusterSpec
from .common import yaml_file

LOCAL_API = f"https://127.0.0.1:{APISERVER_PORT}"


@dataclass(frozen=True)
class KubeconfigPlan:
    name: str  # file stem and pki profile of the client certificate
    user: str
    server: str


def kubeconfig_plan(spec: ClusterSpec) -> list[KubeconfigPlan]:
    """Who talks to which apiserver address.

    The controller manager and scheduler run beside an apiserver and talk to it on loopback:
    they then never depend on the load balancer, and leader election moves them to a healthy
    controller if their local apiserver dies. Everything else goes through the LB/VIP.
    """
    api = spec.api_server_url
    plan = [
        KubeconfigPlan("admin", "admin", api),
        KubeconfigPlan("kube-controller-manager", "system:kube-controller-manager", LOCAL_API),
        KubeconfigPlan("kube-scheduler", "system:kube-scheduler", LOCAL_API),
    ]
    if spec.workers:
        plan.append(KubeconfigPlan("kube-proxy", "system:kube-proxy", api))
    plan += [KubeconfigPlan(f"kubelet-{n.name}", f"system:node:{n.name}", api) for n in spec.workers]
    return plan


def render_kubeconfig(
    cluster: str, server: str, ca: bytes, user: str, cert: bytes, key: bytes
) -> bytes:
    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    # Entry names carry the cluster name, so merging into ~/.kube/config never replaces
    # another cluster's "admin".
    entry = f"{user}@{cluster}"
    context = cluster if user == "admin" else entry
    return yaml_file(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": cluster, "cluster": {"server": server, "certificate-authority-data": b64(ca)}}
            ],
            "users": [
                {"name": entry, "user": {CLIENT_CERT_FIELD: b64(cert), "client-key-data": b64(key)}}
            ],
            "contexts": [{"name": context, "context": {"cluster": cluster, "user": entry}}],
            "current-context": context,
        }
    )


CLIENT_CERT_FIELD = "client-certificate-data"


def client_certificate(content: bytes) -> bytes | None:
    """The client certificate (PEM) a kubeconfig embeds; None when it embeds none."""
    if CLIENT_CERT_FIELD.encode() not in content:
        return None
    try:
        doc = yaml.safe_load(content)
        data = doc["users"][0]["user"][CLIENT_CERT_FIELD]
        return base64.b64decode(data, validate=True)
    except (yaml.YAMLError, KeyError, IndexError, TypeError, ValueError):
        return None


def cluster_kubeconfigs(spec: ClusterSpec, material: Material) -> dict[str, bytes]:
    return {
        p.name: render_kubeconfig(
            spec.name, p.server, material.trust("ca"), p.user, material.cert(p.name), material.key(p.name)
        )
        for p in kubeconfig_plan(spec)
    }
