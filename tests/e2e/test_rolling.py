"""Rolling activation on `ha` (1 HAProxy + 3 controllers + 2 workers) on lab machines, while a
client writes ConfigMaps through the load balancer at ~6/s, each on a new connection: every
leaf certificate renewed, so one `up` restarts etcd and the control plane on every controller,
kubelet and kube-proxy on every worker and reloads HAProxy; then rebuilt Kubernetes binaries
(the upgrade machinery). No write may
fail; the restarts take turns (never two etcd members or two apiservers down at once) in the
version-skew order; every worker is drained and uncordoned; a following `up` changes nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import ssl
import time
from pathlib import Path

import pytest
from cryptography import x509

from hardway.clusterdir import ClusterDir
from hardway.spec.model import APISERVER_PORT
from tests.e2e.cluster_fixture import Writer, figure, hw, log, touched
from tests.helpers import E2E_TIMEOUT
from tests.mirror_fixture import mirror  # noqa: F401 (fixture)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(E2E_TIMEOUT)]

@pytest.fixture(scope="module")
def cluster(day2_ha):
    return day2_ha


def start_times(c, node: str, unit: str) -> int:
    out = c.ok(node, f"systemctl show -p ExecMainStartTimestampMonotonic --value {unit}")
    return int(out.strip())


def rolled_up(c, what: str) -> str:
    """`hardway up` while a Writer writes through the LB: no write fails, every one is kept,
    no node is left cordoned. Returns up's output."""
    writer = Writer(c.spec, ClusterDir(c.dir))
    writer.start()
    time.sleep(3)  # writes flowing before the first restart
    t = time.monotonic()
    r = hw(c.dir, "up", timeout=1200)
    took = time.monotonic() - t
    time.sleep(3)
    writer.stop.set()
    writer.join(30)
    log(f"{what}: up {took:.1f} s, {len(writer.created)} writes at {writer.rate:.1f}/s, "
        f"{len(writer.failures)} failed\n{r.stderr[-6000:]}")
    figure(f"ha: {what}", seconds=round(took, 1), writes=len(writer.created) + len(writer.failures),
           rate_per_s=round(writer.rate, 2), failed=len(writer.failures), **touched(r.stderr))
    assert r.returncode == 0, r.stderr[-4000:]
    assert writer.rate >= 5, writer.rate
    assert not writer.failures, "\n".join(writer.failures[:30])
    names = set(hw(c.dir, "kubectl", "get", "configmaps", "-o", "name").stdout.split())
    missing = [n for n in writer.created if f"configmap/{n}" not in names]
    assert not missing, missing[:20]
    nodes = json.loads(hw(c.dir, "kubectl", "get", "nodes", "-o", "json").stdout)["items"]
    assert not [n["metadata"]["name"] for n in nodes if n["spec"].get("unschedulable")]
    return r.stderr


def turns(out: str, phase: str, units: str) -> list[str]:
    """The hosts of the rolling restart of `units` in `phase`, in their order."""
    m = re.search(rf"rolling restart of {phase} \({re.escape(units)}\) on \d+ host\(s\), 1 at a time: (.*)", out)
    assert m, f"no rolling restart of {phase} ({units}):\n{out[-4000:]}"
    return m.group(1).split(", ")


