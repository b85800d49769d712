"""The lab's pure parts, without machines: cluster.yaml's ssh: edit, names, keys of the image
cache, the firewall check, preconditions. Fast; no root needed except where marked."""

from __future__ import annotations

import ipaddress
import os
import stat
from pathlib import Path

import yaml

import pytest

from hardway.errors import OperationError, UsageError
from hardway.lab import cgroups, host, image, machine, sshkeys
from hardway.lab.state import LabState, MachineState
from hardway.spec.load import parse_spec
from hardway.spec.presets import render_preset

KEY = "/srv/labs/my lab/lab/id_ed25519"


def _settings(key: str = KEY) -> dict:
    return {"user": "root", "port": 22, "key": key}


def test_ssh_edit_of_a_preset_keeps_every_comment_and_validates():
    text = render_preset("basic", "demo", lab=True)
    new = sshkeys.set_ssh_settings(text, _settings())
    spec = parse_spec(new).spec
    assert (spec.ssh.user, spec.ssh.port, spec.ssh.key) == ("root", 22, KEY)
    old_comments = [line.strip() for line in text.splitlines() if line.strip().startswith("#")]
    new_lines = [line.strip() for line in new.splitlines()]
    # the commented-out example key became the real setting; every other comment is still there
    assert [c for c in old_comments if c not in new_lines] == ["# key: ~/.ssh/id_ed25519"]
    assert new.count("\n") == text.count("\n")
    assert sshkeys.set_ssh_settings(new, _settings()) == new  # idempotent


def test_ssh_edit_keeps_trailing_comments_and_other_keys_order():
    text = "name: a\nssh:\n    user: admin   # who\n    key: ~/.ssh/x  # old key\n\n# next section\npki: {}\n"
    new = sshkeys.set_ssh_settings(text, _settings("/k"))
    assert new == ("name: a\nssh:\n    user: root  # who\n    key: /k  # old key\n    port: 22\n"
                   "\n# next section\npki: {}\n")


def test_ssh_edit_of_flow_style_missing_and_null_blocks():
    assert sshkeys.set_ssh_settings("name: a\nssh: {user: bob}  # note\nx: 1\n", _settings("/k")) == \
        "name: a\nssh:  # note\n  user: root\n  port: 22\n  key: /k\nx: 1\n"
    assert sshkeys.set_ssh_settings("name: a\nssh:\nx: 1\n", _settings("/k")) == \
        "name: a\nssh:\n  user: root\n  port: 22\n  key: /k\nx: 1\n"
    new = sshkeys.set_ssh_settings("name: a\nx: 1", _settings("/k"))
    assert new.endswith("ssh:\n  user: root\n  port: 22\n  key: /k\n") and new.startswith("name: a\nx: 1\n")


def test_point_spec_at_lab_writes_only_when_needed(tmp_path):
    path = tmp_path / "cluster.yaml"
    path.write_text(render_preset("basic", "demo", lab=True))
    path.chmod(0o640)
    assert sshkeys.point_spec_at_lab(path, Path(KEY)) is True
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert sshkeys.point_spec_at_lab(path, Path(KEY)) is False
    # A path with a space reads back whole (YAML's own quoting, where the format needs it).
    assert yaml.safe_load(path.read_text())["ssh"]["key"] == KEY


def test_bridge_names_fit_ifnamsiz_and_stay_distinct():
    assert host.bridge_name("demo") == "hw-demo"
    long1, long2 = host.bridge_name("a-very-long-cluster-name"), host.bridge_name("a-very-long-cluster-other")
    assert len(long1) <= 15 and len(long2) <= 15 and long1 != long2
    assert len(host.bridge_name("x" * 63)) <= 15


def test_hosts_and_known_hosts_text():
    hosts = machine.hosts_text([("c0", "10.1.0.10"), ("w0", "10.1.0.20")], [("demo-api", "10.1.0.10")])
    assert "10.1.0.10\tc0\n" in hosts and "10.1.0.20\tw0\n" in hosts and "127.0.0.1\tlocalhost" in hosts
    assert "demo-api" in hosts
    kh = sshkeys.known_hosts_text([("w0", "10.1.0.20", "ssh-ed25519 AAAAB root@w0")])
    assert kh == "w0,10.1.0.20 ssh-ed25519 AAAAB\n"


def test_image_key_follows_its_inputs(monkeypatch):
    key = image.image_key()
    assert image.image_key() == key
    monkeypatch.setattr(image, "PACKAGES", (*image.PACKAGES, "less"))
    assert image.image_key() != key
    monkeypatch.setattr(image, "PACKAGES", image.PACKAGES[:-1])
    monkeypatch.setattr(image, "IMAGE_RECIPE", image.IMAGE_RECIPE + 1)
    assert image.image_key() != key


def test_image_cache_honours_hardway_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("HARDWAY_CACHE", str(tmp_path))
    assert image.images_dir() == tmp_path / "lab" / "images"
    assert image.cached_image() is None


