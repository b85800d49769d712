"""pki init is idempotent, never regenerates a CA, issues only what is new; pki check finds problems."""

from __future__ import annotations

import base64
import datetime as dt
import os
import stat

import pytest

from hardway.clusterdir import ClusterDir
from hardway.errors import OperationError, UsageError
from hardway.material import ensure_material
from hardway.pki import inspect
from hardway.pki.issue import build_certificate, cert_pem, generate_key, key_pem
from hardway.pki.profiles import CertProfile, Usage
from tests.specs import make_spec


def snapshot(cd: ClusterDir) -> dict[str, tuple[int, bytes]]:
    return {
        str(p.relative_to(cd.root)): (p.stat().st_mtime_ns, p.read_bytes())
        for p in cd.root.rglob("*") if p.is_file()
    }


@pytest.fixture
def basic(tmp_path):
    spec = make_spec("basic")
    cd = ClusterDir(tmp_path)
    report = ensure_material(cd, spec)
    return spec, cd, report


def test_second_run_writes_nothing(basic):
    spec, cd, first = basic
    assert first.all_written
    before = snapshot(cd)
    again = ensure_material(cd, spec)
    assert again.all_written == [] and again.pki.created == [] and again.pki.stale == {}
    assert snapshot(cd) == before


def test_file_modes(basic):
    _, cd, _ = basic
    for key in cd.pki.glob("*.key"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    for crt in cd.pki.glob("*.crt"):
        assert stat.S_IMODE(crt.stat().st_mode) == 0o644, crt
    for kc in cd.kubeconfigs.glob("*"):
        assert stat.S_IMODE(kc.stat().st_mode) == 0o600, kc
    assert stat.S_IMODE(cd.encryption_key.stat().st_mode) == 0o600
    assert len(base64.b64decode(cd.encryption_key.read_text())) == 32
    assert not list(cd.root.rglob(".*.tmp.*")), "temporary files left behind"


def test_modes_hold_under_a_permissive_umask(tmp_path):
    old = os.umask(0)
    try:
        cd = ClusterDir(tmp_path)
        ensure_material(cd, make_spec("single"))
    finally:
        os.umask(old)
    assert stat.S_IMODE(cd.key("ca").stat().st_mode) == 0o600


def test_encryption_key_generated_once(basic):
    spec, cd, _ = basic
    key = cd.encryption_key.read_bytes()
    ensure_material(cd, make_spec("basic", edit=lambda d: d["encryption"].update(provider="secretbox")))
    assert cd.encryption_key.read_bytes() == key


def test_adding_a_worker_issues_only_its_certificate(basic):
    _, cd, _ = basic
    ca_key = cd.key("ca").read_bytes()

    def add(d):
        d["nodes"].append({"name": "worker-2", "address": "10.240.0.22", "roles": ["worker"]})

    report = ensure_material(cd, make_spec("basic", edit=add))
    assert report.pki.created == ["kubelet-worker-2"]
    assert report.pki.stale == {}
    assert {p.name for p in report.written} == {"kubelet-worker-2.kubeconfig"}
    assert cd.key("ca").read_bytes() == ca_key


def test_adding_a_controller_reports_the_apiserver_stale_until_reissued(basic):
    _, cd, _ = basic

    def add(d):
        d["nodes"].append({"name": "controller-1", "address": "10.240.0.11", "roles": ["controller"]})

    spec2 = make_spec("basic", edit=add)
    old_apiserver = cd.cert("apiserver").read_bytes()
    report = ensure_material(cd, spec2)
    assert set(report.pki.created) == {"etcd-server-controller-1", "etcd-peer-controller-1"}
    assert "apiserver" in report.pki.stale
    assert "missing 10.240.0.11, controller-1" in report.pki.stale["apiserver"].reasons[0]
    assert cd.cert("apiserver").read_bytes() == old_apiserver, "stale certs are reported, not replaced"
    assert any("apiserver" in p and "SANs differ" in p for p in inspect.check(cd, spec2))

    report = ensure_material(cd, spec2, reissue=("apiserver",))
    assert report.pki.reissued == ["apiserver"] and report.pki.stale == {}
    assert inspect.check(cd, spec2) == []


def test_a_ca_is_never_regenerated(basic):
    spec, cd, _ = basic
    with pytest.raises(UsageError, match="CA keys are never regenerated"):
        ensure_material(cd, spec, reissue=("ca",))
    cd.cert("etcd-ca").unlink()
    with pytest.raises(OperationError, match="restore etcd-ca.crt"):
        ensure_material(cd, spec)


def test_reissue_unknown_name(basic):
    spec, cd, _ = basic
    with pytest.raises(UsageError, match="no such certificate"):
        ensure_material(cd, spec, reissue=("apiserverr",))


def test_key_type_change_advises_keeping_the_cas_key_type_never_a_ca_reissue(basic):
    """A CA keeps its key type (rotate-ca starts from a sound PKI): the advice is the spec edit, and
    the leaves under it wait for their CA instead of being reissued under it."""
    spec, cd, _ = basic
    spec2 = make_spec("basic", edit=lambda d: d["pki"].update(keyType="rsa-2048"))
    before = snapshot(cd)
    stale = ensure_material(cd, spec2).pki.stale
    assert stale["ca"].reasons == ("key type is ecdsa-p256, spec wants rsa-2048",)
    assert "set `pki.keyType: ecdsa-p256` back" in stale["ca"].fix and not stale["ca"].reissue
    assert stale["admin"].fix.startswith("fix ca first") and not stale["admin"].reissue
    assert not any(s.reissue for s in stale.values())
    with pytest.raises(UsageError, match="its issuer ca is stale"):
        ensure_material(cd, spec2, reissue=("admin",))
    assert snapshot(cd) == before, "nothing is written or reissued under a stale CA"
    # The advice, followed: the spec as the CA was made.
    assert ensure_material(cd, spec).pki.stale == {}


def test_check_passes_on_a_fresh_pki(basic):
    spec, cd, _ = basic
    assert inspect.check(cd, spec) == []


def test_check_fails_on_a_foreign_ca(basic):
    spec, cd, _ = basic
    now = dt.datetime.now(dt.timezone.utc)
    foreign_key = generate_key("ecdsa-p256")
    foreign = build_certificate(CertProfile("x", None, "kubernetes-ca", Usage.ca, ""), foreign_key, None, 10, now)
    leaf_key = generate_key("ecdsa-p256")
    leaf = build_certificate(
        CertProfile("admin", "ca", "admin", Usage.client, "", orgs=("system:masters",)),
        leaf_key, (foreign, foreign_key), 10, now)
    cd.cert("admin").write_bytes(cert_pem(leaf))
    cd.key("admin").write_bytes(key_pem(leaf_key))
    problems = inspect.check(cd, spec)
    assert any(p.startswith("admin: not signed by kubernetes-ca") for p in problems), problems


def test_check_finds_expiry_modes_and_mismatched_keys(basic):
    spec, cd, _ = basic
    assert any("expires in" in p and "--days 400" in p for p in inspect.check(cd, spec, days=400))
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=366)
    assert any(p.startswith("admin: expired on") for p in inspect.check(cd, spec, now=later))
    os.chmod(cd.key("kube-proxy"), 0o644)
    cd.key("admin").write_bytes(key_pem(generate_key("ecdsa-p256")))
    problems = inspect.check(cd, spec)
    assert any("kube-proxy.key: mode 0644" in p for p in problems)
    assert any(p.startswith("admin: the private key does not match") for p in problems)


def test_check_reports_missing_files(basic):
    spec, cd, _ = basic
    cd.cert("kube-scheduler").unlink()
    (cd.pki / "sa.pub").unlink()
    problems = inspect.check(cd, spec)
    assert any("kube-scheduler" in p and "missing" in p for p in problems)
    assert any("sa.pub is missing" in p for p in problems)


def test_show_lists_every_certificate(basic):
    spec, cd, _ = basic
    rows = {r.name: r for r in inspect.show(cd, spec)}
    assert rows["kubelet-worker-1"].cn == "system:node:worker-1"
    assert rows["kubelet-worker-1"].orgs == ("system:nodes",)
    assert rows["kubelet-worker-1"].sans == ("worker-1", "10.240.0.21")
    assert rows["admin"].issuer == "kubernetes-ca"
    assert rows["sa"].key_type == "rsa-2048"


def test_service_account_type_change_is_stale(basic):
    _, cd, _ = basic
    spec2 = make_spec("basic", edit=lambda d: d["pki"].update(serviceAccountKeyType="ecdsa-p256"))
    assert "sa" in ensure_material(cd, spec2).pki.stale
    assert "sa" in ensure_material(cd, spec2, reissue=("sa",)).pki.reissued
