"""`hardway node remove WORKER` without hosts: the refusals (deploy/retire.py, pure), the order
of its steps and what each failure leaves (host, kubectl and `up` replaced by recorders), and
the stale pod routes the push deletes on the other nodes (render/host.py, deploy/push.py)."""

from __future__ import annotations

import os
import subprocess

import pytest

from hardway import api
from hardway.deploy import retire
from hardway.deploy.plan import Facts, FileFact, plan_host
from hardway.deploy.push import SUFFIX, push_script
from hardway.deploy.reset import HostReset
from hardway.errors import OperationError, UsageError
from hardway.render import render_cluster
from hardway.render.host import ROUTES_UNIT, stale_routes_script
from tests.fake_material import fake_material
from tests.specs import make_spec

UNIT = "/etc/systemd/system/" + ROUTES_UNIT


def without(name: str):
    return lambda d: d.__setitem__("nodes", [n for n in d["nodes"] if n["name"] != name])


# ---- refusals (exit 2), before anything is touched


def test_a_worker_removal_is_refused_for_bad_input():
    spec = make_spec("ha")
    with pytest.raises(UsageError, match="no node named 'worker-9'"):
        retire.check_worker_removal(spec, "worker-9")
    with pytest.raises(UsageError, match="lb-0 has the roles lb.*cannot be removed yet"):
        retire.check_worker_removal(spec, "lb-0")
    with pytest.raises(UsageError, match="--reissue apiserver: removing a worker makes no certificate stale"):
        retire.check_worker_removal(spec, "worker-0", ("apiserver",))
    retire.check_worker_removal(spec, "worker-0")  # fine
    one = make_spec("basic", edit=without("worker-1"))
    with pytest.raises(UsageError, match="worker-0 is the only worker.*nowhere to go"):
        retire.check_worker_removal(one, "worker-0")
    both = make_spec("single")
    name = both.nodes[0].name
    with pytest.raises(UsageError, match=f"{name} has the roles .*controller.*worker"):
        retire.check_worker_removal(both, name)


def test_the_api_refuses_force_for_a_controller_and_a_bad_drain_timeout(tmp_path):
    d = tmp_path / "c"
    api.init(d, "ha", name="t")
    api.pki_init(d)
    text = (d / "cluster.yaml").read_text()
    with pytest.raises(UsageError, match="--force: controller-2 is a controller"):
        api.node_remove(d, "controller-2", force=True)
    with pytest.raises(UsageError, match="--drain-timeout 0"):
        api.node_remove(d, "worker-0", drain_timeout=0)
    assert (d / "cluster.yaml").read_text() == text


# ---- the steps, with the host, kubectl and `up` recorded instead of run


class Host:
    node = "worker-1"

    async def close(self) -> None:
        pass


@pytest.fixture
def cluster(tmp_path, monkeypatch):
    """A basic cluster directory (a comment in cluster.yaml) whose hosts, kubectl and `up` are
    recorders: `calls` says what ran, in order; `fail` makes one step fail."""
    d = tmp_path / "c"
    api.init(d, "basic", name="t")
    path = d / "cluster.yaml"
    path.write_text(path.read_text().replace("  - {name: worker-1,", "  # the spare\n  - {name: worker-1,"))
    calls: list[str] = []
    fail: set[str] = set()

    async def connect_all(spec, cd, names, opts, progress):
        calls.append(f"connect {' '.join(names)}")
        if "connect" in fail:
            raise OperationError("worker-1: cannot connect to 10.240.0.21:22: timed out")
        return {names[0]: Host()}

    def kubectl(cd, *args, timeout=60):
        words = [a for a in args if not a.startswith("-")]
        calls.append("kubectl " + " ".join(words[:3 if args[0] in ("get", "delete") else 2]))
        if args[0] == "get":
            return 0, '{"metadata": {"name": "worker-1"}, "spec": {}}', ""
        if args[0] == "drain" and "drain" in fail:
            return 1, "node/worker-1 cordoned\n", "error: cannot delete Pods not managed by ReplicationController"
        if args[0] == "delete":
            return 0, 'node "worker-1" deleted\n', ""
        return 0, "", ""

    async def reset_host(t, progress):
        calls.append("reset")
        return HostReset(t.node, problems=["cannot unmount /var/lib/kubelet/pods/x"] if "reset" in fail else [])

    def up(directory, progress, opts):
        calls.append("up " + ("without worker-1" if "worker-1" not in path.read_text() else "with worker-1"))
        return "up-report"

    monkeypatch.setattr(retire, "connect_all", connect_all)
    monkeypatch.setattr(retire, "_kubectl", kubectl)
    monkeypatch.setattr(retire, "reset_host", reset_host)
    monkeypatch.setattr("hardway.deploy.up.up", up)
    return d, calls, fail


def test_a_worker_is_drained_reset_and_deleted_before_cluster_yaml_and_up(cluster):
    d, calls, _ = cluster
    text = (d / "cluster.yaml").read_text()
    said: list[str] = []
    rm = api.node_remove(d, "worker-1", said.append, drain_timeout=90)
    assert calls == ["connect worker-1", "kubectl get node worker-1", "kubectl drain worker-1", "reset",
                     "kubectl delete node worker-1", "up without worker-1"]
    assert rm.drained and rm.node_deleted and not rm.forced and rm.up == "up-report"
    # its entry (not the comment above it) is gone, every other line as it was
    assert (d / "cluster.yaml").read_text().splitlines() == [ln for ln in text.splitlines() if "worker-1" not in ln]
    assert "# the spare" in (d / "cluster.yaml").read_text()
    assert any("at most 90 s" in m for m in said)


