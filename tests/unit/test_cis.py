"""CIS Kubernetes Benchmark (kube-bench cis-1.20) checks that apply to rendered files.

Each entry is one check id from ../shared/reference/kube-bench-cfg/cis-1.20; the checks that
cannot apply to a systemd install, or that we deliberately do not follow, are listed in
docs/design.md with the reason.
"""

from __future__ import annotations

import re

import pytest
import yaml

from hardway.render import render_cluster
from tests.fake_material import fake_material
from tests.specs import make_spec

CIS_CIPHERS = {
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305", "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305", "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_RSA_WITH_AES_256_GCM_SHA384", "TLS_RSA_WITH_AES_128_GCM_SHA256",
}


@pytest.fixture(scope="module")
def single():
    spec = make_spec("single")
    return render_cluster(spec, fake_material(spec)).nodes["node-0"]


def flags(bundle, unit: str) -> dict[str, str]:
    text = bundle.files[f"/etc/systemd/system/{unit}.service"].content.decode()
    out = {}
    for word in text.split("ExecStart=", 1)[1].split("\n\n", 1)[0].replace("\\\n", " ").split()[1:]:
        assert word.startswith("--") and "=" in word, f"{unit}: write flags as --flag=value ({word})"
        k, v = word.split("=", 1)
        out[k] = v
    return out


def config(bundle, path: str) -> dict:
    return next(d for d in yaml.safe_load_all(bundle.files[path].content) if d)


def valid_elements(value: str, allowed: set[str]) -> bool:
    """kube-bench's `op: valid_elements` (check/test.go: splitAndRemoveLastSeparator, then
    allElementsValid): the trailing comma dropped, a non-empty list, every element allowed."""
    elements = [e.strip() for e in value.strip().rstrip(",").split(",")] if value.strip().rstrip(",") else []
    return bool(elements) and all(e in allowed for e in elements)


def test_valid_elements_reads_as_kube_bench_does():
    assert valid_elements("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,", CIS_CIPHERS)
    assert not valid_elements("", CIS_CIPHERS)  # the field absent: kube-bench fails the check
    assert not valid_elements("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,TLS_RSA_WITH_AES_128_CBC_SHA,", CIS_CIPHERS)


def test_etcd_2_x(single):
    f = flags(single, "etcd")
    assert f["--cert-file"] and f["--key-file"]  # 2.1
    assert f["--client-cert-auth"] == "true"  # 2.2
    assert f.get("--auto-tls", "false") == "false"  # 2.3
    assert f["--peer-cert-file"] and f["--peer-key-file"]  # 2.4
    assert f["--peer-client-cert-auth"] == "true"  # 2.5
    assert f.get("--peer-auto-tls", "false") == "false"  # 2.6
    assert f["--trusted-ca-file"] != "/etc/kubernetes/pki/ca.crt"  # 2.7: a CA for etcd only


def test_etcd_data_dir_1_1_11_and_1_1_12(single):
    tmpfiles = single.files["/etc/tmpfiles.d/hardway-etcd.conf"].content.decode()
    assert "d /var/lib/etcd 0700 etcd etcd" in tmpfiles
    assert "User=etcd" in single.files["/etc/systemd/system/etcd.service"].content.decode()


def test_apiserver_1_2_x(single):
    f = flags(single, "kube-apiserver")
    assert f["--anonymous-auth"] == "false"  # 1.2.1
    assert "--token-auth-file" not in f  # 1.2.2
    assert f.get("--kubelet-https", "true") == "true"  # 1.2.3
    assert f["--kubelet-client-certificate"] and f["--kubelet-client-key"]  # 1.2.4
    assert f["--kubelet-certificate-authority"]  # 1.2.5
    modes = f["--authorization-mode"].split(",")
    assert "AlwaysAllow" not in modes and "Node" in modes and "RBAC" in modes  # 1.2.6-8
    assert "AlwaysAdmit" not in f.get("--enable-admission-plugins", "")  # 1.2.10
    disabled = f.get("--disable-admission-plugins", "")
    assert "ServiceAccount" not in disabled and "NamespaceLifecycle" not in disabled  # 1.2.13-14
    assert "NodeRestriction" in f["--enable-admission-plugins"]  # 1.2.16
    assert "--insecure-bind-address" not in f  # 1.2.17
    assert f["--insecure-port"] == "0"  # 1.2.18
    assert int(f["--secure-port"]) > 0  # 1.2.19
    assert f["--profiling"] == "false"  # 1.2.20
    assert f["--audit-log-path"]  # 1.2.21
    assert int(f["--audit-log-maxage"]) >= 30  # 1.2.22
    assert int(f["--audit-log-maxbackup"]) >= 10  # 1.2.23
    assert int(f["--audit-log-maxsize"]) >= 100  # 1.2.24
    assert f.get("--service-account-lookup", "true") == "true"  # 1.2.26
    assert f["--service-account-key-file"]  # 1.2.27
    assert f["--etcd-certfile"] and f["--etcd-keyfile"]  # 1.2.28
    assert f["--tls-cert-file"] and f["--tls-private-key-file"]  # 1.2.29
    assert f["--client-ca-file"]  # 1.2.30
    assert f["--etcd-cafile"]  # 1.2.31
    assert f["--encryption-provider-config"]  # 1.2.32
    assert valid_elements(f["--tls-cipher-suites"], CIS_CIPHERS)  # 1.2.34
    assert f["--audit-policy-file"]  # 3.2.1


