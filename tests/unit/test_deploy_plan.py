"""The per-host diff: only what changed is written, only affected units restart."""

from __future__ import annotations

from dataclasses import replace

from hardway.deploy.plan import Facts, FileFact, plan_host
from hardway.render import render_cluster
from tests.fake_material import fake_material
from tests.specs import make_spec


def bundle_and_facts(preset="basic", node="worker-0", edit=None):
    spec = make_spec(preset, edit=edit)
    b = render_cluster(spec, fake_material(spec)).nodes[node]
    facts = Facts(node, files={p: FileFact(f.sha256, f.mode, f.owner) for p, f in b.files.items()},
                  active_units=frozenset(u.name for u in b.units))
    return b, facts


def test_converged_host_has_an_empty_plan():
    b, facts = bundle_and_facts()
    assert plan_host(b, facts).empty


def test_fresh_host_writes_everything_and_starts_every_unit():
    b, _ = bundle_and_facts()
    p = plan_host(b, Facts("worker-0"))
    assert {f.path for f, _ in p.writes} == set(b.files)
    assert all(c.reason == "new" for _, c in p.writes)
    assert p.daemon_reload and p.starts == [u.name for u in b.units] and p.restarts == []


def test_changed_config_restarts_only_its_unit():
    b, facts = bundle_and_facts()
    b2, _ = bundle_and_facts(edit=lambda d: d["containerRuntime"].update(restrictOOMScoreAdj=True))
    p = plan_host(b2, facts)
    assert {f.path for f, _ in p.writes} == {"/etc/containerd/config.toml", "/etc/systemd/system/containerd.service"}
    assert p.restarts == ["containerd.service"] and p.daemon_reload


def test_mode_and_owner_drift_is_repaired_without_a_restart_of_others():
    b, facts = bundle_and_facts("basic", "controller-0")
    files = dict(facts.files)
    key = "/etc/etcd/pki/server.key"
    files[key] = replace(files[key], mode=0o644)
    p = plan_host(b, replace(facts, files=files))
    assert [(f.path, c.reason) for f, c in p.writes] == [(key, "mode 0644 -> 0600")]
    assert p.restarts == ["etcd.service"] and not p.daemon_reload


def test_stopped_unit_is_started_not_restarted():
    b, facts = bundle_and_facts()
    p = plan_host(b, replace(facts, active_units=facts.active_units - {"kubelet.service"}))
    assert p.starts == ["kubelet.service"] and p.restarts == [] and p.writes == []
