"""The host-wide record of kernel settings the labs change: kept once, released by the last lab
that still runs, and not held hostage by a lab whose commands were killed."""

from __future__ import annotations

import pytest

from hardway.lab import host

ORIGINAL = {k: f"orig-{k}" for k in host.KUBELET_SYSCTLS}


@pytest.fixture
def fake_host(tmp_path, monkeypatch):
    values = dict(ORIGINAL)
    monkeypatch.setattr(host, "REGISTRY_DIR", tmp_path / "registry")
    monkeypatch.setattr(host, "read_sysctl", lambda k: values[k])
    monkeypatch.setattr(host, "write_sysctl", lambda k, v: values.__setitem__(k, v))
    return values


def test_last_running_lab_restores_the_originals(fake_host):
    running = {"/a", "/b"}
    log: list[str] = []
    assert host.apply_kubelet_sysctls("/a", log.append, None, running.__contains__) == ORIGINAL
    assert fake_host == host.KUBELET_SYSCTLS
    # b comes up later: the originals on record are the host's, not the values a set
    assert host.apply_kubelet_sysctls("/b", log.append, None, running.__contains__) == ORIGINAL
    host.restore_sysctls("/a", ORIGINAL, log.append, running.__contains__)
    running.discard("/a")
    assert fake_host == host.KUBELET_SYSCTLS, "b still runs and needs them"
    assert host.recorded_originals() == ORIGINAL
    host.restore_sysctls("/b", ORIGINAL, log.append, running.__contains__)
    assert fake_host == ORIGINAL
    assert host.recorded_originals() is None


def test_a_killed_lab_does_not_hold_the_settings(fake_host):
    running = {"/killed"}
    host.apply_kubelet_sysctls("/killed", lambda m: None, None, running.__contains__)
    running.clear()  # its command was killed; its machines went with it, never restored
    log: list[str] = []
    running.add("/next")
    assert host.apply_kubelet_sysctls("/next", log.append, None, running.__contains__) == ORIGINAL
    assert any("/killed no longer runs" in m for m in log), log
    host.restore_sysctls("/next", ORIGINAL, log.append, running.__contains__)
    assert fake_host == ORIGINAL
    assert host.recorded_originals() is None


def test_record_lost_falls_back_to_the_labs_own(fake_host):
    # /run wiped while a lab was up: the lab's state still has the originals it was given
    fake_host.update(host.KUBELET_SYSCTLS)
    got = host.apply_kubelet_sysctls("/a", lambda m: None, ORIGINAL, {"/a"}.__contains__)
    assert got == ORIGINAL
    host.restore_sysctls("/a", got, lambda m: None, lambda h: False)
    assert fake_host == ORIGINAL
