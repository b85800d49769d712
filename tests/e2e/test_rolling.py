"""Rolling activation on `ha` (1 HAProxy + 3 controllers + 2 workers) on lab machines: one
`up` that restarts etcd and kube-apiserver on every controller, the kubelet on every worker
and reloads HAProxy, while a client writes ConfigMaps through the load balancer at ~6/s, each
on a new connection. No write may fail; the restarts must take turns (never two etcd members
or two apiservers down at once); every worker is drained and uncordoned; a following `up`
changes nothing.
"""

from __future__ import annotations

import json
import re
import time

import pytest

from hardway.clusterdir import ClusterDir
from hardway.spec.load import load_spec
from tests.e2e.cluster_fixture import Writer, hw, lab_cluster, log
from tests.helpers import E2E_TIMEOUT
from tests.mirror_fixture import mirror  # noqa: F401 (fixture)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(E2E_TIMEOUT)]

TAMPER = "\n# changed by test_rolling: hardway up puts the rendered file back\n"


def start_times(c, node: str, unit: str) -> int:
    out = c.ok(node, f"systemctl show -p ExecMainStartTimestampMonotonic --value {unit}")
    return int(out.strip())


def test_a_change_everywhere_rolls_with_no_failed_write(tmp_path, mirror):  # noqa: F811
    with lab_cluster(tmp_path / "cluster", "ha", "hwroll", 85, mirror) as c:
        c.spec = load_spec(c.dir / "cluster.yaml").spec
        r = hw(c.dir, "up")
        assert r.returncode == 0, r.stderr[-3000:]
        controllers = [n.name for n in c.spec.controllers]
        workers = [n.name for n in c.spec.workers]
        lb = c.spec.lb_node.name

        # Restarts on every host: a unit file edited by hand on each controller (etcd) and
        # worker (kubelet), a flag of every apiserver (the NodePort range), HAProxy's config.
        for n in controllers:
            c.ok(n, f"printf %s '{TAMPER}' >> /etc/systemd/system/etcd.service")
        for n in workers:
            c.ok(n, f"printf %s '{TAMPER}' >> /etc/systemd/system/kubelet.service")
        c.ok(lb, f"printf %s '{TAMPER}' >> /etc/haproxy/haproxy.cfg")
        spec_path = c.dir / "cluster.yaml"
        text = spec_path.read_text()
        assert "serviceNodePortRange" not in text
        spec_path.write_text(text.replace("  podCIDR:", "  serviceNodePortRange: 30000-32766\n  podCIDR:", 1))
        assert load_spec(spec_path).spec.network.service_node_port_range == "30000-32766"

        writer = Writer(c.spec, ClusterDir(c.dir))
        writer.start()
        time.sleep(3)  # writes flowing before the first restart
        t = time.monotonic()
        r = hw(c.dir, "up", timeout=1200)
        took = time.monotonic() - t
        time.sleep(3)
        writer.stop.set()
        writer.join(30)
        log(f"rolling up: {took:.1f} s, {len(writer.created)} writes at {writer.rate:.1f}/s, "
            f"{len(writer.failures)} failed\n{r.stderr[-6000:]}")
        assert r.returncode == 0, r.stderr[-4000:]
        assert writer.rate >= 5, writer.rate
        assert not writer.failures, "\n".join(writer.failures[:30])

        out = r.stderr
        for phase, hosts in (("etcd", controllers), ("control-plane", controllers), ("workers", workers)):
            m = re.search(rf"rolling restart of {phase} on {len(hosts)} host\(s\), 1 at a time: (.*)", out)
            assert m, f"no rolling restart of {phase}:\n{out[-4000:]}"
            assert m.group(1).split(", ") == hosts
        assert f"{lb}: reload haproxy.service" in out
        for w in workers:
            assert f"{w}: draining" in out and f"{w}: uncordoned" in out
        # Turns, not all at once: each member started after the previous one was back.
        for unit in ("etcd.service", "kube-apiserver.service"):
            starts = [start_times(c, n, unit) for n in controllers]
            gaps = [(b - a) / 1e6 for a, b in zip(starts, starts[1:], strict=False)]
            log(f"{unit} started at {gaps} s after the previous controller's")
            assert all(g > 0.5 for g in gaps), (unit, gaps)

        nodes = json.loads(hw(c.dir, "kubectl", "get", "nodes", "-o", "json").stdout)["items"]
        assert not [n["metadata"]["name"] for n in nodes if n["spec"].get("unschedulable")]
        names = set(hw(c.dir, "kubectl", "get", "configmaps", "-o", "name").stdout.split())
        missing = [n for n in writer.created if f"configmap/{n}" not in names]
        assert not missing, missing[:20]

        r = hw(c.dir, "up")
        assert r.returncode == 0 and "done, nothing changed" in r.stderr, r.stderr[-2000:]
