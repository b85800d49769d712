"""Growing and shrinking `basic` on lab machines: a worker added to cluster.yaml gets only its
own certificates and becomes Ready while no unit on another host restarts (they only learn
its pod route); `hardway node remove` drains and deletes a worker, resets its host and
removes its route everywhere. The tests run in file order on one lab.
"""

from __future__ import annotations

import hashlib
import ipaddress
import time

import pytest

from hardway.spec.load import load_spec
from tests.e2e.cluster_fixture import figure, hw, log, touched
from tests.helpers import E2E_TIMEOUT
from tests.mirror_fixture import mirror  # noqa: F401 (fixture)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(E2E_TIMEOUT)]

LONG_RUNNING = ["etcd.service", "kube-apiserver.service", "kube-controller-manager.service",
                "kube-scheduler.service", "containerd.service", "kubelet.service", "kube-proxy.service"]


@pytest.fixture(scope="module")
def cluster(day2_basic):
    return day2_basic


def pki_digests(c) -> dict[str, str]:
    return {str(p.relative_to(c.dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for d in ("pki", "kubeconfigs") for p in sorted((c.dir / d).rglob("*")) if p.is_file()}


def started(c, node: str) -> dict[str, str]:
    """unit -> its main process's start time: changes when systemd (re)starts it."""
    out = c.ok(node, "systemctl show -p Id -p ExecMainStartTimestampMonotonic " + " ".join(LONG_RUNNING))
    blocks = [dict(ln.split("=", 1) for ln in b.splitlines() if "=" in ln) for b in out.strip().split("\n\n")]
    return {b["Id"]: b["ExecMainStartTimestampMonotonic"] for b in blocks
            if b.get("ExecMainStartTimestampMonotonic", "0") != "0"}


def test_adding_a_worker_issues_only_its_certificates_and_restarts_nothing_elsewhere(cluster):
    c = cluster
    spec = load_spec(c.dir / "cluster.yaml").spec
    last = spec.workers[-1]
    new_name = last.name[: -len("worker-1")] + "worker-2"
    new_address = ipaddress.ip_address(last.address) + 1
    text = (c.dir / "cluster.yaml").read_text()
    line = next(ln for ln in text.splitlines() if f"name: {last.name}," in ln)
    added = line.replace(last.name, new_name).replace(str(last.address), str(new_address))
    (c.dir / "cluster.yaml").write_text(text.replace(line, line + "\n" + added))
    others = [n.name for n in spec.nodes]
    before = {n: started(c, n) for n in others}
    pki_before = pki_digests(c)

    r = hw(c.dir, "lab", "up")
    assert r.returncode == 0, r.stderr[-2000:]
    t = time.monotonic()
    r = hw(c.dir, "up")
    took = time.monotonic() - t
    log(r.stderr[-3000:])
    figure("basic: add a worker", up_until_ready_s=round(took, 1), **touched(r.stderr))
    assert r.returncode == 0, r.stderr[-3000:]

    pki_after = pki_digests(c)
    changed = sorted(p for p in pki_after if pki_before.get(p) != pki_after[p])
    assert changed and all(new_name in p for p in changed), changed
    assert not [p for p in pki_before if p not in pki_after]
    for n in others:  # the others' pod routes were re-run (a oneshot); nothing long-running restarted
        assert started(c, n) == before[n], n
    r = hw(c.dir, "kubectl", "get", "node", new_name, "-o", "jsonpath={.status.conditions[?(@.type=='Ready')].status}")
    assert r.stdout == "True", r.stdout + r.stderr
    for n in others:  # its pod CIDR is routed from every other node
        cidr = load_spec(c.dir / "cluster.yaml").spec.pod_cidr(load_spec(c.dir / "cluster.yaml").spec.node(new_name))
        assert str(cidr) in c.ok(n, "ip route"), (n, cidr)
    r = hw(c.dir, "verify")
    assert r.returncode == 0, r.stdout
