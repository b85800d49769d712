"""Every validation rule: bad input gives SpecError naming the field (and line)."""

from __future__ import annotations

import pytest
import yaml

from hardway.errors import SpecError
from hardway.spec import versions
from hardway.spec.load import parse_spec
from hardway.spec.presets import PRESETS, render_preset
from tests.specs import parse_data, preset_data


def problems_of(data) -> list[str]:
    with pytest.raises(SpecError) as info:
        parse_data(data)
    assert info.value.exit_code == 2
    return info.value.problems


def one_problem(data, *needles: str) -> str:
    problems = problems_of(data)
    matching = [p for p in problems if all(n in p for n in needles)]
    assert matching, f"no problem mentions {needles}: {problems}"
    return matching[0]


@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_preset_is_valid_without_warnings(preset):
    loaded = parse_spec(render_preset(preset, "lab"))
    assert loaded.warnings == []
    assert all(str(n.address).startswith("10.240.0.") for n in loaded.spec.nodes)


def test_duplicate_node_names():
    d = preset_data()
    d["nodes"][2]["name"] = "worker-0"
    assert "nodes[2].name" in one_problem(d, "duplicate node name 'worker-0'", "nodes[1]")


def test_duplicate_node_addresses():
    d = preset_data()
    d["nodes"][2]["address"] = "10.240.0.20"
    assert "nodes[2].address" in one_problem(d, "duplicate node address '10.240.0.20'")


@pytest.mark.parametrize("bad", ["Worker-0", "worker_0", "-worker", "w" * 64, "worker.0"])
def test_node_name_must_be_dns_label(bad):
    d = preset_data()
    d["nodes"][1]["name"] = bad
    assert one_problem(d, "nodes[1].name", "DNS-1123")


def test_cluster_name_must_be_dns_label():
    d = preset_data()
    d["name"] = "My Lab"
    assert one_problem(d, "name", "DNS-1123")


@pytest.mark.parametrize(
    "field, value, needle",
    [
        ("podCIDR", "10.240.0.0/16", "overlaps nodeSubnet"),
        ("serviceCIDR", "10.200.5.0/24", "overlaps podCIDR"),
        ("serviceCIDR", "10.240.0.128/25", "overlaps nodeSubnet"),
    ],
)
def test_overlapping_networks(field, value, needle):
    d = preset_data()
    d["network"][field] = value
    assert one_problem(d, "network.", needle)


def test_cluster_dns_outside_service_cidr():
    d = preset_data()
    d["network"]["clusterDNS"] = "10.33.0.10"
    assert one_problem(d, "network.clusterDNS", "outside the service CIDR 10.32.0.0/24")


def test_cluster_dns_is_the_kubernetes_service_ip():
    d = preset_data()
    d["network"]["clusterDNS"] = "10.32.0.1"
    assert one_problem(d, "network.clusterDNS", "reserved")


def test_vip_outside_node_subnet():
    d = preset_data("ha-vip")
    d["loadBalancer"]["vip"] = "10.241.0.100"
    assert one_problem(d, "loadBalancer.vip", "outside the node subnet 10.240.0.0/24")


def test_vip_equal_to_a_node_address():
    d = preset_data("ha-vip")
    d["loadBalancer"]["vip"] = "10.240.0.11"
    assert one_problem(d, "loadBalancer.vip", "address of nodes[1] (controller-1)")


def test_keepalived_needs_a_vip():
    d = preset_data("ha-vip")
    del d["loadBalancer"]["vip"]
    assert one_problem(d, "loadBalancer.vip", "needs a vip")


def test_no_controller():
    d = preset_data()
    d["nodes"][0]["roles"] = ["worker"]
    assert one_problem(d, "nodes", "no node has the role controller")


def test_unsupported_version_lists_the_supported_ones():
    d = preset_data()
    d["kubernetes"]["version"] = "1.19.16"
    msg = one_problem(d, "kubernetes.version", "not supported")
    for minor in versions.SUPPORTED_MINORS:
        assert f"{minor}.x" in msg


def test_version_must_look_like_a_version():
    d = preset_data()
    d["kubernetes"]["version"] = "latest"
    assert one_problem(d, "kubernetes.version", "not a version")


@pytest.mark.parametrize(
    "path, key, suggestion",
    [
        ((), "nodez", "nodes"),
        (("network",), "podCidr", "podCIDR"),
        (("network",), "servicecidr", "serviceCIDR"),
        (("loadBalancer",), "vips", "vip"),
        (("pki",), "keytype", "keyType"),
    ],
)
def test_unknown_key_suggests_the_closest(path, key, suggestion):
    d = preset_data("ha-vip")
    target = d
    for p in path:
        target = target[p]
    target[key] = target.pop(suggestion, "x")
    msg = one_problem(d, f"unknown key {key!r}")
    assert f"did you mean {suggestion!r}" in msg


