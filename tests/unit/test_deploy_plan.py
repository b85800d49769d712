"""The per-host diff: only what changed is written, only affected units restart."""

from __future__ import annotations

from dataclasses import replace

from hardway.deploy.plan import Facts, FileFact, describe, plan_host
from hardway.render import render_cluster
from tests.fake_material import fake_material
from tests.specs import make_spec


def bundle_and_facts(preset="basic", node="worker-0", edit=None):
    spec = make_spec(preset, edit=edit)
    b = render_cluster(spec, fake_material(spec)).nodes[node]
    # A host hardway converged: every file in place and listed in its manifest.
    facts = Facts(node, files={p: FileFact(f.sha256, f.mode, f.owner) for p, f in b.files.items()},
                  active_units=frozenset(u.name for u in b.units), sysctls=dict(b.sysctls),
                  modules={m: True for m in b.modules}, owned=frozenset(b.files))
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


def test_interrupted_run_owes_restarts_that_the_next_plan_carries_out():
    b, facts = bundle_and_facts()
    p = plan_host(b, replace(facts, pending_restarts=("kubelet.service",)))
    assert p.restarts == ["kubelet.service"] and p.writes == []


def test_kernel_settings_that_differ_are_planned_and_present_modules_are_not():
    b, facts = bundle_and_facts()
    sysctls = dict(facts.sysctls, **{"net.ipv4.ip_forward": "0"})
    p = plan_host(b, replace(facts, sysctls=sysctls, modules={"overlay": True, "br_netfilter": False}))
    assert p.sysctls == {"net.ipv4.ip_forward": ("0", "1")}
    assert p.modules == ["br_netfilter"] and not p.restarts


def test_a_replaced_binary_restarts_the_unit_that_runs_it(tmp_path):
    from hardway.deploy.desired import Blob

    b, facts = bundle_and_facts()
    kubelet = tmp_path / "kubelet"
    kubelet.write_bytes(b"new kubelet")
    items = dict(b.files)
    items["/usr/local/bin/kubelet"] = Blob("/usr/local/bin/kubelet", "ab" * 32, 11, kubelet)
    files = dict(facts.files, **{"/usr/local/bin/kubelet": FileFact("cd" * 32, 0o755, "root:root")})
    p = plan_host(b, replace(facts, files=files, owned=facts.owned | {"/usr/local/bin/kubelet"}), items)
    assert [c.reason for _, c in p.writes] == ["content"]
    assert p.restarts == ["kubelet.service"]


def test_images_are_imported_when_missing_or_rewritten():
    b, facts = bundle_and_facts()
    images = {"/var/lib/hardway/images/web-1.0.tar": ["hardway.local/web:1.0"]}
    assert plan_host(b, facts, images=images).imports == ["/var/lib/hardway/images/web-1.0.tar"]
    have = replace(facts, images=frozenset({"hardway.local/web:1.0"}))
    assert plan_host(b, have, images=images).imports == []


def test_load_balancer_files_reload_haproxy_and_keepalived_and_their_unit_files_restart_them():
    """A reload keeps HAProxy's listener and keepalived's VIP: no client sees a refused connection."""
    from hardway.deploy.activate import units_script
    from hardway.render.bundle import Phase
    from hardway.render.lb import CHECK_SCRIPT, HAPROXY_CFG

    b, facts = bundle_and_facts("ha-vip", "controller-1")
    files = dict(facts.files)
    for path in (HAPROXY_CFG, CHECK_SCRIPT):
        files[path] = replace(files[path], sha256="0" * 64)
    p = plan_host(b, replace(facts, files=files))
    assert p.reloads == ["haproxy.service", "keepalived.service"] and p.restarts == []
    assert "reload haproxy.service" in describe(p) and not p.empty
    script = units_script([u for u in b.units if u.phase is Phase.load_balancer], p)
    assert "systemctl reload haproxy.service\n" in script and "systemctl reload keepalived.service" in script
    assert "enable" not in script  # running and enabled already

    # A reload an interrupted run owed (push records it as pending) is made up by a restart.
    p = plan_host(b, replace(facts, pending_restarts=("haproxy.service",)))
    assert p.restarts == ["haproxy.service"] and p.reloads == []
