"""A cluster.yaml made without `--lab` is refused for lab machines before anything starts,
naming each setting to change (seen: keepalived exiting on `eth0` in a lab machine, late)."""

from __future__ import annotations

import os

import pytest

from hardway import api
from hardway import lab as hwlab
from hardway.deploy import up as deploy_up
from hardway.errors import UsageError
from hardway.spec.load import parse_spec
from hardway.spec.presets import LAB_PROFILE, PRESETS, lab_profile_missing, render_preset


@pytest.mark.parametrize("preset", list(PRESETS))
def test_the_lab_profile_is_what_init_lab_writes(preset):
    assert lab_profile_missing(parse_spec(render_preset(preset, "x", lab=True)).spec) == []
    spec = parse_spec(render_preset(preset, "x")).spec
    missing = lab_profile_missing(spec)
    want = [s.path for s in LAB_PROFILE if s.applies(spec)]
    assert [m.split(":")[0] for m in missing] == want
    assert ("loadBalancer.interface" in want) == (preset == "ha-vip")


def test_init_lab_writes_exactly_the_table_and_1_35_needs_the_cgroup_v1_row():
    text = render_preset("basic", "x", lab=True)
    for s in LAB_PROFILE:
        if not s.path.startswith("loadBalancer."):
            assert f"  {s.path.split('.', 1)[1]}: " in text, s.path  # written from the table
    new = parse_spec(render_preset("basic", "x").replace("version: \"1.20.2\"", "version: \"1.35.0\"")).spec
    assert any(m.startswith("kubelet.failCgroupV1: false") for m in lab_profile_missing(new))
    old = parse_spec(render_preset("basic", "x")).spec  # 1.20: the field does not exist, not required
    assert not any(m.startswith("kubelet.failCgroupV1") for m in lab_profile_missing(old))


def test_lab_up_refuses_a_spec_without_the_lab_profile_before_anything(tmp_path, monkeypatch):
    api.init(tmp_path / "hv", "ha-vip")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)  # it must not even get to the root check
    with pytest.raises(UsageError) as e:
        hwlab.up(tmp_path / "hv")
    msg = str(e.value)
    assert "lacks the lab profile" in msg and "loadBalancer.interface: host0   (now eth0;" in msg
    assert "containerRuntime.restrictOOMScoreAdj: true   (now false;" in msg
    assert f"hardway init {tmp_path / 'hv'} --preset ha-vip --lab --force" in msg
    assert sorted(p.name for p in (tmp_path / "hv").iterdir()) == ["cluster.yaml"]  # nothing made


def test_up_on_lab_machines_refuses_it_too_and_only_there(tmp_path, monkeypatch):
    d = tmp_path / "hv"
    api.init(d, "ha-vip")
    reached: list[str] = []

    def prepare(directory, progress, **_options):
        reached.append("prepare")
        raise UsageError("stop here")

    monkeypatch.setattr(deploy_up, "prepare", prepare)
    with pytest.raises(UsageError, match="stop here"):  # real machines: no lab profile wanted
        deploy_up.up(d)
    (d / "lab").mkdir()
    (d / "lab" / "state.json").write_text("{}")
    with pytest.raises(UsageError, match=r"lacks the lab profile(.|\n)*`hardway -C \S+ up` again"):
        deploy_up.up(d)
    assert reached == ["prepare"]
    api.init(d, "ha-vip", force=True, lab=True)
    with pytest.raises(UsageError, match="stop here"):
        deploy_up.up(d)
