"""Certificate lifecycle on a real cluster (basic preset on lab machines): a short-lived
apiserver certificate is named by `verify` (exit 3) with its host, read from the controller,
while DIR/pki says the same only once it is rolled out; `up` rolls it out and the apiserver
serves it; `pki renew --all` then `up` renews every leaf and every component picks its new
certificate up (verify healthy, the smoke tests pass). The tests run in file order on one lab,
destroyed at the end also when a test fails.
"""

from __future__ import annotations

import re
import socket
import ssl
import time

import pytest
from cryptography import x509

from hardway.clusterdir import ClusterDir
from hardway.pki.issue import public_pem
from tests.e2e.cluster_fixture import hw, log
from tests.helpers import E2E_TIMEOUT
from tests.mirror_fixture import mirror  # noqa: F401 (fixture)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(E2E_TIMEOUT)]

APISERVER = "/etc/kubernetes/pki/apiserver.crt"


@pytest.fixture(scope="module")
def basic(day2_basic):
    return day2_basic


def served(address: str, port: int, cd: ClusterDir, client: str) -> x509.Certificate:
    """The certificate a component serves on address:port (a TLS handshake with `client`'s
    certificate from DIR/pki; the server's is what is asked, not verified here)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.load_cert_chain(cd.cert(client), cd.key(client))
    with socket.create_connection((address, port), timeout=10) as sock, \
            ctx.wrap_socket(sock) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der, f"{address}:{port} sent no certificate"
    return x509.load_der_x509_certificate(der)


def serving(address: str, port: int, cd: ClusterDir, client: str, limit: float = 60) -> x509.Certificate:
    """`served`, once the component listens again. `up` restarts kubelets with --no-block and its
    waits (node registered, Ready) still see the Node as before the restart, so it may return
    while a kubelet is still starting; it listens a few seconds later."""
    t = time.monotonic()
    while True:
        try:
            cert = served(address, port, cd, client)
            log(f"{address}:{port} served after {time.monotonic() - t:.1f} s")
            return cert
        except OSError as e:
            assert time.monotonic() - t < limit, f"{address}:{port} not serving after {limit} s: {e}"
            time.sleep(0.5)


def on_disk(cd: ClusterDir, name: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(cd.cert(name).read_bytes())


def test_a_short_lived_apiserver_certificate_makes_verify_degraded_naming_it(basic):
    c = basic
    cd = ClusterDir(c.dir)
    ctl = c.spec.controllers[0]
    old = on_disk(cd, "apiserver")
    r = hw(c.dir, "verify")
    assert r.returncode == 0, r.stdout + r.stderr[-2000:]
    assert f"ok   {ctl.name}: certificates: " in r.stdout

    r = hw(c.dir, "pki", "renew", "apiserver", "--validity-days", "5")
    log(r.stdout)
    assert r.returncode == 0, r.stderr
    assert "renewed apiserver (same key), valid until " in r.stdout
    assert f"{ctl.name}: `up` will write 1 file(s) ({APISERVER}) and restart kube-apiserver.service" in r.stdout
    new = on_disk(cd, "apiserver")
    assert new.serial_number != old.serial_number and public_pem(new.public_key()) == public_pem(old.public_key())
    end = f"{new.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"

    # Not rolled out yet: the controller still has the old one, and verify says so.
    r = hw(c.dir, "verify")
    log(r.stdout)
    assert r.returncode == 3, r.stdout + r.stderr[-2000:]
    assert re.search(rf"^FAIL {ctl.name}: certificate apiserver \({APISERVER}\): differs from "
                     rf"{re.escape(str(cd.cert('apiserver')))} .*not rolled out yet", r.stdout, re.M), r.stdout

    t = time.monotonic()
    r = hw(c.dir, "up")
    log(f"up ({time.monotonic() - t:.1f} s):\n{r.stderr[-2500:]}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"{ctl.name}: restart kube-apiserver.service" in r.stderr
    assert served(str(ctl.address), 6443, cd, "admin").serial_number == new.serial_number

    r = hw(c.dir, "verify")
    log(r.stdout)
    assert r.returncode == 3, r.stdout + r.stderr[-2000:]
    fails = [ln for ln in r.stdout.splitlines() if ln.startswith("FAIL")]
    assert fails == [f"FAIL {ctl.name}: certificate apiserver ({APISERVER}): expires in 4 day(s), on {end} "
                     "(within --cert-days 30); renew it: "
                     f"`hardway -C {c.dir} pki renew apiserver`, then `hardway -C {c.dir} up`"], r.stdout
    assert "cluster degraded" in r.stdout
    r = hw(c.dir, "verify", "--cert-days", "3")
    assert r.returncode == 0, r.stdout + r.stderr[-2000:]
    r = hw(c.dir, "verify", "--cert-days", "36501")
    assert r.returncode == 2 and "--cert-days" in r.stderr


def test_renew_all_then_up_every_component_uses_its_new_certificate(basic):
    c = basic
    cd = ClusterDir(c.dir)
    ctl, workers = c.spec.controllers[0], c.spec.workers
    r = hw(c.dir, "pki", "renew", "--all")
    log(r.stdout)
    assert r.returncode == 0, r.stderr
    assert "renewed kube-controller-manager (same key)" in r.stdout and "renewed etcd-peer-" in r.stdout

    t = time.monotonic()
    r = hw(c.dir, "up")
    log(f"up ({time.monotonic() - t:.1f} s):\n{r.stderr[-3000:]}")
    assert r.returncode == 0, r.stderr[-3000:]
    for unit in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"):
        assert re.search(rf"{ctl.name}: .*restart {unit}\.service", r.stderr), unit
    for w in workers:
        assert re.search(rf"{w.name}: .*restart kubelet\.service.*restart kube-proxy\.service", r.stderr), w.name

    # What the servers present now is what DIR/pki holds.
    assert served(str(ctl.address), 6443, cd, "admin").serial_number == on_disk(cd, "apiserver").serial_number
    assert served(str(ctl.address), 2379, cd, "etcd-admin").serial_number == \
        on_disk(cd, f"etcd-server-{ctl.name}").serial_number
    for w in workers:
        assert serving(str(w.address), 10250, cd, "apiserver-kubelet-client").serial_number == \
            on_disk(cd, f"kubelet-{w.name}").serial_number

    r = hw(c.dir, "verify", "--smoke", timeout=900)
    log(r.stdout)
    assert r.returncode == 0, r.stdout + r.stderr[-2000:]
    assert "cluster healthy" in r.stdout and "FAIL" not in r.stdout
    r = hw(c.dir, "pki", "init")
    assert r.returncode == 0 and "nothing to do" in r.stdout, r.stdout + r.stderr
