"""Encryption key rotation on `ha` (1 HAProxy + 3 controllers + 2 workers) on lab machines:
`hardway secrets rotate` while a client writes ConfigMaps through the load balancer at ~6/s,
each on a new connection. No write may fail; every Secret keeps its data; afterwards etcd
holds every Secret encrypted with the new key and none with key1; `verify --smoke` passes and
a following `up` changes nothing. The tests share one rotation, made by the module fixture.

Then, on the same cluster, `hardway pki rotate-ca ca` under a second writer that follows the
rotation (it reads the admin identity and the CA bundle from DIR/pki for each connection): no
write may fail, every ConfigMap is there, `verify` is healthy, every node Ready, kubectl works
with the new admin kubeconfig, and every apiserver (and the LB) presents a certificate of the
new CA, which a client trusting only the old CA refuses.
"""

from __future__ import annotations

import base64
import json
import re
import socket
import ssl
import time
from dataclasses import dataclass

import pytest
import yaml

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from hardway.clusterdir import ClusterDir
from hardway.pki.store import cert_blocks
from hardway.pki.verify import signed_by
from hardway.render.kubeconfig import client_certificate
from hardway.render.lb import HAPROXY_CA
from hardway.render.worker import KUBELET_CLIENT_CURRENT
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
class Run:
    """A rotation run under a writer."""

    c: LabCluster
    rc: int
    stderr: str
    stdout: str
    seconds: float
    writer: Writer


@dataclass
class Rotated(Run):
    before: dict[str, bytes]  # /registry/secrets/... -> stored value, before the rotation


def stored(c: LabCluster) -> dict[str, bytes]:
    return etcdctl_get(c.spec, ClusterDir(c.dir), SECRETS, Options(), log, prefix=True)


def kubectl_ok(c: LabCluster, *args: str) -> str:
    r = hw(c.dir, "kubectl", *args)
    assert r.returncode == 0, f"kubectl {' '.join(args)}: {r.stderr}"
    return r.stdout


def under_writer(c: LabCluster, writer: Writer, *command: str, timeout: float = 2000):
    """`hardway COMMAND` while `writer` writes through the LB: (its result, seconds, the writer)."""
    writer.start()
    time.sleep(3)  # writes flowing before the first restart
    t = time.monotonic()
    r = hw(c.dir, *command, timeout=timeout)
    took = time.monotonic() - t
    time.sleep(3)
    writer.stop.set()
    writer.join(30)
    log(f"{' '.join(command)}: {took:.1f} s, exit {r.returncode}; writer: {len(writer.created)} writes at "
        f"{writer.rate:.2f}/s, {len(writer.failures)} failed\n{r.stderr[-8000:]}\n{r.stdout}")
    figure(f"ha: {' '.join(command)}", seconds=round(took, 1), writes=len(writer.created) + len(writer.failures),
           rate_per_s=round(writer.rate, 2), failed=len(writer.failures), exit=r.returncode, **touched(r.stderr))
    return r, took, writer


@pytest.fixture(scope="module")
def rotated(day2_ha):
    c = day2_ha
    kubectl_ok(c, "create", "namespace", NS)
    for (ns, name), value in MADE.items():
        kubectl_ok(c, "-n", ns, "create", "secret", "generic", name, f"--from-literal=k={value}")
    before = stored(c)
    r, took, writer = under_writer(c, Writer(c.spec, ClusterDir(c.dir)), "secrets", "rotate")
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


def no_write_failed(run: Run) -> None:
    """The writer kept its rate, none of its writes failed, and every ConfigMap it made is there."""
    w = run.writer
    assert w.rate >= 5, w.rate
    assert not w.failures, "\n".join(w.failures[:30])
    names = set(kubectl_ok(run.c, "get", "configmaps", "-o", "name").split())
    missing = [n for n in w.created if f"configmap/{n}" not in names]
    assert not missing, missing[:20]


def test_no_write_failed_during_the_rotation(rotated):
    no_write_failed(rotated)


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


# -- CA rotation, on the same cluster -------------------------------------------------------

@dataclass
class CaRotated(Run):
    old_ca: x509.Certificate


