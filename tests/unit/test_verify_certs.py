"""`verify` judges the certificates deployed on the hosts (read there, one round trip per host),
not DIR/pki's: expiring within --cert-days, expired or not yet valid is degraded and named with
host, profile, path and date; a certificate that differs from DIR/pki's is named as not rolled
out. The expiry classification itself is shared with `pki check`."""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
from cryptography import x509

from hardway.clusterdir import ClusterDir
from hardway.deploy.desired import Desired, manifest_file
from hardway.deploy.transport import Result
from hardway.errors import UsageError
from hardway.material import ensure_material, load_material
from hardway.pki.expiry import MAX_WINDOW_DAYS, State, check_window, judge
from hardway.pki.issue import build_certificate, cert_pem, generate_key, key_pem
from hardway.pki.profiles import profiles_by_name
from hardway.render import render_cluster
from hardway.render.certfiles import cert_files
from hardway.render.kubeconfig import render_kubeconfig
from hardway.render.worker import KUBELET_CLIENT_CURRENT
from hardway.renewal import renew
from hardway.verify import health as vh
from hardway.verify.certs import HostCerts, Judge, judge_host, parse_read, read_script
from tests.specs import make_spec

NOW = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.timezone.utc)


def leaf(days: int, start: dt.datetime = NOW) -> x509.Certificate:
    key = generate_key("ecdsa-p256")
    return build_certificate(profiles_by_name(make_spec("basic"))["admin"], key, None, days, start)


@pytest.mark.parametrize("days,start,window,state", [
    (365, NOW, 30, State.valid),
    (5, NOW, 30, State.expiring),
    (30, NOW, 30, State.expiring),  # ends exactly at the window's edge: within it
    (31, NOW, 30, State.valid),
    (5, NOW, 0, State.valid),  # a window of 0 flags only what has expired
    (5, NOW - dt.timedelta(days=6), 30, State.expired),
    (5, NOW - dt.timedelta(days=6), 0, State.expired),
    (365, NOW + dt.timedelta(days=1), 30, State.not_yet_valid),
])
def test_expiry_classification(days, start, window, state):
    when = judge(leaf(days, start), NOW, window)
    assert when.state is state and when.ok == (state is State.valid)


def test_expiry_descriptions_name_the_date():
    assert judge(leaf(5), NOW, 30).describe() == "expires in 5 day(s), on 2030-01-06 12:00 UTC"
    assert judge(leaf(5, NOW - dt.timedelta(days=6)), NOW, 30).describe() == "expired on 2029-12-31 12:00 UTC"
    assert judge(leaf(5, NOW - dt.timedelta(days=6)), NOW, 30).days_left == -1
    assert judge(leaf(9, NOW + dt.timedelta(days=1)), NOW, 30).describe().startswith(
        "not valid before 2030-01-02 11:55 UTC")


def test_window_bounds_name_the_option():
    check_window(0, "--cert-days")
    check_window(MAX_WINDOW_DAYS, "--cert-days")
    for days in (-1, MAX_WINDOW_DAYS + 1):
        with pytest.raises(UsageError, match=rf"^--cert-days {days}: must be between 0 and {MAX_WINDOW_DAYS}"):
            check_window(days, "--cert-days")


def test_the_node_script_sends_certificates_and_never_a_key(tmp_path):
    """Run on a real shell: a certificate file, a kubeconfig, a certificate with its key in one
    file (HAProxy's), a missing file, the manifest."""
    key = generate_key("ecdsa-p256")
    c1, c2, c3 = leaf(10), leaf(20), leaf(30)
    files = {
        tmp_path / "a.crt": cert_pem(c1),
        tmp_path / "kubelet.conf": render_kubeconfig("lab", "https://x:6443", cert_pem(c3), "u", cert_pem(c2), key_pem(key)),
        tmp_path / "both.pem": cert_pem(c3) + key_pem(key),
    }
    for path, data in files.items():
        path.write_bytes(data)
    manifest = tmp_path / "manifest.json"
    manifest.write_text('{\n "files": {\n  "%s": "x",\n  "%s": "y"\n }\n}\n' % (tmp_path / "a.crt", tmp_path / "kubelet.conf"))
    paths = [str(p) for p in files] + [str(tmp_path / "gone.crt")]
    out = subprocess.run(["sh", "-c", read_script(paths, str(manifest))], capture_output=True, check=True).stdout
    assert b"PRIVATE KEY" not in out and b"client-key-data" not in out and b"certificate-authority-data" not in out
    found = parse_read("w", out.decode())
    assert found.files == {paths[0]: [cert_pem(c1)], paths[1]: [cert_pem(c2)], paths[2]: [cert_pem(c3)],
                           paths[3]: None}
    assert found.owned == {paths[0], paths[1]}


