"""The `hardway` command as a user runs it: exit codes, messages, no tracebacks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from hardway import __version__


def hw(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, "-m", "hardway", *args], cwd=cwd, capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=120)


def no_traceback(r: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in r.stderr + r.stdout, r.stderr


def test_version_and_help_on_every_command():
    r = hw("--version")
    assert r.returncode == 0 and __version__ in r.stdout
    for cmd in ([], ["init"], ["validate"], ["pki"], ["pki", "init"], ["pki", "renew"], ["pki", "show"], ["pki", "check"],
                ["kubeconfig"], ["render"]):
        r = hw(*cmd, "--help")
        assert r.returncode == 0 and "Usage:" in r.stdout, cmd


def test_init_validate_pki_render_flow(tmp_path):
    d = tmp_path / "mylab"
    r = hw("init", str(d), "--preset", "ha", "--mirror", "http://127.0.0.1:8080")
    assert r.returncode == 0, r.stderr
    text = (d / "cluster.yaml").read_text()
    assert "mirror: http://127.0.0.1:8080" in text and "# " in text
    assert yaml.safe_load(text)["name"] == "mylab"
    assert hw("init", str(d)).returncode == 2  # refuses to overwrite
    r = hw("-C", str(d), "validate")
    assert r.returncode == 0 and "valid" in r.stdout and "https://10.240.0.30:6443" in r.stdout
    r = hw("-C", str(d), "pki", "init")
    assert r.returncode == 0 and "issued 22" in r.stdout, r.stdout + r.stderr
    r = hw("pki", "init", "-C", str(d))
    assert r.returncode == 0 and "nothing to do" in r.stdout
    r = hw("pki", "check", env={"HARDWAY_DIR": str(d)})
    assert r.returncode == 0 and "PKI OK" in r.stdout
    r = hw("-C", str(d), "pki", "show")
    assert r.returncode == 0 and "system:node:worker-1" in r.stdout
    assert "mylab-api," in r.stdout  # the LB name, derived from the cluster name
    r = hw("-C", str(d), "render", "--out", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out/controller-1/etc/systemd/system/kube-apiserver.service").exists()
    assert (tmp_path / "out/lb-0/etc/haproxy/haproxy.cfg").exists()
    assert (tmp_path / "out/_cluster/manifests/10-rbac.yaml").exists()
    assert not (tmp_path / "out/worker-0/etc/kubernetes/pki/ca.key").exists()
    r = hw("-C", str(d), "render", "--out", str(tmp_path / "out"))
    assert "up to date, nothing written" in r.stdout
    r = hw("-C", str(d), "kubeconfig")
    assert r.returncode == 0 and yaml.safe_load(r.stdout.split("---\n", 1)[1])["current-context"] == "mylab"
    r = hw("-C", str(d), "kubeconfig", "--path")
    assert r.stdout.strip() == str((d / "kubeconfigs/admin.kubeconfig").resolve())


def test_invalid_spec_exit_2_names_the_field_and_writes_nothing(tmp_path):
    d = tmp_path / "bad"
    assert hw("init", str(d), "--preset", "basic").returncode == 0
    spec = d / "cluster.yaml"
    spec.write_text(spec.read_text().replace("name: worker-1", "name: worker-0"))
    before = sorted(p.name for p in d.rglob("*"))
    for cmd in (["validate"], ["pki", "init"], ["render"], ["pki", "show"], ["pki", "check"], ["kubeconfig"]):
        r = hw("-C", str(d), *cmd)
        assert r.returncode == 2, (cmd, r.stdout, r.stderr)
        assert "nodes[2].name" in r.stderr and "duplicate node name 'worker-0'" in r.stderr
        no_traceback(r)
    assert sorted(p.name for p in d.rglob("*")) == before


def test_missing_spec_and_unknown_preset(tmp_path):
    r = hw("-C", str(tmp_path / "nowhere"), "validate")
    assert r.returncode == 2 and "hardway init" in r.stderr
    no_traceback(r)
    r = hw("init", str(tmp_path / "x"), "--preset", "huge")
    assert r.returncode == 2 and "single" in r.stderr
    no_traceback(r)


def test_failed_operation_exits_1(tmp_path):
    d = tmp_path / "lab"
    hw("init", str(d), "--preset", "single")
    r = hw("-C", str(d), "kubeconfig")
    assert r.returncode == 1 and "pki init" in r.stderr
    hw("-C", str(d), "pki", "init")
    (d / "pki/kube-proxy.key").chmod(0o644)
    r = hw("-C", str(d), "pki", "check")
    assert r.returncode == 1 and "kube-proxy.key: mode 0644" in r.stdout
    (d / "pki/ca.crt").unlink()
    r = hw("-C", str(d), "pki", "init")
    assert r.returncode == 1 and "restore ca.crt" in r.stderr
    no_traceback(r)


def test_warnings_are_printed_but_do_not_fail(tmp_path):
    d = tmp_path / "lab"
    hw("init", str(d), "--preset", "ha")
    spec = d / "cluster.yaml"
    spec.write_text("\n".join(l for l in spec.read_text().splitlines() if "controller-2" not in l) + "\n")
    r = hw("-C", str(d), "validate")
    assert r.returncode == 0 and "warning:" in r.stderr and "2 etcd members" in r.stderr


def test_reissue_via_cli(tmp_path):
    d = tmp_path / "lab"
    hw("init", str(d), "--preset", "basic")
    hw("-C", str(d), "pki", "init")
    old = (d / "pki/admin.crt").read_bytes()
    r = hw("-C", str(d), "pki", "init", "--reissue", "admin")
    assert r.returncode == 0 and "reissued 1: admin" in r.stdout
    assert (d / "pki/admin.crt").read_bytes() != old
    r = hw("-C", str(d), "pki", "init", "--reissue", "ca")
    assert r.returncode == 2 and "never regenerated" in r.stderr
