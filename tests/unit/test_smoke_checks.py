"""Smoke verdicts are explicit checks: they hold under `python -O`, which drops every assert."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hardway.errors import OperationError
from hardway.verify import smoke
from hardway.verify.smoke import CheckFailed, Kube, check_encrypted

SRC = Path(smoke.__file__).resolve().parents[2]


def test_encryption_verdict():
    assert check_encrypted(b"k8s:enc:aescbc:v1:key1:\x8f\x02", "aescbc", b"mydata").startswith(
        "etcd holds k8s:enc:aescbc:v1:")
    with pytest.raises(CheckFailed, match="NOT encrypted at rest"):
        check_encrypted(b"k8s\x00\n\x0cv1\x12\x06Secret mydata", "aescbc", b"mydata")
    with pytest.raises(CheckFailed, match="plaintext value appears"):
        check_encrypted(b"k8s:enc:aescbc:v1:key1:mydata", "aescbc", b"mydata")


def test_an_unencrypted_secret_fails_under_python_O():
    code = ("from hardway.verify.smoke import check_encrypted\n"
            "check_encrypted(b'k8s\\x00 Secret mydata', 'aescbc', b'mydata')\n")
    r = subprocess.run([sys.executable, "-O", "-c", code], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(SRC)})
    assert r.returncode != 0 and "NOT encrypted at rest" in r.stderr, r.stderr


def test_no_verdict_in_verify_rests_on_assert():
    for path in (SRC / "hardway" / "verify").glob("*.py"):
        asserts = [n.lineno for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Assert)]
        assert not asserts, f"{path}: assert on line(s) {asserts}: under python -O they do not run"


def test_kubectl_output_that_is_not_json_is_an_operation_error(tmp_path):
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "kubectl").write_text("#!/bin/sh\necho 'error: the server is busy'\n")
    (tmp_path / "bin" / "kubectl").chmod(0o755)
    from hardway.clusterdir import ClusterDir
    with pytest.raises(OperationError, match="printed no JSON"):
        Kube(ClusterDir(tmp_path)).json("get", "pods")
