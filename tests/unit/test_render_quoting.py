"""Defense in depth (issue 11, item 4): even a value that got past validation reaches each
file only through that format's quoting. Specs here are edited *after* validation
(pydantic's model_copy does not validate), as a bug in a grammar would let them through."""

from __future__ import annotations

import subprocess
import tomllib

import pytest
import yaml

from hardway.deploy.desired import desired_for
from hardway.deploy.plan import Facts, plan_host
from hardway.deploy.push import push_script, tar_stream
from hardway.quoting import QuotingError
from hardway.render import render_cluster
from hardway.render.bundle import Bundle
from hardway.render.common import systemd_unit
from hardway.render.control_plane import apiserver_flags
from hardway.render.lb import keepalived_conf
from hardway.render.manifests import coredns
from hardway.render.worker import containerd_config, kubelet_config
from hardway.spec.model import ClusterSpec
from tests.fake_material import fake_material
from tests.helpers import unit_commands
from tests.specs import make_spec

INJECTION = "cluster.local \\\n --authorization-mode=AlwaysAllow"


def unchecked(spec: ClusterSpec, path: tuple[str, ...], value) -> ClusterSpec:
    """`spec` with one field replaced, bypassing validation."""
    head, *rest = path
    if not rest:
        return spec.model_copy(update={head: value})
    return spec.model_copy(update={head: unchecked(getattr(spec, head), tuple(rest), value)})


def test_an_injected_domain_stays_one_apiserver_argument():
    spec = unchecked(make_spec(), ("network", "cluster_domain"), INJECTION)
    node = spec.controllers[0]
    flags = apiserver_flags(spec, node)
    (argv,) = unit_commands(systemd_unit("apiserver", ["/usr/local/bin/kube-apiserver", *flags]))
    assert argv[1:] == flags
    assert f"--service-account-issuer=https://kubernetes.default.svc.{INJECTION}" in argv
    assert "--authorization-mode=AlwaysAllow" not in argv


def test_the_injected_domain_is_refused_by_the_corefile_and_read_back_by_kubelet_yaml():
    spec = unchecked(make_spec(), ("network", "cluster_domain"), INJECTION)
    with pytest.raises(QuotingError):
        coredns(spec)  # a Corefile cannot carry a backslash: refused, never written
    assert yaml.safe_load(yaml.safe_dump(kubelet_config(spec, spec.workers[0])))["clusterDomain"] == INJECTION
    quoted = unchecked(make_spec(), ("network", "cluster_domain"), 'a b"c')
    corefile = next(d for d in yaml.safe_load_all(coredns(quoted)) if d and d["kind"] == "ConfigMap")
    assert '    kubernetes "a b\\"c" in-addr.arpa ip6.arpa {\n' in corefile["data"]["Corefile"]


@pytest.mark.parametrize("containerd", ["1.6.20", "2.0.4"])
def test_a_quote_in_the_pause_image_cannot_break_containerds_toml(containerd):
    evil = 'registry.k8s.io/pause:3.2"\n[plugins.x]\ny = "z'
    spec = unchecked(make_spec(edit=lambda d: d["artifacts"]["versions"].update(containerd=containerd)),
                     ("artifacts", "versions", "pause_image"), evil)
    toml = tomllib.loads(containerd_config(spec))["plugins"]
    assert "x" not in toml
    got = (toml["io.containerd.grpc.v1.cri"]["sandbox_image"] if containerd.startswith("1.")
           else toml["io.containerd.cri.v1.images"]["pinned_images"]["sandbox"])
    assert got == evil


def test_keepalived_refuses_an_interface_it_cannot_spell():
    spec = make_spec("ha-vip")
    material = fake_material(spec)
    evil = unchecked(spec, ("load_balancer", "interface"), "eth0\n    garbage")
    with pytest.raises(QuotingError):
        keepalived_conf(evil, evil.controllers[0], material)
    spaced = unchecked(spec, ("load_balancer", "interface"), "eth 0")
    assert '    interface "eth 0"\n' in keepalived_conf(spaced, spaced.controllers[0], material)


def test_an_image_path_with_a_command_never_runs_in_the_push_shell(tmp_path):
    """deploy/push.py: the image's path on the node, taken from the spec's file name, goes
    through the shell as data: the file lands under its literal name, nothing is executed."""
    name = "x$(touch ran)`touch ran2` y.tar"
    source = tmp_path / name
    source.write_bytes(b"not really an image")
    spec = make_spec()
    worker = spec.workers[0]
    bundle = render_cluster(spec, fake_material(spec)).nodes[worker.name]
    bundle = Bundle(bundle.node, bundle.roles, dict(bundle.files), images=[name])
    d = desired_for(bundle, {}, {name: (source, ["example/x:1"])})
    plan = plan_host(d.bundle, Facts(worker.name), d.items, d.images)
    root = tmp_path / "root"
    root.mkdir()
    data = b"".join(tar_stream([it for it, _ in plan.writes]))
    subprocess.run(["sh", "-c", push_script(plan, str(root))], input=data, check=True, cwd=tmp_path)
    landed = root / "var/lib/hardway/images" / name
    assert landed.read_bytes() == b"not really an image"
    assert not (tmp_path / "ran").exists() and not (tmp_path / "ran2").exists()
    sums = (root / "var/lib/hardway/sums").read_text()
    assert f" /var/lib/hardway/images/{name}\n" in sums