def test_renewing_every_leaf_certificate_rolls_with_no_failed_write(cluster):
    """`pki renew --all` then `up`: every leaf (etcd's, the apiservers', the kubelets', HAProxy's
    health check, every kubeconfig's) is new, so every etcd member, apiserver, controller
    manager, scheduler, kubelet and kube-proxy restarts and HAProxy reloads: in turns, under
    the writer, and every component then serves its new certificate."""
    c = cluster
    cd = ClusterDir(c.dir)
    controllers = [n.name for n in c.spec.controllers]
    workers = [n.name for n in c.spec.workers]
    lb = c.spec.lb_node.name
    before = {p.name: p.read_bytes() for p in (c.dir / "pki").glob("*.crt")}
    r = hw(c.dir, "pki", "renew", "--all")
    assert r.returncode == 0, r.stdout + r.stderr

    out = rolled_up(c, "renewal of every leaf certificate")
    assert turns(out, "etcd", "etcd") == controllers
    assert turns(out, "control-plane", "kube-apiserver") == controllers
    assert turns(out, "worker", "kube-proxy, kubelet") == workers
    assert f"{lb}: reload haproxy.service" in out
    for w in workers:
        assert f"{w}: draining" in out and f"{w}: uncordoned" in out
    # Turns, not all at once: each member started after the previous one was back.
    for unit in ("etcd.service", "kube-apiserver.service"):
        starts = [start_times(c, n, unit) for n in controllers]
        gaps = [(b - a) / 1e6 for a, b in zip(starts, starts[1:], strict=False)]
        log(f"{unit} started at {gaps} s after the previous controller's")
        assert all(g > 0.5 for g in gaps), (unit, gaps)

    after = {p.name: p.read_bytes() for p in (c.dir / "pki").glob("*.crt")}
    cas = {"ca.crt", "etcd-ca.crt", "front-proxy-ca.crt"}
    unchanged = sorted(n for n in after if n not in cas and after[n] == before.get(n))
    assert not unchanged, f"leaves not renewed: {unchanged}"
    want = x509.load_pem_x509_certificate(cd.cert("apiserver").read_bytes()).serial_number
    for n in c.spec.controllers:  # every apiserver serves the renewed certificate
        pem = ssl.get_server_certificate((str(n.address), APISERVER_PORT), timeout=10)
        assert x509.load_pem_x509_certificate(pem.encode()).serial_number == want, n.name
    r = hw(c.dir, "verify")
    assert r.returncode == 0, r.stdout
    r = hw(c.dir, "up")
    assert r.returncode == 0 and "done, nothing changed" in r.stderr, r.stderr[-2000:]


def rebuilt_mirror(source: Path, target: Path, version: str, binaries: list[str]) -> None:
    """A copy of the mirror (symlinks) whose `binaries` are "rebuilt": the same programs with
    bytes appended (an ELF runs as before), with their published checksums."""
    shutil.copytree(source, target, copy_function=os.symlink)
    where = Path("dl.k8s.io/release", f"v{version}", "bin/linux/amd64")
    for name in binaries:
        path = target / where / name
        data = (source / where / name).read_bytes() + b"\0rebuilt by test_rolling\0"
        path.unlink()
        path.write_bytes(data)
        path.chmod(0o755)
        (target / where / f"{name}.sha256").unlink()
        (target / where / f"{name}.sha256").write_text(hashlib.sha256(data).hexdigest())


@pytest.mark.long  # a second full roll (~3 minutes): the renewal test covers the rolling itself
def test_rebuilt_binaries_roll_in_the_version_skew_order_with_no_failed_write(cluster, mirror, tmp_path):  # noqa: F811
    """The upgrade machinery (deploy/upgrade.py) with the one Kubernetes version obtainable here:
    new kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and kube-proxy binaries."""
    c = cluster
    controllers = [n.name for n in c.spec.controllers]
    workers = [n.name for n in c.spec.workers]
    version = c.spec.kubernetes.version
    rebuilt = tmp_path / "rebuilt-mirror"
    rebuilt_mirror(Path(mirror), rebuilt, version, ["kube-apiserver", "kube-controller-manager", "kube-scheduler",
                                                   "kubelet", "kube-proxy"])
    spec_path = c.dir / "cluster.yaml"
    text = spec_path.read_text()
    assert text.count(str(mirror)) == 1
    spec_path.write_text(text.replace(str(mirror), str(rebuilt)))
    r = hw(c.dir, "diff")
    assert r.returncode != 0 and "artifacts.lock" in (r.stdout + r.stderr), r.stdout + r.stderr  # refused first
    r = hw(c.dir, "artifacts", "fetch", "--update-lock")
    assert r.returncode == 0, r.stderr[-2000:]

    out = rolled_up(c, "rebuilt binaries")
    assert "Kubernetes binaries change" in out
    apiservers = out.index("rolling restart of control-plane (kube-apiserver)")
    others = out.index("rolling restart of control-plane (kube-controller-manager, kube-scheduler)")
    kubelets = out.index("rolling restart of worker (kube-proxy, kubelet)")
    assert apiservers < others < kubelets
    assert turns(out, "control-plane", "kube-apiserver") == controllers
    assert turns(out, "control-plane", "kube-controller-manager, kube-scheduler") == controllers
    assert turns(out, "worker", "kube-proxy, kubelet") == workers
    want = hashlib.sha256((rebuilt / "dl.k8s.io/release" / f"v{version}" / "bin/linux/amd64/kubelet")
                          .read_bytes()).hexdigest()
    for w in workers:
        assert c.ok(w, "sha256sum /usr/local/bin/kubelet").split()[0] == want
    r = hw(c.dir, "up")
    assert r.returncode == 0 and "done, nothing changed" in r.stderr, r.stderr[-2000:]

