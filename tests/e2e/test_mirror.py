"""The offline mirror built from Debian, for real: upstream layouts, checksums, programs that
run, images whose programs run, and a second build that reuses the cache and writes nothing.

Needs Debian (apt, a deb-src entry, golang-go, rsync, build-essential) the first time; the
Kubernetes build (about 6.5 min on 2 cores) is cached under $HARDWAY_CACHE (~/.cache/hardway).
"""

from __future__ import annotations

import filecmp
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import time
import urllib.request
from pathlib import Path

import pytest

from hardway.artifacts import layout
from hardway.artifacts.cache import sha256_file
from hardway.artifacts.mirror import (
    MANIFEST, PAUSE_IMAGE_NAME, PAUSE_IMAGE_REF, WEB_IMAGE_NAME, WEB_IMAGE_REF, WEB_INDEX,
)
from tests.helpers import E2E_TIMEOUT, require
from tests.mirror_fixture import kubernetes_cache, last_build, mirror  # noqa: F401 (fixture)

# Generous: on a fresh 2-core machine the first test to need them builds the mirror
# (Kubernetes from source, ~7 min) and the lab image, before any cluster comes up.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(E2E_TIMEOUT)]


def _versions(root: Path) -> dict[str, str]:
    return {k: v["version"] for k, v in json.loads((root / MANIFEST).read_text())["artifacts"].items() if "version" in v}


def _downloads(root: Path) -> list[layout.Download]:
    v = _versions(root)
    return layout.downloads_for(v["kubernetes"], v["etcd"], v["containerd"], v["runc"], v["cni-plugins"],
                                [PAUSE_IMAGE_NAME, WEB_IMAGE_NAME])


def _run(*cmd: str | Path, env: dict | None = None) -> str:
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=60,
                       env={**os.environ, **(env or {})})
    return p.stdout + p.stderr


def test_layout_checksums_and_versions(mirror):  # noqa: F811
    result, seconds = last_build()
    print(f"mirror build: {seconds:.1f} s, Kubernetes {'cached' if result.kubernetes.cached else 'built'}; "
          f"wrote {len(result.written)}, unchanged {len(result.unchanged)}", file=sys.stderr)
    v = _versions(mirror)
    assert v == {"kubernetes": "1.20.2", "etcd": "3.4.23", "containerd": "1.6.20", "runc": "1.1.5", "cni-plugins": "1.1.1",
                 "kubernetes-test": "1.20.2"}
    for d in _downloads(mirror):
        f = mirror / d.path
        assert f.is_file(), d.path
        published = layout.expected_digest((mirror / d.checksum_path).read_text(), d.filename)
        assert sha256_file(f) == published, d.path
    # dl.k8s.io publishes a bare digest
    kubelet = layout.kubernetes_binary("1.20.2", "kubelet")
    assert (mirror / kubelet.checksum_path).read_text() == sha256_file(mirror / kubelet.path)
    manifest = json.loads((mirror / MANIFEST).read_text())
    assert set(manifest["files"]) == {p.relative_to(mirror).as_posix() for p in mirror.rglob("*")
                                      if p.is_file() and p.name != MANIFEST}


def test_archives_have_the_upstream_inner_layout(mirror):  # noqa: F811
    v = _versions(mirror)
    with tarfile.open(mirror / layout.etcd(v["etcd"]).path) as t:
        assert t.getnames() == ["etcd-v3.4.23-linux-amd64", "etcd-v3.4.23-linux-amd64/README.md",
                                "etcd-v3.4.23-linux-amd64/etcd", "etcd-v3.4.23-linux-amd64/etcdctl"]
    with tarfile.open(mirror / layout.containerd(v["containerd"]).path) as t:
        assert t.getnames() == ["bin"] + [f"bin/{b}" for b in layout.CONTAINERD_BINARIES]
        assert all(m.mode == 0o755 and m.uid == 0 and m.mtime == 0 for m in t.getmembers())
    with tarfile.open(mirror / layout.cni_plugins(v["cni-plugins"]).path) as t:
        assert t.getnames() == ["."] + [f"./{p}" for p in layout.CNI_PLUGINS]


