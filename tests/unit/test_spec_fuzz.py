"""Property: any spec either fails validation with SpecError (never another exception) or
renders, deterministically, with every node's pod CIDR inside the cluster's and unique."""

from __future__ import annotations

import ipaddress

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hardway.errors import SpecError
from hardway.render import render_cluster
from hardway.spec.load import parse_spec
from tests.fake_material import fake_material

octets = st.integers(min_value=1, max_value=254)


@st.composite
def valid_specs(draw) -> dict:
    """A coherent spec: unique names and addresses, a controller, a consistent LB."""
    mode = draw(st.sampled_from(["none", "haproxy", "keepalived"]))
    n_ctrl = draw(st.integers(min_value=1, max_value=3))
    n_work = draw(st.integers(min_value=0, max_value=4))
    addrs = draw(st.lists(octets, min_size=n_ctrl + n_work + 2, max_size=n_ctrl + n_work + 2, unique=True))
    nodes = [{"name": f"c{i}", "address": f"10.240.0.{addrs[i]}", "roles": ["controller"]} for i in range(n_ctrl)]
    nodes += [{"name": f"w{i}", "address": f"10.240.0.{addrs[n_ctrl + i]}", "roles": ["worker"]} for i in range(n_work)]
    if draw(st.booleans()):
        nodes[0]["roles"].append("worker")
    lb: dict = {"mode": mode}
    if mode == "haproxy":
        nodes.append({"name": "lb", "address": f"10.240.0.{addrs[-1]}", "roles": ["lb"]})
    if mode == "keepalived":
        lb["vip"] = f"10.240.0.{addrs[-2]}"
    return {
        "name": draw(st.from_regex(r"[a-z][a-z0-9-]{0,8}[a-z0-9]", fullmatch=True)),
        "kubernetes": {"version": draw(st.sampled_from(["1.20.2", "1.24.3", "1.27.0", "1.35.1"]))},
        "nodes": nodes,
        "network": {"nodeSubnet": "10.240.0.0/24", "podCIDR": "10.200.0.0/16", "serviceCIDR": "10.32.0.0/24"},
        "loadBalancer": lb,
        "pki": {"keyType": "ecdsa-p256", "layout": draw(st.sampled_from(["flat", "root"]))},
        "containerRuntime": {"restrictOOMScoreAdj": draw(st.booleans())},
        "artifacts": {"versions": {"containerd": draw(st.sampled_from(["1.6.20", "2.0.4"]))}},
    }


MUTATIONS = [
    lambda d, x: d["nodes"][0].update(name="Bad_Name"),
    lambda d, x: d["nodes"][-1].update(address=d["nodes"][0]["address"]),
    lambda d, x: d["nodes"][-1].update(name=d["nodes"][0]["name"]),
    lambda d, x: d["nodes"][0].update(podCIDR=["10.200.7.0/24", "10.200.0.0/23", "10.99.0.0/24"][x % 3]),
    lambda d, x: d["network"].update(podCIDR=["10.240.0.0/16", "10.200.0.0/20"][x % 2]),
    lambda d, x: d["network"].update(serviceCIDR=["10.200.1.0/24", "10.96.0.0/12", "10.0.0.0/8"][x % 3]),
    lambda d, x: d["loadBalancer"].update(vip=f"10.240.{x % 2}.{x % 256}"),
    lambda d, x: d["loadBalancer"].update(mode=["none", "haproxy", "keepalived"][x % 3]),
    lambda d, x: d["kubernetes"].update(version=["1.19.0", "2.0.0", "latest"][x % 3]),
    lambda d, x: d["artifacts"]["versions"].update(containerd="3.0.0"),
    lambda d, x: d["nodes"][0].update(roles=["worker"]),
    lambda d, x: d["nodes"][0].update(roles=["lb", "controller"]),
    lambda d, x: d["network"].update(clusterDNS=f"10.32.{x % 2}.{x % 256}"),
    lambda d, x: d.update(extraKey=1),
]


@st.composite
def specs(draw) -> dict:
    data = draw(valid_specs())
    for _ in range(draw(st.integers(min_value=0, max_value=2))):
        draw(st.sampled_from(MUTATIONS))(data, draw(st.integers(min_value=0, max_value=1000)))
    return data


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs())
def test_any_spec_validates_or_renders(data):
    try:
        spec = parse_spec(yaml.safe_dump(data)).spec
    except SpecError as e:
        assert e.problems and all(isinstance(p, str) and p for p in e.problems)
        return
    material = fake_material(spec)
    cb = render_cluster(spec, material)
    assert set(cb.nodes) == {n.name for n in spec.nodes}
    cidrs = [spec.pod_cidr(n) for n in spec.workers]
    assert all(c is not None and c.subnet_of(spec.network.pod_cidr) for c in cidrs)
    assert all(not a.overlaps(b) for i, a in enumerate(cidrs) for b in cidrs[i + 1:])
    assert ipaddress.ip_address(spec.cluster_dns) in spec.network.service_cidr
    again = render_cluster(spec, material)
    for name, bundle in cb.nodes.items():
        assert bundle.files == again.nodes[name].files
