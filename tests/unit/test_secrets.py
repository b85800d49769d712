"""Secrets: keepalived's VRRP password is a random secret of its own (never derived from the
encryption key), and an SSH host key trusted on first use is shown with its fingerprint."""

from __future__ import annotations

import asyncio
import hashlib
import re
import shutil
import stat
import subprocess

import asyncssh
import pytest

from hardway import api
from hardway.cluster_secrets import VRRP_LENGTH
from hardway.clusterdir import ClusterDir
from hardway.deploy.hostkeys import fingerprint
from hardway.deploy.hosts import Options, connect_all
from hardway.material import ensure_material
from tests.helpers import require
from tests.specs import make_spec


def auth_pass(cd: ClusterDir, node: str) -> str:
    conf = (cd.bundles / node / "etc/keepalived/keepalived.conf").read_text()
    return re.search(r"auth_pass (\S+)", conf).group(1)


def test_vrrp_password_is_its_own_random_secret(tmp_path):
    a, b = ClusterDir(tmp_path / "a"), ClusterDir(tmp_path / "b")
    for cd in (a, b):
        api.init(cd.root, preset="ha-vip")
        api.render(cd.root)
    path = a.secret("vrrp-password")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    password = path.read_text().strip()
    assert re.fullmatch(f"[A-Za-z0-9]{{{VRRP_LENGTH}}}", password), password
    assert password != b.secret("vrrp-password").read_text().strip(), "two clusters share a password"
    assert {auth_pass(a, n) for n in ("controller-0", "controller-1", "controller-2")} == {password}
    # Not the encryption key's digest (what keepalived carried in clear before), and
    # independent of it: a new encryption key leaves the VRRP password alone.
    enc = a.encryption_key.read_text()
    assert password != hashlib.sha256(b"hardway-vrrp:" + enc.strip().encode()).hexdigest()[:8]
    a.encryption_key.write_text(b.encryption_key.read_text())
    api.render(a.root)
    assert auth_pass(a, "controller-0") == password


def test_no_vrrp_password_without_keepalived(tmp_path):
    cd = ClusterDir(tmp_path)
    ensure_material(cd, make_spec("ha"))
    assert cd.encryption_key.exists() and not cd.secret("vrrp-password").exists()


def test_fingerprint_is_the_one_openssh_prints(tmp_path):
    require(shutil.which("ssh-keygen") is not None, "ssh-keygen (openssh-client) is not installed")
    for kind in ("ed25519", "ecdsa", "rsa"):
        key = tmp_path / f"host_{kind}"
        subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-f", str(key)], check=True)
        listed = subprocess.run(["ssh-keygen", "-lf", f"{key}.pub"], capture_output=True, text=True,
                                check=True).stdout.split()[1]
        assert fingerprint(key.with_suffix(".pub").read_text()) == listed, kind


@pytest.fixture
def sshd():
    """An SSH server in this process on a free loopback port (no login needed)."""
    host_key = asyncssh.generate_private_key("ssh-ed25519")

    class NoAuth(asyncssh.SSHServer):
        def begin_auth(self, username: str) -> bool:
            return False

    return host_key, NoAuth


def test_a_host_key_trusted_on_first_use_is_announced_with_its_fingerprint(tmp_path, sshd):
    host_key, server_class = sshd
    said: list[str] = []

    async def scenario() -> None:
        server = await asyncssh.listen("127.0.0.1", 0, server_host_keys=[host_key],
                                       server_factory=server_class)
        port = server.sockets[0].getsockname()[1]
        spec = make_spec("single", edit=lambda d: (
            d["nodes"][0].update(address="127.0.0.1"), d.update(ssh={"user": "root", "port": port}),
            d["network"].update(nodeSubnet="127.0.0.0/8")))
        name = spec.nodes[0].name
        try:
            for _ in range(2):  # the second time the key is pinned: nothing to announce
                ts = await connect_all(spec, ClusterDir(tmp_path), [name], Options(), said.append)
                await ts[name].close()
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(scenario())
    fp = host_key.get_fingerprint("sha256")
    assert len(said) == 1, said
    assert fp in said[0] and "trusted on first use" in said[0] and "ssh-keygen -lf" in said[0]
    assert str(tmp_path / "known_hosts") in said[0]


def test_a_lost_encryption_key_is_never_replaced_once_the_cluster_ran(tmp_path):
    from hardway.errors import UsageError

    cd = ClusterDir(tmp_path)
    spec = make_spec("basic")
    ensure_material(cd, spec)
    cd.encryption_key.unlink()
    ensure_material(cd, spec)  # a cluster that never ran: a new key is fine
    first = cd.encryption_key.read_text()
    cd.kubectl.parent.mkdir(parents=True)
    cd.kubectl.write_text("#!/bin/sh\n")  # what `up` leaves: the cluster ran
    cd.encryption_key.unlink()
    with pytest.raises(UsageError, match="restore it from your backup"):
        ensure_material(cd, spec)
    assert not cd.encryption_key.exists(), "a new key was written after all"
    cd.encryption_key.write_text(first)  # restored: all is well again
    ensure_material(cd, spec)
    assert cd.encryption_key.read_text() == first
