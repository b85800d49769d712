"""A controller joins and another leaves a real etcd cluster, through deploy/members.py's own
steps (survey, learner add, promote, remove) and etcdctl, with the joiner started from its
rendered bundle (`existing`, the membership it was added to).

The members run on this machine as in test_etcd_cluster.py (loopback addresses 127.0.2.10-13,
free ports, stopped by PID); the hosts of `up`'s session are local transports, and etcdctl is
the host's with the rendered etcd-admin identity. Needs etcd and etcdctl 3.4+ on PATH.
"""

from __future__ import annotations

import asyncio
import shlex
import time
from types import SimpleNamespace

import pytest

from hardway.clusterdir import ClusterDir
from hardway.deploy import members as m
from hardway.deploy.hosts import Options
from hardway.deploy.plan import Facts
from hardway.deploy.transport import LocalTransport
from hardway.errors import OperationError
from hardway.export import write_bundles
from hardway.material import ensure_material, load_material
from hardway.membership import FOUNDERS
from hardway.render import render_cluster
from hardway.render.common import ETCD_PKI
from hardway.spec.load import parse_spec
from tests.integration.test_etcd_cluster import (MEMBERS, SPEC_YAML, EtcdCluster, etcd_programs, free_ports,
                                                 start_member, wait_healthy)

pytestmark = pytest.mark.integration

NEW = ("controller-3", "127.0.2.13")
SPEC4 = SPEC_YAML.replace("  - {name: worker-0", f"  - {{name: {NEW[0]}, address: {NEW[1]}, roles: [controller]}}\n"
                          "  - {name: worker-0")
SPEC_WITHOUT_2 = SPEC4.replace("  - {name: controller-2, address: 127.0.2.12, roles: [controller]}\n", "")


def session(c: EtcdCluster, spec_yaml: str, running: list[str], said: list[str]):
    """What members.py reads of `up`'s session: the spec, a transport and facts per controller,
    the options, the progress output."""
    spec = parse_spec(spec_yaml).spec
    names = [n.name for n in spec.controllers]
    facts = {n: Facts(n, active_units=frozenset({"etcd.service"} if n in running else ())) for n in names}
    return SimpleNamespace(p=SimpleNamespace(spec=spec, cd=c.cluster_dir), t={n: LocalTransport(n) for n in names},
                           facts=facts, opts=Options(timeout=60), progress=said.append)


@pytest.fixture
def cluster(tmp_path, monkeypatch):
    etcd_bin, etcdctl_bin = etcd_programs()
    client_port, peer_port = free_ports([*MEMBERS.values(), NEW[1]], 2)
    cd = ClusterDir(tmp_path / "cluster")
    spec = parse_spec(SPEC_YAML).spec
    ensure_material(cd, spec)
    write_bundles(render_cluster(spec, load_material(cd, spec)), tmp_path / "bundles")
    c = EtcdCluster(tmp_path, cd, etcd_bin, etcdctl_bin, client_port, peer_port)
    # members.py as on a node, but at this test's ports and with the rendered identity
    monkeypatch.setattr(m, "CLIENT_PORT", client_port)
    monkeypatch.setattr(m, "peer_url", lambda node: f"https://{node.address}:{peer_port}")
    monkeypatch.setattr(m, "ETCDCTL", m.Etcdctl(etcdctl_bin, str(tmp_path / "bundles/controller-0" / ETCD_PKI.lstrip("/"))))
    monkeypatch.setattr(m, "DATA_PROBE", f"test -e {shlex.quote(str(tmp_path / 'data' / NEW[0]))}/member && echo data || true")
    try:
        for name in MEMBERS:
            start_member(c, name, tmp_path / "bundles" / name)
        wait_healthy(c)
        yield c
    finally:
        c.stop()


def live_members(c: EtcdCluster):
    s = session(c, SPEC_YAML, list(MEMBERS), [])
    return asyncio.run(m.list_members(s.t["controller-0"], f"https://127.0.2.10:{c.client_port}"))


