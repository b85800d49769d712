"""Secrets encryption at rest, and the apiserver's audit policy."""

from __future__ import annotations

from ..material import Material
from ..spec import versions
from ..spec.model import ClusterSpec
from .common import K8S, yaml_file

ENCRYPTION_CONFIG = f"{K8S}/encryption-config.yaml"
AUDIT_POLICY = f"{K8S}/audit-policy.yaml"


def encryption_config(spec: ClusterSpec, material: Material) -> bytes:
    provider = spec.encryption.provider
    # The real provider comes first: new writes are encrypted with it (CIS 1.2.33 reads the
    # first provider), with its first key; the other keys only read (a rotation in progress,
    # keyrotation.py). identity last lets the apiserver read Secrets written before
    # encryption was turned on.
    return yaml_file({
        "apiVersion": versions.config_api(spec.minor, "EncryptionConfiguration"),
        "kind": "EncryptionConfiguration",
        "resources": [{
            "resources": ["secrets"],
            "providers": [
                {provider: {"keys": [{"name": k.name, "secret": k.secret} for k in material.encryption_keys]}},
                {"identity": {}},
            ],
        }],
    })


def audit_policy(spec: ClusterSpec) -> bytes:
    return yaml_file({
        "apiVersion": versions.config_api(spec.minor, "Policy"),
        "kind": "Policy",
        "omitStages": ["RequestReceived"],
        "rules": [
            # Noise: kube-proxy's watches, events themselves, and health probes.
            {"level": "None", "users": ["system:kube-proxy"], "verbs": ["watch"],
             "resources": [{"group": "", "resources": ["endpoints", "services", "services/status"]}]},
            {"level": "None", "resources": [{"group": "", "resources": ["events"]}]},
            {"level": "None", "nonResourceURLs": ["/healthz*", "/livez*", "/readyz*", "/version"]},
            # Never log the bodies of objects that carry secrets.
            {"level": "Metadata", "resources": [
                {"group": "", "resources": ["secrets", "configmaps", "serviceaccounts/token"]},
                {"group": "authentication.k8s.io", "resources": ["tokenreviews"]}]},
            # Who opened a shell, a tunnel or a proxy into a pod.
            {"level": "Metadata", "resources": [
                {"group": "", "resources": ["pods/exec", "pods/attach", "pods/portforward", "pods/proxy", "services/proxy"]}]},
            {"level": "Request", "verbs": ["create", "update", "patch", "delete"],
             "resources": [{"group": "", "resources": ["pods"]}, {"group": "apps", "resources": ["deployments"]}]},
            {"level": "Metadata"},
        ],
    })
