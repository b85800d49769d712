"""Growing and shrinking `basic` on lab machines: a worker added to cluster.yaml gets only its
own certificates and becomes Ready while no unit on another host restarts (they only learn
its pod route); `hardway node remove` drains and deletes a worker, resets its host and
removes its route everywhere. The tests run in file order on one lab.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import subprocess
import sys
import time

import pytest

from hardway import lab as hwlab
from hardway.spec.load import load_spec
from hardway.verify.smoke import WEB_IMAGE
from tests.e2e.cluster_fixture import figure, hw, log, touched
from tests.e2e.hoststate import capture, difference
from tests.helpers import E2E_TIMEOUT
from tests.mirror_fixture import mirror  # noqa: F401 (fixture)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(E2E_TIMEOUT)]

LONG_RUNNING = ["etcd.service", "kube-apiserver.service", "kube-controller-manager.service",
                "kube-scheduler.service", "containerd.service", "kubelet.service", "kube-proxy.service"]


@pytest.fixture(scope="module")
def cluster(day2_basic):
    # worker-1 as it was before hardway's first `up` (captured by the shared fixture,
    # tests/e2e/conftest.py): its removal must leave it so (test_reset.py's proof)
    assert day2_basic.before, "day2_basic captured no host state before its first up"
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
    # `lab up` wrote the new machine's name into every running machine's /etc/hosts (lab/core.py):
    # the lab's doing, not hardway's, so worker-1's capture takes it in.
    hosts = c.ok(last.name, "sha256sum /etc/hosts").strip()
    c.before["etc"] = [hosts if ln.endswith("  /etc/hosts") else ln for ln in c.before["etc"]]
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


NS = "hwnode"
# A pod per worker: one on the worker to remove. Spread softly: a hard spread would count the
# cordoned worker's zero pods and leave the evicted pod's replacement pending until its Node goes.
SPREAD = f"""
apiVersion: v1
kind: Namespace
metadata: {{name: {NS}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: spread, namespace: {NS}}}
spec:
  replicas: 3
  selector: {{matchLabels: {{app: spread}}}}
  template:
    metadata: {{labels: {{app: spread}}}}
    spec:
      topologySpreadConstraints:
      - {{maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: ScheduleAnyway,
         labelSelector: {{matchLabels: {{app: spread}}}}}}
      terminationGracePeriodSeconds: 2
      containers:
      - name: web
        image: {WEB_IMAGE}
        imagePullPolicy: IfNotPresent
        command: [/bin/sh, -c, "exec httpd -f -p 8080 -h /www"]
        volumeMounts: [{{name: scratch, mountPath: /scratch}}]
      volumes: [{{name: scratch, emptyDir: {{}}}}]
