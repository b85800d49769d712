"""The root layout with a load balancer: HAProxy (OpenSSL) needs a self-signed anchor, nodes
carry only the intermediate `ca`. The table's `ca-anchor` row is ca's self-signed twin: its
subject and key, signed by that key, valid exactly as long; issued by `pki init`, checked by
`pki check`, stale when ca.crt changes, and HAProxy's ca-file. (tests/integration/test_openssl.py
and test_haproxy.py show what OpenSSL and HAProxy make of it.)"""

from __future__ import annotations

import datetime as dt
import shlex

import pytest
from cryptography import x509

from hardway.clusterdir import ClusterDir
from hardway.errors import UsageError
from hardway.material import current_material, ensure_material, load_material
from hardway.pki import inspect, store
from hardway.pki.ensure import StalePki
from hardway.pki.issue import build_certificate, build_twin, cert_pem, generate_key
from hardway.pki.profiles import CA_ANCHOR, openssl_anchor, profiles_by_name
from hardway.pki.verify import signed_by
from hardway.render import render_cluster
from hardway.render.lb import HAPROXY_CA
from hardway.spec.load import load_spec
from tests.specs import make_spec
from tests.unit.test_cli import hw, no_traceback


def root(preset: str, key_type: str = "ecdsa-p256"):
    return make_spec(preset, edit=lambda d: d["pki"].update(layout="root", keyType=key_type))