def test_programs_run_and_report_their_versions(mirror, tmp_path):  # noqa: F811
    k8s = mirror / "dl.k8s.io/release/v1.20.2/bin/linux/amd64"
    assert "v1.20.2" in _run(k8s / "kubectl", "version", "--client", "--short")
    for b in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy"):
        assert "Kubernetes v1.20.2" in _run(k8s / b, "--version"), b
    runc = mirror / layout.runc("1.1.5").path
    assert "runc version 1.1.5" in _run(runc, "--version")
    for d in (layout.etcd("3.4.23"), layout.containerd("1.6.20"), layout.cni_plugins("1.1.1")):
        with tarfile.open(mirror / d.path) as t:
            t.extractall(tmp_path / d.key, filter="data")
    etcd_dir = tmp_path / "etcd" / "etcd-v3.4.23-linux-amd64"
    assert "etcd Version: 3.4.23" in _run(etcd_dir / "etcd", "--version")
    assert "3.4.23" in _run(etcd_dir / "etcdctl", "version")
    assert "1.6.20" in _run(tmp_path / "containerd" / "bin" / "containerd", "--version")
    out = _run(tmp_path / "cni-plugins" / "bridge", env={"CNI_COMMAND": "VERSION"})
    assert json.loads(out)["cniVersion"] == "1.0.0"


def _image(mirror_dir: Path, name: str, dest: Path) -> tuple[dict, dict]:
    """Unpack an OCI layout tarball: (index, config); the single layer goes into dest/rootfs."""
    dest.mkdir()
    with tarfile.open(mirror_dir / "images" / f"{name}.tar") as t:
        t.extractall(dest, filter="data")
    index = json.loads((dest / "index.json").read_text())
    blob = lambda digest: dest / "blobs" / "sha256" / digest.split(":")[1]  # noqa: E731
    manifest = json.loads(blob(index["manifests"][0]["digest"]).read_text())
    config = json.loads(blob(manifest["config"]["digest"]).read_text())
    with tarfile.open(blob(manifest["layers"][0]["digest"])) as layer:
        layer.extractall(dest / "rootfs", filter="fully_trusted")
    return index, config


def test_pause_image(mirror, tmp_path):  # noqa: F811
    index, config = _image(mirror, PAUSE_IMAGE_NAME, tmp_path / "pause")
    assert PAUSE_IMAGE_REF == "registry.k8s.io/pause:3.2"
    assert index["manifests"][0]["annotations"]["io.containerd.image.name"] == PAUSE_IMAGE_REF
    assert config["config"]["Entrypoint"] == ["/pause"]
    pause = tmp_path / "pause" / "rootfs" / "pause"
    assert "v3.2" in _run(pause, "-v")


def test_web_image_serves_its_page(mirror, tmp_path):  # noqa: F811
    index, config = _image(mirror, WEB_IMAGE_NAME, tmp_path / "web")
    assert index["manifests"][0]["annotations"]["io.containerd.image.name"] == WEB_IMAGE_REF
    assert config["config"]["Entrypoint"] == ["/bin/busybox"]
    assert config["config"]["Cmd"] == ["httpd", "-f", "-p", "8080", "-h", "/www"]
    rootfs = tmp_path / "web" / "rootfs"
    assert os.readlink(rootfs / "bin" / "sh") == "busybox"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    httpd = subprocess.Popen([rootfs / "bin" / "busybox", "httpd", "-f", "-p", f"127.0.0.1:{port}",
                              "-h", rootfs / "www"])
    try:
        for _ in range(50):
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).read()
                break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail("busybox httpd from the image did not answer")
        assert body == WEB_INDEX
    finally:
        httpd.terminate()
        httpd.wait(timeout=10)


