"""CA rotation (`hardway pki rotate-ca`), run against a simulated cluster: at each `up` the test
renders what the nodes would receive and checks that every bundle, leaf and signer is what that
step must leave (both CAs trusted before anything of the new one is presented, the old one
dropped only once nothing presents it); a run cut off anywhere resumes and keeps the new CA it
made; refusals (root layout, another CA under way, a lost record) change nothing."""

from __future__ import annotations

import base64
import json
import stat

import pytest
import yaml
from cryptography import x509

from hardway import api, carotation
from hardway.clusterdir import ClusterDir
from hardway.deploy.health import identity
from hardway.errors import UsageError
from hardway.material import ensure_material, load_material
from hardway.pki import rotation
from hardway.pki.inspect import check
from hardway.pki.profiles import certificate_plan, profiles_by_name
from hardway.pki.store import cert_blocks
from hardway.pki.verify import signed_by
from hardway.render import render_cluster
from hardway.render.certfiles import cert_files
from hardway.render.control_plane import SIGNER_CRT, SIGNER_KEY
from hardway.render.kubeconfig import client_certificate
from hardway.render.lb import HAPROXY_CA
from hardway.spec.load import load_spec
from hardway.verify.certs import HostCerts, Judge, judge_host
from tests.specs import make_spec
from tests.unit.test_cli import hw, no_traceback
from tests.unit.test_pki_lifecycle import snapshot as _snapshot

PKI = "/etc/kubernetes/pki"
# Every file on a node that trusts a CA, by CA: (node, path).
BUNDLES = {
    "ca": [("controller-0", f"{PKI}/ca.crt"), ("worker-0", f"{PKI}/ca.crt"), ("lb-0", HAPROXY_CA)],
    "etcd-ca": [("controller-0", "/etc/etcd/pki/ca.crt"), ("controller-2", "/etc/etcd/pki/ca.crt")],
    "front-proxy-ca": [("controller-0", f"{PKI}/front-proxy-ca.crt"), ("controller-1", f"{PKI}/front-proxy-ca.crt")],
}
KUBECONFIGS = ["/etc/kubernetes/controller-manager.conf", "/etc/kubernetes/scheduler.conf"]


def snapshot(cd: ClusterDir) -> dict:
    """The cluster directory's files, but the lock's (each command rewrites who holds it)."""
    return {k: v for k, v in _snapshot(cd).items() if k != ".hardway.lock"}


class Cut(Exception):
    """Where the test cuts a run off (as Ctrl-C or a failed `up` would)."""