"""
# A pod no controller manages: `kubectl drain` refuses to delete it.
BARE = """
apiVersion: v1
kind: Pod
metadata: {{name: bare, namespace: {ns}}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - {{name: web, image: {image}, imagePullPolicy: IfNotPresent, command: [/bin/sh, -c, "exec sleep 100000"]}}
"""


def kubectl(c, *args: str, input: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hardway", "-C", str(c.dir), "kubectl", *args], input=input,
                          capture_output=True, text=True, timeout=timeout)


def invocations(c, node: str) -> dict[str, str]:
    """unit -> systemd's InvocationID: a new one each time the unit (re)starts."""
    out = c.ok(node, "systemctl show -p Id -p InvocationID " + " ".join(LONG_RUNNING))
    blocks = [dict(ln.split("=", 1) for ln in b.splitlines() if "=" in ln) for b in out.strip().split("\n\n")]
    return {b["Id"]: b["InvocationID"] for b in blocks if b.get("InvocationID")}


def pods_by_node(c) -> dict[str, str]:
    r = kubectl(c, "-n", NS, "get", "pods", "-l", "app=spread", "-o", "json")
    assert r.returncode == 0, r.stderr
    return {p["metadata"]["name"]: p["spec"].get("nodeName", "") for p in json.loads(r.stdout)["items"]}


def node_remove(c, *args: str, expect: int = 0) -> subprocess.CompletedProcess:
    t = time.monotonic()
    r = hw(c.dir, "node", "remove", *args, timeout=1200)
    log(f"node remove {' '.join(args)}: exit {r.returncode} in {time.monotonic() - t:.1f} s\n{r.stdout}{r.stderr[-4000:]}")
    assert r.returncode == expect, r.stdout + r.stderr[-4000:]
    assert "Traceback" not in r.stderr
    return r


def test_removing_a_worker_drains_it_resets_its_host_and_removes_its_routes(cluster):
    c = cluster
    spec = load_spec(c.dir / "cluster.yaml").spec
    gone = c.spec.workers[-1].name  # worker-1
    cidr = str(spec.pod_cidr(spec.node(gone)))
    others = [n.name for n in spec.nodes if n.name != gone]
    r = kubectl(c, "apply", "-f", "-", input=SPREAD)
    assert r.returncode == 0, r.stderr
    r = kubectl(c, "-n", NS, "rollout", "status", "deployment/spread", "--timeout=300s", timeout=320)
    assert r.returncode == 0, r.stdout + r.stderr
    assert gone in pods_by_node(c).values(), pods_by_node(c)
    for n in others:
        assert cidr in c.ok(n, f"ip route show {cidr}"), (n, "the route to remove is not there to begin with")

    # A drain that fails (a pod no controller manages) changes nothing.
    r = kubectl(c, "apply", "-f", "-", input=BARE.format(ns=NS, node=gone, image=WEB_IMAGE))
    assert r.returncode == 0, r.stderr
    spec_text = (c.dir / "cluster.yaml").read_text()
    r = node_remove(c, gone, "--drain-timeout", "60", expect=1)
    assert "could not be drained" in r.stderr and "Nothing else was changed" in r.stderr
    r = kubectl(c, "get", "node", gone, "-o", "jsonpath={.spec.unschedulable}")
    assert r.returncode == 0 and r.stdout == "", (r.stdout, r.stderr)  # uncordoned again
    assert (c.dir / "cluster.yaml").read_text() == spec_text
    assert "active" in c.ok(gone, "systemctl is-active kubelet.service")
    r = kubectl(c, "-n", NS, "delete", "pod", "bare", "--wait=true", timeout=180)
    assert r.returncode == 0, r.stderr

    before = {n: invocations(c, n) for n in others}
    node_remove(c, gone)

    # its Node is gone, and its pods run elsewhere
    r = kubectl(c, "get", "node", gone)
    assert r.returncode != 0 and "NotFound" in r.stderr, r.stdout + r.stderr
    r = kubectl(c, "-n", NS, "rollout", "status", "deployment/spread", "--timeout=300s", timeout=320)
    assert r.returncode == 0, r.stdout + r.stderr
    placed = pods_by_node(c)
    assert len(placed) == 3 and gone not in placed.values(), placed
    # its host is as before hardway's first `up`
    after = capture(c, gone)
    assert not any(ln.startswith(":KUBE-") or ln.startswith(":CNI-") for ln in after["iptables"])
    assert not any(" cni0:" in ln for ln in after["links"])
    ours = ("kubelet.service", "kube-proxy.service", "containerd.service", "hardway-routes.service")
    assert not [ln for ln in after["unit-files"] if ln.split()[0] in ours], after["unit-files"]
    assert c.ok(gone, "ls -d /var/lib/hardway " + " ".join(f"/etc/systemd/system/{u}" for u in ours)
                + " 2>/dev/null || true").strip() == ""
    d = difference(c.before, after)
    assert not d, f"{gone} differs from its state before the first up:\n{d}"
    # nobody routes its pod CIDR, and nothing long-running restarted anywhere
    for n in others:
        assert c.ok(n, f"ip route show {cidr}").strip() == "", n
        assert invocations(c, n) == before[n], n
    assert gone not in (c.dir / "cluster.yaml").read_text()
    assert [ln for ln in spec_text.splitlines() if gone not in ln] == (c.dir / "cluster.yaml").read_text().splitlines()
    r = hw(c.dir, "verify")
    assert r.returncode == 0, r.stdout + r.stderr[-2000:]


def test_an_unreachable_worker_is_refused_and_removed_with_force(cluster):
    c = cluster
    spec = load_spec(c.dir / "cluster.yaml").spec
    gone = spec.workers[-1].name  # worker-2, added by the first test
    cidr = str(spec.pod_cidr(spec.node(gone)))
    others = [n.name for n in spec.nodes if n.name != gone]
    spec_text = (c.dir / "cluster.yaml").read_text()
    hwlab.stop(c.dir, gone)
    r = node_remove(c, gone, expect=1)
    assert "cannot be reached" in r.stderr and "--force" in r.stderr and "Nothing was changed" in r.stderr
    assert (c.dir / "cluster.yaml").read_text() == spec_text
    before = {n: invocations(c, n) for n in others}
    r = node_remove(c, gone, "--force")
    assert "without draining or resetting" in r.stdout and "kubelet" in r.stdout
    r = kubectl(c, "get", "node", gone)
    assert r.returncode != 0 and "NotFound" in r.stderr, r.stdout + r.stderr
    for n in others:
        assert c.ok(n, f"ip route show {cidr}").strip() == "", n
        assert invocations(c, n) == before[n], n
    # its pods were made again on the worker left (the pod garbage collector deletes them: its
    # dead kubelet never said they stopped)
    t = time.monotonic()
    while gone in pods_by_node(c).values():
        assert time.monotonic() - t < 240, f"pods still bound to the deleted Node {gone}: {pods_by_node(c)}"
        time.sleep(5)
    r = kubectl(c, "-n", NS, "rollout", "status", "deployment/spread", "--timeout=300s", timeout=320)
    assert r.returncode == 0, r.stdout + r.stderr
    assert gone not in pods_by_node(c).values()
    r = hw(c.dir, "verify")
    assert r.returncode == 0, r.stdout + r.stderr[-2000:]
