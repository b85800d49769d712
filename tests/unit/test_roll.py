"""Rolling activation (deploy/roll.py) without hosts: who goes together, who takes turns, in
what order, what each turn waits for, and where a failed turn stops the roll."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import pytest

from hardway.deploy import roll
from hardway.deploy.hosts import Options
from hardway.deploy.plan import HostPlan
from hardway.deploy.transport import Result
from hardway.errors import UsageError
from hardway.render import render_cluster
from hardway.render.bundle import Phase
from tests.fake_material import fake_material
from tests.specs import make_spec

class Host:
    """A node whose `systemctl show` gives a new InvocationID after each restart script."""

    def __init__(self, node: str, log: list[str]) -> None:
        self.node, self.target, self.log, self.generation = node, "fake", log, 0

    async def run(self, script: str, input=None, timeout=None) -> Result:
        if script.startswith("systemctl show -p Id -p InvocationID"):
            units = script.split()[8:]
            text = "\n\n".join(f"Id={u}\nInvocationID={self.node}-{self.generation}\nActiveState=active" for u in units)
            return Result(0, text.encode(), b"")
        return Result(0, b"", b"")

    async def close(self) -> None:
        pass


def session(preset: str, restarts: dict[str, list[str]], starts: dict[str, list[str]] | None = None,
            batch: int = 1):
    spec = make_spec(preset)
    cluster = render_cluster(spec, fake_material(spec))
    desired = {n: SimpleNamespace(bundle=b, unit_names=[u.name for u in b.units]) for n, b in cluster.nodes.items()}
    log: list[str] = []
    plans = {n: HostPlan(n, restarts=restarts.get(n, []), starts=(starts or {}).get(n, [])) for n in desired}
    s = SimpleNamespace(p=SimpleNamespace(spec=spec, desired=desired, cd=None), plans=plans,
                        t={n: Host(n, log) for n in desired}, opts=Options(worker_batch=batch),
                        progress=log.append, names=list(desired),
                        facts={n: SimpleNamespace(active_units=frozenset()) for n in desired})
    return s, log


def run_phase(s, log, phase: Phase, healthy=None, holder=None):
    async def run_host(name: str, only=None) -> None:
        log.append(f"activate {name}" + (f" {','.join(sorted(u.removesuffix('.service') for u in only))}"
                                          if only is not None and phase is Phase.control_plane else ""))
        s.t[name].generation += 1  # systemd restarted its units: new invocation

    step = roll.ROLL[phase]
    calls = []

    async def before(_s, hosts):
        log.append(f"before {'+'.join(hosts)}")

    async def after(_s, hosts):
        log.append(f"after {'+'.join(hosts)}")

    def health(_s, host, _since):
        async def probe():
            calls.append(host)
            log.append(f"healthy {host}")
            return (healthy or (lambda h: True))(host), f"{host} sick"
        return probe

    roll.ROLL[phase] = roll.RollStep(before, health, after, "its health")
    try:
        asyncio.run(roll.activate_phase(s, phase, run_host, holder))
    finally:
        roll.ROLL[phase] = step
    return calls


def test_restarts_take_turns_each_awaiting_its_own_health_and_first_starts_go_together():
    ctl = ["controller-0", "controller-1", "controller-2"]
    s, log = session("ha", {c: ["etcd.service"] for c in ctl})
    run_phase(s, log, Phase.etcd)
    acts = [ln for ln in log if ln.split()[0] in ("activate", "before", "healthy", "after")]
    assert acts == [x for c in ctl for x in (f"before {c}", f"activate {c}", f"healthy {c}", f"after {c}")]
    assert "  rolling restart of etcd (etcd) on 3 host(s), 1 at a time: controller-0, controller-1, controller-2" in log

    # A first `up`: only starts, every member together (etcd's first members need each other).
    s, log = session("ha", {}, {c: ["etcd.service"] for c in ctl})
    run_phase(s, log, Phase.etcd)
    assert sorted(ln for ln in log if ln.startswith("activate")) == [f"activate {c}" for c in ctl]
    assert not any(ln.startswith(("before", "healthy", "rolling")) for ln in log)


def test_a_host_that_does_not_come_back_stops_the_roll_and_names_the_rest(monkeypatch):
    ctl = ["controller-0", "controller-1", "controller-2"]
    s, log = session("ha", {c: ["kube-apiserver.service"] for c in ctl})
    s.opts.timeout = 1.0
    with pytest.raises(roll.RollFailed) as e:
        run_phase(s, log, Phase.control_plane, healthy=lambda h: h != "controller-1")
    msg = str(e.value)
    assert "phase control-plane: the rolling restart stopped at controller-1 (turn 2 of 3)" in msg
    assert "controller-1 sick" in msg
    assert "Not restarted yet" in msg and "controller-2" in msg.split("Not restarted yet")[1]
    assert "activate controller-2" not in log  # never touched


def test_workers_roll_in_batches_and_the_vip_holder_goes_last():
    s, log = session("basic", {"worker-0": ["kubelet.service"], "worker-1": ["kubelet.service"]}, batch=2)
    run_phase(s, log, Phase.worker)
    assert "before worker-0+worker-1" in log and "after worker-0+worker-1" in log
    assert roll.batches(["a", "b", "c"], 2) == [["a", "b"], ["c"]]

    ctl = ["controller-0", "controller-1", "controller-2"]
    s, log = session("ha-vip", {c: ["keepalived.service"] for c in ctl})
    run_phase(s, log, Phase.load_balancer, holder="controller-0")
    assert [ln for ln in log if ln.startswith("activate")] == [
        "activate controller-1", "activate controller-2", "activate controller-0"]


def test_a_turn_waits_for_systemd_to_have_restarted_the_units_before_probing_health():
    """`restart --no-block` returns at once: a health probe then could reach the old process."""
    s, log = session("ha", {"controller-0": ["etcd.service"]})
    s.opts.timeout = 1.0

    async def run_host(name: str, only=None) -> None:  # the restart never happens: same invocation
        log.append(f"activate {name}")

    with pytest.raises(roll.RollFailed, match="controller-0: not restarted yet: etcd.service"):
        asyncio.run(roll.activate_phase(s, Phase.etcd, run_host))


def test_invocations_parse_and_batch_bounds():
    text = "Id=etcd.service\nInvocationID=abc\nActiveState=active\n\nId=x.service\nInvocationID=\nActiveState=failed\n"
    assert roll.parse_invocations(text) == {"etcd.service": ("abc", "active"), "x.service": ("", "failed")}
    with pytest.raises(UsageError, match="--worker-batch 0"):
        Options(worker_batch=0)


def test_every_apiserver_restarts_before_any_controller_manager_or_scheduler():
    """The version-skew policy's order within the control plane (an upgrade restarts them all)."""
    ctl = ["controller-0", "controller-1", "controller-2"]
    units = ["kube-apiserver.service", "kube-controller-manager.service", "kube-scheduler.service"]
    s, log = session("ha", {c: list(units) for c in ctl})
    run_phase(s, log, Phase.control_plane)
    acts = [ln for ln in log if ln.startswith("activate")]
    assert acts == [f"activate {c} kube-apiserver" for c in ctl] + [
        f"activate {c} kube-controller-manager,kube-scheduler" for c in ctl]
    # a host that restarts its apiserver and starts its (stopped) scheduler does both
    s, log = session("ha", {c: ["kube-apiserver.service"] for c in ctl}, {"controller-2": ["kube-scheduler.service"]})
    run_phase(s, log, Phase.control_plane)
    acts = [ln for ln in log if ln.startswith("activate")]
    assert acts[-1] == "activate controller-2 kube-controller-manager,kube-scheduler"
    assert acts[:3] == [f"activate {c} kube-apiserver" for c in ctl]


