"""`pki renew`: leaves reissued for the same key (or a new one), for as long as asked, with the
kubeconfigs that embed them; CAs and the service-account key refused; renewing is explicit (a
following `pki init` writes nothing); and it says what the next `up` restarts."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509

from hardway import api
from hardway.clusterdir import ClusterDir
from hardway.errors import UsageError
from hardway.material import ensure_material
from hardway.pki import store
from hardway.pki.issue import build_certificate, generate_key, public_pem
from hardway.pki.profiles import CA_ANCHOR, ROOT_CA, certificate_plan, profiles_by_name
from hardway.pki.verify import sans_of
from hardway.render import render_cluster
from hardway.render.certfiles import cert_files
from hardway.render.kubeconfig import client_certificate
from hardway.renewal import renew
from hardway.spec.model import MAX_VALIDITY_DAYS
from tests.fake_material import fake_material
from tests.specs import make_spec
from tests.unit.test_cli import hw, no_traceback
from tests.unit.test_pki_lifecycle import snapshot


@pytest.fixture
def basic(tmp_path):
    spec = make_spec("basic")
    cd = ClusterDir(tmp_path)
    ensure_material(cd, spec)
    return spec, cd


def cert(cd: ClusterDir, name: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(cd.cert(name).read_bytes())


def test_renew_keeps_the_key_and_issues_a_new_certificate(basic):
    spec, cd = basic
    before = cert(cd, "apiserver")
    key_file = cd.key("apiserver").read_bytes()
    key_mtime = cd.key("apiserver").stat().st_mtime_ns
    report = renew(cd, spec, ("apiserver",))
    after = cert(cd, "apiserver")
    assert list(report.renewed) == ["apiserver"] and report.new_keys == []
    assert after.serial_number != before.serial_number
    assert public_pem(after.public_key()) == public_pem(before.public_key())
    assert cd.key("apiserver").read_bytes() == key_file and cd.key("apiserver").stat().st_mtime_ns == key_mtime
    assert after.subject == before.subject and sans_of(after) == sans_of(before)
    assert report.renewed["apiserver"] == after.not_valid_after_utc


def test_new_key_replaces_the_key(basic):
    spec, cd = basic
    before = cert(cd, "kube-proxy")
    report = renew(cd, spec, ("kube-proxy",), new_key=True)
    after = cert(cd, "kube-proxy")
    assert report.new_keys == ["kube-proxy"]
    assert public_pem(after.public_key()) != public_pem(before.public_key())
    assert public_pem(store.load_key(cd.key("kube-proxy"))) == public_pem(after.public_key())


def test_kubeconfigs_embedding_a_renewed_certificate_are_rewritten_and_only_those(basic):
    spec, cd = basic
    others = {p.name: p.read_bytes() for p in cd.kubeconfigs.iterdir() if p.name != "kubelet-worker-0.kubeconfig"}
    report = renew(cd, spec, ("kubelet-worker-0",))
    path = cd.kubeconfig("kubelet-worker-0")
    assert report.kubeconfigs == [path]
    assert client_certificate(path.read_bytes()) == cd.cert("kubelet-worker-0").read_bytes()
    assert {p.name: p.read_bytes() for p in cd.kubeconfigs.iterdir() if p.name in others} == others


def test_validity_days_sets_the_end_and_is_bounded(basic):
    spec, cd = basic
    now = dt.datetime.now(dt.timezone.utc)
    report = renew(cd, spec, ("apiserver",), validity_days=5, now=now)
    assert cert(cd, "apiserver").not_valid_after_utc == report.renewed["apiserver"]
    assert abs(report.renewed["apiserver"] - (now + dt.timedelta(days=5))) < dt.timedelta(seconds=1)
    before = snapshot(cd)
    for days in (0, -1, MAX_VALIDITY_DAYS + 1):
        with pytest.raises(UsageError, match=rf"^--validity-days {days}: must be between 1 and {MAX_VALIDITY_DAYS}"):
            renew(cd, spec, ("apiserver",), validity_days=days)
    assert snapshot(cd) == before, "a refused renewal writes nothing"


def test_a_leaf_never_outlives_its_ca(basic):
    spec, cd = basic
    renew(cd, spec, ("admin",), validity_days=MAX_VALIDITY_DAYS)
    assert cert(cd, "admin").not_valid_after_utc == cert(cd, "ca").not_valid_after_utc


def test_cas_twins_and_the_service_account_key_are_refused(tmp_path):
    spec = make_spec("ha", edit=lambda d: d["pki"].update(layout="root"))
    cd = ClusterDir(tmp_path)
    ensure_material(cd, spec)
    before = snapshot(cd)
    cas = [p.name for p in certificate_plan(spec) if p.is_ca]
    assert {ROOT_CA, "ca", "etcd-ca", "front-proxy-ca", CA_ANCHOR} <= set(cas)
    for name in cas:
        with pytest.raises(UsageError, match="rotate-ca.* built only for the flat layout"):
            renew(cd, spec, ("admin", name))
    with pytest.raises(UsageError, match="key pair, not a certificate.*pki init --reissue sa"):
        renew(cd, spec, ("sa",))
    with pytest.raises(UsageError, match="no such certificate; leaves: apiserver, "):
        renew(cd, spec, ("apiserverr",))
    with pytest.raises(UsageError, match="name the certificates to renew, or --all"):
        renew(cd, spec)
    with pytest.raises(UsageError, match="or give --all, not both"):
        renew(cd, spec, ("admin",), every=True)
    assert snapshot(cd) == before


def test_all_renews_every_leaf_and_no_ca(basic):
    spec, cd = basic
    cas = {p.name: cd.cert(p.name).read_bytes() for p in certificate_plan(spec) if p.is_ca}
    report = renew(cd, spec, every=True)
    assert set(report.renewed) == {p.name for p in certificate_plan(spec) if not p.is_ca}
    assert {n: cd.cert(n).read_bytes() for n in cas} == cas


def test_renewing_is_explicit_a_following_pki_init_writes_nothing(basic):
    spec, cd = basic
    renew(cd, spec, every=True, validity_days=3)
    before = snapshot(cd)
    again = ensure_material(cd, spec)
    assert again.all_written == [] and again.pki.reissued == [] and again.pki.stale == {}
    assert snapshot(cd) == before


def test_a_leaf_whose_key_type_is_stale_gets_a_key_of_the_spec_s_type(basic):
    """The spec's key type changed for new leaves only where the CA keeps its own (ca is made
    with the old type; leaves under it follow pki.keyType): keeping the old key would leave the
    certificate stale, so it gets a new one."""
    spec, cd = basic
    profile = profiles_by_name(spec)["admin"]
    ca = (cert(cd, "ca"), store.load_key(cd.key("ca")))
    rsa = generate_key("rsa-2048")  # as a spec with pki.keyType: rsa-2048 made it
    store.save_pair(cd, "admin", build_certificate(profile, rsa, ca, 30, dt.datetime.now(dt.timezone.utc)), rsa)
    assert "admin" in ensure_material(cd, spec).pki.stale
    report = renew(cd, spec, ("admin",))
    assert report.new_keys == ["admin"] and report.material.pki.stale == {}
    assert cert(cd, "admin").public_key().public_numbers() != rsa.public_key().public_numbers()


def test_renew_says_what_up_will_restart(basic):
    spec, cd = basic
    r = renew(cd, spec, ("apiserver", "kube-proxy"))
    assert r.rollout["controller-0"].units == ("kube-apiserver.service",)
    assert r.rollout["controller-0"].files == ("/etc/kubernetes/pki/apiserver.crt",)
    for w in ("worker-0", "worker-1"):
        assert r.rollout[w].units == ("kube-proxy.service",) and r.rollout[w].files == ("/etc/kubernetes/proxy.conf",)
    assert renew(cd, spec, ("admin",)).rollout == {}, "the admin's certificate is on no node"


def test_cli(tmp_path):
    d = tmp_path / "c"
    assert hw("init", str(d), "--preset", "basic").returncode == 0
    assert hw("-C", str(d), "pki", "init").returncode == 0
    r = hw("-C", str(d), "pki", "renew", "apiserver", "kubelet-worker-1", "--validity-days", "5")
    no_traceback(r)
    assert r.returncode == 0, r.stderr
    assert "renewed apiserver (same key), valid until " in r.stdout
    assert f"rewrote {d / 'kubeconfigs' / 'kubelet-worker-1.kubeconfig'}" in r.stdout
    assert "controller-0: `up` will write 1 file(s) (/etc/kubernetes/pki/apiserver.crt) and restart " \
           "kube-apiserver.service" in r.stdout
    assert "worker-1: `up` will write " in r.stdout and "restart kubelet.service" in r.stdout
    for args, says in ((["ca"], "pki renew ca: a CA"), (["--validity-days", "0", "admin"], "--validity-days 0"),
                       ([], "name the certificates"), (["sa"], "key pair")):
        r = hw("-C", str(d), "pki", "renew", *args)
        no_traceback(r)
        assert r.returncode == 2 and says in r.stderr, (args, r.stderr)
    r = hw("-C", str(d), "pki", "init")
    assert r.returncode == 0 and "nothing to do" in r.stdout


def test_the_library_call(tmp_path):
    api.init(tmp_path, "basic")
    api.pki_init(tmp_path)
    report = api.pki_renew(tmp_path, ("front-proxy-client",), new_key=True, validity_days=7)
    assert list(report.renewed) == ["front-proxy-client"] and report.new_keys == ["front-proxy-client"]
    assert report.rollout["controller-0"].units == ("kube-apiserver.service",)


# Read by no daemon: etcdctl's identity, for the operator and for backups on the node.
READ_BY_NO_DAEMON = {"/etc/etcd/pki/etcdctl.crt"}


@pytest.mark.parametrize("preset", ["single", "basic", "ha", "ha-vip"])
@pytest.mark.parametrize("layout", ["flat", "root"])
def test_up_restarts_whatever_reads_a_renewed_certificate(preset, layout):
    """`up` restarts a unit when a file in its restart_on changed (reloads it for reload_on:
    HAProxy reads its certificates again on a reload): every file that carries a certificate
    (a kubeconfig's client certificate included) is in the restart_on or reload_on of a unit."""
    spec = make_spec(preset, edit=lambda d: d["pki"].update(layout=layout))
    material = fake_material(spec)
    for name, bundle in render_cluster(spec, material).nodes.items():
        watched = {p for u in bundle.units for p in (*u.restart_on, *u.reload_on)}
        carried = {c.path for c in cert_files(bundle, material)}
        assert carried, name
        assert carried - watched == carried & READ_BY_NO_DAEMON, name