@pytest.fixture
def cluster(tmp_path):
    spec = make_spec("basic")
    cd = ClusterDir(tmp_path / "dir")
    ensure_material(cd, spec)
    material = load_material(cd, spec)
    return spec, cd, material, render_cluster(spec, material)


def as_deployed(bundle, material) -> HostCerts:
    """A host holding exactly what `up` would put there from this material."""
    files = {c.path: None for c in cert_files(bundle, material)}
    for c in cert_files(bundle, material):
        files[c.path] = [material.cert(c.profile)]
    return HostCerts(files, frozenset(bundle.files))


def test_a_host_as_rendered_passes_with_one_summary_check(cluster):
    spec, cd, material, c = cluster
    j = Judge(cd, profiles_by_name(spec), material, 30)
    checks = judge_host("worker-0", cert_files(c.nodes["worker-0"], material), [],
                        as_deployed(c.nodes["worker-0"], material), j)
    assert [(x.name, x.ok) for x in checks] == [("worker-0: certificates", True)]
    assert checks[0].detail.startswith("4 valid beyond 30 day(s); first to expire: ")


def test_every_problem_names_host_profile_path_and_what_to_do(cluster):
    spec, cd, material, c = cluster
    bundle = c.nodes["controller-0"]
    expected = cert_files(bundle, material)
    host = as_deployed(bundle, material)
    host.files["/etc/etcd/pki/etcdctl.crt"] = None
    host = HostCerts(host.files, host.owned - {"/etc/kubernetes/scheduler.conf"})
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=400)  # every leaf (365 days) has expired
    j = Judge(cd, profiles_by_name(spec), material, 30, later)
    checks = {x.name: x for x in judge_host("controller-0", expected, [], host, j)}
    etcdctl = checks.pop("controller-0: certificate etcd-admin (/etc/etcd/pki/etcdctl.crt)")
    assert not etcdctl.ok and etcdctl.detail == f"missing on the host: run `hardway -C {cd.root} up`"
    foreign = checks.pop("controller-0: certificate kube-scheduler (/etc/kubernetes/scheduler.conf, client certificate)")
    assert not foreign.ok and foreign.detail.startswith("not placed by hardway (absent from controller-0's ")
    api = checks["controller-0: certificate apiserver (/etc/kubernetes/pki/apiserver.crt)"]
    assert not api.ok and api.detail.startswith("expired on ") and "pki renew apiserver`" in api.detail
    summary = checks.pop("controller-0: certificates")
    assert summary.ok and summary.detail.startswith("3 valid beyond 30 day(s)")  # ca, etcd-ca, front-proxy-ca
    assert len(checks) == 7 and all(not x.ok and x.detail.startswith("expired on ") for x in checks.values())
    # a CA about to end points at `pki rotate-ca`, not at renew
    j = Judge(cd, j.profiles, material, 30, dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=3640))
    ca = {x.name: x for x in judge_host("controller-0", expected, [], host, j)}[
        "controller-0: certificate ca (/etc/kubernetes/pki/ca.crt)"]
    assert not ca.ok and ca.detail.startswith("expires in ") and "pki rotate-ca ca`" in ca.detail


