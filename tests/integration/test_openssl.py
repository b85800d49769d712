"""The PKI checked by an independent implementation: `openssl verify` on every certificate."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess

import pytest

from hardway.clusterdir import ClusterDir
from hardway.material import ensure_material
from hardway.pki import inspect
from hardway.pki.issue import build_certificate, cert_pem, generate_key, key_pem
from hardway.pki.profiles import CertProfile, Usage, certificate_plan
from tests.helpers import require
from tests.specs import make_spec

pytestmark = pytest.mark.integration

PURPOSE = {Usage.server: ["sslserver"], Usage.client: ["sslclient"], Usage.both: ["sslserver", "sslclient"]}


def openssl(*args: str) -> subprocess.CompletedProcess:
    require(shutil.which("openssl") is not None, "openssl is not installed (Debian package: openssl)")
    return subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("layout", ["flat", "root"])
@pytest.mark.parametrize("key_type", ["ecdsa-p256", "rsa-2048", "ed25519"])
def test_openssl_verifies_every_certificate_against_its_ca(tmp_path, layout, key_type):
    spec = make_spec("ha-vip", edit=lambda d: d["pki"].update(layout=layout, keyType=key_type))
    cd = ClusterDir(tmp_path)
    ensure_material(cd, spec)
    plan = certificate_plan(spec)
    by_name = {p.name: p for p in plan}
    root = cd.cert("root-ca") if layout == "root" else None
    checked = 0
    for profile in plan:
        if profile.issuer is None:
            args = ["-CAfile", str(cd.cert(profile.name))]
        elif root is not None and by_name[profile.issuer].issuer is not None:
            # Leaf under an intermediate: the root is the anchor, the intermediate untrusted.
            args = ["-CAfile", str(root), "-untrusted", str(cd.cert(profile.issuer))]
        else:
            args = ["-CAfile", str(cd.cert(profile.issuer))]
        for purpose in PURPOSE.get(profile.usage, [None]):
            extra = ["-purpose", purpose] if purpose else []
            r = openssl("verify", "-x509_strict", *extra, *args, str(cd.cert(profile.name)))
            assert r.returncode == 0 and ": OK" in r.stdout, (profile.name, purpose, r.stdout, r.stderr)
            checked += 1
        # The key on disk is the certificate's: openssl derives the same public key from both
        # (a twin's key is its CA's).
        pub_from_key = openssl("pkey", "-in", str(cd.key(profile.key_name)), "-pubout").stdout
        pub_from_cert = openssl("x509", "-in", str(cd.cert(profile.name)), "-noout", "-pubkey").stdout
        assert pub_from_key and pub_from_key == pub_from_cert, profile.name
    assert checked > len(plan)


def test_openssl_rejects_wrong_purpose_and_wrong_ca(tmp_path):
    spec = make_spec("basic")
    cd = ClusterDir(tmp_path)
    ensure_material(cd, spec)
    # A client-only certificate is not a server certificate.
    r = openssl("verify", "-purpose", "sslserver", "-CAfile", str(cd.cert("ca")), str(cd.cert("admin")))
    assert r.returncode != 0
    # The etcd CA did not sign the apiserver certificate.
    r = openssl("verify", "-CAfile", str(cd.cert("etcd-ca")), str(cd.cert("apiserver")))
    assert r.returncode != 0


def test_certificate_from_a_foreign_ca_fails_both_openssl_and_pki_check(tmp_path):
    spec = make_spec("basic")
    cd = ClusterDir(tmp_path)
    ensure_material(cd, spec)
    assert inspect.check(cd, spec) == []
    now = dt.datetime.now(dt.timezone.utc)
    foreign_key = generate_key("ecdsa-p256")
    # Same subject as the real CA: only the signature tells them apart.
    foreign = build_certificate(CertProfile("x", None, "kubernetes-ca", Usage.ca, ""), foreign_key, None, 30, now)
    profile = next(p for p in certificate_plan(spec) if p.name == "apiserver")
    key = generate_key("ecdsa-p256")
    cd.cert("apiserver").write_bytes(cert_pem(build_certificate(profile, key, (foreign, foreign_key), 30, now)))
    cd.key("apiserver").write_bytes(key_pem(key))
    r = openssl("verify", "-CAfile", str(cd.cert("ca")), str(cd.cert("apiserver")))
    assert r.returncode != 0
    problems = inspect.check(cd, spec)
    assert any(p.startswith("apiserver: not signed by kubernetes-ca") for p in problems), problems


@pytest.mark.parametrize("key_type", ["ecdsa-p256", "rsa-2048", "ed25519"])
def test_the_twin_anchors_exactly_what_the_cluster_ca_signs(tmp_path, key_type):
    """Root layout: HAProxy's OpenSSL needs a self-signed anchor. The intermediate `ca` is none;
    the root would also accept the etcd domain (an etcd-ca certificate presented with etcd-ca);
    ca's self-signed twin accepts what ca signs and nothing else."""
    spec = make_spec("ha", edit=lambda d: d["pki"].update(layout="root", keyType=key_type))
    cd = ClusterDir(tmp_path)
    ensure_material(cd, spec)
    twin, ca, etcd_ca = str(cd.cert("ca-anchor")), str(cd.cert("ca")), str(cd.cert("etcd-ca"))
    apiserver, etcd_server = str(cd.cert("apiserver")), str(cd.cert("etcd-server-controller-0"))

    def verify(*args: str) -> subprocess.CompletedProcess:
        return openssl("verify", "-x509_strict", "-purpose", "sslserver", *args)

    r = verify("-CAfile", twin, apiserver)
    assert r.returncode == 0 and ": OK" in r.stdout, r.stdout + r.stderr
    r = verify("-CAfile", twin, "-untrusted", ca, apiserver)  # a server that sends its chain
    assert r.returncode == 0, r.stdout + r.stderr
    # the etcd domain under the same root, with or without its intermediate: refused
    assert verify("-CAfile", twin, "-untrusted", etcd_ca, etcd_server).returncode != 0
    assert verify("-CAfile", twin, etcd_server).returncode != 0
    # why neither of the other candidates will do
    assert verify("-CAfile", ca, apiserver).returncode != 0, "OpenSSL took a non-self-signed anchor"
    r = verify("-CAfile", str(cd.cert("root-ca")), "-untrusted", etcd_ca, etcd_server)
    assert r.returncode == 0, "the root would let the etcd domain pass: " + r.stderr


