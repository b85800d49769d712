"""A stale PKI never ships, and its advice works: render, diff and up refuse (exit 2) while a
certificate does not match the spec, `pki init` exits non-zero, each item names its fix, and
the fix, carried out here, clears it. A foreign CA certificate never reaches a kubeconfig."""

from __future__ import annotations

import datetime as dt
import re
import shlex
import shutil
from pathlib import Path

import pytest
import yaml

from hardway.clusterdir import ClusterDir
from hardway.errors import UsageError
from hardway.material import current_material, ensure_material
from hardway.pki.issue import build_certificate, cert_pem, generate_key, key_pem
from hardway.pki.profiles import CertProfile, Usage
from hardway.spec.load import load_spec
from tests.specs import make_spec
from tests.unit.test_cli import hw, no_traceback


def advised_commands(stderr: str) -> list[list[str]]:
    """Every `hardway ...` command the advice names, as argv for `hw`."""
    return [shlex.split(c)[1:] for c in re.findall(r"`(hardway -C [^`]+)`", stderr)]


def no_ca_reissue(stderr: str) -> None:
    for argv in advised_commands(stderr):
        for i, a in enumerate(argv):
            if a == "--reissue":
                assert not argv[i + 1].endswith("ca"), f"advice names an impossible command: {argv}"


def test_address_change_stops_render_diff_up_and_the_advised_command_fixes_it(tmp_path):
    d = tmp_path / "c"
    # A mirror that does not exist: should `up` get past the PKI it fails at once (exit 1).
    assert hw("init", str(d), "--preset", "basic", "--mirror", str(tmp_path / "no-mirror")).returncode == 0
    assert hw("-C", str(d), "pki", "init").returncode == 0
    spec = d / "cluster.yaml"
    spec.write_text(spec.read_text().replace("address: 10.240.0.10,", "address: 10.240.0.11,"))

    r = hw("-C", str(d), "pki", "init")
    assert r.returncode == 2, r.stdout + r.stderr
    for name in ("apiserver", "etcd-server-controller-0", "etcd-peer-controller-0"):
        assert re.search(rf"- {name}: SANs differ from the spec: missing 10.240.0.11; extra 10.240.0.10\n"
                         rf"    fix: `hardway -C {d} pki init --reissue {name}`", r.stderr), r.stderr
    no_ca_reissue(r.stderr)
    for cmd in (["render"], ["diff"], ["up", "--timeout", "5"]):
        r = hw("-C", str(d), *cmd)
        assert r.returncode == 2, (cmd, r.stdout, r.stderr)
        assert f"`hardway {cmd[0]}` stopped before using it" in r.stderr and "- apiserver:" in r.stderr
        no_traceback(r)
    assert not (d / "bundles").exists(), "render wrote bundles from a stale PKI"

    together = r.stderr.split("all the reissues at once: ")[1].splitlines()[0]
    r = hw(*shlex.split(together)[1:])
    assert r.returncode == 0 and "reissued 3" in r.stdout, r.stdout + r.stderr
    r = hw("-C", str(d), "render")
    assert r.returncode == 0, r.stderr
    assert "10.240.0.11" in (d / "bundles/controller-0/etc/systemd/system/etcd.service").read_text()


def foreign_ca(cn: str = "kubernetes-ca") -> tuple[bytes, bytes]:
    """A CA with the right name that hardway did not make for this cluster."""
    now = dt.datetime.now(dt.timezone.utc)
    key = generate_key("ecdsa-p256")
    cert = build_certificate(CertProfile("ca", None, cn, Usage.ca, ""), key, None, 10, now)
    return cert_pem(cert), key_pem(key)


@pytest.fixture
def cluster(tmp_path) -> tuple[ClusterDir, Path]:
    d = tmp_path / "c"
    assert hw("init", str(d), "--preset", "basic").returncode == 0
    assert hw("-C", str(d), "pki", "init").returncode == 0
    shutil.copytree(d / "pki", tmp_path / "backup")
    return ClusterDir(d), tmp_path / "backup"


def spec_of(cd: ClusterDir):
    return load_spec(cd.spec).spec


