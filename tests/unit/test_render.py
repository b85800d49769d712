"""Rendering: golden bundles per preset and per minor, flags per minor, security properties."""

from __future__ import annotations

import os
import re
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from hardway.render import render_cluster
from hardway.render.bundle import ClusterBundle
from hardway.render.common import FlagError
from hardway.spec import catalogue, versions
from hardway.spec.model import Role
from hardway.spec.presets import PRESETS
from tests.fake_material import fake_material
from tests.specs import make_spec

GOLDEN = Path(__file__).parent.parent / "golden"
UPDATE_ENV = "HARDWAY_UPDATE_GOLDEN"
VERSIONED = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy")


def render(preset: str, version: str = "1.20.2", edit=None) -> ClusterBundle:
    spec = make_spec(preset, version, edit)
    return render_cluster(spec, fake_material(spec))


def flatten(cb: ClusterBundle, nodes: list[str] | None = None, secrets: bool = True) -> str:
    """One text per cluster: every file of every node, with its mode and owner."""
    out = []
    for name, bundle in cb.nodes.items():
        if nodes and name not in nodes:
            continue
        out.append(f"##### node {name} roles={','.join(bundle.roles)}")
        out.append(f"# units: {[(u.name, u.phase.value, list(u.restart_on)) + (('reload_on', list(u.reload_on)) if u.reload_on else ()) for u in bundle.units]}")
        out.append(f"# sysctls: {bundle.sysctls} modules: {bundle.modules} packages: {bundle.packages}")
        out.append(f"# binaries: {[(b.artifact, b.name) for b in bundle.binaries]}")
        for path, f in sorted(bundle.files.items()):
            if not secrets and f.mode == 0o600:
                out.append(f"=== {path} {f.mode:04o} {f.owner} (secret, {len(f.content)} bytes)")
                continue
            out.append(f"=== {path} {f.mode:04o} {f.owner}")
            out.append(f.content.decode())
    for fname, content in sorted(cb.manifests.items()):
        out.append(f"##### manifest {fname}")
        out.append(content.decode())
    return "\n".join(out)


def check_golden(name: str, text: str) -> None:
    """`text` must equal the golden file. Only HARDWAY_UPDATE_GOLDEN=1 writes one: a missing
    golden fails (a test that wrote what it checks would pass whatever the renderer did)."""
    path = GOLDEN / name
    if os.environ.get(UPDATE_ENV) == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    if not path.exists():
        pytest.fail(f"golden file {path} is missing; run `{UPDATE_ENV}=1 pytest tests/unit/test_render.py` "
                    "and review what it wrote", pytrace=False)
    want = path.read_text()
    if text != want:
        import difflib

        diff = "".join(list(difflib.unified_diff(want.splitlines(True), text.splitlines(True), "golden", "rendered"))[:80])
        pytest.fail(f"{name} differs from the golden file ({UPDATE_ENV}=1 to accept):\n{diff}")


def test_a_missing_golden_fails_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "GOLDEN", tmp_path)
    monkeypatch.delenv(UPDATE_ENV, raising=False)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.fail.Exception, match="missing"):
        check_golden("new.txt", "rendered\n")
    assert not (tmp_path / "new.txt").exists()
    monkeypatch.setenv(UPDATE_ENV, "1")
    check_golden("new.txt", "rendered\n")  # the explicit update writes it
    assert (tmp_path / "new.txt").read_text() == "rendered\n"
    monkeypatch.delenv(UPDATE_ENV)
    with pytest.raises(pytest.fail.Exception, match="differs"):
        check_golden("new.txt", "rendered differently\n")


@pytest.mark.parametrize("preset", list(PRESETS))
def test_golden_bundle_per_preset(preset):
    check_golden(f"preset-{preset}.txt", flatten(render(preset)))


@pytest.mark.parametrize("minor", versions.SUPPORTED_MINORS)
def test_golden_bundle_per_minor(minor):
    # The version-sensitive files of a controller and a worker, secrets elided.
    cb = render("basic", f"{minor}.0")
    check_golden(f"minor-{minor}.txt", flatten(cb, ["controller-0", "worker-0"], secrets=False))


def test_containerd_2_config_format():
    cb = render("basic", "1.31.0", edit=lambda d: d["artifacts"]["versions"].update(containerd="2.0.4"))
    text = cb.nodes["worker-0"].files["/etc/containerd/config.toml"].content.decode()
    assert "version = 3" in text
    parsed = tomllib.loads(text)
    assert parsed["plugins"]["io.containerd.cri.v1.images"]["pinned_images"]["sandbox"] == "registry.k8s.io/pause:3.10"
    assert "io.containerd.grpc.v1.cri" not in text
    check_golden("containerd-2.toml", text)


def exec_flags(unit_text: str) -> tuple[str, list[str]]:
    m = re.search(r"^ExecStart=(.*?)(?<!\\)$", unit_text, re.S | re.M)
    assert m, unit_text
    words = m.group(1).replace("\\\n", " ").split()
    return Path(words[0]).name, [w.split("=", 1)[0] for w in words[1:]]


