"""Kubeconfigs: identities, servers, embedded certificates, and merging into ~/.kube/config."""

from __future__ import annotations

import base64
import stat

import pytest
import yaml

from hardway import api
from hardway.clusterdir import ClusterDir
from hardway.kubeconfig_merge import merge_kubeconfig


def doc(data: bytes | str) -> dict:
    return next(d for d in yaml.safe_load_all(data) if d)


@pytest.fixture
def lab(tmp_path):
    d = tmp_path / "lab"
    api.init(d, "ha-vip")
    api.pki_init(d)
    return d


def test_every_identity_has_a_kubeconfig_with_its_own_certificate(lab):
    cd = ClusterDir(lab)
    names = sorted(p.stem for p in cd.kubeconfigs.glob("*.kubeconfig"))
    assert names == ["admin", "kube-controller-manager", "kube-proxy", "kube-scheduler",
                     "kubelet-worker-0", "kubelet-worker-1"]
    for name in names:
        kc = doc(cd.kubeconfig(name).read_bytes())
        user = kc["users"][0]["user"]
        assert base64.b64decode(user["client-certificate-data"]) == cd.cert(name).read_bytes()
        assert base64.b64decode(user["client-key-data"]) == cd.key(name).read_bytes()
        assert base64.b64decode(kc["clusters"][0]["cluster"]["certificate-authority-data"]) == cd.cert("ca").read_bytes()
        assert stat.S_IMODE(cd.kubeconfig(name).stat().st_mode) == 0o600
        server = kc["clusters"][0]["cluster"]["server"]
        local = name in ("kube-controller-manager", "kube-scheduler")
        assert server == ("https://127.0.0.1:6443" if local else "https://10.240.0.100:8443"), name


def test_merge_keeps_other_contexts(lab, tmp_path):
    target = tmp_path / "home/.kube/config"
    target.parent.mkdir(parents=True)
    other = {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "prod", "cluster": {"server": "https://prod.example:6443"}}],
        "users": [{"name": "admin", "user": {"token": "secret"}}],
        "contexts": [{"name": "prod", "context": {"cluster": "prod", "user": "admin"}}],
        "current-context": "prod",
        "preferences": {"colors": True},
    }
    target.write_text(yaml.safe_dump(other))
    api.merge_admin_kubeconfig(lab, target)
    api.merge_admin_kubeconfig(lab, target)  # twice: still one entry each
    merged = yaml.safe_load(target.read_text())
    assert [c["name"] for c in merged["clusters"]] == ["prod", "lab"]
    assert [u["name"] for u in merged["users"]] == ["admin", "admin@lab"]
    assert merged["users"][0] == {"name": "admin", "user": {"token": "secret"}}
    assert [c["name"] for c in merged["contexts"]] == ["prod", "lab"]
    assert merged["current-context"] == "lab"
    assert merged["preferences"] == {"colors": True}
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_merge_into_missing_file(lab, tmp_path):
    target = tmp_path / "new/config"
    api.merge_admin_kubeconfig(lab, target)
    assert yaml.safe_load(target.read_text())["contexts"][0]["context"] == {"cluster": "lab", "user": "admin@lab"}


def test_merge_refuses_a_broken_file(lab, tmp_path):
    from hardway.errors import OperationError

    target = tmp_path / "config"
    target.write_text("clusters: [unclosed\n")
    with pytest.raises(OperationError, match="not valid YAML"):
        merge_kubeconfig(ClusterDir(lab).kubeconfig("admin").read_bytes(), target)
    assert target.read_text() == "clusters: [unclosed\n"