def load(cd: ClusterDir, name: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(cd.cert(name).read_bytes())


@pytest.mark.parametrize("preset,hosts", [("ha", ("lb-0",)), ("ha-vip", ("controller-0", "controller-1", "controller-2"))])
def test_the_twin_is_a_row_for_the_nodes_that_run_haproxy(preset, hosts):
    twin = profiles_by_name(root(preset))[CA_ANCHOR]
    assert twin.twin_of == "ca" and twin.issuer is None and twin.key_name == "ca" and twin.nodes == hosts
    assert twin.cn == profiles_by_name(root(preset))["ca"].cn
    assert openssl_anchor(root(preset)) == CA_ANCHOR
    # flat: `ca` is self-signed already; no load balancer: no OpenSSL client of the apiservers
    for spec in (make_spec(preset), root("basic"), root("single")):
        assert CA_ANCHOR not in profiles_by_name(spec) and openssl_anchor(spec) == "ca"


@pytest.mark.parametrize("key_type", ["ecdsa-p256", "rsa-2048", "ed25519"])
def test_the_twin_is_ca_self_signed_and_nothing_else(tmp_path, key_type):
    spec = root("ha", key_type)
    cd = ClusterDir(tmp_path)
    report = ensure_material(cd, spec)
    assert CA_ANCHOR in report.pki.created
    ca, twin = load(cd, "ca"), load(cd, CA_ANCHOR)
    assert ca.issuer != ca.subject  # the intermediate: not an anchor for OpenSSL
    assert twin.subject == twin.issuer == ca.subject
    assert store.load_key(cd.key("ca")).public_key() == twin.public_key() == ca.public_key()
    assert signed_by(twin, twin)
    ski = x509.SubjectKeyIdentifier
    assert twin.extensions.get_extension_for_class(ski).value == ca.extensions.get_extension_for_class(ski).value
    bc = twin.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    assert twin.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    assert (twin.not_valid_before_utc, twin.not_valid_after_utc) == (ca.not_valid_before_utc, ca.not_valid_after_utc)
    # what ca signed verifies against the twin: the same key signs both
    assert signed_by(load(cd, "apiserver"), twin) and not signed_by(load(cd, "etcd-server-controller-0"), twin)
    assert not cd.key(CA_ANCHOR).exists(), "a second copy of the CA key"
    assert inspect.check(cd, spec) == []
    assert ensure_material(cd, spec).all_written == []  # a second run writes nothing


def test_haproxy_trusts_the_twin_in_the_root_layout_and_ca_in_the_flat_one(tmp_path):
    for spec, anchor in ((root("ha"), CA_ANCHOR), (make_spec("ha"), "ca")):
        cd = ClusterDir(tmp_path / spec.pki.layout)
        ensure_material(cd, spec)
        bundle = render_cluster(spec, load_material(cd, spec)).nodes["lb-0"]
        assert bundle.files[HAPROXY_CA].content == cd.cert(anchor).read_bytes()
        assert "socat" in bundle.packages  # `up` names it when missing: the stats are read with it
        keys = [f.content for f in bundle.files.values() if b"PRIVATE KEY" in f.content]
        assert keys and not any(cd.key("ca").read_bytes() in k for k in keys), "the CA key on the lb node"


def test_a_pki_made_before_the_twin_gets_it_and_nothing_else(tmp_path):
    spec = root("ha-vip")
    cd = ClusterDir(tmp_path)
    ensure_material(cd, spec)
    cd.cert(CA_ANCHOR).unlink()
    report = ensure_material(cd, spec)
    assert report.pki.created == [CA_ANCHOR] and report.all_written == [cd.cert(CA_ANCHOR)]
    assert inspect.check(cd, spec) == []


def test_a_twin_that_no_longer_matches_ca_is_stale_and_its_advice_fixes_it(tmp_path):
    """ca.crt re-signed (same key, other validity: a restore from another backup): the leaves
    still verify, but the twin anchors a certificate that is not ca.crt any more."""
    d = tmp_path / "c"
    assert hw("init", str(d), "--preset", "ha", "--mirror", str(tmp_path / "no-mirror")).returncode == 0
    spec_path = d / "cluster.yaml"
    spec_path.write_text(spec_path.read_text().replace("layout: flat ", "layout: root "))
    assert hw("-C", str(d), "pki", "init").returncode == 0
    cd = ClusterDir(d)
    spec = load_spec(spec_path).spec
    ca_profile = profiles_by_name(spec)["ca"]
    ca_key = store.load_key(cd.key("ca"))
    issuer = (load(cd, "root-ca"), store.load_key(cd.key("root-ca")))
    resigned = build_certificate(ca_profile, ca_key, issuer, 100, dt.datetime.now(dt.timezone.utc))
    cd.cert("ca").write_bytes(cert_pem(resigned))

    problems = inspect.check(cd, spec)
    assert [p for p in problems if not p.startswith(f"{CA_ANCHOR}:")] == [], problems
    assert any(p.startswith(f"{CA_ANCHOR}: valid ") for p in problems), problems
    r = hw("-C", str(d), "pki", "init")
    assert r.returncode == 2, r.stderr
    no_traceback(r)
    assert f"- {CA_ANCHOR}: valid " in r.stderr
    fix = f"hardway -C {d} pki init --reissue {CA_ANCHOR}"
    assert f"fix: `{fix}`" in r.stderr
    with pytest.raises(StalePki):
        current_material(cd, spec, "render")
    r = hw(*shlex.split(fix)[1:])
    assert r.returncode == 0, r.stderr
    assert inspect.check(cd, spec) == []
    assert load(cd, CA_ANCHOR).not_valid_after_utc == resigned.not_valid_after_utc


def test_a_foreign_twin_is_stale(tmp_path):
    """Same subject, another key: it would anchor certificates ca never signed."""
    spec = root("ha")
    cd = ClusterDir(tmp_path)
    ensure_material(cd, spec)
    other = generate_key("ecdsa-p256")
    foreign = build_twin(build_certificate(profiles_by_name(spec)["ca"], other, None, 30,
                                           dt.datetime.now(dt.timezone.utc)), other)
    cd.cert(CA_ANCHOR).write_bytes(cert_pem(foreign))
    stale = ensure_material(cd, spec).pki.stale
    assert list(stale) == [CA_ANCHOR] and stale[CA_ANCHOR].reissue
    assert "its public key is not ca.crt's" in stale[CA_ANCHOR].reasons
    assert f"{CA_ANCHOR}: its public key is not ca.crt's" in inspect.check(cd, spec)


def test_the_twin_waits_for_a_stale_ca(tmp_path):
    spec = root("ha")
    cd = ClusterDir(tmp_path)
    ensure_material(cd, spec)
    cd.cert(CA_ANCHOR).unlink()
    stranger = generate_key("ecdsa-p256")
    cd.cert("ca").write_bytes(cert_pem(build_certificate(profiles_by_name(spec)["ca"], stranger, None, 30,
                                                         dt.datetime.now(dt.timezone.utc))))
    stale = ensure_material(cd, spec).pki.stale
    assert "fix ca first" in stale[CA_ANCHOR].fix and not cd.cert(CA_ANCHOR).exists()
    with pytest.raises(UsageError, match=f"--reissue {CA_ANCHOR}: it is made from ca, which is stale; fix ca first"):
        ensure_material(cd, spec, reissue=(CA_ANCHOR,))
