"""The version-skew rules `up` applies before it changes Kubernetes binaries (deploy/upgrade.py)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from hardway.deploy import upgrade
from hardway.deploy.upgrade import Running, changes_binaries, kubelet_skew, skew_problems
from hardway.errors import UsageError
from tests.specs import make_spec

CTL = {"controller-0": "v1.20.2", "controller-1": "v1.20.2", "controller-2": "v1.20.2"}
KUBELETS = {"worker-0": "v1.20.2", "worker-1": "v1.20.2"}


def test_same_minor_rebuilds_and_patch_releases_and_the_next_minor_are_allowed():
    r = Running(CTL, KUBELETS)
    for target in ("1.20.2", "1.20.15", "1.21.0", "1.20.0"):  # a patch downgrade is allowed too
        assert skew_problems(target, r) == [], target


def test_a_minor_downgrade_is_refused_with_the_way_back():
    [p] = skew_problems("1.19.16", Running(CTL, KUBELETS))
    assert "older than the running apiservers (1.20)" in p and "hardway etcd restore" in p


def test_skipping_a_minor_is_refused_naming_the_next_step():
    [p] = skew_problems("1.22.1", Running(CTL, KUBELETS))
    assert "skips a minor" in p and "set 1.21.x first" in p and "controller-0" in p
    # halfway through an upgrade (one apiserver already on 1.21): 1.21 is fine, 1.22 is not yet
    mixed = Running({**CTL, "controller-0": "v1.21.3"}, KUBELETS)
    assert skew_problems("1.21.3", mixed) == []
    [p] = skew_problems("1.22.0", mixed)
    assert "controller-1, controller-2 run(s) 1.20" in p


def test_kubelets_too_old_for_the_target_are_named():
    r = Running({"controller-0": "v1.22.0"}, {"worker-0": "v1.20.2", "worker-1": "v1.22.0"})
    [p] = skew_problems("1.23.0", r)
    assert "worker-0" in p and "worker-1" not in p and "more than 2 minors" in p
    assert kubelet_skew((1, 27)) == 2 and kubelet_skew((1, 28)) == 3


def test_only_a_binary_change_reads_the_running_versions(monkeypatch):
    item = SimpleNamespace(path="/usr/local/bin/kube-apiserver")
    plans = [SimpleNamespace(writes=[(SimpleNamespace(path="/etc/kubernetes/x.yaml"), None)])]
    assert not changes_binaries(plans)
    assert changes_binaries(plans + [SimpleNamespace(writes=[(item, None)])])

    spec = make_spec("ha", edit=lambda d: d["kubernetes"].update(version="1.22.1"))
    read = []
    monkeypatch.setattr(upgrade, "read_running", lambda s, cd: read.append(1) or Running(CTL, KUBELETS))
    said = []
    asyncio.run(upgrade.check_skew(spec, None, plans, said.append))
    assert read == [] and said == []
    with pytest.raises(UsageError, match="(?s)nothing was changed.*skips a minor"):
        asyncio.run(upgrade.check_skew(spec, None, plans + [SimpleNamespace(writes=[(item, None)])], said.append))
    # a cluster whose apiservers do not answer yet (first `up`) has nothing to keep
    monkeypatch.setattr(upgrade, "read_running", lambda s, cd: None)
    asyncio.run(upgrade.check_skew(spec, None, [SimpleNamespace(writes=[(item, None)])], said.append))