@pytest.mark.parametrize("minor", versions.SUPPORTED_MINORS)
@pytest.mark.parametrize("preset", list(PRESETS))
def test_no_flag_outside_the_minors_known_set(preset, minor):
    cb = render(preset, f"{minor}.1")
    seen = set()
    for bundle in cb.nodes.values():
        for unit in bundle.units:
            f = bundle.files.get(f"/etc/systemd/system/{unit.name}")
            if f is None:
                continue
            binary, used = exec_flags(f.content.decode())
            if binary in VERSIONED:
                seen.add(binary)
                unknown = set(used) - versions.known_flags(binary, minor)
                assert not unknown, f"{binary} {minor}: {unknown}"
    assert "kubelet" in seen and "kube-apiserver" in seen


def test_flags_follow_the_catalogue():
    old = render("basic", "1.20.2").nodes
    new = render("basic", "1.30.2").nodes
    kubelet_old = old["worker-0"].files["/etc/systemd/system/kubelet.service"].content.decode()
    kubelet_new = new["worker-0"].files["/etc/systemd/system/kubelet.service"].content.decode()
    assert "--container-runtime=remote" in kubelet_old and "--network-plugin=cni" in kubelet_old
    assert "--container-runtime=" not in kubelet_new and "--network-plugin" not in kubelet_new
    assert "--container-runtime-endpoint" not in kubelet_new
    cfg_new = yaml.safe_load(new["worker-0"].files["/var/lib/kubelet/config.yaml"].content.decode().split("---\n", 1)[1])
    assert cfg_new["containerRuntimeEndpoint"] == "unix:///run/containerd/containerd.sock"
    api_old = old["controller-0"].files["/etc/systemd/system/kube-apiserver.service"].content.decode()
    api_new = new["controller-0"].files["/etc/systemd/system/kube-apiserver.service"].content.decode()
    assert "--insecure-port=0" in api_old and "--insecure-port" not in api_new
    sched = {m: yaml.safe_load(render("basic", f"{m}.0").nodes["controller-0"]
                               .files["/etc/kubernetes/kube-scheduler.yaml"].content.decode().split("---\n", 1)[1])["apiVersion"]
             for m in ("1.23", "1.25", "1.35")}
    assert sched == {  # 1.20-1.22 run the scheduler from flags (no plain-HTTP port then)
        "1.23": "kubescheduler.config.k8s.io/v1beta3",
        "1.25": "kubescheduler.config.k8s.io/v1",
        "1.35": "kubescheduler.config.k8s.io/v1",
    }


def test_a_flag_missing_from_the_catalogue_is_refused(monkeypatch):
    table = dict(catalogue.FLAGS["kube-apiserver"])
    table.pop("--anonymous-auth")
    monkeypatch.setitem(catalogue.FLAGS, "kube-apiserver", table)
    versions.known_flags.cache_clear()
    try:
        with pytest.raises(FlagError, match="has no flag --anonymous-auth"):
            render("basic")
    finally:
        versions.known_flags.cache_clear()


@pytest.mark.parametrize("preset", list(PRESETS))
def test_rendering_is_deterministic(preset):
    assert flatten(render(preset)) == flatten(render(preset))


@pytest.mark.parametrize("preset", list(PRESETS))
def test_no_ca_key_on_a_worker(preset):
    cb = render(preset)
    spec = make_spec(preset)
    ca_keys = {fake_material(spec).key(n) for n in ("ca", "etcd-ca", "front-proxy-ca")}
    for node in spec.nodes:
        bundle = cb.nodes[node.name]
        carries = {p for p, f in bundle.files.items() if f.content in ca_keys}
        if node.has(Role.controller):
            assert carries == {"/etc/kubernetes/pki/ca.key"}, "controllers: only the cluster CA key (CSR signer)"
        else:
            assert carries == set(), f"{node.name} carries a CA key: {carries}"
        for path, f in bundle.files.items():
            if b"PRIVATE KEY" in f.content or b"client-key-data" in f.content:
                assert f.mode == 0o600, f"{node.name}:{path} holds a key but is {f.mode:o}"


def test_kubelet_security_settings():
    cb = render("basic")
    cfg = yaml.safe_load(cb.nodes["worker-0"].files["/var/lib/kubelet/config.yaml"].content.decode().split("---\n", 1)[1])
    assert cfg["authentication"]["anonymous"]["enabled"] is False
    assert cfg["authorization"]["mode"] == "Webhook"
    assert cfg["readOnlyPort"] == 0
    assert cfg["protectKernelDefaults"] is True
    assert cfg["podCIDR"] == "10.200.20.0/24"
    assert cfg["clusterDNS"] == ["10.32.0.10"]