def test_expiring_differing_and_rotated_certificates(cluster):
    spec, cd, material, c = cluster
    profiles = profiles_by_name(spec)
    bundle = c.nodes["worker-0"]
    host = as_deployed(bundle, material)
    renew(cd, spec, ("kubelet-worker-0",), validity_days=5)
    now = dt.datetime.now(dt.timezone.utc)
    fresh = load_material(cd, spec)
    short = fresh.cert("kubelet-worker-0")
    end = x509.load_pem_x509_certificate(short).not_valid_after_utc
    host.files["/var/lib/kubelet/pki/kubelet.crt"] = [short]  # rolled out
    # kubelet.conf still embeds the old certificate: not rolled out
    host.files[KUBELET_CLIENT_CURRENT] = [cert_pem(leaf(2, now))]  # the kubelet's own, about to end
    j = Judge(cd, profiles, fresh, 30, now)
    checks = {x.name: x for x in judge_host("worker-0", cert_files(render_cluster(spec, fresh).nodes["worker-0"], fresh),
                                            [KUBELET_CLIENT_CURRENT], host, j)}
    served = checks["worker-0: certificate kubelet-worker-0 (/var/lib/kubelet/pki/kubelet.crt)"]
    assert not served.ok and served.detail.startswith(f"expires in 4 day(s), on {end:%Y-%m-%d %H:%M} UTC (within --cert-days 30)")
    assert f"pki renew kubelet-worker-0`, then `hardway -C {cd.root} up`" in served.detail
    conf = checks["worker-0: certificate kubelet-worker-0 (/etc/kubernetes/kubelet.conf, client certificate)"]
    assert not conf.ok and conf.detail.startswith(f"differs from {cd.cert('kubelet-worker-0')} (serial ")
    assert "not rolled out yet" in conf.detail
    rotated = checks[f"worker-0: certificate kubelet client, rotated by the kubelet ({KUBELET_CLIENT_CURRENT})"]
    assert not rotated.ok and "the kubelet renews it through a CSR" in rotated.detail
    assert checks["worker-0: certificates"].ok and checks["worker-0: certificates"].detail.startswith("2 valid")
    # a window shorter than what is left: only what differs remains
    j = Judge(cd, profiles, fresh, 1, now)
    failed = [x.name for x in judge_host("worker-0", cert_files(render_cluster(spec, fresh).nodes["worker-0"], fresh),
                                         [KUBELET_CLIENT_CURRENT], host, j) if not x.ok]
    assert failed == ["worker-0: certificate kubelet-worker-0 (/etc/kubernetes/kubelet.conf, client certificate)"]


class RootedHost:
    """A node whose filesystem is a directory here: the script runs in a real shell with every
    absolute path moved under that directory, and its output moved back."""

    def __init__(self, node: str, root: Path) -> None:
        self.node, self.root, self.target, self.scripts = node, root, "fake", []

    async def run(self, script: str, input=None, timeout=None) -> Result:
        self.scripts.append(script)
        moved = script
        for top in ("/etc/", "/var/lib/"):
            moved = moved.replace(f" {top}", f" {self.root}{top}")
        p = subprocess.run(["sh", "-c", moved], capture_output=True, timeout=30)
        return Result(p.returncode, p.stdout.replace(str(self.root).encode(), b""), p.stderr)

    async def close(self) -> None:
        pass


def deploy(spec, cd: ClusterDir, hosts: Path) -> None:
    """What `up` puts on each node (the bundle's files and the manifest), under hosts/<node>."""
    material = load_material(cd, spec)
    for name, bundle in render_cluster(spec, material).nodes.items():
        d = Desired(name, bundle, dict(bundle.files))
        for f in [*bundle.files.values(), manifest_file(d)]:
            path = hosts / name / f.path.lstrip("/")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(f.content)


