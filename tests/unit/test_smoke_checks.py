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


# A stand-in for the cluster's kubectl: canned answers for what smoke() asks, by argument.
FAKE_KUBECTL = r'''#!/usr/bin/env python3
import json, sys, time
a = sys.argv[3:]  # after --kubeconfig FILE
pod = lambda name, node, ip: {"metadata": {"name": name}, "spec": {"nodeName": node},
                               "status": {"podIP": ip, "phase": "Running"}}
if "port-forward" in a:
    print("Forwarding from 127.0.0.1:40123 -> 8080", flush=True)
    time.sleep(30)
elif a[-2:] == ["-o", "json"] and "app=web" in a:
    print(json.dumps({"items": [pod("web-a", "worker-0", "10.200.20.5"), pod("web-b", "worker-1", "10.200.21.5")]}))
elif "service" in a:
    print(json.dumps({"spec": {"ports": [{"nodePort": 30080}], "clusterIP": "10.32.0.99"}}))
elif "deployment" in a and "coredns" in a:
    print(json.dumps({"status": {"readyReplicas": 2}}))
elif "logs" in a:
    print("hardway-smoke-web-started")
elif "exec" in a and "hostname" in a:
    print("web-a")
elif "exec" in a and "wget" in a:
    print("<h1>hardway web 1.0</h1>")
'''


def test_smoke_runs_every_verdict_on_a_working_cluster(tmp_path, monkeypatch):
    from hardway import api
    from hardway.verify import smoke as smoke_mod

    api.init(tmp_path, preset="basic")
    kubectl = tmp_path / "bin" / "kubectl"
    kubectl.parent.mkdir()
    kubectl.write_text(FAKE_KUBECTL)
    kubectl.chmod(0o755)
    (tmp_path / "kubeconfigs").mkdir()
    (tmp_path / "kubeconfigs" / "admin.kubeconfig").write_text("")
    monkeypatch.setattr(smoke_mod, "_secret_in_etcd", lambda *_a: b"k8s:enc:aescbc:v1:key1:\x8f\x02")
    monkeypatch.setattr(smoke_mod, "http_get", lambda url, timeout=5: "<h1>hardway web 1.0</h1>")
    report = smoke_mod.smoke(tmp_path, timeout=5)
    outcomes = {r.name: (r.outcome, r.detail) for r in report.results}
    assert all(o == "pass" for o, _ in outcomes.values()), outcomes
    assert len(outcomes) == 9 and report.ok