def test_unknown_key_inside_a_node():
    d = preset_data()
    d["nodes"][1]["adress"] = d["nodes"][1].pop("address")
    problems = problems_of(d)
    assert any("nodes[1].adress" in p and "did you mean 'address'" in p for p in problems)


def test_even_number_of_etcd_members_is_a_warning():
    d = preset_data("ha")
    d["nodes"] = [n for n in d["nodes"] if n["name"] != "controller-2"]
    loaded = parse_data(d)
    assert any("2 etcd members" in w and "odd" in w for w in loaded.warnings)


def test_all_problems_reported_at_once_with_lines():
    text = render_preset("basic", "lab")
    text = text.replace("name: worker-1", "name: worker-0").replace(
        "serviceCIDR: 10.32.0.0/24", "serviceCIDR: 10.200.0.0/24"
    )
    with pytest.raises(SpecError) as info:
        parse_spec(text, "cluster.yaml")
    problems = info.value.problems
    assert len(problems) >= 2
    lines = text.splitlines()
    for p in problems:
        assert p.startswith("line "), p
        n = int(p.split()[1].rstrip(":"))
        assert 1 <= n <= len(lines)
    dup = next(p for p in problems if "duplicate node name" in p)
    assert "worker-0" in lines[int(dup.split()[1].rstrip(":")) - 1]


def test_invalid_yaml_and_duplicate_keys():
    with pytest.raises(SpecError) as info:
        parse_spec("name: [unclosed\n")
    assert "not valid YAML" in info.value.problems[0]
    with pytest.raises(SpecError) as info:
        parse_spec("name: a\nname: b\nkubernetes: {version: 1.20.2}\nnodes: []\n")
    assert any("key given twice" in p for p in info.value.problems)


def test_lb_role_requires_haproxy_mode_and_vice_versa():
    d = preset_data("ha")
    d["loadBalancer"]["mode"] = "none"
    assert one_problem(d, "roles", "role lb is used only with loadBalancer.mode: haproxy")
    d = preset_data("basic")
    d["loadBalancer"]["mode"] = "haproxy"
    assert one_problem(d, "loadBalancer.mode", "needs a node with the role lb")


def test_pod_cidr_derivation_and_explicit_conflicts():
    d = preset_data()
    d["nodes"][2]["podCIDR"] = "10.200.20.0/24"  # worker-0's derived CIDR
    assert one_problem(d, "nodes[2].podCIDR", "overlaps that of nodes[1]")
    d = preset_data()
    d["nodes"][1]["podCIDR"] = "10.99.0.0/24"
    assert one_problem(d, "nodes[1].podCIDR", "not inside network.podCIDR")


def test_pod_cidr_cannot_be_derived_in_a_big_node_subnet():
    d = preset_data()
    d["network"]["nodeSubnet"] = "10.240.0.0/16"
    d["nodes"][2]["address"] = "10.240.3.5"  # offset 773 > 256 /24s in a /16
    assert one_problem(d, "nodes[2].address", "cannot derive", "set nodes[].podCIDR")


def test_enum_values_are_checked():
    d = preset_data()
    d["pki"]["keyType"] = "dsa"
    assert one_problem(d, "pki.keyType", "ecdsa-p256")
    d = preset_data()
    d["encryption"]["provider"] = "kms"
    assert one_problem(d, "encryption.provider", "aescbc")


def test_service_account_key_cannot_be_ed25519():
    d = preset_data()
    d["pki"]["serviceAccountKeyType"] = "ed25519"
    assert one_problem(d, "pki.serviceAccountKeyType")


def test_empty_file():
    with pytest.raises(SpecError) as info:
        parse_spec("")
    assert "empty" in info.value.problems[0]


def test_node_outside_explicit_subnet():
    d = preset_data()
    d["nodes"][1]["address"] = "10.241.0.20"
    assert one_problem(d, "nodes[1].address", "outside the node subnet")


def test_spec_roundtrip_is_stable():
    d = preset_data("ha-vip")
    a = parse_data(d).spec
    b = parse_data(yaml.safe_load(yaml.safe_dump(a.model_dump(mode="json", by_alias=True, exclude_none=True)))).spec
    assert a == b


@pytest.mark.parametrize("preset", list(PRESETS))
def test_lab_presets_carry_the_nested_host_profile(preset):
    spec = parse_spec(render_preset(preset, "lab", lab=True)).spec
    assert spec.container_runtime.restrict_oom_score_adj is True
    assert spec.container_runtime.cgroup_driver == "cgroupfs"
    # Each lab machine has its own cgroup namespace: the kubelet's default root is already
    # private, and a cgroupRoot that does not exist stops the kubelet (seen in the lab).
    assert spec.kubelet.cgroup_root is None
    assert spec.kube_proxy.conntrack_max_per_core == 0
    plain = parse_spec(render_preset(preset, "lab")).spec
    assert plain.container_runtime.restrict_oom_score_adj is False and plain.kubelet.cgroup_root is None