def test_encryption_provider_first_1_2_33(single):
    text = single.files["/etc/kubernetes/encryption-config.yaml"].content.decode()
    after = text.split("providers:\n", 1)[1].splitlines()[0].strip()
    assert after in ("- aescbc:", "- kms:", "- secretbox:")


def test_controller_manager_1_3_x(single):
    f = flags(single, "kube-controller-manager")
    assert f["--terminated-pod-gc-threshold"]  # 1.3.1
    assert f["--profiling"] == "false"  # 1.3.2
    assert f["--use-service-account-credentials"] == "true"  # 1.3.3
    assert f["--service-account-private-key-file"]  # 1.3.4
    assert f["--root-ca-file"]  # 1.3.5
    assert "RotateKubeletServerCertificate=false" not in f.get("--feature-gates", "")  # 1.3.6
    assert f["--bind-address"] == "127.0.0.1"  # 1.3.7


def test_scheduler_1_4_x(single):
    f = flags(single, "kube-scheduler")
    assert f["--profiling"] == "false"  # 1.4.1
    if "--config" in f:  # from 1.23 the scheduler runs from its config file, which must agree
        assert config(single, f["--config"])["enableProfiling"] is False
    assert f["--bind-address"] == "127.0.0.1"  # 1.4.2


def test_kubelet_4_2_x(single):
    f = flags(single, "kubelet")
    assert f["--config"] == "/var/lib/kubelet/config.yaml"  # where kube-bench looks ($kubeletconf)
    c = config(single, "/var/lib/kubelet/config.yaml")
    assert c["authentication"]["anonymous"]["enabled"] is False  # 4.2.1
    assert c["authorization"]["mode"] == "Webhook"  # 4.2.2
    assert c["authentication"]["x509"]["clientCAFile"]  # 4.2.3
    assert c.get("readOnlyPort", 0) == 0  # 4.2.4
    assert c.get("streamingConnectionIdleTimeout") not in ("0", "0s")  # 4.2.5
    assert c["protectKernelDefaults"] is True  # 4.2.6
    assert c.get("makeIPTablesUtilChains", True) is True  # 4.2.7
    assert c["tlsCertFile"] and c["tlsPrivateKeyFile"]  # 4.2.10
    assert c["rotateCertificates"] is True  # 4.2.11
    assert c.get("featureGates", {}).get("RotateKubeletServerCertificate", True) is True  # 4.2.12
    # 4.2.13, read as kube-bench reads the config: path '{range .tlsCipherSuites[:]}{}{','}{end}'
    assert valid_elements("".join(f"{s}," for s in c.get("tlsCipherSuites", [])), CIS_CIPHERS)
    # Not a CIS check; the apiserver's floor (--tls-min-version), so no TLS 1.0/1.1 client.
    assert c["tlsMinVersion"] == "VersionTLS12"
    api = flags(single, "kube-apiserver")
    assert c["tlsCipherSuites"] == api["--tls-cipher-suites"].split(",")  # one policy
    assert c["tlsMinVersion"] == api["--tls-min-version"]


def test_file_permissions_1_1_x_and_4_1_x(single):
    for path, f in single.files.items():
        mode, owner = f.mode, f.owner
        if path.startswith("/etc/systemd/system/"):
            assert mode & ~0o644 == 0 and owner == "root:root", path  # 1.1.1-6, 4.1.1-2
        if path.startswith("/etc/kubernetes/pki/"):
            assert owner == "root:root", path  # 1.1.19
            if path.endswith(".crt"):
                assert mode & ~0o644 == 0, path  # 1.1.20
            if path.endswith(".key"):
                assert mode & ~0o600 == 0, path  # 1.1.21
        if path in ("/etc/kubernetes/scheduler.conf", "/etc/kubernetes/controller-manager.conf",
                    "/etc/kubernetes/kubelet.conf", "/etc/kubernetes/proxy.conf",
                    "/var/lib/kubelet/config.yaml"):
            assert mode & ~0o644 == 0 and owner == "root:root", path  # 1.1.15-18, 4.1.3-6, 4.1.9-10
        if path.startswith("/etc/cni/net.d/"):
            assert mode & ~0o644 == 0 and owner == "root:root", path  # 1.1.9-10
    assert all(re.match(r"^/etc/kubernetes/pki/.*\.(crt|key|pub)$", p)
               for p in single.files if p.startswith("/etc/kubernetes/pki/")), "kube-bench matches *.crt/*.key"
