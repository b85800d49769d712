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
from tests.helpers import E2E_TIMEOUT
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
    assert v == {"kubernetes": "1.20.2", "etcd": "3.4.23", "containerd": "1.6.20", "runc": "1.1.5", "cni-plugins": "1.1.1"}
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
    cmd = [sys.executable, "-m", "hardway", "artifacts", "mirror", "build", str(dest), "--from-debian"]
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
