"""Encryption key rotation on `ha` (1 HAProxy + 3 controllers + 2 workers) on lab machines:
`hardway secrets rotate` while a client writes ConfigMaps through the load balancer at ~6/s,
each on a new connection. No write may fail; every Secret keeps its data; afterwards etcd
holds every Secret encrypted with the new key and none with key1; `verify --smoke` passes and
a following `up` changes nothing. The tests share one rotation, made by the module fixture.
"""

from __future__ import annotations

import base64
import json
import re
import time
from dataclasses import dataclass

import pytest

from hardway.clusterdir import ClusterDir
from hardway.deploy.hosts import Options
from hardway.verify.etcd_data import SECRETS, etcdctl_get
from tests.e2e.cluster_fixture import LabCluster, Writer, figure, hw, log, touched
from tests.helpers import E2E_TIMEOUT
from tests.mirror_fixture import mirror  # noqa: F401 (fixture)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(E2E_TIMEOUT)]

NS = "rotate-test"
MADE = {("default", "rot-a"): "alpha", ("default", "rot-b"): "beta", (NS, "rot-c"): "gamma",
        (NS, "rot-d"): "delta"}


@dataclass
class Rotated:
    c: LabCluster
    rc: int
    stderr: str
    stdout: str
    seconds: float
    writer: Writer
    before: dict[str, bytes]  # /registry/secrets/... -> stored value, before the rotation


def stored(c: LabCluster) -> dict[str, bytes]:
    return etcdctl_get(c.spec, ClusterDir(c.dir), SECRETS, Options(), log, prefix=True)


def kubectl_ok(c: LabCluster, *args: str) -> str:
    r = hw(c.dir, "kubectl", *args)
    assert r.returncode == 0, f"kubectl {' '.join(args)}: {r.stderr}"
    return r.stdout


@pytest.fixture(scope="module")
def rotated(day2_ha):
    c = day2_ha
    kubectl_ok(c, "create", "namespace", NS)
    for (ns, name), value in MADE.items():
        kubectl_ok(c, "-n", ns, "create", "secret", "generic", name, f"--from-literal=k={value}")
    before = stored(c)
    writer = Writer(c.spec, ClusterDir(c.dir))
    writer.start()
    time.sleep(3)  # writes flowing before the first restart
    t = time.monotonic()
    r = hw(c.dir, "secrets", "rotate", timeout=1500)
    took = time.monotonic() - t
    time.sleep(3)
    writer.stop.set()
    writer.join(30)
    log(f"secrets rotate: {took:.1f} s, exit {r.returncode}; writer: {len(writer.created)} writes at "
        f"{writer.rate:.2f}/s, {len(writer.failures)} failed\n{r.stderr[-8000:]}\n{r.stdout}")
    figure("ha: secrets rotate", seconds=round(took, 1), writes=len(writer.created) + len(writer.failures),
           rate_per_s=round(writer.rate, 2), failed=len(writer.failures), exit=r.returncode, **touched(r.stderr))
    yield Rotated(c, r.returncode, r.stderr, r.stdout, took, writer, before)


def test_the_rotation_succeeds_in_four_steps_rolling_the_apiservers(rotated):
    assert rotated.rc == 0, rotated.stderr[-4000:]
    for i, step in enumerate(("add", "switch", "rewrite", "drop"), 1):
        assert f"== step {i}/4 {step}:" in rotated.stderr
    controllers = [n.name for n in rotated.c.spec.controllers]
    rolls = re.findall(r"rolling restart of control-plane \(kube-apiserver\) on 3 host\(s\), 1 at a time: (.*)",
                       rotated.stderr)
    assert rolls == [", ".join(controllers)] * 3, rolls
    m = re.search(r"rotated from key1 to key2 .*; (\d+) Secret\(s\) rewritten", rotated.stdout)
    assert m and int(m.group(1)) >= len(MADE), rotated.stdout
    cd = ClusterDir(rotated.c.dir)
    assert cd.encryption_key.read_text().splitlines()[-1].startswith("key2 ")
    assert not cd.encryption_rotation.exists()


def test_no_write_failed_during_the_rotation(rotated):
    w = rotated.writer
    assert w.rate >= 5, w.rate
    assert not w.failures, "\n".join(w.failures[:30])
    names = set(kubectl_ok(rotated.c, "get", "configmaps", "-o", "name").split())
    missing = [n for n in w.created if f"configmap/{n}" not in names]
    assert not missing, missing[:20]


def test_every_secret_keeps_its_data(rotated):
    for (ns, name), value in MADE.items():
        doc = json.loads(kubectl_ok(rotated.c, "-n", ns, "get", "secret", name, "-o", "json"))
        assert base64.b64decode(doc["data"]["k"]).decode() == value, (ns, name)
    # and every other Secret (service-account tokens) is still readable through the API
    items = json.loads(kubectl_ok(rotated.c, "get", "secrets", "--all-namespaces", "-o", "json"))["items"]
    assert len(items) >= len(MADE)


def test_etcd_holds_every_secret_with_the_new_key_and_none_with_key1(rotated):
    assert all(v.startswith(b"k8s:enc:aescbc:v1:key1:") for v in rotated.before.values()), "not key1 before"
    now = stored(rotated.c)
    assert {f"{SECRETS}{ns}/{n}" for ns, n in MADE} <= set(now)
    with_new = [k for k, v in now.items() if v.startswith(b"k8s:enc:aescbc:v1:key2:")]
    with_old = [k for k, v in now.items() if b":key1:" in v[:40]]
    assert len(with_new) == len(now) and not with_old, (sorted(set(now) - set(with_new)), with_old)


def test_verify_smoke_passes(rotated):
    r = hw(rotated.c.dir, "verify", "--smoke", timeout=900)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert re.search(r"PASS every Secret in etcd encrypted with the write key: \d+ Secret\(s\) in etcd, every one "
                     r"encrypted with key key2", r.stdout), r.stdout
    assert "etcd holds k8s:enc:aescbc:v1:key2:" in r.stdout


def test_a_following_up_changes_nothing(rotated):
    r = hw(rotated.c.dir, "up")
    assert r.returncode == 0 and "done, nothing changed" in r.stderr, r.stderr[-2000:]