def served_cert(host: str, port: int) -> x509.Certificate:
    """The certificate a TLS server presents, unverified (what it serves, not whether we trust it)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection((host, port), timeout=10) as sock, ctx.wrap_socket(sock) as tls:
        return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))


@pytest.fixture(scope="module")
def ca_rotated(rotated):
    c = rotated.c
    cd = ClusterDir(c.dir)
    old_ca = x509.load_pem_x509_certificate(cd.cert("ca").read_bytes())
    # The writer follows the rotation: each connection reads DIR/pki's admin identity and bundle.
    r, took, writer = under_writer(c, Writer(c.spec, cd, follow=True, prefix="ca-rot"), "pki", "rotate-ca", "ca")
    return CaRotated(c, r.returncode, r.stderr, r.stdout, took, writer, old_ca)


@pytest.mark.long  # ~10 minutes: three full rolls (README: Tests)
def test_ca_rotation_succeeds_in_four_steps_with_no_failed_write(ca_rotated):
    r = ca_rotated
    assert r.rc == 0, r.stderr[-4000:]
    for i, step in enumerate(("trust", "reissue", "switch", "drop"), 1):
        assert f"== step {i}/4 {step}:" in r.stderr
    assert re.search(r"ca rotated in .*, 2 kubelet client certificate\(s\) renewed", r.stdout), r.stdout
    no_write_failed(r)
    cd = ClusterDir(r.c.dir)
    assert not (cd.pki / "ca-rotation").exists() and not cd.cert("ca.old").exists() and not cd.key("ca.old").exists()


@pytest.mark.long  # ~10 minutes: three full rolls (README: Tests)
def test_after_the_ca_rotation_everything_chains_to_the_new_ca_only(ca_rotated):
    c, old = ca_rotated.c, ca_rotated.old_ca
    cd = ClusterDir(c.dir)
    new = x509.load_pem_x509_certificate(cd.cert("ca").read_bytes())
    assert new.serial_number != old.serial_number
    # kubectl with the new admin kubeconfig: only the new CA in it, a client certificate of it
    doc = yaml.safe_load(cd.kubeconfig("admin").read_text())
    ca_data = base64.b64decode(doc["clusters"][0]["cluster"]["certificate-authority-data"])
    assert cert_blocks(ca_data) == cert_blocks(cd.cert("ca").read_bytes())
    admin = x509.load_pem_x509_certificate(client_certificate(cd.kubeconfig("admin").read_bytes()))
    assert signed_by(admin, new) and not signed_by(admin, old)
    nodes = json.loads(kubectl_ok(c, "get", "nodes", "-o", "json"))["items"]
    assert len(nodes) == len(c.spec.workers)
    for n in nodes:
        ready = [x for x in n["status"]["conditions"] if x["type"] == "Ready"]
        assert ready and ready[0]["status"] == "True", (n["metadata"]["name"], ready)
    # what every apiserver and the load balancer serve: the new CA's, not the old one's
    targets = [(str(n.address), 6443) for n in c.spec.controllers] + [(str(c.spec.api_host), c.spec.api_port)]
    for host, port in targets:
        cert = served_cert(host, port)
        assert signed_by(cert, new) and not signed_by(cert, old), (host, port)
    # a client that trusts only the old CA is refused by the server's certificate
    only_old = ssl.create_default_context(cadata=old.public_bytes(serialization.Encoding.PEM).decode())
    only_old.check_hostname = False
    with pytest.raises(ssl.SSLCertVerificationError):
        with socket.create_connection(targets[0], timeout=10) as sock, only_old.wrap_socket(sock):
            pass
    # the kubelets' own client certificates: renewed by the new CA
    for w in c.spec.workers:
        pem = c.ok(w.name, f"cat {KUBELET_CLIENT_CURRENT}")
        cert = x509.load_pem_x509_certificate(cert_blocks(pem.encode())[0])
        assert signed_by(cert, new), w.name
    # the CA files on the nodes: the new CA alone
    for node, path in ((c.spec.controllers[0].name, "/etc/kubernetes/pki/ca.crt"),
                       (c.spec.workers[0].name, "/etc/kubernetes/pki/ca.crt"),
                       (c.spec.lb_node.name, HAPROXY_CA)):
        assert cert_blocks(c.ok(node, f"cat {path}").encode()) == cert_blocks(cd.cert("ca").read_bytes()), (node, path)


@pytest.mark.long  # ~10 minutes: three full rolls (README: Tests)
def test_verify_is_healthy_after_the_ca_rotation_and_up_changes_nothing(ca_rotated):
    r = hw(ca_rotated.c.dir, "verify", timeout=900)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    r = hw(ca_rotated.c.dir, "up")
    assert r.returncode == 0 and "done, nothing changed" in r.stderr, r.stderr[-2000:]