def leader(c: EtcdCluster) -> int:
    r = c.etcdctl("endpoint", "status", "-w", "json", endpoints=[f"https://127.0.2.10:{c.client_port}"])
    assert r.returncode == 0, r.stderr
    return m.parse_leader(r.stdout)


def test_a_controller_joins_as_a_learner_and_another_leaves(cluster, monkeypatch):
    c = cluster
    said: list[str] = []
    s = session(c, SPEC4, list(MEMBERS), said)
    sv = asyncio.run(m.survey(s))
    assert sv is not None and sv.changes.join.name == NEW[0] and sv.changes.add, said
    assert len(sv.live) == 3 and sv.healthy == {x.id for x in sv.live}
    membership = sv.membership(FOUNDERS, s.p.spec)

    # the joiner's bundle, rendered as `up` renders it for this run
    spec4 = s.p.spec
    ensure_material(c.cluster_dir, spec4)  # its etcd certificates (the apiserver's is stale: not used here)
    write_bundles(render_cluster(spec4, load_material(c.cluster_dir, spec4), membership), c.root / "bundles4")
    asyncio.run(m.before_start(s, sv))
    learners = [x for x in live_members(c) if x.learner]
    assert [x.peer_urls for x in learners] == [(f"https://{NEW[1]}:{c.peer_port}",)] and not learners[0].started

    t = time.monotonic()
    start_member(c, NEW[0], c.root / "bundles4" / NEW[0])
    asyncio.run(m.promote(s, sv))
    joined = time.monotonic() - t
    now = live_members(c)
    assert sorted(x.name for x in now) == ["controller-0", "controller-1", "controller-2", "controller-3"]
    assert not any(x.learner for x in now), now
    assert any("caught up and promoted" in line for line in said), said
    print(f"controller-3 started and promoted in {joined:.1f} s")

    # controller-2 leaves, and leads: leadership moves first. Its host is not reachable here (no
    # SSH), so its units are named instead of stopped.
    async def unreachable(_s, _member):
        return None, "no SSH in this test"
    monkeypatch.setattr(m, "_connect", unreachable)
    two = next(x for x in now if x.name == "controller-2")
    moved = c.etcdctl("move-leader", two.hex_id, endpoints=[f"https://127.0.2.{10 + i}:{c.client_port}"
                                                             for i in range(4)])
    assert moved.returncode == 0, moved.stderr
    assert leader(c) == two.id
    said.clear()
    s2 = session(c, SPEC_WITHOUT_2, ["controller-0", "controller-1", NEW[0]], said)
    sv2 = asyncio.run(m.survey(s2))
    assert sv2.changes.join is None and [x.name for x in sv2.changes.remove] == ["controller-2"]
    asyncio.run(m.remove_leaving(s2, sv2))
    assert sorted(x.name for x in live_members(c)) == ["controller-0", "controller-1", "controller-3"]
    assert any("leadership moved from controller-2" in line for line in said), said
    assert leader(c) in {x.id for x in live_members(c)}
    assert any("its units were NOT stopped" in line for line in said), said
    # a removed member's etcd stops by itself
    deadline = time.monotonic() + 20
    while c.procs["controller-2"].poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert c.procs["controller-2"].poll() is not None, "controller-2's etcd still runs after its removal"


def test_a_removal_that_would_lose_the_quorum_is_refused_with_nothing_changed(cluster):
    c = cluster
    c.procs["controller-1"].kill()  # one of three down: two healthy, a quorum
    c.procs["controller-1"].wait(10)
    spec_without_0 = SPEC_YAML.replace("  - {name: controller-0, address: 127.0.2.10, roles: [controller]}\n", "")
    said: list[str] = []
    s = session(c, spec_without_0, ["controller-1", "controller-2"], said)
    s.t["controller-1"] = s.t["controller-2"]  # its etcd is down: etcdctl goes through controller-2
    with pytest.raises(OperationError, match=r"removing controller-0 \(127.0.2.10\) would leave 1 healthy of 2 "
                                             r"voting member\(s\), and a quorum needs 2; not healthy: controller-1"):
        asyncio.run(m.survey(s))
    assert sorted(x.name for x in live_members(c)) == ["controller-0", "controller-1", "controller-2"]
