"""Property: any spec either fails validation with SpecError (never another exception) or
renders, deterministically, with every node's pod CIDR inside the cluster's and unique, and
every file readable in its own format with each free-text value read back exactly as given
(one argument per unit line, TOML, YAML, JSON, shell)."""

from __future__ import annotations

import ipaddress
from pathlib import PurePosixPath

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hardway.errors import SpecError
from hardway.render import render_cluster
from hardway.render.control_plane import apiserver_flags
from hardway.render.worker import CONTAINERD_CONFIG, KUBELET_CONFIG, pause_image
from hardway.spec import model
from hardway.spec.load import parse_spec
from tests.fake_material import fake_material
from tests.helpers import read_back

octets = st.integers(min_value=1, max_value=254)

# Valid values of each free-text grammar (spec/model.py), drawn from the grammar itself.
labels = st.from_regex(model.DNS1123_LABEL, fullmatch=True)
domains = st.lists(labels, min_size=1, max_size=4).map(".".join).filter(lambda d: len(d) <= 200)
# Image references built part by part (docker's distribution/reference grammar), so the
# model's regex is checked against an independent spelling of the grammar.
_alnum = st.from_regex(r"[a-z0-9]{1,6}", fullmatch=True)
_component = st.tuples(_alnum, st.lists(st.tuples(st.sampled_from([".", "_", "__", "-", "---"]), _alnum), max_size=2)
                       ).map(lambda t: t[0] + "".join(sep + a for sep, a in t[1]))
_registry = st.from_regex(r"[a-z0-9]{1,8}(\.[a-z0-9-]{0,6}[a-z0-9]){1,2}(:[0-9]{1,5})?/|localhost(:[0-9]{1,5})?/", fullmatch=True)
images = st.builds(
    lambda registry, path, tag, digest: registry + "/".join(path) + tag + digest,
    st.just("") | _registry, st.lists(_component, min_size=1, max_size=3),
    st.just("") | st.from_regex(r":[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True),
    st.just("") | st.binary(min_size=32, max_size=32).map(lambda b: "@sha256:" + b.hex()),
)
path_names = st.from_regex(model.FILE_NAME, fullmatch=True).filter(lambda n: n not in (".", ".."))
node_paths = st.lists(path_names, min_size=1, max_size=4).map(lambda parts: "/" + "/".join(parts))
cgroup_roots = st.one_of(st.just("/"), node_paths, node_paths.map(lambda p: p + "/{node}"))
local_paths = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=30)
image_entries = st.one_of(path_names.filter(lambda n: not n.endswith(".tar")),
                          st.tuples(local_paths, path_names).map(lambda t: f"{t[0]}/{t[1]}.tar"))


@st.composite
def free_text(draw) -> dict:
    """Overrides for every free-text field: some absent (defaults), the rest drawn valid."""
    entries = draw(st.lists(image_entries, max_size=3, unique_by=lambda e: PurePosixPath(e).name.removesuffix(".tar")))
    return {
        "network": {"clusterDomain": draw(domains)},
        "kubelet": {"resolvConf": draw(node_paths), "cgroupRoot": draw(st.none() | cgroup_roots)},
        "ssh": {"user": draw(st.from_regex(model.USER_NAME, fullmatch=True)), "key": draw(local_paths)},
        "artifacts": {"images": entries, "mirror": draw(st.none() | local_paths),
                      "versions": {"pauseImage": draw(st.none() | images)}},
        "loadBalancer": {"interface": draw(st.from_regex(r"[A-Za-z0-9_.:-]{1,15}", fullmatch=True))},
    }


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
    text = draw(free_text())
    lb.update(text["loadBalancer"])
    text["artifacts"]["versions"]["containerd"] = draw(st.sampled_from(["1.6.20", "2.0.4"]))
    return {
        "name": draw(st.from_regex(r"[a-z][a-z0-9-]{0,8}[a-z0-9]", fullmatch=True)),
        "kubernetes": {"version": draw(st.sampled_from(["1.20.2", "1.24.3", "1.27.0", "1.35.1"]))},
        "nodes": nodes,
        "network": {"nodeSubnet": "10.240.0.0/24", "podCIDR": "10.200.0.0/16", "serviceCIDR": "10.32.0.0/24",
                    **text["network"]},
        "loadBalancer": lb,
        "pki": {"keyType": "ecdsa-p256", "layout": draw(st.sampled_from(["flat", "root"]))},
        "containerRuntime": {"restrictOOMScoreAdj": draw(st.booleans())},
        "kubelet": text["kubelet"],
        "ssh": text["ssh"],
        "artifacts": text["artifacts"],
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
    # Free text outside its grammar: refused, never rendered.
    lambda d, x: d["network"].update(clusterDomain=["", "cluster.local.", "a b", "x\\\n --y=z"][x % 4]),
    lambda d, x: d["artifacts"]["versions"].update(pauseImage=['a"b', "UPPER", "", "x:y:z"][x % 4]),
    lambda d, x: d["kubelet"].update(resolvConf=["rel/path", "/a/../b", "/a b", "/x\n"][x % 4]),
    lambda d, x: d["artifacts"].update(images=["$(reboot).tar", "a\nb"][x % 2:x % 2 + 1]),
    lambda d, x: d["ssh"].update(user=["-x", "a b", ""][x % 3]),
]