def test_second_build_reuses_the_cache_and_is_identical(mirror, tmp_path):  # noqa: F811
    stamp = kubernetes_cache() / "build.json"
    before = stamp.stat().st_mtime_ns
    dest = tmp_path / "again"
    cmd = [sys.executable, "-m", "hardway", "artifacts", "mirror", "build", str(dest), "--from-debian", "--conformance"]
    t = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    fresh_seconds = time.monotonic() - t
    assert r.returncode == 0, r.stderr
    assert "reused the cached build" in r.stdout and "0 made" in r.stdout, r.stdout
    assert "reusing the build of Debian source" in r.stderr
    assert stamp.stat().st_mtime_ns == before  # nothing rebuilt
    files = sorted(p.relative_to(mirror) for p in mirror.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(dest) for p in dest.rglob("*") if p.is_file())
    _, mismatch, errors = filecmp.cmpfiles(mirror, dest, [str(f) for f in files], shallow=False)
    assert mismatch == [] and errors == []
    # and once more in place: nothing written
    t = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    warm_seconds = time.monotonic() - t
    assert r.returncode == 0 and "0 file(s) written" in r.stdout, r.stdout
    print(f"mirror build into a new dir (cache warm): {fresh_seconds:.1f} s; re-run in place: {warm_seconds:.1f} s",
          file=sys.stderr)
    shutil.rmtree(dest)  # 0.5 GB


# ---------------------------------------------------------------------------------------------
# what `verify --conformance` takes from the mirror


def test_kubernetes_build_replaces_the_vendored_reflect2(mirror):  # noqa: F811
    meta = json.loads((kubernetes_cache() / "build.json").read_text())
    assert meta["fixes"]["github.com/modern-go/reflect2"].startswith("v1.0.1 -> v1.0.2 (Debian golang-github-modern-go-reflect2-dev")
    prov = json.loads((mirror / MANIFEST).read_text())["artifacts"]["kubernetes"]
    assert "github.com/modern-go/reflect2" in prov["vendored modules replaced"]


def test_kubernetes_test_tarball_holds_e2e_test_and_ginkgo_that_run(mirror, tmp_path):  # noqa: F811
    d = layout.kubernetes_test("1.20.2")
    assert (mirror / d.checksum_path).read_text() == sha256_file(mirror / d.path)
    with tarfile.open(mirror / d.path) as t:
        names = t.getnames()
        assert {"kubernetes/test/bin/e2e.test", "kubernetes/test/bin/ginkgo"} <= set(names)
        t.extractall(tmp_path, filter="data")
    bindir = tmp_path / "kubernetes" / "test" / "bin"
    assert "Ginkgo Version" in _run(bindir / "ginkgo", "version")
    # The e2e framework lists every image its tests use: ours must carry exactly those names.
    listed = set(_run(bindir / "e2e.test", "--list-images").split())
    from hardway.artifacts.testimages import CONFORMANCE_IMAGES
    ours = {img.ref for img in CONFORMANCE_IMAGES["1.20"]}
    assert ours <= listed, f"images e2e.test does not know: {sorted(ours - listed)}"


def _chroot(root: Path, *cmd: str) -> subprocess.CompletedProcess:
    """`cmd` in the image's root, with the image's PATH (as a container gets it)."""
    from hardway.artifacts.testimages import PATH_ENV
    return subprocess.run(["chroot", str(root), *cmd], capture_output=True, text=True, timeout=60,
                          env={"PATH": PATH_ENV.split("=", 1)[1]})