class CrashingHost(Host):
    """kube-proxy restarted into a crash loop: a new invocation, never active, NRestarts 4."""

    async def run(self, script: str, input=None, timeout=None) -> Result:
        if script.startswith("systemctl show -p Id -p InvocationID"):
            units = script.split()[8:]
            return Result(0, "\n\n".join(f"Id={u}\nInvocationID={self.node}-{self.generation}\nActiveState="
                                         f"{'active' if self.generation == 0 else 'activating'}"
                                         for u in units).encode(), b"")
        if script.startswith("systemctl show -p Id -p ActiveState -p NRestarts"):
            units = script.split()[7:]
            return Result(0, "\n\n".join(f"Id={u}\nActiveState=activating\nNRestarts=4" for u in units).encode(), b"")
        if "journalctl" in script:
            return Result(0, b"--- kube-proxy.service: activating\nbroken on purpose\n", b"")
        return Result(0, b"", b"")


def test_a_unit_that_crash_loops_after_its_restart_stops_the_roll_at_once_with_its_journal():
    s, log = session("basic", {"worker-0": ["kube-proxy.service"]})
    s.t = {n: CrashingHost(n, log) for n in s.t}
    s.opts.timeout = 60.0
    t = time.monotonic()
    with pytest.raises(roll.RollFailed) as e:
        run_phase(s, log, Phase.worker)
    msg = str(e.value)
    assert "phase worker: the rolling restart stopped at worker-0" in msg
    assert "kube-proxy.service keeps crashing" in msg and "broken on purpose" in msg
    assert time.monotonic() - t < 30  # not the whole timeout


def test_a_worker_whose_kubelet_did_not_restart_needs_no_fresh_node_status(monkeypatch):
    """With node leases the kubelet posts an unchanged status only every few minutes: after a
    kube-proxy restart alone, Ready as it stands is the answer; after a kubelet restart, a
    status from before the restart is not."""
    import datetime as dt
    old = "2026-01-01T00:00:00Z"

    class FakeApi:
        def __init__(self, *_a) -> None:
            pass

        def get(self, _path):
            return {"status": {"conditions": [{"type": "Ready", "status": "True", "lastHeartbeatTime": old}]}}

    monkeypatch.setattr(roll, "Api", FakeApi)
    s, _log = session("basic", {})
    since = dt.datetime(2026, 6, 1, tzinfo=dt.timezone.utc)
    assert asyncio.run(roll._node_ready_after(s, "worker-0", None)())[0] is True
    ok, why = asyncio.run(roll._node_ready_after(s, "worker-0", since)())
    assert not ok and "no status from the restarted kubelet" in why