def load(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def kubeconfig_ca(content: bytes) -> list[bytes]:
    doc = yaml.safe_load(content)
    return cert_blocks(base64.b64decode(doc["clusters"][0]["cluster"]["certificate-authority-data"]))


def cm_flag(bundle, flag: str) -> str:
    unit = bundle.files["/etc/systemd/system/kube-controller-manager.service"].content.decode()
    return next(w for w in unit.split() if w.startswith(f"{flag}=")).split("=", 1)[1]


class FakeCluster:
    """What each `up` would roll out, rendered from the cluster directory as `up` renders it."""

    def __init__(self, cd: ClusterDir, monkeypatch) -> None:
        self.cd = cd
        self.spec = load_spec(cd.spec).spec
        self.rolls: list = []  # (material, rendered cluster) per `up`
        self.kubelets = 0
        self.cut_at: str | None = None  # "roll:N", "save:N", "kubelets:N"
        self.counts: dict[str, int] = {}
        monkeypatch.setattr(carotation, "roll", self.roll)
        monkeypatch.setattr(carotation, "renew_kubelet_clients", self.renew)
        real_save = rotation.save_rotation
        monkeypatch.setattr(carotation, "save_rotation", lambda cd, r: (real_save(cd, r), self.tick("save")))

    def tick(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1
        if self.cut_at == f"{what}:{self.counts[what]}":
            self.cut_at = None
            raise Cut(what)

    def roll(self, directory, progress, opts) -> None:
        m = load_material(self.cd, self.spec)
        self.rolls.append((m, render_cluster(self.spec, m)))
        self.tick("roll")

    def renew(self, spec, cd, opts, progress) -> list[str]:
        self.kubelets += 1
        self.tick("kubelets")
        return [n.name for n in spec.workers]


@pytest.fixture
def cluster(tmp_path, monkeypatch):
    api.init(tmp_path, preset="ha", name="lab")
    api.pki_init(tmp_path)
    return FakeCluster(ClusterDir(tmp_path), monkeypatch)


def node(cluster_bundle, name: str):
    return cluster_bundle.nodes[name]


def leaves_of(spec, ca: str) -> list[str]:
    return [p.name for p in certificate_plan(spec) if p.issuer == ca]


def test_ca_rotation_step_by_step(cluster):
    cd, spec = cluster.cd, cluster.spec
    old = cd.cert("ca").read_bytes()
    said: list[str] = []
    report = api.pki_rotate_ca(cd.root, "ca", said.append)
    new = cd.cert("ca").read_bytes()
    assert new != old and len(cluster.rolls) == 4 and cluster.kubelets == 1
    assert [m.split(":")[0] for m in said if m.startswith("== step")] == [
        f"== step {i}/4 {s}" for i, s in enumerate(("trust", "reissue", "switch", "drop"), 1)]
    old_c, new_c = load(old), load(new)
    assert new_c.subject == old_c.subject and signed_by(new_c, new_c)
    (m1, c1), (m2, c2), (m3, c3), (m4, c4) = cluster.rolls

    # 1 trust: every bundle old + new; the leaves still the old CA's; the old CA signs CSRs
    for nd, path in BUNDLES["ca"]:
        assert cert_blocks(node(c1, nd).files[path].content) == cert_blocks(old + new), (nd, path)
    for path in KUBECONFIGS:
        assert kubeconfig_ca(node(c1, "controller-0").files[path].content) == cert_blocks(old + new)
    assert kubeconfig_ca(node(c1, "worker-0").files["/etc/kubernetes/kubelet.conf"].content) == cert_blocks(old + new)
    assert all(signed_by(load(m1.cert(n)), old_c) for n in leaves_of(spec, "ca"))
    cm = node(c1, "controller-0")
    assert (cm_flag(cm, "--cluster-signing-cert-file"), cm_flag(cm, "--cluster-signing-key-file")) == (SIGNER_CRT, SIGNER_KEY)
    assert cm.files[SIGNER_CRT].content == old and cm.files[SIGNER_KEY].mode == 0o600
    assert cm_flag(cm, "--client-ca-file") == f"{PKI}/ca.crt" and cm_flag(cm, "--root-ca-file") == f"{PKI}/ca.crt"
    kubelet = yaml.safe_load(node(c1, "worker-0").files["/var/lib/kubelet/config.yaml"].content)
    assert kubelet["authentication"]["x509"]["clientCAFile"] == f"{PKI}/ca.crt"  # the bundle above

    # 2 reissue: every leaf of ca (kubeconfigs' client certificates too) by the new CA, for its
    # same key; bundles still both; the old CA still signs CSRs
    for nd, path in BUNDLES["ca"]:
        assert cert_blocks(node(c2, nd).files[path].content) == cert_blocks(new + old), (nd, path)
    for n in leaves_of(spec, "ca"):
        assert signed_by(load(m2.cert(n)), new_c) and not signed_by(load(m2.cert(n)), old_c), n
        assert m2.key(n) == m1.key(n), f"{n}: a new key"
    for n in leaves_of(spec, "etcd-ca") + leaves_of(spec, "front-proxy-ca"):
        assert m2.cert(n) == m1.cert(n), f"{n} is not ca's: untouched"
    for path in KUBECONFIGS:
        assert signed_by(load(client_certificate(node(c2, "controller-0").files[path].content)), new_c)
    assert node(c2, "controller-0").files[SIGNER_CRT].content == old

    # 3 switch: the new CA signs CSRs; then the kubelets renew their own client certificates
    assert node(c3, "controller-0").files[SIGNER_CRT].content == new
    assert node(c3, "controller-0").files[SIGNER_KEY].content == m3.key("ca")
    assert cert_blocks(node(c3, "worker-0").files[f"{PKI}/ca.crt"].content) == cert_blocks(new + old)
    assert report.kubelets == [n.name for n in spec.workers]

    # 4 drop: the new CA alone, signing from ca.crt/ca.key as before the rotation
    for nd, path in BUNDLES["ca"]:
        assert node(c4, nd).files[path].content == new, (nd, path)
    cm = node(c4, "controller-0")
    assert SIGNER_CRT not in cm.files and SIGNER_KEY not in cm.files
    assert cm_flag(cm, "--cluster-signing-cert-file") == f"{PKI}/ca.crt"
    for name in ("admin", "kube-proxy", "kubelet-worker-0"):
        content = cd.kubeconfig(name).read_bytes()
        assert kubeconfig_ca(content) == [new] and signed_by(load(client_certificate(content)), new_c)
    # the old CA is gone, and so is the record; what is left is a sound PKI
    assert not any(cd.pki.glob("ca.old.*")) and not any(cd.pki.glob("ca.next.*"))
    assert not rotation.record_path(cd).exists()
    assert check(cd, spec) == []
    assert ensure_material(cd, spec).all_written == []
    assert sorted(report.reissued) == sorted(leaves_of(spec, "ca")) and report.serial == f"{new_c.serial_number:x}"
    # the next rotation starts from this CA
    api.pki_rotate_ca(cd.root, "ca")
    assert cd.cert("ca").read_bytes() not in (old, new)


@pytest.mark.parametrize("ca", ["etcd-ca", "front-proxy-ca"])
def test_etcd_and_front_proxy_cas_rotate_without_a_signer_step(cluster, ca):
    cd, spec = cluster.cd, cluster.spec
    old = cd.cert(ca).read_bytes()
    report = api.pki_rotate_ca(cd.root, ca)
    new = cd.cert(ca).read_bytes()
    assert report.skipped == ["switch"] and list(report.steps) == ["trust", "reissue", "drop"]
    assert len(cluster.rolls) == 3 and cluster.kubelets == 0
    (m1, c1), (m2, c2), (_m3, c3) = cluster.rolls
    for nd, path in BUNDLES[ca]:
        assert cert_blocks(node(c1, nd).files[path].content) == cert_blocks(old + new)
        assert cert_blocks(node(c2, nd).files[path].content) == cert_blocks(new + old)
        assert node(c3, nd).files[path].content == new
    for n in leaves_of(spec, ca):
        assert signed_by(load(m1.cert(n)), load(old)) and signed_by(load(m2.cert(n)), load(new)), n
    assert SIGNER_CRT not in node(c1, "controller-0").files  # only ca signs on the nodes
    assert node(c2, "controller-0").files[f"{PKI}/ca.crt"].content == cd.cert("ca").read_bytes()  # ca untouched
    assert check(cd, spec) == []


def test_the_operator_s_checks_and_pki_check_accept_both_cas_during_a_rotation(cluster, monkeypatch):
    cd, spec = cluster.cd, cluster.spec
    seen = []

    def roll(directory, progress, opts) -> None:
        paths = identity(cd, "ca", "admin").cafiles
        seen.append(([p.name for p in paths], check(cd, spec)))
        identity(cd, "ca", "admin").context()  # loads every file

    monkeypatch.setattr(carotation, "roll", roll)
    api.pki_rotate_ca(cd.root, "ca")
    assert seen == [(["ca.crt", "ca.next.crt"], []), (["ca.crt", "ca.old.crt"], []),
                    (["ca.crt", "ca.old.crt"], []), (["ca.crt"], [])]
    assert identity(cd, "etcd-ca", "etcd-admin").cafiles == (cd.cert("etcd-ca"),)


# save:1 is the record of the start; save:N+1 the one after step N
CUTS = ["save:1", "roll:1", "save:2", "roll:2", "save:3", "roll:3", "kubelets:1", "save:4", "roll:4", "save:5"]


@pytest.mark.parametrize("cut", CUTS)
def test_a_rotation_cut_off_anywhere_resumes_and_keeps_its_new_ca(cluster, cut):
    cd, spec = cluster.cd, cluster.spec
    old = cd.cert("ca").read_bytes()
    cluster.cut_at = cut
    with pytest.raises(Cut):
        api.pki_rotate_ca(cd.root, "ca")
    record = rotation.record_path(cd)
    assert record.exists() and stat.S_IMODE(record.stat().st_mode) == 0o600
    doc = json.loads(record.read_text())
    assert doc["ca"] == "ca"
    # the old CA's key is never gone before the end
    assert old in (cd.cert("ca").read_bytes(), *(p.read_bytes() for p in cd.pki.glob("ca.old.crt")))
    # the new CA, once made: ca.next until step 2 makes it ca (the old one then ca.old)
    made = (cd.cert("ca.next").read_bytes() if cd.cert("ca.next").exists() else
            cd.cert("ca").read_bytes() if cd.cert("ca.old").exists() else None)
    for k in cd.pki.glob("ca.*.key"):
        assert stat.S_IMODE(k.stat().st_mode) == 0o600
    # meanwhile a plain `up` renders the step under way, and refuses nothing
    load_material(cd, spec)
    said: list[str] = []
    report = api.pki_rotate_ca(cd.root, "ca", said.append)
    assert report.resumed == tuple(doc["done"])
    assert any(m.startswith("resuming the rotation of ca") for m in said), said
    new = cd.cert("ca").read_bytes()
    assert new != old
    if made:
        assert new == made, "the resumed run kept the CA it had made"
    assert cluster.kubelets >= 1
    last = cluster.rolls[-1][1]
    assert node(last, "worker-0").files[f"{PKI}/ca.crt"].content == new
    assert all(signed_by(load(cd.cert(n).read_bytes()), load(new)) for n in leaves_of(spec, "ca"))
    assert not record.exists() and not any(cd.pki.glob("ca.old.*")) and not any(cd.pki.glob("ca.next.*"))
    assert check(cd, spec) == []


def test_a_swap_cut_between_its_writes_is_finished_by_the_next_run(cluster, monkeypatch):
    cd = cluster.cd
    old_key = cd.key("ca").read_bytes()
    cluster.cut_at = "roll:2"
    with pytest.raises(Cut):
        api.pki_rotate_ca(cd.root, "ca")
    # as if step 2 had stopped after writing the new key but before the new certificate
    new_crt, new_key = cd.cert("ca").read_bytes(), cd.key("ca").read_bytes()
    cd.cert("ca.next").write_bytes(new_crt)
    cd.key("ca.next").write_bytes(new_key)
    cd.cert("ca").write_bytes(cd.cert("ca.old").read_bytes())
    assert cd.key("ca.old").read_bytes() == old_key
    api.pki_rotate_ca(cd.root, "ca")
    assert cd.cert("ca").read_bytes() == new_crt and cd.key("ca").read_bytes() == new_key


def test_refusals_change_nothing(tmp_path, cluster):
    cd = cluster.cd
    before = snapshot(cd)
    with pytest.raises(UsageError, match="not a CA hardway rotates; one of ca, etcd-ca, front-proxy-ca"):
        api.pki_rotate_ca(cd.root, "root-ca")
    # a lost record with the rotation's files still there
    cd.cert("ca.next").write_bytes(cd.cert("ca").read_bytes())
    with pytest.raises(UsageError, match="no rotation of ca is recorded"):
        api.pki_rotate_ca(cd.root, "ca")
    cd.cert("ca.next").unlink()
    assert snapshot(cd) == before and cluster.rolls == []
    # another CA's rotation under way
    cluster.cut_at = "roll:1"
    with pytest.raises(Cut):
        api.pki_rotate_ca(cd.root, "etcd-ca")
    with pytest.raises(UsageError, match="a rotation of etcd-ca is under way.*pki rotate-ca etcd-ca"):
        api.pki_rotate_ca(cd.root, "ca")
    # a damaged record
    rotation.record_path(cd).write_text('{"ca": "ca", "done": ["drop"]}')
    with pytest.raises(Exception, match="is damaged"):
        api.pki_rotate_ca(cd.root, "ca")


def test_the_root_layout_is_refused_with_exit_2(tmp_path):
    api.init(tmp_path, preset="ha")
    text = (tmp_path / "cluster.yaml").read_text()
    spec_with_root = make_spec("ha", edit=lambda d: d["pki"].update(layout="root"))
    assert spec_with_root.pki.layout == "root"
    (tmp_path / "cluster.yaml").write_text(text.replace("layout: flat", "layout: root") if "layout: flat" in text
                                           else text.replace("pki:\n", "pki:\n  layout: root\n", 1))
    api.pki_init(tmp_path)
    before = snapshot(ClusterDir(tmp_path))
    r = hw("-C", str(tmp_path), "pki", "rotate-ca", "ca")
    no_traceback(r)
    assert r.returncode == 2 and "not built for `pki.layout: root`" in r.stderr, r.stderr
    assert snapshot(ClusterDir(tmp_path)) == before
    r = hw("-C", str(tmp_path), "pki", "rotate-ca", "root-ca")
    assert r.returncode == 2 and "Invalid value" in r.stderr


def test_pki_check_names_a_broken_rotation(cluster):
    cd, spec = cluster.cd, cluster.spec
    cluster.cut_at = "roll:2"
    with pytest.raises(Cut):
        api.pki_rotate_ca(cd.root, "ca")
    assert check(cd, spec) == []
    cd.key("ca.old").chmod(0o644)
    rotation.record_path(cd).chmod(0o644)
    problems = check(cd, spec)
    assert any("ca.old.key: mode 0644" in p for p in problems), problems
    assert any("ca-rotation: mode 0644" in p for p in problems), problems
    cd.key("ca.old").write_bytes(cd.key("ca").read_bytes())
    assert any(p.startswith("ca.old: ") and "is not the key of" in p for p in check(cd, spec))
    cd.key("ca.old").unlink()
    assert any("needs it until its last step" in p for p in check(cd, spec))


def test_a_client_reading_the_bundle_while_step_2_moves_the_cas_always_trusts_both(cluster, monkeypatch):
    """The e2e writer once failed here: it listed ca.crt and ca.next.crt, then read ca.crt after
    step 2 had made it the new CA (and ca.next was gone): the old CA, which every server still
    presented, was nowhere. Whatever moves of step 2 happen between a client's listing and its
    reads, the bundle it gets holds both CAs."""
    cd = cluster.cd
    cluster.cut_at = "roll:1"
    with pytest.raises(Cut):
        api.pki_rotate_ca(cd.root, "ca")
    old, new = cd.cert("ca").read_bytes(), cd.cert("ca.next").read_bytes()
    start = {p.name: p.read_bytes() for p in cd.pki.glob("ca*")}
    # step 2's moves, in _swap's order
    moves = [lambda: cd.key("ca.old").write_bytes(cd.key("ca").read_bytes()),
             lambda: cd.cert("ca.old").write_bytes(old),
             lambda: cd.key("ca").write_bytes(cd.key("ca.next").read_bytes()),
             lambda: cd.cert("ca").write_bytes(new),
             lambda: cd.cert("ca.next").unlink(),
             lambda: cd.key("ca.next").unlink()]
    real = rotation.trust_names
    for i in range(len(moves) + 1):
        for j in range(i, len(moves) + 1):
            for p in cd.pki.glob("ca.*"):
                p.unlink()
            for name, data in start.items():
                (cd.pki / name).write_bytes(data)
            for move in moves[:i]:
                move()
            pending = moves[i:j]

            def listed(*a, pending=pending):
                names = real(*a)
                while pending:  # the moves land between this listing and the reads
                    pending.pop(0)()
                return names

            monkeypatch.setattr(rotation, "trust_names", listed)
            got = cert_blocks(rotation.trust_pem(cd, "ca"))
            assert set(cert_blocks(old + new)) <= set(got), (i, j)
            identity(cd, "ca", "admin").context()
    monkeypatch.setattr(rotation, "trust_names", real)
    cd.cert("ca").unlink()
    with pytest.raises(FileNotFoundError):
        identity(cd, "ca", "admin").context()



def test_verify_accepts_the_bundles_of_a_rotation_as_rolled_out(cluster, monkeypatch):
    """`verify` reads every certificate file on each host: during each step, what that step's
    `up` placed (a CA file holding two CAs) is judged rolled out, not "differs from DIR/pki"."""
    cd, spec = cluster.cd, cluster.spec
    verdicts = []

    def roll(directory, progress, opts) -> None:
        m = load_material(cd, spec)
        j = Judge(cd, profiles_by_name(spec), m)
        for name, bundle in render_cluster(spec, m).nodes.items():
            expected = cert_files(bundle, m)
            found = HostCerts({c.path: cert_blocks(bundle.files[c.path].content) if not c.kubeconfig else
                               cert_blocks(client_certificate(bundle.files[c.path].content)) for c in expected},
                              None)
            verdicts.extend((name, c.name, c.ok, c.detail) for c in judge_host(name, expected, [], found, j))

    monkeypatch.setattr(carotation, "roll", roll)
    api.pki_rotate_ca(cd.root, "ca")
    assert verdicts and all(ok for *_, ok, _d in verdicts), [v for v in verdicts if not v[2]][:5]


def test_cli_runs_the_rotation_and_says_what_it_did(cluster):
    from click.testing import CliRunner

    from hardway.cli.main import cli

    r = CliRunner().invoke(cli, ["-C", str(cluster.cd.root), "pki", "rotate-ca", "ca", "--worker-batch", "2"])
    assert r.exit_code == 0, r.output
    new = load(cluster.cd.cert("ca").read_bytes())
    assert "== step 3/4 switch:" in r.output
    assert "ca rotated in " in r.output, r.output
    assert ("9 certificate(s) reissued, 2 kubelet client certificate(s) renewed; "
            f"the new ca (serial {new.serial_number:x}) is valid until {new.not_valid_after_utc:%Y-%m-%d}, "
            "the old one is gone") in r.output, r.output
    assert len(cluster.rolls) == 4