def test_test_images_are_named_as_the_e2e_framework_names_them_and_their_programs_run(mirror, tmp_path):  # noqa: F811
    from hardway.artifacts.testimages import CONFORMANCE_IMAGES
    require(os.geteuid() == 0, "running the images' programs needs chroot, hence root")
    seen = {}
    for img in CONFORMANCE_IMAGES["1.20"]:
        if img.name in seen:
            continue
        index, config = _image(mirror, img.name, tmp_path / img.name)
        assert index["manifests"][0]["annotations"]["io.containerd.image.name"] == img.ref
        seen[img.name] = (config, tmp_path / img.name / "rootfs")
    agn_config, agn = seen["e2e-agnhost-2.21"]
    assert agn_config["config"]["Entrypoint"] == ["/agnhost"] and agn_config["config"]["Cmd"] == ["pause"]
    assert os.readlink(agn / "agnhost-2") == "agnhost"
    for cmd in (["/agnhost", "--help"], ["/usr/bin/curl", "--version"], ["/bin/nc", "-h"], ["/usr/bin/dig", "-v"],
                ["/bin/ip", "-V"], ["/bin/ss", "-V"], ["/usr/bin/iperf", "--version"], ["/bin/bash", "-c", "echo ok"],
                ["/bin/sh", "-c", "ls / && cat /etc/passwd"]):
        r = _chroot(agn, *cmd)
        assert r.returncode in (0, 1) and "not found" not in r.stderr and "No such file" not in r.stderr, (cmd, r)
    assert "netexec" in _chroot(agn, "/agnhost", "--help").stdout
    # What the tests run by name finds the real programs first on PATH, not busybox applets
    # (netcat-openbsd's -u/-z, iproute2's ss/ip).
    # `sh -c` as the tests run it: /bin/sh must look on PATH (Debian's busybox ash would run its
    # own applets first, whatever PATH says).
    for name, real in (("nc", "/bin/nc.openbsd"), ("ip", "/bin/ip"), ("curl", "/usr/bin/curl"), ("sh", "/bin/dash")):
        found = _chroot(agn, "/bin/bash", "-c", f"readlink -f $(type -P {name})").stdout.strip()
        assert found == real, f"{name} resolves to {found}, not {real}"
    udp = _chroot(agn, "/bin/sh", "-c", "nc -h 2>&1 | head -3; echo x | nc -w 1 -u 127.0.0.1 9; echo rc=$?")
    assert "OpenBSD netcat" in udp.stdout and "invalid option" not in udp.stdout, udp
    _, box = seen["e2e-busybox-1.29"]
    assert _chroot(box, "/bin/sh", "-c", "echo $((6*7)) && id -u && wget --help 2>&1 | head -1").stdout.startswith("42\n0\n")
    for name, root in (("e2e-httpd-2.4.38-alpine", "usr/local/apache2/htdocs"), ("e2e-nginx-1.14-alpine", "usr/share/nginx/html")):
        config, fs = seen[name]
        assert (fs / root / "index.html").is_file() and config["config"]["Cmd"]
        assert _chroot(fs, "/bin/sh", "-n", "/" + {"e2e-httpd-2.4.38-alpine": "usr/local/bin/httpd-foreground",
                                                     "e2e-nginx-1.14-alpine": "usr/sbin/nginx"}[name]).returncode == 0
    _, nnp = seen["e2e-nonewprivs-1.0"]
    assert (nnp / "usr/local/bin/nnp").stat().st_mode & 0o4000, "nnp must be setuid, as upstream's"
    assert seen["e2e-nonroot-1.0"][0]["config"]["User"] == "1234"
    _, etcd = seen["e2e-etcd-3.4.13-0"]
    assert "etcd Version: 3.4.23" in _chroot(etcd, "/usr/local/bin/etcd", "--version").stdout
    _, sample = seen["e2e-sample-apiserver-1.17"]
    assert "--etcd-servers" in _chroot(sample, "/sample-apiserver", "--help").stdout
    for name in ("e2e-kitten-1.0", "e2e-nautilus-1.0"):
        config, fs = seen[name]
        assert config["config"]["Cmd"] == ["test-webserver"] and (fs / "data.json").is_file()