def test_foreign_ca_certificate_is_never_embedded_and_restoring_it_fixes_the_pki(cluster):
    cd, backup = cluster
    admin = cd.kubeconfig("admin").read_bytes()
    cd.kubeconfig("kube-proxy").unlink()
    cd.cert("ca").write_bytes(foreign_ca()[0])
    spec = yaml.safe_load(cd.spec.read_text())
    spec["nodes"].append({"name": "worker-2", "address": "10.240.0.22", "roles": ["worker"]})
    cd.spec.write_text(yaml.safe_dump(spec))

    r = hw("-C", str(cd.root), "pki", "init")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "- ca: the private key does not match the certificate" in r.stderr
    assert f"fix: {cd.cert('ca')} is not the certificate of {cd.key('ca')}" in r.stderr
    assert "restore ca.crt from your backup" in r.stderr
    assert "kubelet-worker-2" in r.stderr and "not issued while its issuer ca is stale" in r.stderr
    no_ca_reissue(r.stderr)
    assert cd.kubeconfig("admin").read_bytes() == admin, "a kubeconfig was rewritten with a foreign CA"
    assert not cd.kubeconfig("kube-proxy").exists(), "a kubeconfig was made with a foreign CA"
    assert not cd.cert("kubelet-worker-2").exists(), "a certificate was issued under a foreign CA"
    r = hw("-C", str(cd.root), "pki", "init", "--reissue", "admin")
    assert r.returncode == 2 and "its issuer ca is stale" in r.stderr

    shutil.copy(backup / "ca.crt", cd.cert("ca"))  # the advice, carried out
    r = hw("-C", str(cd.root), "pki", "init")
    assert r.returncode == 0, r.stderr
    assert "issued 1: kubelet-worker-2" in r.stdout
    assert cd.kubeconfig("kube-proxy").exists() and cd.kubeconfig("kubelet-worker-2").exists()


def test_foreign_ca_key_is_named_and_restoring_it_fixes_the_pki(cluster):
    cd, backup = cluster
    spec = spec_of(cd)
    cd.key("etcd-ca").write_bytes(foreign_ca("etcd-ca")[1])
    with pytest.raises(UsageError) as e:
        current_material(cd, spec, "render")
    assert f"{cd.key('etcd-ca')} is not the key of {cd.cert('etcd-ca')}" in str(e.value)
    assert "restore etcd-ca.key from your backup" in str(e.value)
    shutil.copy(backup / "etcd-ca.key", cd.key("etcd-ca"))
    assert ensure_material(cd, spec).pki.stale == {}


def test_a_leaf_whose_key_does_not_match_is_reissued_by_the_advised_command(cluster):
    cd, _ = cluster
    cd.key("kube-proxy").write_bytes(key_pem(generate_key("ecdsa-p256")))
    r = hw("-C", str(cd.root), "render")
    assert r.returncode == 2 and "- kube-proxy: the private key does not match the certificate" in r.stderr
    [advice] = advised_commands(r.stderr)
    assert advice[-2:] == ["--reissue", "kube-proxy"]
    assert hw(*advice).returncode == 0
    assert hw("-C", str(cd.root), "render").returncode == 0


def test_a_foreign_ca_pair_leaves_its_leaves_stale_and_the_advised_reissue_adopts_it(cluster):
    """Both halves replaced by a consistent foreign pair: the CA itself is sound, so the leaves
    it did not sign are stale; the advice names reissuing them (or restoring the original)."""
    cd, _ = cluster
    crt, key = foreign_ca("front-proxy-ca")
    cd.cert("front-proxy-ca").write_bytes(crt)
    cd.key("front-proxy-ca").write_bytes(key)
    with pytest.raises(UsageError) as e:
        current_material(cd, spec_of(cd), "up")
    stale = e.value.stale
    assert stale.keys() == {"front-proxy-client"}, stale
    assert "restore the original from your backup instead" in stale["front-proxy-client"].fix
    [advice] = advised_commands(str(e.value))
    assert hw(*advice).returncode == 0
    assert ensure_material(cd, spec_of(cd)).pki.stale == {}


def test_root_ca_renamed_by_the_spec_advises_undoing_the_rename(tmp_path):
    cd = ClusterDir(tmp_path)
    root = make_spec("basic", edit=lambda d: d["pki"].update(layout="root"))
    ensure_material(cd, root)
    renamed = make_spec("basic", edit=lambda d: (d["pki"].update(layout="root"), d.update(name="other")))
    stale = ensure_material(cd, renamed).pki.stale
    assert stale["root-ca"].reasons == ("CN is 'lab-root-ca', spec wants 'other-root-ca'",)
    assert "undo the change" in stale["root-ca"].fix and "`name`" in stale["root-ca"].fix
    assert not stale["root-ca"].reissue
    assert ensure_material(cd, root).pki.stale == {}


def test_a_deleted_ca_is_not_made_anew_over_the_certificates_it_signed(cluster):
    cd, backup = cluster
    cd.cert("etcd-ca").unlink()
    cd.key("etcd-ca").unlink()
    before = {p.name: p.read_bytes() for p in cd.pki.iterdir()}
    r = hw("-C", str(cd.root), "pki", "init")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "etcd-ca.key are missing but certificates they signed exist (apiserver-etcd-client" in r.stderr
    assert f"move {cd.pki} away first" in r.stderr
    assert {p.name: p.read_bytes() for p in cd.pki.iterdir()} == before
    no_traceback(r)
    for half in ("etcd-ca.crt", "etcd-ca.key"):  # the advice, carried out
        shutil.copy(backup / half, cd.pki / half)
    assert hw("-C", str(cd.root), "pki", "init").returncode == 0
    # The other advice: a new PKI after moving the old one away.
    cd.pki.rename(cd.root / "pki.old")
    r = hw("-C", str(cd.root), "pki", "init")
    assert r.returncode == 0 and "issued" in r.stdout, r.stderr
