"""`hardway reset` for real, on the basic preset (1 controller + 2 workers) on lab machines: each
host is captured before the first `up` (tests/e2e/hoststate.py: files, /etc contents, /run,
mounts, links, routes, iptables, units, sysctls), the cluster comes up and runs pods (the smoke
tests, then a deployment with a hostPort and a NodePort: kube-proxy's and the CNI plugins'
chains, veths, pod volumes, network namespaces), `reset --yes` runs, and every host must equal
its capture. Then: a second reset has nothing to do; `up` builds the cluster again on the reset
hosts; an unreachable host is named while the others are reset; a foreign file adopted by
`up --adopt` is back byte for byte. The tests run in file order on one lab, destroyed at the end.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from hardway import lab as hwlab
from hardway.verify.smoke import WEB_IMAGE
from tests.e2e.cluster_fixture import hw, lab_cluster, log
from tests.e2e.hoststate import capture, difference
from tests.helpers import E2E_TIMEOUT
from tests.mirror_fixture import mirror  # noqa: F401 (fixture)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(E2E_TIMEOUT)]

NS = "hwrst"
HOLD = f"""
apiVersion: v1
kind: Namespace
metadata: {{name: {NS}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: hold, namespace: {NS}}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: hold}}}}
  template:
    metadata: {{labels: {{app: hold}}}}
    spec:
      affinity:
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
          - {{labelSelector: {{matchLabels: {{app: hold}}}}, topologyKey: kubernetes.io/hostname}}
      containers:
      - name: web
        image: {WEB_IMAGE}
        imagePullPolicy: IfNotPresent
        command: [/bin/sh, -c, "exec httpd -f -p 8080 -h /www"]
        ports: [{{containerPort: 8080, hostPort: 18080}}]
---
apiVersion: v1
kind: Service
metadata: {{name: hold, namespace: {NS}}}
spec:
  type: NodePort
  selector: {{app: hold}}
  ports: [{{port: 8080, targetPort: 8080}}]
"""
CONTAINERD_CONFIG = "/etc/containerd/config.toml"
THEIRS = "# someone's own containerd configuration, here before hardway\nversion = 2\n"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, mirror):  # noqa: F811
    with lab_cluster(tmp_path_factory.mktemp("reset") / "cluster", "basic", "hwrst", 84, mirror) as c:
        t = time.monotonic()
        c.before = {n.name: capture(c, n.name) for n in c.spec.nodes}
        log(f"captured {len(c.before)} host(s) before the first up in {time.monotonic() - t:.1f} s")
        yield c


def names(c) -> list[str]:
    return [n.name for n in c.spec.nodes]


def reset(c, *args: str, expect: int = 0) -> subprocess.CompletedProcess:
    t = time.monotonic()
    r = hw(c.dir, "reset", "--yes", *args, timeout=900)
    log(f"reset {' '.join(args)}: exit {r.returncode} in {time.monotonic() - t:.1f} s\n{r.stdout}{r.stderr[-4000:]}")
    assert r.returncode == expect, r.stdout + r.stderr[-4000:]
    assert "Traceback" not in r.stderr
    return r


def assert_as_before(c, before: dict, nodes: list[str]) -> None:
    diffs = {n: difference(before[n], capture(c, n)) for n in nodes}
    found = "\n".join(f"=== {n} differs from its state before the first up:\n{d}" for n, d in diffs.items() if d)
    assert not found, found


def up(c, *args: str) -> None:
    t = time.monotonic()
    r = hw(c.dir, "up", *args, timeout=1200)
    log(f"up {' '.join(args)}: exit {r.returncode} in {time.monotonic() - t:.1f} s")
    assert r.returncode == 0, r.stderr[-4000:]
    assert "node(s) Ready: ok" in r.stderr


def test_the_cli_refuses_without_a_terminal_or_yes(cluster):
    r = subprocess.run([sys.executable, "-m", "hardway", "-C", str(cluster.dir), "reset"], stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    assert "--yes" in r.stderr and "not a terminal" in r.stderr


def test_reset_leaves_every_host_as_before_the_first_up(cluster):
    c = cluster
    up(c)
    r = hw(c.dir, "verify", "--smoke", timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr[-2000:]
    r = subprocess.run([sys.executable, "-m", "hardway", "-C", str(c.dir), "kubectl", "apply", "-f", "-"],
                       input=HOLD, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    r = hw(c.dir, "kubectl", "-n", NS, "rollout", "status", "deployment/hold", "--timeout=300s", timeout=320)
    assert r.returncode == 0, r.stdout + r.stderr
    # What reset has to clear exists now on every worker (or the comparison would prove little).
    for w in c.spec.workers:
        state = capture(c, w.name)
        assert any(" cni0: " in ln for ln in state["links"]) and any("master cni0" in ln for ln in state["links"])
        assert any(ln.startswith(":KUBE-SERVICES") for ln in state["iptables"])
        assert any(ln.startswith(":CNI-HOSTPORT-DNAT") for ln in state["iptables"])
        assert any("/var/lib/kubelet/pods/" in ln for ln in state["mounts"])
        assert any("/run/netns/cni-" in ln for ln in state["mounts"])
        assert state != c.before[w.name]
    reset(c)
    assert_as_before(c, c.before, names(c))


def test_resetting_a_reset_cluster_has_nothing_to_do(cluster):
    r = reset(cluster)
    assert "nothing to do: no host holds anything of hardway's" in r.stdout
    assert r.stdout.count(": nothing to do") == len(cluster.spec.nodes)


def test_up_builds_the_cluster_again_on_reset_hosts(cluster):
    c = cluster
    up(c)
    r = hw(c.dir, "kubectl", "get", "nodes", "--no-headers")
    assert r.returncode == 0, r.stderr
    assert {ln.split()[0]: ln.split()[1] for ln in r.stdout.splitlines()} == {w.name: "Ready" for w in c.spec.workers}


def test_an_unreachable_host_is_named_and_the_others_are_reset(cluster):
    c = cluster
    gone = c.spec.workers[-1].name
    hwlab.stop(c.dir, gone)
    try:
        r = reset(c, expect=1)
        assert f"{gone}: NOT reset" in r.stdout and gone in r.stderr.splitlines()[-1]
        for n in names(c):
            if n != gone:
                assert f"{n}: reset" in r.stdout
    finally:
        hwlab.start(c.dir, gone)
    r = reset(c)
    assert f"{gone}: reset" in r.stdout
    assert_as_before(c, c.before, names(c))


def test_reset_puts_back_a_file_up_adopt_replaced_byte_for_byte(cluster):
    c = cluster
    w = c.spec.workers[0].name
    c.ok(w, f"mkdir -p /etc/containerd && printf %s {THEIRS!r} > {CONTAINERD_CONFIG} && chmod 0640 {CONTAINERD_CONFIG} "
            f"&& chown nobody:nogroup {CONTAINERD_CONFIG} && touch -d '2001-02-03 04:05:06' {CONTAINERD_CONFIG}")
    stat = f"stat -c '%a %U:%G %Y %s' {CONTAINERD_CONFIG} && sha256sum {CONTAINERD_CONFIG}"
    theirs = c.ok(w, stat)
    before = {n: capture(c, n) for n in names(c)}
    r = hw(c.dir, "up", timeout=600)
    assert r.returncode == 1 and CONTAINERD_CONFIG in r.stderr and "--adopt" in r.stderr, r.stderr[-2000:]
    up(c, "--adopt")
    assert c.ok(w, stat) != theirs  # replaced by hardway's
    reset(c)
    assert c.ok(w, stat) == theirs
    assert_as_before(c, before, names(c))
