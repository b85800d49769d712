"""`hardway pki check` as a user runs it: the secrets are judged too, and --days is bounded."""

from __future__ import annotations

import base64

import pytest

from hardway.clusterdir import ClusterDir
from tests.unit.test_cli import hw, no_traceback


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    d = tmp_path_factory.mktemp("check") / "c"
    assert hw("init", str(d), "--preset", "ha-vip").returncode == 0
    assert hw("-C", str(d), "pki", "init").returncode == 0
    return ClusterDir(d)


@pytest.mark.parametrize("days", ["1000000000000", str(10**20), "-1", "36501", "many"])
def test_days_out_of_range_is_exit_2_with_a_message(made, days):
    r = hw("-C", str(made.root), "pki", "check", "--days", days)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Invalid value for '--days'" in r.stderr
    no_traceback(r)


@pytest.mark.parametrize("days", ["0", "36500"])
def test_days_in_range_are_accepted(made, days):
    r = hw("-C", str(made.root), "pki", "check", "--days", days)
    no_traceback(r)
    assert r.returncode == (0 if days == "0" else 1), r.stdout  # a century flags every certificate
    assert ("PKI OK" in r.stdout) == (days == "0")


BAD = [
    ("encryption-key", None, "encryption-key is missing: restore it from your backup"),
    ("encryption-key", b"short\n", "encryption-key is not base64"),
    ("encryption-key", base64.b64encode(b"x" * 16) + b"\n", "encryption-key holds 16 bytes, not 32"),
    ("encryption-key", b"key2 " + base64.b64encode(b"k" * 32) + b"\nkey1 short\n",
     "encryption-key line 2 (key key1): is not base64"),
    ("encryption-key", b"key2 " + base64.b64encode(b"k" * 32) + b"\nkey2 " + base64.b64encode(b"j" * 32) + b"\n",
     "encryption-key line 2: key key2 is named twice"),
    ("vrrp-password", None, "vrrp-password is missing"),
    ("vrrp-password", b"has space\n", "vrrp-password is not 1 to 8 letters and digits"),
    ("vrrp-password", b"ninechars\n", "vrrp-password is not 1 to 8 letters and digits"),
]


@pytest.mark.parametrize("name,content,message", BAD, ids=[f"{n}-{c!r}" for n, c, _ in BAD])
def test_a_missing_or_corrupt_secret_fails_check_and_is_never_rendered(made, name, content, message):
    path = made.secret(name)
    good = path.read_bytes()
    try:
        if content is None:
            path.unlink()
        else:
            path.write_bytes(content)
        r = hw("-C", str(made.root), "pki", "check")
        assert r.returncode == 1 and message in r.stdout, r.stdout + r.stderr
        assert "PKI OK" not in r.stdout
        if content is not None:  # a missing one is made by render (pki init), a corrupt one stops it
            r = hw("-C", str(made.root), "render")
            assert r.returncode == 1 and message in r.stderr, r.stdout + r.stderr
            assert not (made.root / "bundles").exists()
            no_traceback(r)
    finally:
        path.write_bytes(good)
        path.chmod(0o600)


def test_a_secret_readable_by_others_fails_check(made):
    path = made.secret("vrrp-password")
    path.chmod(0o644)
    try:
        r = hw("-C", str(made.root), "pki", "check")
        assert r.returncode == 1 and f"{path}: mode 0644 lets others read it" in r.stdout, r.stdout
    finally:
        path.chmod(0o600)
