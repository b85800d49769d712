"""Replacing a controller of `ha` (lb + 3 controllers + 2 workers) on lab machines while a client
writes ConfigMaps through the load balancer at ~6/s, each on a new connection:
controller-3 added to cluster.yaml (`lab up` makes its machine) joins etcd as a learner, is
promoted, and its apiserver goes UP in HAProxy; then `hardway node remove controller-2` takes
controller-2 out of etcd, HAProxy and cluster.yaml and stops its units. No write fails, every
object written is there, `verify` is healthy, and a following `up` changes nothing.
The tests run in file order on one lab.
"""

from __future__ import annotations

import json
import time

import pytest

from hardway.clusterdir import ClusterDir
from hardway.deploy.members import Etcdctl, parse_health
from hardway.spec.load import load_spec
from tests.e2e.cluster_fixture import DAY2_HA, Writer, figure, hw, log, touched
from tests.helpers import E2E_TIMEOUT
from tests.mirror_fixture import mirror  # noqa: F401 (fixture)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(E2E_TIMEOUT)]

NAME, OCTET = DAY2_HA.name, DAY2_HA.octet
NEW, NEW_ADDRESS = f"{NAME}-controller-3", f"10.240.{OCTET}.13"
OLD = f"{NAME}-controller-2"
FIGURES: dict[str, str] = {}


@pytest.fixture(scope="module")
def cluster(day2_ha):
    yield day2_ha
    log("controller replacement figures:\n" + "\n".join(f"  {k}: {v}" for k, v in FIGURES.items()))


def etcd(c, node: str, *args: str) -> str:
    """etcdctl on `node`, as hardway's own health checks run it there."""
    address = c.spec.node(node).address
    return c.ok(node, Etcdctl().script(f"https://{address}:2379", *args), timeout=60)


def members(c, via: str) -> list[dict]:
    return json.loads(etcd(c, via, "member", "list", "-w", "json"))["members"]


def under_writes(c, what: str, *args: str) -> tuple[str, float]:
    """`hardway ARGS` while a Writer writes through the LB: it succeeds, no write fails, the
    rate holds, every object written is there. Returns its output and duration."""
    writer = Writer(c.spec, ClusterDir(c.dir))
    writer.start()
    time.sleep(3)  # writes flowing before anything changes
    t = time.monotonic()
    r = hw(c.dir, *args, timeout=1500)
    took = time.monotonic() - t
    time.sleep(3)
    writer.stop.set()
    writer.join(30)
    FIGURES[what] = (f"`hardway {' '.join(args)}` {took:.1f} s; writer {len(writer.created)} writes at "
                     f"{writer.rate:.2f}/s, {len(writer.failures)} failed")
    log(f"{what}: {FIGURES[what]}\n{r.stderr[-8000:]}")
    figure(f"ha: {what}", seconds=round(took, 1), writes=len(writer.created) + len(writer.failures),
           rate_per_s=round(writer.rate, 2), failed=len(writer.failures), **touched(r.stderr))
    assert r.returncode == 0, r.stderr[-5000:]
    assert not writer.failures, "\n".join(writer.failures[:30])
    assert writer.rate >= 5, writer.rate
    names = set(hw(c.dir, "kubectl", "get", "configmaps", "-o", "name").stdout.split())
    missing = [n for n in writer.created if f"configmap/{n}" not in names]
    assert not missing, missing[:20]
    return r.stderr, took


def test_a_new_controller_joins_etcd_and_the_load_balancer(cluster):
    c = cluster
    path = c.dir / "cluster.yaml"
    text = path.read_text()
    line = next(ln for ln in text.splitlines() if f"name: {OLD}," in ln)
    path.write_text(text.replace(line, line + "\n" + line.replace(OLD, NEW).replace(f"10.240.{OCTET}.12", NEW_ADDRESS)))
    c.spec = load_spec(path).spec
    assert [n.name for n in c.spec.controllers][-1] == NEW
    r = hw(c.dir, "lab", "up")
    assert r.returncode == 0, r.stderr[-2000:]

    # The apiserver's certificate names every controller: stale now, and reissued on request only.
    r = hw(c.dir, "up")
    assert r.returncode == 2 and "apiserver" in r.stderr and "--reissue apiserver" in r.stderr, r.stderr[-2000:]
    assert len(members(c, c.spec.controllers[0].name)) == 3  # refused before anything changed
    r = hw(c.dir, "pki", "init", "--reissue", "apiserver")
    assert r.returncode == 0, r.stderr[-2000:]

    out, took = under_writes(c, "add controller-3", "up")
    assert f"{NEW} added as learner" in out and f"etcd: {NEW} caught up and promoted to a voting member: ok" in out
    now = members(c, NEW)
    assert sorted(m["name"] for m in now) == sorted(n.name for n in c.spec.controllers), now
    assert not [m for m in now if m.get("isLearner")], now
    healthy = parse_health(etcd(c, NEW, "endpoint", "health", "--cluster", "-w", "json"))
    assert len(healthy) == 4, healthy
    env = c.ok(NEW, "cat /etc/etcd/initial-cluster.env")
    assert "ETCD_INITIAL_CLUSTER_STATE=existing" in env and OLD in env, env
    assert NEW in json.loads((c.dir / "etcd-members.json").read_text())["joined"]
    lb = c.spec.lb_node.name
    view = c.haproxy_view(lb)
    assert view.servers[NEW] == "", view  # UP with a passing check
    c.ok(NEW, "curl -sf --cacert /etc/kubernetes/pki/ca.crt --cert /etc/kubernetes/pki/apiserver-kubelet-client.crt "
              "--key /etc/kubernetes/pki/apiserver-kubelet-client.key https://127.0.0.1:6443/readyz")
    r = hw(c.dir, "up")
    assert r.returncode == 0 and "done, nothing changed" in r.stderr, r.stderr[-3000:]
    FIGURES["add controller-3, a following up"] = "nothing changed"


def test_node_remove_takes_a_controller_out_with_the_quorum_held(cluster):
    c = cluster
    lb = c.spec.lb_node.name
    out, took = under_writes(c, "remove controller-2", "node", "remove", OLD, "--reissue", "apiserver")
    c.spec = load_spec(c.dir / "cluster.yaml").spec
    assert OLD not in [n.name for n in c.spec.nodes]
    assert f"etcd: removed {OLD}" in out, out[-3000:]
    now = members(c, NEW)
    assert sorted(m["name"] for m in now) == sorted(n.name for n in c.spec.controllers), now
    assert len(now) == 3
    assert OLD not in c.ok(lb, "cat /etc/haproxy/haproxy.cfg")
    assert OLD not in c.ok(lb, "echo 'show stat' | socat -t 5 stdio UNIX-CONNECT:/run/haproxy/stats.sock")
    states = c.run(OLD, "systemctl is-active etcd kube-apiserver kube-controller-manager kube-scheduler").stdout
    assert states.split() == ["inactive"] * 4, states
    assert c.run(OLD, "systemctl is-enabled etcd kube-apiserver").stdout.split() == ["disabled"] * 2
    for n in c.spec.controllers:  # its peers no longer name it (no restart for that)
        assert OLD not in c.ok(n.name, "cat /etc/etcd/initial-cluster.env"), n.name
    r = hw(c.dir, "verify")
    assert r.returncode == 0, r.stdout + r.stderr[-2000:]
    r = hw(c.dir, "up")
    assert r.returncode == 0 and "done, nothing changed" in r.stderr, r.stderr[-3000:]
    FIGURES["remove controller-2, verify and a following up"] = "healthy; nothing changed"
