"""`hardway up` of the `single` preset (seed 002): etcd, the control plane and a worker on one
lab machine, proven by the same verify and smoke tests as the multi-node cluster."""

from __future__ import annotations

import time

import pytest

from tests.e2e.cluster_fixture import hw, lab_cluster, log
from tests.helpers import E2E_TIMEOUT
from tests.mirror_fixture import mirror  # noqa: F401 (fixture)

# Generous: on a fresh 2-core machine the first test to need them builds the mirror
# (Kubernetes from source, ~7 min) and the lab image, before any cluster comes up.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(E2E_TIMEOUT)]


def test_single_node_cluster_up_verify_and_smoke(tmp_path, mirror):  # noqa: F811
    with lab_cluster(tmp_path / "cluster", "single", "hwone", 79, mirror) as c:
        assert len(c.spec.nodes) == 1
        t = time.monotonic()
        r = hw(c.dir, "up")
        log(f"single up ({time.monotonic() - t:.1f} s):\n{r.stderr[-2500:]}")
        assert r.returncode == 0, r.stderr[-3000:]
        r = hw(c.dir, "verify", "--smoke", timeout=900)
        log(r.stdout)
        assert r.returncode == 0, r.stdout + r.stderr[-2000:]
        assert "cluster healthy" in r.stdout
        assert "PASS ClusterIP service" in r.stdout and "PASS secret encrypted at rest" in r.stdout
