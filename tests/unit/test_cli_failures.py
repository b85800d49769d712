"""Failures a user can meet, induced one by one and driven through the CLI's own entry point
(`hardway.cli.main.main`, as `python -m hardway` runs it): each must end in an error message and
its exit code, never in a traceback.

The cluster is a fake one where a real one cannot be had: a small mirror of stand-in files in
the real layout (so `up` prepares for real: PKI, render, fetch), and hosts that answer every
command with success and report every file already in place (so `up` runs its real phases up
to the failure under test). Each row induces its failure at the lowest level it arises at.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from hardway.artifacts import fetch as fetch_mod
from hardway.cli import main as cli_main
from hardway.deploy import facts as facts_mod
from hardway.deploy import health as deploy_health
from hardway.deploy import transport
from hardway.deploy import hosts as deploy_hosts
from hardway.deploy import up as deploy_up
from hardway.deploy.plan import Facts, FileFact
from hardway.deploy.transport import Result
from hardway.spec.load import load_spec
from hardway.verify import health as verify_health
from tests.fake_mirror import fake_mirror


def run_cli(monkeypatch, capsys, *argv: str) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["hardway", *argv])
    with pytest.raises(SystemExit) as e:
        cli_main.main()
    out = capsys.readouterr()
    return e.value.code, out.out + out.err


def cluster(tmp_path: Path, monkeypatch, preset: str = "single", images: str = "[]") -> Path:
    """A cluster directory whose artifacts come from a small local mirror."""
    d = tmp_path / "c"
    monkeypatch.setenv("HARDWAY_CACHE", str(tmp_path / "cache"))
    mirror = tmp_path / "mirror"
    cli_main.api.init(d, preset, mirror=str(mirror))
    spec = d / "cluster.yaml"
    spec.write_text(spec.read_text().replace("images: [pause-3.2, web-1.0]", f"images: {images}"))
    fake_mirror(mirror, load_spec(spec).spec)
    return d


class FakeHost:
    """A host that runs nothing and answers every command with success."""

    def __init__(self, node: str) -> None:
        self.node, self.target = node, f"root@{node}:22"

    async def run(self, script, input=None, timeout=None) -> Result:
        return Result(0, b"", b"")

    async def close(self) -> None:
        pass


def converged_hosts(monkeypatch) -> None:
    """Every host reachable, converged (its facts: every file in place, every unit active) and
    healthy as far as etcd and the apiservers go."""
    async def connect(node, *_args):
        return FakeHost(node)

    async def gather(_t, d) -> Facts:
        return Facts(d.node, arch="x86_64", files={p: FileFact(it.sha256, it.mode, it.owner) for p, it in d.items.items()},
                     active_units=frozenset(d.unit_names), sysctls=dict(d.bundle.sysctls),
                     modules={m: True for m in d.bundle.modules}, packages=frozenset(d.bundle.packages))

    async def no_member_changes(_s):
        return None  # etcd's members are the spec's (tests/unit/test_members.py covers the survey)

    monkeypatch.setattr(deploy_hosts, "connect_ssh", connect)
    monkeypatch.setattr(deploy_up, "gather", gather)
    monkeypatch.setattr(deploy_up.members, "survey", no_member_changes)
    monkeypatch.setattr(deploy_up, "etcd_health", lambda *_a, **_k: (True, "ok"))
    monkeypatch.setattr(deploy_up, "apiserver_ready", lambda *_a, **_k: (True, "ok"))


def kubectl_hangs(monkeypatch) -> None:
    real = subprocess.run

    def run(argv, *a, **kw):
        if str(argv[0]).endswith("/kubectl"):
            raise subprocess.TimeoutExpired(argv, kw.get("timeout"))
        return real(argv, *a, **kw)
    monkeypatch.setattr(subprocess, "run", run)


# ---- the rows: (what, setup(tmp_path, monkeypatch) -> argv, exit code, words in the message)


def pki_is_a_file(cmd: list[str]):
    def setup(tmp_path, monkeypatch):
        d = cluster(tmp_path, monkeypatch)
        (d / "pki").write_text("not a directory\n")
        return ["-C", str(d), *cmd]
    return setup


def image_not_a_tar(tmp_path, monkeypatch):
    # The mirror's web-1.0 "image" is a stand-in text file, not an OCI tarball.
    return ["-C", str(cluster(tmp_path, monkeypatch, images="[web-1.0]")), "up"]


def read_error_mid_download(tmp_path, monkeypatch):
    d = cluster(tmp_path, monkeypatch)
    real_open = fetch_mod.Source.open

    class Flaky:
        def __init__(self, f) -> None:
            self.f, self.reads = f, 0

        def read(self, n: int) -> bytes:
            self.reads += 1
            if self.reads > 1:
                raise ConnectionResetError(104, "Connection reset by peer")
            return self.f.read(4)

    @contextlib.contextmanager
    def flaky_open(self, rel):  # the kube-apiserver binary breaks off; checksum files arrive
        with real_open(self, rel) as (f, total):
            yield (Flaky(f) if rel.endswith("/kube-apiserver") else f), total

    monkeypatch.setattr(fetch_mod.Source, "open", flaky_open)
    return ["-C", str(d), "artifacts", "fetch"]


def local_transport_timeout(tmp_path, monkeypatch):
    d = cluster(tmp_path, monkeypatch)
    # The facts step on the local node hangs: its command never ends, and the (shortened)
    # timeout of that step runs out.
    monkeypatch.setattr(transport, "_wrap", lambda _script, _user: "sleep 30")
    real_check = facts_mod.check
    monkeypatch.setattr(facts_mod, "check", lambda t, script, what, input=None, timeout=None:
                        real_check(t, script, what, input, 0.5))
    return ["-C", str(d), "up", "--local", "node-0"]


def configmap_read_fails(tmp_path, monkeypatch):
    d = cluster(tmp_path, monkeypatch)
    converged_hosts(monkeypatch)

    def refused(*_a, **_k):
        raise ConnectionResetError(104, "Connection reset by peer")
    monkeypatch.setattr(deploy_health, "https_get", refused)  # the API drops every connection
    return ["-C", str(d), "up", "--timeout", "1"]


def kubectl_times_out_in_up(tmp_path, monkeypatch):
    d = cluster(tmp_path, monkeypatch)
    converged_hosts(monkeypatch)
    monkeypatch.setattr(deploy_health, "https_get", lambda *_a, **_k: (404, b'{"kind": "Status"}'))
    kubectl_hangs(monkeypatch)
    return ["-C", str(d), "up"]


def kubectl_times_out_in_smoke(tmp_path, monkeypatch):
    d = cluster(tmp_path, monkeypatch)
    cli_main.api.pki_init(d)
    (d / "bin").mkdir()
    (d / "bin" / "kubectl").write_text("#!/bin/sh\nsleep 30\n")
    (d / "bin" / "kubectl").chmod(0o755)
    monkeypatch.setattr(verify_health, "verify", lambda *_a, **_k: verify_health.VerifyReport())
    kubectl_hangs(monkeypatch)
    return ["-C", str(d), "verify", "--smoke"]


ROWS: list[tuple[str, Callable, int, list[str]]] = [
    ("pki/ is a file: pki init", pki_is_a_file(["pki", "init"]), 2, ["pki is a file", "move the file away"]),
    ("pki/ is a file: render", pki_is_a_file(["render"]), 2, ["pki is a file"]),
    ("pki/ is a file: verify", pki_is_a_file(["verify"]), 2, ["pki is a file"]),
    ("an image that is not a tar", image_not_a_tar, 2,
     ["spec.artifacts.images: web-1.0", "not an OCI image tarball", "not a readable tar archive"]),
    ("a read error mid-download", read_error_mid_download, 1,
     ["copying failed after 4 of", "Connection reset by peer", "nothing was cached", "again"]),
    ("a local-transport timeout", local_transport_timeout, 1,
     ["node-0 (local): command timed out after 0.5 s"]),
    ("the applied-manifests ConfigMap cannot be read", configmap_read_fails, 1,
     ["phase workers", "Connection reset by peer"]),
    ("kubectl times out in up", kubectl_times_out_in_up, 1, ["`kubectl apply -f -` did not finish within 120 s"]),
    ("kubectl times out in smoke, outside a verdict", kubectl_times_out_in_smoke, 1,
     ["`kubectl delete namespace hardway-smoke", "did not finish within 180 s"]),
]


@pytest.mark.parametrize(("what", "setup", "code", "words"), ROWS, ids=[r[0] for r in ROWS])
def test_a_failure_is_a_message_and_an_exit_code_never_a_traceback(tmp_path, monkeypatch, capsys,
                                                                   what, setup, code, words):
    argv = setup(tmp_path, monkeypatch)
    got, text = run_cli(monkeypatch, capsys, *argv)
    assert "Traceback" not in text and "this is a bug" not in text, text
    assert got == code, text
    for w in words:
        assert w in text, f"{what}: {w!r} not in:\n{text}"


def test_an_unexpected_exception_is_reported_as_a_bug_with_its_traceback(tmp_path, monkeypatch, capsys):
    def boom(*_a, **_k):
        raise RuntimeError("an internal inconsistency")
    monkeypatch.setattr(cli_main.api, "validate", boom)
    got, text = run_cli(monkeypatch, capsys, "-C", str(tmp_path), "validate")
    assert got == 1
    assert "Traceback" in text and "RuntimeError: an internal inconsistency" in text
    assert "this is a bug in hardway" in text


def test_a_local_timeout_names_its_host():
    """The same words as an SSH timeout (one place for both), from the local transport itself."""
    t = transport.LocalTransport("node-9")
    with pytest.raises(transport.OperationError, match=r"^node-9 \(local\): command timed out after 0.2 s$"):
        asyncio.run(t.run("sleep 5", timeout=0.2))