def test_a_rotation_bundle_of_two_cas_with_one_subject_verifies_both_generations(tmp_path, monkeypatch):
    """During a CA rotation the old and the new CA share a subject (pki/rotation.py); OpenSSL
    (HAProxy's ca-file, keepalived's curl) picks the one whose key signed, in either order."""
    from hardway import api, carotation

    api.init(tmp_path, preset="ha")
    api.pki_init(tmp_path)
    cd = ClusterDir(tmp_path)
    old_leaf = tmp_path / "apiserver-old.crt"
    old_leaf.write_bytes(cd.cert("apiserver").read_bytes())
    checked = []

    def roll(directory, progress, opts) -> None:
        if not cd.cert("ca.old").exists():
            return  # step 1: nothing of the new CA is presented yet
        for order in (("ca", "ca.old"), ("ca.old", "ca")):
            bundle = tmp_path / "bundle.crt"
            bundle.write_bytes(b"".join(cd.cert(n).read_bytes() for n in order))
            for leaf in (old_leaf, cd.cert("apiserver")):
                r = openssl("verify", "-x509_strict", "-purpose", "sslserver", "-CAfile", str(bundle), str(leaf))
                assert r.returncode == 0 and ": OK" in r.stdout, (order, leaf, r.stdout, r.stderr)
                checked.append(leaf)
        only_new = openssl("verify", "-CAfile", str(cd.cert("ca")), str(old_leaf))
        assert only_new.returncode != 0  # the drop step's bundle refuses the old generation

    monkeypatch.setattr(carotation, "roll", roll)
    monkeypatch.setattr(carotation, "renew_kubelet_clients", lambda *a: [])
    api.pki_rotate_ca(tmp_path, "ca")
    assert len(checked) == 4 * 3  # steps reissue, switch and drop