FAILURES = {  # the step that fails -> what the error says, and every step run (the last one failed)
    "connect": ("worker-1 cannot be reached.*Nothing was changed.*--force", ["connect worker-1"]),
    "drain": ("could not be drained.*uncordoned again.*Nothing else was changed",
              ["connect worker-1", "kubectl get node worker-1", "kubectl drain worker-1", "kubectl uncordon worker-1"]),
    "reset": ("not completely reset: cannot unmount.*Its Node and its cluster.yaml entry stay.*node remove worker-1` "
              "again", ["connect worker-1", "kubectl get node worker-1", "kubectl drain worker-1", "reset"]),
}


@pytest.mark.parametrize("step", FAILURES)
def test_a_failed_step_stops_the_removal_with_cluster_yaml_as_it_was(cluster, step):
    d, calls, fail = cluster
    fail.add(step)
    text = (d / "cluster.yaml").read_text()
    match, ran = FAILURES[step]
    with pytest.raises(OperationError, match=match) as e:
        api.node_remove(d, "worker-1")
    assert e.value.exit_code == 1 and calls == ran
    assert (d / "cluster.yaml").read_text() == text


def test_an_unreachable_worker_is_removed_with_force(cluster):
    d, calls, fail = cluster
    fail.add("connect")
    calls.clear()
    rm = api.node_remove(d, "worker-1", force=True)
    assert calls == ["connect worker-1", "kubectl delete node worker-1", "up without worker-1"]
    assert rm.forced and not rm.drained and rm.reset is None and "kubelet" in rm.left


# ---- the other nodes' pod routes


def test_removing_a_worker_changes_only_the_others_routes_unit():
    """The other nodes' bundles differ from before only in the routes unit (rewritten, or gone
    with the last other worker), so `up` restarts nothing long-running there."""
    spec = make_spec("ha")
    smaller = make_spec("ha", edit=without("worker-1"))
    cidr = str(spec.pod_cidr(spec.node("worker-1"))).encode()
    before = render_cluster(spec, fake_material(spec)).nodes
    after = render_cluster(smaller, fake_material(smaller)).nodes
    for name, b in after.items():
        old = before[name]
        changed = {p for p in old.files.keys() | b.files.keys() if old.files.get(p) != b.files.get(p)}
        assert changed <= {UNIT}, (name, changed)
        if UNIT in b.files:
            assert cidr not in b.files[UNIT].content
        facts = Facts(name, files={p: FileFact(f.sha256, f.mode, f.owner) for p, f in old.files.items()},
                      active_units=frozenset(u.name for u in old.units), owned=frozenset(old.files))
        plan = plan_host(b, facts)
        assert set(plan.restarts) <= {ROUTES_UNIT} and not plan.starts and not plan.reloads, (name, plan)
    # worker-0 has no other worker left: its routes unit goes, stopped first
    plan = plan_host(after["worker-0"], Facts("worker-0", files={p: FileFact(f.sha256, f.mode, f.owner)
                                                                 for p, f in before["worker-0"].files.items()},
                                              owned=frozenset(before["worker-0"].files)))
    assert plan.removes == [UNIT] and plan.stops == [ROUTES_UNIT]
    script = push_script(plan)
    assert script.index("ip route del") < script.index(f"systemctl disable --now {ROUTES_UNIT}")


def _unit(*routes: tuple[str, str]) -> str:
    return "[Service]\nType=oneshot\n" + "".join(f"ExecStart=/sbin/ip route replace {c} via {v}\n" for c, v in routes)


@pytest.mark.parametrize("keep", [True, False])
def test_the_push_deletes_the_routes_the_new_unit_no_longer_adds(tmp_path, keep):
    """The script itself, run by /bin/sh with a stand-in `ip` that records its arguments."""
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    (bin_ / "ip").write_text(f"#!/bin/sh\necho \"$*\" >> {tmp_path}/ip.log\n")
    (bin_ / "ip").chmod(0o755)
    old, new = tmp_path / "old.service", tmp_path / "new.service"
    old.write_text(_unit(("10.200.20.0/24", "10.240.0.20"), ("10.200.21.0/24", "10.240.0.21")))
    new.write_text(_unit(("10.200.20.0/24", "10.240.0.20")))
    script = stale_routes_script(str(old), str(new) if keep else None)
    r = subprocess.run(["sh", "-eu", "-c", script], capture_output=True, text=True,
                       env={**os.environ, "PATH": f"{bin_}:{os.environ['PATH']}"})
    assert r.returncode == 0, r.stderr
    deleted = (tmp_path / "ip.log").read_text().splitlines()
    assert deleted == (["route del 10.200.21.0/24 via 10.240.0.21"] if keep else
                       ["route del 10.200.20.0/24 via 10.240.0.20", "route del 10.200.21.0/24 via 10.240.0.21"])
    assert "deleted the pod route 10.200.21.0/24 via 10.240.0.21" in r.stdout


def test_the_push_compares_the_routes_unit_before_renaming_it():
    spec = make_spec("basic")
    b = render_cluster(spec, fake_material(spec)).nodes["controller-0"]
    plan = plan_host(b, Facts("controller-0"))
    script = push_script(plan)
    assert stale_routes_script(UNIT, UNIT + SUFFIX).rstrip("\n") in script
    assert script.index("ip route del") < script.index(f"mv -f {UNIT}{SUFFIX} {UNIT}")
    assert "ip route del" not in push_script(plan, root="/scratch")  # never this machine's routes
