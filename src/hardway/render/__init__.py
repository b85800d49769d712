"""Rendering: spec + material in, one bundle per node out. No I/O, deterministic."""

from __future__ import annotations

from ..material import Material
from ..membership import FOUNDERS, Membership
from ..ports import runs_load_balancer
from ..spec.model import ClusterSpec, Role
from .bundle import Binary, Bundle, ClusterBundle, File, Phase, Unit
from .control_plane import render_control_plane
from .etcd import render_etcd
from .host import render_host
from .kubeconfig import cluster_kubeconfigs
from .lb import render_lb
from .manifests import cluster_manifests
from .worker import render_worker


def render_cluster(spec: ClusterSpec, material: Material, membership: Membership = FOUNDERS) -> ClusterBundle:
    """`membership`: which controllers joined the running etcd cluster (membership.py); only
    their initial-cluster settings depend on it."""
    kubeconfigs = cluster_kubeconfigs(spec, material)
    nodes: dict[str, Bundle] = {}
    for node in spec.nodes:
        bundle = Bundle(node.name, tuple(r.value for r in node.roles))
        render_host(spec, node, bundle)
        if node.has(Role.controller):
            render_etcd(spec, node, material, bundle, membership)
            render_control_plane(spec, node, material, kubeconfigs, bundle)
        if runs_load_balancer(spec, node):
            render_lb(spec, node, material, bundle)
        if node.has(Role.worker):
            render_worker(spec, node, material, kubeconfigs, bundle)
        nodes[node.name] = bundle
    return ClusterBundle(nodes, cluster_manifests(spec))


__all__ = ["Binary", "Bundle", "ClusterBundle", "File", "Phase", "Unit", "render_cluster"]