def test_state_round_trips():
    s = LabState(cluster="c", bridge="hw-c", bridge_address="10.0.0.1/24", cgroup_tree="/hardway-lab/c",
                 machines={"n": MachineState("n", "10.0.0.2/24", "/r", "k", "/hardway-lab/c/n", 12, 34, "/l")},
                 saved_sysctls={"kernel.panic": "1"})
    assert LabState.from_json(s.to_json()) == s


def test_put_refuses_to_write_through_a_symlink(tmp_path):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "etc" / "systemd").symlink_to(outside)
    with pytest.raises(OperationError, match="symbolic link"):
        machine.put(root, "etc/systemd/system/x.service", "x")
    assert not any(outside.iterdir())
    (root / "etc" / "hosts").symlink_to(outside / "hosts")  # the final name: replaced, not followed
    machine.put(root, "etc/hosts", "127.0.0.1 localhost\n")
    assert not (outside / "hosts").exists() and not (root / "etc" / "hosts").is_symlink()


def test_provision_writes_the_lab_units(tmp_path):
    root = tmp_path / "m"
    (root / "etc").mkdir(parents=True)
    (root / "etc/machine-id").write_text("")
    machine.provision(root, "w0", ipaddress.IPv4Interface("10.1.0.20/24"), "hosts\n", "ssh-ed25519 AAAA k")
    assert (root / "etc/hostname").read_text() == "w0\n"
    assert len((root / "etc/machine-id").read_text().strip()) == 32
    assert "ADDRESS=10.1.0.20/24" in (root / "etc/hardway-lab/network.env").read_text()
    assert os.readlink(root / "etc/systemd/system/multi-user.target.wants/hardway-lab-network.service") \
        == "/etc/systemd/system/hardway-lab-network.service"
    assert "Before=sysinit.target containerd.service kubelet.service" in \
        (root / "etc/systemd/system/hardway-lab-cgroups.service").read_text()
    assert "After=hardway-lab-cgroups.service" in \
        (root / "etc/systemd/system/containerd.service.d/10-hardway-lab.conf").read_text()
    assert stat.S_IMODE((root / "root/.ssh/authorized_keys").stat().st_mode) == 0o600
    assert os.readlink(root / "etc/systemd/system/console-getty.service") == "/dev/null"
    mid = (root / "etc/machine-id").read_text()
    machine.provision(root, "w0", ipaddress.IPv4Interface("10.1.0.20/24"), "hosts\n", "ssh-ed25519 AAAA k")
    assert (root / "etc/machine-id").read_text() == mid  # stable across `up`s


def test_nspawn_never_gets_a_writable_proc_sys(monkeypatch):
    monkeypatch.setenv("SYSTEMD_NSPAWN_API_VFS_WRITABLE", "1")
    env = machine.nspawn_env()
    assert "SYSTEMD_NSPAWN_API_VFS_WRITABLE" not in env and env["SYSTEMD_SECCOMP"] == "0"
    m = MachineState("w0", "10.1.0.20/24", "/r", "k", "/hardway-lab/c/w0")
    cmd = machine.nspawn_command(m, "hw-c")
    for flag in ("--boot", "--register=no", "--keep-unit", "--capability=all", "--bind=/dev/kmsg",
                 "--network-bridge=hw-c", "--machine=w0"):
        assert flag in cmd


def test_firewall_check_reports_forward_drop(monkeypatch, tmp_path):
    nf = tmp_path / "bridge-nf-call-iptables"
    nf.write_text("1\n")
    monkeypatch.setattr(host, "BRIDGE_NF_CALL_IPTABLES", nf)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    tool = bindir / "iptables-nft"
    tool.write_text("#!/bin/sh\necho '-P FORWARD DROP'\necho '-A FORWARD -j DOCKER-USER'\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", str(bindir))
    w = host.forward_drop_warning("hw-demo")
    assert w and "FORWARD policy is DROP" in w and "iptables -I FORWARD -i hw-demo -o hw-demo -j ACCEPT" in w
    tool.write_text("#!/bin/sh\necho '-P FORWARD DROP'\necho '-A FORWARD -i hw-demo -o hw-demo -j ACCEPT'\n")
    assert host.forward_drop_warning("hw-demo") is None  # the user allowed it
    nf.write_text("0\n")
    tool.write_text("#!/bin/sh\necho '-P FORWARD DROP'\n")
    assert host.forward_drop_warning("hw-demo") is None  # bridged traffic skips iptables


def test_preconditions_name_the_debian_package(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(OperationError) as e:
        host.need("systemd-nspawn", "debootstrap", "ip", "ssh")
    assert "apt-get install debootstrap iproute2 openssh-client systemd-container" in str(e.value)
    monkeypatch.setattr(host, "free_bytes", lambda _p: 100 * 2**20)
    with pytest.raises(OperationError, match="not enough disk space .* 100 MiB free .* 400 MiB needed"):
        host.check_disk(Path("/"), 400 * 2**20, "machine roots")


def test_not_root_is_a_usage_error(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(UsageError, match="needs root"):
        host.require_linux_root()


def test_node_cgroups_live_under_one_lab_tree():
    assert cgroups.node_cgroup("demo", "w0") == "/hardway-lab/demo/w0"
    if os.path.exists("/proc/self/mountinfo"):
        assert all(isinstance(h, Path) for h in cgroups.hierarchies())
