"""`hardway etcd snapshot` and `hardway etcd restore` for real, with 1 member (basic) and 3
members (ha): ConfigMaps a and b -> snapshot (0600, its .sha256 right) -> delete a, create c
-> restore -> exactly a and b exist, not c; every member runs with the new cluster token and
holds its old data directory; verify exits 0; a no-op `up` afterwards changes and restarts
nothing. Snapshot and restore times are logged.
"""

from __future__ import annotations

import hashlib
import re
import stat
import time
from pathlib import Path

import pytest

from hardway.clusterdir import ClusterDir
from hardway.render.common import ETCD_DATA
from tests.e2e.cluster_fixture import figure, hw, log
from tests.helpers import E2E_TIMEOUT

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(E2E_TIMEOUT)]

LABEL = "hardway-e2e=etcd-backup"
UNITS = ["etcd.service", "kube-apiserver.service", "kube-controller-manager.service", "kube-scheduler.service"]


def kubectl(c, *args: str) -> str:
    r = hw(c.dir, "kubectl", *args, timeout=120)
    assert r.returncode == 0, f"kubectl {' '.join(args)}: {r.stderr}"
    return r.stdout


def configmaps(c) -> set[str]:
    out = kubectl(c, "get", "configmaps", "-n", "default", "-l", LABEL, "-o", "jsonpath={.items[*].metadata.name}")
    return set(out.split())


def create(c, name: str) -> None:
    kubectl(c, "create", "configmap", name, "-n", "default", f"--from-literal=name={name}")
    kubectl(c, "label", "configmap", name, "-n", "default", LABEL)


def journals(c) -> str:
    """The kubelet's and kube-proxy's last journal lines on every worker, for a failure report."""
    return "".join(f"\n--- {w.name}\n" + c.run(w.name, "systemctl show -p NRestarts kubelet kube-proxy; journalctl "
                                                 "-u kubelet -u kube-proxy -n 40 --no-pager -o cat | cut -c1-400").stdout
                   for w in c.spec.workers)


def invocations(c, node: str) -> dict[str, str]:
    """unit -> systemd's InvocationID: a restart gives a new one."""
    out = c.ok(node, "systemctl show -p Id -p InvocationID " + " ".join(UNITS))
    blocks = [dict(ln.split("=", 1) for ln in b.splitlines() if "=" in ln) for b in out.strip().split("\n\n")]
    return {b["Id"]: b["InvocationID"] for b in blocks}


def test_1_member_snapshot_then_restore_brings_back_exactly_the_snapshot(day2_basic):
    snapshot_then_restore(day2_basic, "basic")


def test_3_members_snapshot_then_restore_brings_back_exactly_the_snapshot(day2_ha):
    snapshot_then_restore(day2_ha, "ha")


def snapshot_then_restore(c, preset: str) -> None:
    name = c.spec.name
    members = [n.name for n in c.spec.controllers]

    create(c, "a")
    create(c, "b")
    assert configmaps(c) == {"a", "b"}

    t = time.monotonic()
    r = hw(c.dir, "etcd", "snapshot")
    snapshot_s = time.monotonic() - t
    log(f"snapshot ({snapshot_s:.1f} s):\n{r.stderr[-1500:]}\n{r.stdout}")
    assert r.returncode == 0, r.stderr[-3000:]
    path = Path(re.search(r"^(\S+\.db): revision \d+, \d+ keys, \d+ bytes from ", r.stdout, re.M).group(1))
    assert path.parent == ClusterDir(c.dir).backups and path.name.startswith(f"etcd-{name}-")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert Path(f"{path}.sha256").read_text() == f"{digest}  {path.name}\n"
    assert f"sha256 {digest}" in r.stdout

    kubectl(c, "delete", "configmap", "a", "-n", "default")
    create(c, "c")
    assert configmaps(c) == {"b", "c"}

    t = time.monotonic()
    r = hw(c.dir, "etcd", "restore", str(path), "--yes", timeout=900)
    restore_s = time.monotonic() - t
    log(f"restore ({restore_s:.1f} s):\n{r.stderr[-4000:]}\n{r.stdout}")
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    assert "cluster healthy" in r.stdout
    log("after the restore:" + journals(c))
    figure(f"{preset}: etcd snapshot and restore, {len(members)} member(s)", snapshot_s=round(snapshot_s, 1),
           restore_s=round(restore_s, 1), restore_includes="its verify")

    assert configmaps(c) == {"a", "b"}, "the cluster does not hold exactly the snapshot's ConfigMaps"

    token = (c.dir / "etcd-cluster-token").read_text().strip()
    assert token.startswith(f"{name}-etcd-")
    for m in members:
        # etcd's bootstrap settings, which a started member ignores (render/etcd.py)
        env = c.ok(m, "cat /etc/etcd/initial-cluster.env")
        assert re.search(rf"^ETCD_INITIAL_CLUSTER_TOKEN=\"?{re.escape(token)}\"?$", env, re.M), env
        kept = re.search(rf"{m}: old data directory kept in (\S+)", r.stdout).group(1)
        assert kept.startswith(f"{ETCD_DATA}.before-restore-")
        c.ok(m, f"test -d {kept}/member && test -d {ETCD_DATA}/member")
    listed = c.ok(members[0], f"{ETCDCTL} member list -w simple --endpoints=https://"
                  f"{c.spec.controllers[0].address}:2379")
    assert sorted(ln.split(", ")[2] for ln in listed.strip().splitlines()) == sorted(members), listed

    r = hw(c.dir, "verify")
    assert r.returncode == 0, r.stdout + r.stderr[-2000:] + journals(c)

    before = {m: invocations(c, m) for m in members}
    r = hw(c.dir, "up")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "done, nothing changed" in r.stderr, r.stderr[-3000:]
    assert {m: invocations(c, m) for m in members} == before, "the no-op up restarted a control-plane unit"


ETCDCTL = ("ETCDCTL_API=3 /usr/local/bin/etcdctl --cacert=/etc/etcd/pki/ca.crt --cert=/etc/etcd/pki/etcdctl.crt "
           "--key=/etc/etcd/pki/etcdctl.key")
