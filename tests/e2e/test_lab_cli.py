"""`hardway lab` as a user runs it when something is wrong: clear messages, exit 2 for bad
input and 1 for failures, never a traceback. None of these boots a machine or changes the host."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hardway import api
from hardway.errors import UsageError
from hardway.lab import host
from tests.helpers import require

LAB_COMMANDS = ["up", "status", "ssh", "stop", "start", "down", "destroy"]


def hw(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hardway", *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **(env or {})})


def clean(r: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in r.stdout + r.stderr, r.stderr


def _cluster(tmp_path: Path, edit=None) -> Path:
    d = tmp_path / "c"
    api.init(d, "basic", name="hwcli", lab=True)
    if edit:
        p = d / "cluster.yaml"
        p.write_text(edit(p.read_text()))
    return d


def test_help_for_every_lab_command():
    for cmd in ([], *([c] for c in LAB_COMMANDS)):
        r = hw("lab", *cmd, "--help")
        assert r.returncode == 0 and "Usage:" in r.stdout, cmd


def test_not_root_exits_2_with_a_clear_message(tmp_path, monkeypatch, capsys):
    from hardway.cli import main as cli_main

    d = _cluster(tmp_path)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    for verb in (["up"], ["status"], ["down"], ["stop", "worker-0"]):
        monkeypatch.setattr(sys, "argv", ["hardway", "lab", *verb, "-C", str(d)])
        with pytest.raises(SystemExit) as e:
            cli_main.main()
        assert e.value.code == 2, verb
        assert "needs root" in capsys.readouterr().err


def test_missing_programs_are_named_with_their_debian_packages(tmp_path):
    require(os.geteuid() == 0 and sys.platform.startswith("linux"), "runs as root on Linux")
    d = _cluster(tmp_path)
    r = hw("lab", "up", "-C", str(d), env={"PATH": "/nonexistent"})
    clean(r)
    assert r.returncode == 1
    assert "systemd-nspawn" in r.stderr and "apt-get install" in r.stderr
    for pkg in ("systemd-container", "iproute2", "openssh-client"):
        assert pkg in r.stderr


def test_bad_input_exits_2(tmp_path):
    require(os.geteuid() == 0 and sys.platform.startswith("linux"), "runs as root on Linux")
    r = hw("lab", "up", "-C", str(tmp_path / "nowhere"))
    clean(r)
    assert r.returncode == 2 and "does not exist" in r.stderr
    # a node on the first address of the subnet: that is the host's address on the lab bridge
    d = _cluster(tmp_path, lambda t: t.replace("address: 10.240.0.10,", "address: 10.240.0.1,"))
    r = hw("lab", "up", "-C", str(d))
    clean(r)
    assert r.returncode == 2 and "10.240.0.1" in r.stderr and "host's address" in r.stderr
    assert not host.link_exists(host.bridge_name("hwcli"))
    r = hw("lab", "stop", "-C", str(d), "no-such-node")
    clean(r)
    assert r.returncode == 2 and "no machine named" in r.stderr


def test_down_and_destroy_without_a_lab_do_nothing(tmp_path):
    require(os.geteuid() == 0 and sys.platform.startswith("linux"), "runs as root on Linux")
    d = _cluster(tmp_path)
    for verb in ("down", "destroy"):
        r = hw("lab", verb, "-C", str(d))
        clean(r)
        assert r.returncode == 0 and "nothing to do" in r.stdout, r.stderr


def test_a_subnet_the_host_uses_is_refused():
    require(sys.platform.startswith("linux"), "Linux")
    p = subprocess.run(["ip", "-j", "-4", "addr", "show"], capture_output=True, text=True)
    require(p.returncode == 0, "needs iproute2")
    nets = [ipaddress.IPv4Network(f"{a['local']}/{a['prefixlen']}", strict=False)
            for link in json.loads(p.stdout) if link["ifname"] != "lo" for a in link.get("addr_info", [])]
    require(bool(nets), "the host has no IPv4 address besides loopback")
    with pytest.raises(UsageError, match="overlaps this host's"):
        host.check_subnet_free(nets[0], "hw-none")