def test_encryption_config_per_provider():
    for provider in ("aescbc", "secretbox", "aesgcm"):
        cb = render("single", edit=lambda d, provider=provider: d["encryption"].update(provider=provider))
        f = cb.nodes["node-0"].files["/etc/kubernetes/encryption-config.yaml"]
        assert f.mode == 0o600
        doc = yaml.safe_load(f.content.decode().split("---\n", 1)[1])
        providers = doc["resources"][0]["providers"]
        assert list(providers[0]) == [provider] and providers[1] == {"identity": {}}
        assert providers[0][provider]["keys"] == [
            {"name": "key1", "secret": fake_material(make_spec("single")).encryption_keys[0].secret}]


def test_cni_and_routes_use_each_nodes_pod_cidr():
    cb = render("basic")
    w1 = cb.nodes["worker-1"]
    assert '"subnet": "10.200.21.0/24"' in w1.files["/etc/cni/net.d/10-bridge.conflist"].content.decode()
    routes = w1.files["/etc/systemd/system/hardway-routes.service"].content.decode()
    assert "ExecStart=/sbin/ip route replace 10.200.20.0/24 via 10.240.0.20" in routes
    assert "10.200.21.0/24" not in routes
    c0 = cb.nodes["controller-0"].files["/etc/systemd/system/hardway-routes.service"].content.decode()
    assert "10.200.20.0/24 via 10.240.0.20" in c0 and "10.200.21.0/24 via 10.240.0.21" in c0


def test_clients_point_at_the_load_balancer():
    for preset, server in (("basic", "https://10.240.0.10:6443"), ("ha", "https://10.240.0.30:6443"),
                           ("ha-vip", "https://10.240.0.100:8443")):
        cb = render(preset)
        for path in ("/etc/kubernetes/kubelet.conf", "/etc/kubernetes/proxy.conf"):
            kc = yaml.safe_load(cb.nodes["worker-0"].files[path].content.decode().split("---\n", 1)[1])
            assert kc["clusters"][0]["cluster"]["server"] == server, (preset, path)
        cm = yaml.safe_load(cb.nodes["controller-0"].files["/etc/kubernetes/controller-manager.conf"].content.decode().split("---\n", 1)[1])
        assert cm["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:6443"


def test_nested_host_settings():
    def nested(d):
        d["containerRuntime"].update(restrictOOMScoreAdj=True, cgroupDriver="cgroupfs")
        d["kubelet"] = {"cgroupRoot": "/hardway-lab/{node}"}
        d["kubeProxy"] = {"conntrackMaxPerCore": 0}

    cb = render("basic", edit=nested)
    w = cb.nodes["worker-1"].files
    assert "restrict_oom_score_adj = true" in w["/etc/containerd/config.toml"].content.decode()
    assert "SystemdCgroup = false" in w["/etc/containerd/config.toml"].content.decode()
    assert "OOMScoreAdjust" not in w["/etc/systemd/system/containerd.service"].content.decode()
    assert "cgroupRoot: /hardway-lab/worker-1" in w["/var/lib/kubelet/config.yaml"].content.decode()
    assert "maxPerCore: 0" in w["/var/lib/kube-proxy/config.yaml"].content.decode()
    plain = render("basic").nodes["worker-1"].files
    assert "OOMScoreAdjust=-999" in plain["/etc/systemd/system/containerd.service"].content.decode()
    assert "restrict_oom_score_adj" not in plain["/etc/containerd/config.toml"].content.decode()


def test_every_generated_file_says_how_it_was_made():
    cb = render("ha-vip")
    for bundle in cb.nodes.values():
        for path, f in bundle.files.items():
            if f.mode == 0o600 and b"PRIVATE KEY" in f.content or path.endswith((".crt", ".pub", ".pem")):
                continue
            assert b"Generated by hardway" in f.content[:400], path


def test_yaml_files_parse_and_manifests_are_objects():
    cb = render("ha")
    for bundle in cb.nodes.values():
        for path, f in bundle.files.items():
            if path.endswith((".yaml", ".conf")) and b"apiVersion" in f.content:
                docs = [d for d in yaml.safe_load_all(f.content) if d]
                assert all("apiVersion" in d and "kind" in d for d in docs), path
    kinds = [d["kind"] for d in yaml.safe_load_all(cb.manifests["20-coredns.yaml"]) if d]
    assert kinds == ["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ConfigMap", "Deployment", "Service"]
    svc = [d for d in yaml.safe_load_all(cb.manifests["20-coredns.yaml"]) if d and d["kind"] == "Service"][0]
    assert svc["spec"]["clusterIP"] == "10.32.0.10"
    rbac = [d for d in yaml.safe_load_all(cb.manifests["10-rbac.yaml"]) if d]
    binding = next(d for d in rbac if d["metadata"]["name"] == "system:kube-apiserver")
    assert binding["subjects"][0]["name"] == "kube-apiserver-kubelet-client"  # the apiserver-kubelet-client CN
