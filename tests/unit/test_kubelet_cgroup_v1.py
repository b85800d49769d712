"""Kubernetes 1.35's kubelet refuses cgroup v1 by default (failCgroupV1): a lab spec opts out,
any other spec is refused by `up` on a cgroup v1 worker, naming the host."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from hardway.deploy.desired import Desired
from hardway.deploy.facts import facts_script, parse_facts
from hardway.deploy.plan import Facts
from hardway.deploy.up import _check_facts
from hardway.errors import OperationError
from hardway.render import render_cluster
from hardway.render.worker import kubelet_refuses_cgroup_v1
from hardway.spec import versions
from hardway.spec.presets import render_preset
from tests.fake_material import fake_material
from tests.specs import make_spec, parse_data


def lab_spec(version: str):
    data = yaml.safe_load(render_preset("basic", "lab", lab=True))
    data["kubernetes"]["version"] = version
    return parse_data(data).spec


def kubelet_config(spec) -> dict:
    b = render_cluster(spec, fake_material(spec)).nodes["worker-0"]
    return yaml.safe_load(b.files["/var/lib/kubelet/config.yaml"].content.decode().split("---\n", 1)[1])


@pytest.mark.parametrize("minor", versions.SUPPORTED_MINORS)
def test_lab_kubelet_config_opts_out_of_cgroup_v1_failure_where_the_field_exists(minor):
    has_field = versions.parse_minor(minor) >= (1, 31)
    cfg = kubelet_config(lab_spec(f"{minor}.0"))
    assert cfg.get("failCgroupV1", "absent") == (False if has_field else "absent"), minor
    # A spec without the lab profile keeps the kubelet's own default: nothing rendered.
    assert "failCgroupV1" not in kubelet_config(make_spec(version=f"{minor}.0"))
    assert kubelet_refuses_cgroup_v1(lab_spec(f"{minor}.0")) is False


@pytest.mark.parametrize("version, setting, refuses", [
    ("1.30.0", None, False), ("1.30.0", True, False),  # no such field: v1 always runs
    ("1.31.0", None, False), ("1.34.0", None, False),  # field exists, default false
    ("1.31.0", True, True),
    ("1.35.0", None, True),  # default true from 1.35
    ("1.35.0", False, False), ("1.35.0", True, True),
])
def test_which_kubelets_refuse_cgroup_v1(version, setting, refuses):
    edit = (lambda d: d.setdefault("kubelet", {}).update(failCgroupV1=setting)) if setting is not None else None
    spec = make_spec(version=version, edit=edit)
    assert kubelet_refuses_cgroup_v1(spec) is refuses
    if setting is not None and versions.kubelet_field(spec.minor, "failCgroupV1"):
        assert kubelet_config(spec)["failCgroupV1"] is setting


def test_lab_preset_says_why():
    text = render_preset("ha", "x", lab=True)
    assert "failCgroupV1: false" in text and "1.35" in text
    assert "failCgroupV1" not in render_preset("ha", "x")


def _facts_and_desired(spec, cgroup: int):
    cb = render_cluster(spec, fake_material(spec))
    facts = {n: Facts(n, arch="x86_64", cgroup_version=cgroup) for n in cb.nodes}
    return facts, {n: Desired(n, b) for n, b in cb.nodes.items()}


def test_up_refuses_a_135_kubelet_on_a_cgroup_v1_worker_naming_the_host():
    spec = make_spec(version="1.35.0")
    facts, desired = _facts_and_desired(spec, cgroup=1)
    with pytest.raises(OperationError) as e:
        _check_facts(facts, desired, spec)
    msg = str(e.value)
    assert "worker-0: cgroup v1" in msg and "worker-1: cgroup v1" in msg
    assert "controller-0" not in msg  # no kubelet there
    assert "failCgroupV1: false" in msg and "systemd.unified_cgroup_hierarchy=1" in msg
    # cgroup v2 hosts, an older kubelet, or a spec that opts out: no refusal
    _check_facts(_facts_and_desired(spec, cgroup=2)[0], desired, spec)
    old = make_spec(version="1.34.0")
    _check_facts(*_facts_and_desired(old, cgroup=1), old)
    lab = lab_spec("1.35.0")
    _check_facts(*_facts_and_desired(lab, cgroup=1), lab)


def test_facts_report_the_cgroup_version(tmp_path):
    assert parse_facts("n", "G cgroup2fs").cgroup_version == 2
    assert parse_facts("n", "G tmpfs").cgroup_version == 1
    assert parse_facts("n", "G ").cgroup_version == 0
    # the script itself, on this machine, agrees with stat
    here = subprocess.run(["stat", "-fc", "%T", "/sys/fs/cgroup"], capture_output=True, text=True).stdout.strip()
    script = facts_script([], [], [], []).replace("/var/lib/hardway", str(tmp_path))
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True).stdout
    assert f"G {here}" in out.splitlines()
