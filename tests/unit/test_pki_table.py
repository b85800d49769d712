"""Every row of the certificate table (ARCHITECTURE.md), checked on real issued certificates."""

from __future__ import annotations

import ipaddress

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hardway.clusterdir import ClusterDir
from hardway.material import ensure_material
from hardway.pki.verify import signed_by
from tests.specs import make_spec

SERVER, CLIENT = ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH
SVC = ["kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"]

# The table for the `ha` preset, written out by hand: name -> (issuer, CN, O, EKUs, SANs).
# None as EKUs means a CA.
EXPECTED_HA = {
    "ca": (None, "kubernetes-ca", [], None, []),
    "etcd-ca": (None, "etcd-ca", [], None, []),
    "front-proxy-ca": (None, "front-proxy-ca", [], None, []),
    "apiserver": ("ca", "kube-apiserver", [], [SERVER],
                  SVC + ["controller-0", "controller-1", "controller-2", "lab-api", "lb-0", "localhost",
                         "10.32.0.1", "10.240.0.10", "10.240.0.11", "10.240.0.12", "10.240.0.30", "127.0.0.1"]),
    "apiserver-kubelet-client": ("ca", "kube-apiserver-kubelet-client", [], [CLIENT], []),
    "apiserver-etcd-client": ("etcd-ca", "kube-apiserver-etcd-client", [], [CLIENT], []),
    "front-proxy-client": ("front-proxy-ca", "front-proxy-client", [], [CLIENT], []),
    "kubelet-worker-0": ("ca", "system:node:worker-0", ["system:nodes"], [SERVER, CLIENT], ["worker-0", "10.240.0.20"]),
    "kubelet-worker-1": ("ca", "system:node:worker-1", ["system:nodes"], [SERVER, CLIENT], ["worker-1", "10.240.0.21"]),
    "kube-proxy": ("ca", "system:kube-proxy", ["system:node-proxier"], [CLIENT], []),
    "kube-controller-manager": ("ca", "system:kube-controller-manager", [], [CLIENT], []),
    "kube-scheduler": ("ca", "system:kube-scheduler", [], [CLIENT], []),
    "admin": ("ca", "admin", ["system:masters"], [CLIENT], []),
    "healthcheck": ("ca", "hardway:healthcheck", [], [CLIENT], []),
    "etcd-admin": ("etcd-ca", "etcd-admin", [], [CLIENT], []),
}
for i in range(3):
    EXPECTED_HA[f"etcd-server-controller-{i}"] = (
        "etcd-ca", f"controller-{i}", [], [SERVER, CLIENT],
        [f"controller-{i}", "localhost", f"10.240.0.1{i}", "127.0.0.1"])
    EXPECTED_HA[f"etcd-peer-controller-{i}"] = (
        "etcd-ca", f"controller-{i}", [], [SERVER, CLIENT],
        [f"controller-{i}", "localhost", f"10.240.0.1{i}", "127.0.0.1"])


def load(cd: ClusterDir, name: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(cd.cert(name).read_bytes())


def sans(cert: x509.Certificate) -> list[str]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return ext.get_values_for_type(x509.DNSName) + [str(i) for i in ext.get_values_for_type(x509.IPAddress)]


KEY_CLASSES = {
    "ecdsa-p256": ec.EllipticCurvePublicKey,
    "rsa-2048": rsa.RSAPublicKey,
    "ed25519": ed25519.Ed25519PublicKey,
}


@pytest.fixture(scope="module", params=list(KEY_CLASSES))
def ha_pki(request, tmp_path_factory):
    key_type = request.param
    spec = make_spec("ha", edit=lambda d: d["pki"].update(keyType=key_type))
    cd = ClusterDir(tmp_path_factory.mktemp(f"pki-{key_type}"))
    ensure_material(cd, spec)
    return key_type, cd


def test_the_table_is_complete(ha_pki):
    _, cd = ha_pki
    issued = {p.stem for p in cd.pki.glob("*.crt")}
    assert issued == set(EXPECTED_HA)


@pytest.mark.parametrize("name", sorted(EXPECTED_HA))
def test_row(ha_pki, name):
    key_type, cd = ha_pki
    issuer, cn, orgs, ekus, want_sans = EXPECTED_HA[name]
    cert = load(cd, name)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == cn
    assert [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)] == orgs
    assert isinstance(cert.public_key(), KEY_CLASSES[key_type])
    assert sorted(sans(cert)) == sorted(want_sans)
    ipaddress_sans = [s for s in sans(cert) if s[0].isdigit()]
    for s in ipaddress_sans:
        ipaddress.ip_address(s)  # IP SANs are IP entries, not DNS names
    signer = load(cd, issuer) if issuer else cert
    assert signed_by(cert, signer)
    assert cert.issuer == signer.subject
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert bc.critical
    assert ku.digital_signature
    if ekus is None:
        assert bc.value.ca and ku.key_cert_sign and ku.crl_sign
        with pytest.raises(x509.ExtensionNotFound):
            cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    else:
        assert not bc.value.ca and not ku.key_cert_sign
        assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == ekus
        # keyEncipherment belongs to RSA key transport only.
        assert ku.key_encipherment == (key_type.startswith("rsa"))
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski.digest
    if issuer:
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        assert aki.key_identifier == signer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest


def test_validity_follows_the_spec(ha_pki):
    _, cd = ha_pki
    ca, leaf = load(cd, "ca"), load(cd, "admin")
    assert 3649 <= (ca.not_valid_after_utc - ca.not_valid_before_utc).days <= 3651
    assert 364 <= (leaf.not_valid_after_utc - leaf.not_valid_before_utc).days <= 366


def test_root_layout_makes_the_cas_intermediates(tmp_path):
    spec = make_spec("basic", edit=lambda d: d["pki"].update(layout="root"))
    cd = ClusterDir(tmp_path)
    ensure_material(cd, spec)
    root = load(cd, "root-ca")
    assert root.subject == root.issuer and signed_by(root, root)
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 1
    for name in ("ca", "etcd-ca", "front-proxy-ca"):
        inter = load(cd, name)
        assert inter.issuer == root.subject and signed_by(inter, root)
        assert inter.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 0
    assert signed_by(load(cd, "admin"), load(cd, "ca"))


def test_service_account_key_pair_types(tmp_path):
    from cryptography.hazmat.primitives import serialization

    for sa_type, cls in (("rsa-2048", rsa.RSAPrivateKey), ("ecdsa-p256", ec.EllipticCurvePrivateKey)):
        cd = ClusterDir(tmp_path / sa_type)
        ensure_material(cd, make_spec("single", edit=lambda d, sa_type=sa_type: d["pki"].update(serviceAccountKeyType=sa_type)))
        key = serialization.load_pem_private_key(cd.key("sa").read_bytes(), None)
        assert isinstance(key, cls)
        pub = serialization.load_pem_public_key((cd.pki / "sa.pub").read_bytes())
        assert pub.public_numbers() == key.public_key().public_numbers()
        assert b"BEGIN PUBLIC KEY" in (cd.pki / "sa.pub").read_bytes()