FREE_TEXT_FIELDS = [("network", "clusterDomain"), ("artifacts", "versions", "pauseImage"), ("kubelet", "resolvConf"),
                    ("kubelet", "cgroupRoot"), ("ssh", "user"), ("ssh", "key"), ("artifacts", "mirror"),
                    ("loadBalancer", "interface"), ("artifacts", "images")]
any_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)


@st.composite
def specs(draw) -> dict:
    data = draw(valid_specs())
    for _ in range(draw(st.integers(min_value=0, max_value=2))):
        draw(st.sampled_from(MUTATIONS))(data, draw(st.integers(min_value=0, max_value=1000)))
    if draw(st.booleans()):  # one free-text field holds anything at all
        *path, last = draw(st.sampled_from(FREE_TEXT_FIELDS))
        target = data
        for part in path:
            target = target[part]
        value = draw(any_text)
        target[last] = [value] if last == "images" else value
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
    assert_read_back(spec, cb)


def assert_read_back(spec, cb) -> None:
    """Every file parses in its format, and each free-text value reads back as given."""
    for name, bundle in cb.nodes.items():
        parsed = read_back(bundle.files)
        node = spec.node(name)
        if "/etc/systemd/system/kube-apiserver.service" in parsed:
            (argv,) = parsed["/etc/systemd/system/kube-apiserver.service"]
            assert argv[1:] == apiserver_flags(spec, node)
            assert f"--service-account-issuer=https://kubernetes.default.svc.{spec.network.cluster_domain}" in argv
        if CONTAINERD_CONFIG in parsed:
            toml = parsed[CONTAINERD_CONFIG]["plugins"]
            sandbox = (toml["io.containerd.grpc.v1.cri"]["sandbox_image"] if "io.containerd.grpc.v1.cri" in toml
                       else toml["io.containerd.cri.v1.images"]["pinned_images"]["sandbox"])
            assert sandbox == pause_image(spec)
            (kubelet,) = parsed[KUBELET_CONFIG]
            assert kubelet["clusterDomain"] == spec.network.cluster_domain
            assert kubelet["resolvConf"] == spec.kubelet.resolv_conf
            root = spec.kubelet.cgroup_root
            assert kubelet.get("cgroupRoot") == (root.replace("{node}", name) if root else None)
            assert bundle.images == spec.artifacts.images
        keepalived = bundle.files.get("/etc/keepalived/keepalived.conf")
        if keepalived:
            assert f"    interface {spec.load_balancer.interface}\n" in keepalived.content.decode()
    coredns = yaml.safe_load_all(cb.manifests["20-coredns.yaml"])
    corefile = next(d for d in coredns if d and d["kind"] == "ConfigMap")["data"]["Corefile"]
    assert f"    kubernetes {spec.network.cluster_domain} in-addr.arpa ip6.arpa {{\n" in corefile