@pytest.fixture
def lab(tmp_path, monkeypatch):
    """verify against nodes that are directories: etcd, the apiserver, units and nodes healthy."""
    spec = make_spec("basic")
    cd = ClusterDir(tmp_path / "dir")
    ensure_material(cd, spec)
    cd.spec.write_text("")  # read by the stubbed load_spec below
    hosts = tmp_path / "hosts"
    deploy(spec, cd, hosts)
    monkeypatch.setattr(vh, "load_spec", lambda _p: SimpleNamespace(spec=spec))
    monkeypatch.setattr(vh, "etcd_health", lambda _h, _i: (True, ""))
    monkeypatch.setattr(vh, "apiserver_ready", lambda *_a, **_k: (True, "HTTP 200: ok"))
    monkeypatch.setattr(vh.Api, "nodes", lambda _self: {"worker-0": True, "worker-1": True})
    opened: list[RootedHost] = []

    async def connect_all(_spec, _cd, names, _opts, _progress=None):
        (name,) = names
        opened.append(RootedHost(name, hosts / name))
        return {name: opened[-1]}

    async def unit_states(_t, units):
        return {u: ("active", 0) for u in units}
    monkeypatch.setattr(vh, "connect_all", connect_all)
    monkeypatch.setattr(vh, "unit_states", unit_states)
    return SimpleNamespace(spec=spec, cd=cd, hosts=hosts, opened=opened)


def test_verify_reads_each_host_once_and_is_healthy_as_deployed(lab):
    report = vh.verify(lab.cd.root)
    assert report.status is vh.Status.healthy, report.reasons
    assert {c.name for c in report.checks if c.name.endswith(": certificates")} == {
        "controller-0: certificates", "worker-0: certificates", "worker-1: certificates"}
    assert sorted(h.node for h in lab.opened) == ["controller-0", "worker-0", "worker-1"]
    assert all(len(h.scripts) == 1 for h in lab.opened), "one round trip per host for the certificates"


def test_verify_names_a_deployed_certificate_expiring_within_the_window(lab):
    renew(lab.cd, lab.spec, ("apiserver",), validity_days=5)
    deploy(lab.spec, lab.cd, lab.hosts)  # `up`
    report = vh.verify(lab.cd.root)
    assert report.status is vh.Status.degraded and report.status.exit_code == 3
    (failed,) = report.failed
    assert failed.name == "controller-0: certificate apiserver (/etc/kubernetes/pki/apiserver.crt)"
    assert failed.detail.startswith("expires in 4 day(s), on ")  # 5 days from the renewal, a moment ago
    assert any(r.startswith("controller-0: certificate apiserver") for r in report.reasons)
    assert vh.verify(lab.cd.root, cert_days=3).status is vh.Status.healthy
    with pytest.raises(UsageError, match="--cert-days -1"):
        vh.verify(lab.cd.root, cert_days=-1)


def test_verify_judges_the_hosts_not_dir_pki(lab):
    """Renewed in DIR/pki but not rolled out: the host still serves the short-lived certificate,
    and verify says so (a verify reading only DIR/pki would call this healthy)."""
    renew(lab.cd, lab.spec, ("apiserver",), validity_days=5)
    deploy(lab.spec, lab.cd, lab.hosts)
    renew(lab.cd, lab.spec, ("apiserver",))  # a year again, in DIR/pki only
    (failed,) = vh.verify(lab.cd.root).failed
    assert failed.name == "controller-0: certificate apiserver (/etc/kubernetes/pki/apiserver.crt)"
    assert " day(s), on " in failed.detail and "not rolled out yet" in failed.detail
    deploy(lab.spec, lab.cd, lab.hosts)
    assert vh.verify(lab.cd.root).status is vh.Status.healthy


def test_an_unreadable_host_is_named(lab, monkeypatch):
    async def failing(self, script, input=None, timeout=None):
        return Result(1, b"", b"sh: permission denied")
    monkeypatch.setattr(RootedHost, "run", failing)
    checks = []
    asyncio.run(vh.unit_checks(lab.spec, lab.cd, {"worker-0": ["kubelet.service"]}, vh.Options(), checks.append,
                               more=lambda t: vh.host_cert_checks(t, [], None, checks.append)))
    assert ("worker-0: certificates", False) in [(c.name, c.ok) for c in checks]
