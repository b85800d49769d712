"""High availability for real, for both topologies: `ha` (HAProxy on an lb machine in front of
three controllers) and `ha-vip` (keepalived VIP + HAProxy on every controller). Each: up,
verify, smoke, every listening socket against the ports table; stop a controller machine (for ha-vip the VIP holder): the API still accepts
writes through the LB/VIP, etcd has 2 of 3 members, verify says degraded (exit 3); start it:
it rejoins, verify says healthy, every write made during the outage is there. For ha-vip also:
stopping keepalived on the holder moves the VIP.
"""

from __future__ import annotations

import time

import pytest

from hardway.deploy.health import etcd_health, identity
from hardway.clusterdir import ClusterDir
from hardway.spec.load import load_spec
from tests.e2e.cluster_fixture import hw, lab_cluster, log
from tests.e2e.listeners import listener_problems
from tests.helpers import E2E_TIMEOUT
from tests.mirror_fixture import mirror  # noqa: F401 (fixture)

# Generous: on a fresh 2-core machine the first test to need them builds the mirror
# (Kubernetes from source, ~7 min) and the lab image, before any cluster comes up.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(E2E_TIMEOUT)]


def healthy_members(c) -> int:
    ident = identity(ClusterDir(c.dir), "etcd-ca", "etcd-admin")
    return sum(etcd_health(str(n.address), ident)[0] for n in c.spec.controllers)


@pytest.mark.parametrize("preset,octet", [("ha", 74), ("ha-vip", 75)])
def test_ha_survives_losing_a_controller(tmp_path, mirror, preset, octet):  # noqa: F811
    name = "hwha" if preset == "ha" else "hwvip"
    with lab_cluster(tmp_path / "cluster", preset, name, octet, mirror) as c:
        c.spec = load_spec(c.dir / "cluster.yaml").spec
        t = time.monotonic()
        r = hw(c.dir, "up")
        log(f"{preset} up ({time.monotonic() - t:.1f} s):\n{r.stderr[-2500:]}")
        assert r.returncode == 0, r.stderr[-3000:]
        assert "the API through the load balancer" in r.stderr
        r = hw(c.dir, "verify", "--smoke", timeout=900)
        log(r.stdout)
        assert r.returncode == 0, r.stdout + r.stderr[-2000:]
        assert "cluster healthy" in r.stdout
        # The lb machine (ha) and HAProxy on every controller (ha-vip) against the ports table.
        problems = listener_problems(c, log)
        assert not problems, "\n".join(problems)

        vip = str(c.spec.load_balancer.vip) if preset == "ha-vip" else None
        if vip:
            holders = c.vip_holders(vip)
            assert len(holders) == 1, f"VIP {vip} held by {holders}"
            victim = holders[0]
        else:
            victim = c.spec.controllers[0].name
        r = hw(c.dir, "lab", "stop", victim)
        assert r.returncode == 0, r.stderr
        seconds = c.write_until_ok("during-outage-1")
        log(f"{preset}: first write through {c.spec.api_server_url} {seconds:.2f} s after stopping {victim}")
        if vip:
            assert seconds <= 10, f"VIP failover took {seconds:.1f} s"
            new = c.vip_holders(vip)
            assert len(new) == 1 and new[0] != victim
        c.write_until_ok("during-outage-2")
        assert healthy_members(c) == 2
        r = hw(c.dir, "verify")
        log(r.stdout)
        assert r.returncode == 3, r.stdout
        assert "cluster degraded" in r.stdout and f"etcd member {victim}" in r.stdout

        r = hw(c.dir, "lab", "start", victim)
        assert r.returncode == 0, r.stderr
        deadline = time.monotonic() + 120
        while True:
            r = hw(c.dir, "verify")
            if r.returncode == 0:
                break
            assert time.monotonic() < deadline, f"{victim} did not rejoin:\n{r.stdout}"
            time.sleep(3)
        assert healthy_members(c) == 3
        r = hw(c.dir, "kubectl", "get", "configmaps", "-o", "name")
        assert "configmap/during-outage-1" in r.stdout and "configmap/during-outage-2" in r.stdout

        if vip:
            holder = c.steady_vip_holders(vip)
            log(f"ha-vip: after the rejoin the VIP is steadily on {holder}")
            assert len(holder) == 1
            c.ok(holder[0], "systemctl stop keepalived")
            deadline = time.monotonic() + 15
            while (now := c.vip_holders(vip)) in ([], holder):
                assert time.monotonic() < deadline, f"VIP did not move off {holder[0]}"
                time.sleep(0.5)
            log(f"ha-vip: keepalived stopped on {holder[0]}: VIP moved to {now}")
            assert len(now) == 1
            c.write_until_ok("after-vip-move", 20)
            c.ok(holder[0], "systemctl start keepalived")
        # A later `up` puts everything back and changes nothing else.
        r = hw(c.dir, "up")
        assert r.returncode == 0, r.stderr[-2000:]
