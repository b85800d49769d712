"""Smoke verdicts are explicit checks: they hold under `python -O`, which drops every assert."""

from __future__ import annotations

import ast
import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hardway.errors import OperationError
from hardway.verify import smoke
from hardway.verify.etcd_data import UNENCRYPTED, secrets_by_key
from hardway.verify.smoke import CheckFailed, Kube, check_encrypted, check_secrets_at_rest

SRC = Path(smoke.__file__).resolve().parents[2]


def test_encryption_verdict():
    assert check_encrypted(b"k8s:enc:aescbc:v1:key1:\x8f\x02", "aescbc", b"mydata", "key1").startswith(
        "etcd holds k8s:enc:aescbc:v1:key1:")
    with pytest.raises(CheckFailed, match="NOT encrypted at rest"):
        check_encrypted(b"k8s\x00\n\x0cv1\x12\x06Secret mydata", "aescbc", b"mydata", "key1")
    with pytest.raises(CheckFailed, match="plaintext value appears"):
        check_encrypted(b"k8s:enc:aescbc:v1:key1:mydata", "aescbc", b"mydata", "key1")
    # written with a key the cluster directory no longer puts first: the apiservers lag behind
    with pytest.raises(CheckFailed, match="encrypted with key 'key1', not with 'key2'"):
        check_encrypted(b"k8s:enc:aescbc:v1:key1:\x8f\x02", "aescbc", b"mydata", "key2")


def test_every_secret_at_rest_verdict():
    stored = {"/registry/secrets/default/a": b"k8s:enc:aescbc:v1:key2:\x01",
              "/registry/secrets/kube-system/b": b"k8s:enc:aescbc:v1:key2:\x02"}
    by_key = secrets_by_key(stored, "aescbc")
    assert by_key == {"key2": ["default/a", "kube-system/b"]}
    assert check_secrets_at_rest(by_key, "key2", False) == "2 Secret(s) in etcd, every one encrypted with key key2"
    stored |= {"/registry/secrets/default/old": b"k8s:enc:aescbc:v1:key1:\x03",
               "/registry/secrets/default/plain": b"k8s\x00\n\x0cv1\x12\x06Secret",
               "/registry/secrets/default/box": b"k8s:enc:secretbox:v1:key2:\x04"}
    by_key = secrets_by_key(stored, "aescbc")
    assert by_key["key1"] == ["default/old"] and by_key[UNENCRYPTED] == ["default/plain"]
    assert by_key["provider secretbox"] == ["default/box"]
    with pytest.raises(CheckFailed) as e:
        check_secrets_at_rest(by_key, "key2", True)
    assert "key1: 1 (default/old)" in str(e.value) and "(not encrypted): 1 (default/plain)" in str(e.value)
    assert "rotation is under way" in str(e.value)
    with pytest.raises(CheckFailed, match="rewrites every Secret with a new key"):
        check_secrets_at_rest(by_key, "key2", False)


def test_an_unencrypted_secret_fails_under_python_O():
    code = ("from hardway.verify.smoke import check_encrypted\n"
            "check_encrypted(b'k8s\\x00 Secret mydata', 'aescbc', b'mydata', 'key1')\n")
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
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "encryption-key").write_text(base64.b64encode(b"k" * 32).decode() + "\n")
    stored = {f"/registry/secrets/{ns}/{n}": b"k8s:enc:aescbc:v1:key1:\x8f\x02"
              for ns, n in (("hardway-smoke", "smoke-secret"), ("kube-system", "token-a"))}
    monkeypatch.setattr(smoke_mod, "etcdctl_get", lambda _s, _c, key, *_a, prefix=False: {
        k: v for k, v in stored.items() if k == key or (prefix and k.startswith(key))})
    monkeypatch.setattr(smoke_mod, "http_get", lambda url, timeout=5: "<h1>hardway web 1.0</h1>")
    report = smoke_mod.smoke(tmp_path, timeout=5)
    outcomes = {r.name: (r.outcome, r.detail) for r in report.results}
    assert all(o == "pass" for o, _ in outcomes.values()), outcomes
    assert len(outcomes) == 10 and report.ok
