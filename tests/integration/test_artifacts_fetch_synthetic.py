"""Artifacts without Debian: layout, checksum files, and fetch/serve against a small mirror
made here (tiny stand-in files in the real layout). Runs anywhere; traffic only to 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from hardway.artifacts import layout
from hardway.artifacts.cache import cache_dir
from hardway.artifacts.fetch import Source, Store, fetch, fetch_for_spec
from hardway.artifacts.layout import ChecksumFormatError, expected_digest, parse_checksums
from hardway.artifacts.serve import serving
from hardway.errors import OperationError, SpecError, UsageError
from tests.fake_mirror import fake_mirror
from tests.specs import make_spec

H1 = "a" * 64
H2 = "b" * 64


# ---------------------------------------------------------------------------------------------
# layout and checksum files (pure)


def test_upstream_paths_match_the_release_sites():
    assert layout.kubernetes_binary("1.20.2", "kube-apiserver").upstream_url == \
        "https://dl.k8s.io/release/v1.20.2/bin/linux/amd64/kube-apiserver"
    assert layout.kubernetes_binary("v1.20.2", "kubelet").checksum_path == \
        "dl.k8s.io/release/v1.20.2/bin/linux/amd64/kubelet.sha256"
    e = layout.etcd("3.4.23")
    assert e.upstream_url == "https://github.com/etcd-io/etcd/releases/download/v3.4.23/etcd-v3.4.23-linux-amd64.tar.gz"
    assert e.checksum_path == "github.com/etcd-io/etcd/releases/download/v3.4.23/SHA256SUMS"
    assert e.member("etcdctl") == "etcd-v3.4.23-linux-amd64/etcdctl"
    c = layout.containerd("1.6.20")
    assert c.path == "github.com/containerd/containerd/releases/download/v1.6.20/containerd-1.6.20-linux-amd64.tar.gz"
    assert c.checksum_path == c.path + ".sha256sum" and c.member("containerd-shim-runc-v2") == "bin/containerd-shim-runc-v2"
    r = layout.runc("1.1.5")
    assert r.path == "github.com/opencontainers/runc/releases/download/v1.1.5/runc.amd64"
    assert r.checksum_path == "github.com/opencontainers/runc/releases/download/v1.1.5/runc.sha256sum"
    n = layout.cni_plugins("1.1.1")
    assert n.path == "github.com/containernetworking/plugins/releases/download/v1.1.1/cni-plugins-linux-amd64-v1.1.1.tgz"
    assert n.checksum_path == n.path + ".sha256" and n.member("bridge") == "./bridge"
    assert layout.image("web-1.0").path == "images/web-1.0.tar"
    with pytest.raises(KeyError, match="has no 'kubelet'"):
        e.member("kubelet")


def test_downloads_for_spec_follow_the_spec():
    spec = make_spec(edit=lambda d: d.setdefault("artifacts", {}).update(
        images=["pause-3.2", "./local/web.tar"], versions={"etcd": "3.5.9"}))
    keys = {d.key: d for d in layout.downloads_for_spec(spec)}
    assert {f"kubernetes-server/{b}" for b in layout.KUBERNETES_BINARIES} < set(keys)
    assert {"etcd", "containerd", "runc", "cni-plugins", "image/pause-3.2"} < set(keys)
    assert "image/./local/web.tar" not in keys  # a path entry is not fetched
    assert keys["etcd"].filename == "etcd-v3.5.9-linux-amd64.tar.gz"
    assert f"/v{spec.kubernetes.version}/" in keys["kubernetes-server/kubelet"].path


def test_source_urls():
    rel = "dl.k8s.io/release/v1.20.2/bin/linux/amd64/kubelet"
    assert Source(None).url(rel) == "https://" + rel
    assert Source("http://127.0.0.1:8080/mirror/").url(rel) == "http://127.0.0.1:8080/mirror/" + rel
    assert Source("http://127.0.0.1:8080").url(rel) == "http://127.0.0.1:8080/" + rel


def test_source_directory_relative_to_cluster_dir(tmp_path):
    (tmp_path / "m").mkdir()
    assert Source("m", tmp_path).url("x/y") == (tmp_path / "m" / "x" / "y").as_uri()
    assert Source(f"file://{tmp_path}/m").dir == (tmp_path / "m").resolve()
    with pytest.raises(UsageError, match="not a directory"):
        Source("nope", tmp_path)


@pytest.mark.parametrize("text, name, want", [
    (H1, "kubelet", H1),  # dl.k8s.io: a bare digest, no newline
    (H1 + "\n", "anything", H1),
    (f"{H1}  etcd-v3.4.23-linux-amd64.tar.gz\n{H2}  etcd-v3.4.23-darwin-amd64.zip\n", "etcd-v3.4.23-linux-amd64.tar.gz", H1),
    (f"{H2}  runc.arm64\n{H1} *runc.amd64\n", "runc.amd64", H1),  # binary-mode star
    (f"{H1}  ./release/cni.tgz\n", "cni.tgz", H1),
    (f"SHA256 (containerd.tar.gz) = {H1.upper()}\n", "containerd.tar.gz", H1),
    (f"# comment\n\n{H1}  f\n", "f", H1),
])
def test_checksum_files(text, name, want):
    assert expected_digest(text, name) == want


@pytest.mark.parametrize("text, error", [
    ("", "no sha256 digest"),
    ("not-a-digest  file\n", "not a sha256 digest"),
    ("abc123  file\n", "not a sha256 digest"),
    (f"{H1}  f\n{H2}  f\n", "two different digests"),
    ("<html>404 Not Found</html>", "not a sha256 digest"),
])
def test_bad_checksum_files(text, error):
    with pytest.raises(ChecksumFormatError, match=error):
        parse_checksums(text)


def test_checksum_file_without_the_file():
    with pytest.raises(ChecksumFormatError, match="lists no digest for runc.amd64"):
        expected_digest(f"{H1}  runc.arm64\n", "runc.amd64")


# ---------------------------------------------------------------------------------------------
# a small mirror


@pytest.fixture
def small(tmp_path):
    spec = make_spec(edit=lambda d: d.setdefault("artifacts", {}).update(images=["web-1.0"]))
    root = tmp_path / "mirror"
    contents = fake_mirror(root, spec)
    return spec, root, contents, Store(tmp_path / "cache")


def test_fetch_from_directory_verifies_caches_and_reuses(small, tmp_path):
    spec, root, contents, store = small
    lines: list[str] = []
    r = fetch_for_spec(spec, tmp_path, lines.append, store, mirror=str(root))
    assert sorted(r.downloaded) == sorted(contents) and r.reused == []
    for key, data in contents.items():
        assert r[key].read_bytes() == data
        assert r[key] == store.blob(hashlib.sha256(data).hexdigest())
    assert any("sha256 verified" in line for line in lines)
    # programs out of archives and plain binaries, as render.Binary names them
    kubelet = r.binary("kubernetes-server", "kubelet")
    assert os.access(kubelet, os.X_OK)
    etcdctl = r.binary("etcd", "etcdctl")
    assert subprocess.run([etcdctl], capture_output=True, text=True).stdout == "etcdctl etcd\n"
    assert r.binary("cni-plugins", "bridge").read_text().startswith("#!/bin/sh\necho bridge")
    assert r.binary("containerd", "ctr").parent.name == r["containerd"].name
    assert os.access(r.binary("runc", "runc"), os.X_OK)
    with pytest.raises(KeyError):
        r.binary("etcd", "kubelet")

    again = fetch_for_spec(spec, tmp_path, lines.append, store, mirror=str(root))
    assert again.downloaded == [] and sorted(again.reused) == sorted(contents)
    assert dict(again) == dict(r)


def test_fetch_over_http_then_nothing_downloaded(small, tmp_path):
    spec, root, contents, store = small
    requests: list[str] = []
    with serving(root, log=requests.append) as url:
        assert url.startswith("http://127.0.0.1:")
        r = fetch_for_spec(spec, tmp_path, store=store, mirror=url)
        assert sorted(r.downloaded) == sorted(contents)
        n = len(requests)
        again = fetch_for_spec(spec, tmp_path, store=store, mirror=url)
        assert again.downloaded == [] and len(requests) == n  # not one request
    assert store.index()[f"{url}/{layout.image('web-1.0').path}"]["sha256"] == \
        hashlib.sha256(contents["image/web-1.0"]).hexdigest()


def test_tampered_file_is_refused_and_not_cached(small, tmp_path):
    spec, root, contents, store = small
    d = layout.runc(spec.artifacts.versions.runc)
    bad = bytearray((root / d.path).read_bytes())
    bad[3] ^= 0x01
    (root / d.path).write_bytes(bytes(bad))
    bad_digest = hashlib.sha256(bad).hexdigest()
    with serving(root) as url, pytest.raises(OperationError) as e:
        fetch_for_spec(spec, tmp_path, store=store, mirror=url)
    msg = str(e.value)
    assert "1 of" in msg and "checksum mismatch" in msg and url + "/" + d.path in msg
    assert hashlib.sha256(contents["runc"]).hexdigest() in msg and bad_digest in msg
    assert "NOT cached" in msg
    assert not store.blob(bad_digest).exists()
    assert not any(k.endswith("runc.amd64") for k in store.index())
    assert list((store.root / "tmp").iterdir()) == []  # no half-downloaded leftovers
    # everything else was fetched and cached
    assert any(k.endswith("kubelet") for k in store.index())


def test_missing_file_and_bad_checksum_file(small, tmp_path):
    spec, root, _contents, store = small
    (root / layout.cni_plugins(spec.artifacts.versions.cni_plugins).path).unlink()
    (root / layout.etcd(spec.artifacts.versions.etcd).checksum_path).write_text("<html>oops</html>")
    with serving(root) as url, pytest.raises(OperationError) as e:
        fetch_for_spec(spec, tmp_path, store=store, mirror=url)
    msg = str(e.value)
    assert "2 of" in msg and "HTTP 404" in msg and "cni-plugins" in msg
    assert "etcd: checksum file" in msg and "SHA256SUMS" in msg


def test_local_mirror_rebuilt_is_followed_once_the_lock_is_updated(small, tmp_path):
    spec, root, _contents, store = small
    fetch_for_spec(spec, tmp_path, store=store, mirror=str(root))
    d = layout.kubernetes_binary(spec.kubernetes.version, "kubelet")
    new = b"#!/bin/sh\necho new kubelet\n"
    (root / d.path).write_bytes(new)
    (root / d.checksum_path).write_text(hashlib.sha256(new).hexdigest())
    with pytest.raises(OperationError, match="--update-lock"):
        fetch_for_spec(spec, tmp_path, store=store, mirror=str(root))
    r = fetch_for_spec(spec, tmp_path, store=store, mirror=str(root), update_lock=True)
    assert r.downloaded == ["kubernetes-server/kubelet"] and r["kubernetes-server/kubelet"].read_bytes() == new
    assert _lock(tmp_path)["kubernetes-server/kubelet"]["sha256"] == hashlib.sha256(new).hexdigest()


# ---------------------------------------------------------------------------------------------
# trust beyond the mirror: the cluster's lock file and the spec's pinned digests


def _lock(cluster: Path) -> dict:
    return json.loads((cluster / "artifacts.lock").read_text())["artifacts"]


def _replace_consistently(root: Path, d: layout.Download, data: bytes) -> str:
    """What a hostile mirror does: new bytes, and a checksum file that agrees with them."""
    (root / d.path).write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    sums = (root / d.checksum_path).read_text().splitlines()
    (root / d.checksum_path).write_text("".join(
        layout.sha256sum_line(digest, d.filename) if line.endswith(d.filename) else line + "\n" for line in sums))
    return digest


def test_first_fetch_writes_the_lock_and_the_next_one_reads_it(small, tmp_path):
    spec, root, contents, store = small
    fetch_for_spec(spec, tmp_path, store=store, mirror=str(root))
    text = (tmp_path / "artifacts.lock").read_text()
    lock = _lock(tmp_path)
    assert list(lock) == sorted(contents)  # every artifact, sorted: reviewable like code
    paths = {d.key: d.path for d in layout.downloads_for_spec(spec)}
    for key, data in contents.items():
        assert lock[key] == {"path": paths[key], "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
        assert sum(key in line for line in text.splitlines()) == 1  # one line per artifact
    # A second fetch from the same mirror agrees and leaves the file alone.
    before = (tmp_path / "artifacts.lock").stat().st_mtime_ns
    fetch_for_spec(spec, tmp_path, store=store, mirror=str(root))
    assert (tmp_path / "artifacts.lock").stat().st_mtime_ns == before
    # ...and it is read: a recorded digest that the (unchanged) mirror does not offer is refused.
    (tmp_path / "artifacts.lock").write_text(text.replace(lock["etcd"]["sha256"], H1))
    with pytest.raises(OperationError) as e:
        fetch_for_spec(spec, tmp_path, store=store, mirror=str(root))
    assert "1 of" in str(e.value) and "etcd:" in str(e.value) and H1 in str(e.value)


@pytest.mark.parametrize("text", ["not json", '{"artifacts": {"etcd": {"path": "x"}}}', "[]"])
def test_a_damaged_lock_is_a_clear_error_not_a_fresh_start(small, tmp_path, text):
    spec, root, _contents, store = small
    (tmp_path / "artifacts.lock").write_text(text)
    with pytest.raises(UsageError) as e:  # silently starting over would accept any bytes
        fetch_for_spec(spec, tmp_path, store=store, mirror=str(root))
    assert str(tmp_path / "artifacts.lock") in str(e.value) and "restore it" in str(e.value)
    assert (tmp_path / "artifacts.lock").read_text() == text


def test_hostile_mirror_with_matching_checksum_file_is_refused(small, tmp_path):
    spec, root, contents, _store = small
    with serving(root) as url:
        fetch_for_spec(spec, tmp_path, store=Store(tmp_path / "cache-1"), mirror=url)
    d = layout.runc(spec.artifacts.versions.runc)
    recorded = hashlib.sha256(contents["runc"]).hexdigest()
    offered = _replace_consistently(root, d, b"#!/bin/sh\necho owned\n")
    lock_text = (tmp_path / "artifacts.lock").read_text()
    fresh = Store(tmp_path / "cache-2")  # another machine, or a cleared cache: nothing to fall back on
    with serving(root) as url, pytest.raises(OperationError) as e:
        fetch_for_spec(spec, tmp_path, store=fresh, mirror=url)
    msg = str(e.value)
    assert "1 of" in msg and "runc:" in msg and recorded in msg and offered in msg
    assert "artifacts fetch --update-lock" in msg and str(tmp_path / "artifacts.lock") in msg
    assert not fresh.blob(offered).exists()  # refused before the transfer
    assert (tmp_path / "artifacts.lock").read_text() == lock_text
    # A deliberate change: accepted with --update-lock, and the lock now says so.
    with serving(root) as url:
        r = fetch_for_spec(spec, tmp_path, store=fresh, mirror=url, update_lock=True)
    assert r["runc"] == fresh.blob(offered) and _lock(tmp_path)["runc"]["sha256"] == offered


def _pin(**digests):
    return lambda data: data.setdefault("artifacts", {}).update(images=["web-1.0"], digests=digests)


def test_pinned_digests_overrule_the_mirror_and_the_lock(small, tmp_path):
    spec, root, contents, store = small
    kubelet = hashlib.sha256(contents["kubernetes-server/kubelet"]).hexdigest()
    pinned = make_spec(edit=_pin(**{"kubernetes-server/kubelet": f"sha256:{kubelet.upper()}"}))
    assert pinned.artifacts.digests == {"kubernetes-server/kubelet": f"sha256:{kubelet}"}
    fetch_for_spec(pinned, tmp_path / "a", store=store, mirror=str(root))  # agrees: fetched
    # A pin that the checksum file does not confirm is refused, though file and checksum agree.
    wrong = make_spec(edit=_pin(**{"kubernetes-server/kubelet": f"sha256:{H1}", "etcd": f"sha256:{H2}"}))
    with pytest.raises(OperationError) as e:
        fetch_for_spec(wrong, tmp_path / "b", store=Store(tmp_path / "fresh"), mirror=str(root))
    msg = str(e.value)
    assert "2 of" in msg and f"pins sha256:{H1}" in msg and kubelet in msg and f"pins sha256:{H2}" in msg
    assert not Store(tmp_path / "fresh").blob(kubelet).exists()
    # A hostile mirror on the very first fetch (no lock yet) is caught by a pin.
    d = layout.etcd(spec.artifacts.versions.etcd)
    etcd = hashlib.sha256(contents["etcd"]).hexdigest()
    _replace_consistently(root, d, b"not etcd")
    with pytest.raises(OperationError, match=f"pins sha256:{etcd}"):
        fetch_for_spec(make_spec(edit=_pin(etcd=f"sha256:{etcd}")), tmp_path / "c", store=store, mirror=str(root))
    # The pin is the user's deliberate word: a pinned change passes the lock, and is recorded.
    offered = hashlib.sha256(b"not etcd").hexdigest()
    with pytest.raises(OperationError, match="--update-lock"):
        fetch_for_spec(spec, tmp_path / "a", store=store, mirror=str(root))
    fetch_for_spec(make_spec(edit=_pin(etcd=f"sha256:{offered}")), tmp_path / "a", store=store, mirror=str(root))
    assert _lock(tmp_path / "a")["etcd"]["sha256"] == offered


@pytest.mark.parametrize("digests, error", [
    ({"etcd": "abc"}, "artifacts.digests.etcd: 'abc' is not a digest like sha256:<64 hex digits>"),
    ({"etcd": H1}, "is not a digest like sha256:"),  # the algorithm is part of the value
    ({"kubernetes-server/kublet": f"sha256:{H1}"}, "did you mean 'kubernetes-server/kubelet'?"),
    ({"image/nope": f"sha256:{H1}"}, "this spec fetches no artifact 'image/nope'"),
])
def test_pins_are_validated(digests, error):
    with pytest.raises(SpecError) as e:
        make_spec(edit=_pin(**digests))
    assert error in str(e.value)


def test_image_paths_are_local_files(tmp_path):
    spec = make_spec(edit=lambda d: d.setdefault("artifacts", {}).update(images=["imgs/app.tar"]))
    root = tmp_path / "mirror"
    fake_mirror(root, spec)
    with pytest.raises(UsageError, match="imgs/app.tar: no such file"):
        fetch_for_spec(spec, tmp_path, store=Store(tmp_path / "c"), mirror=str(root))
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "app.tar").write_bytes(b"x")
    r = fetch_for_spec(spec, tmp_path, store=Store(tmp_path / "c"), mirror=str(root))
    assert r["image/imgs/app.tar"] == tmp_path / "imgs" / "app.tar"


def test_serve_is_loopback_only_and_lists_nothing(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "f").write_text("hi")
    with serving(tmp_path) as url:
        assert urllib.request.urlopen(f"{url}/a/f", timeout=5).read() == b"hi"
        for path in ("/", "/a/", "/../etc/passwd", "/missing"):
            with pytest.raises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(url + path, timeout=5)
            assert e.value.code == 404, path
    with pytest.raises(urllib.error.URLError):  # shut down
        urllib.request.urlopen(f"{url}/a/f", timeout=2)


def test_fetch_api_with_plain_download_list(small, tmp_path):
    spec, root, contents, store = small
    ds = [layout.runc(spec.artifacts.versions.runc)]
    r = fetch(ds, Source(str(root)), store)
    assert list(r) == ["runc"] and r["runc"].read_bytes() == contents["runc"]


def test_cache_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("HARDWAY_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.delenv("HARDWAY_CACHE")
    assert cache_dir() == Path.home() / ".cache" / "hardway"


# ---------------------------------------------------------------------------------------------
# the command


def hw(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hardway", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout)


def test_cli_fetch_twice_and_tampered(small, tmp_path):
    spec, root, contents, _store = small
    cluster = tmp_path / "cluster"
    r = hw("init", str(cluster), "--mirror", str(root))
    assert r.returncode == 0, r.stderr
    text = (cluster / "cluster.yaml").read_text()
    # `init --mirror` preloads pause-3.2 and web-1.0; this synthetic mirror has only web-1.0.
    assert "  images: [pause-3.2, web-1.0]" in text
    (cluster / "cluster.yaml").write_text(text.replace("  images: [pause-3.2, web-1.0]", "  images: [web-1.0]", 1))
    env = {"HARDWAY_CACHE": str(tmp_path / "cli-cache")}
    r = hw("-C", str(cluster), "artifacts", "fetch", env=env)
    assert r.returncode == 0, r.stderr
    assert f"{len(contents)} downloaded and verified, 0 already cached" in r.stdout
    assert "kubernetes-server/kubelet" in r.stdout and "image/web-1.0" in r.stdout
    r = hw("artifacts", "fetch", "-C", str(cluster), env=env)
    assert r.returncode == 0 and f"0 downloaded and verified, {len(contents)} already cached" in r.stdout
    # A tampered mirror, served over HTTP. With the verified copy cached, nothing is even
    # requested (the published digest names content already here), so use an empty cache.
    d = layout.containerd(spec.artifacts.versions.containerd)
    data = bytearray((root / d.path).read_bytes())
    data[-1] ^= 0xFF
    (root / d.path).write_bytes(bytes(data))
    with serving(root) as url:
        r = hw("-C", str(cluster), "artifacts", "fetch", "--mirror", url, env=env)
        assert r.returncode == 0 and f"{len(contents)} already cached" in r.stdout
        fresh = {"HARDWAY_CACHE": str(tmp_path / "fresh-cache")}
        r = hw("-C", str(cluster), "artifacts", "fetch", "--mirror", url, env=fresh)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "checksum mismatch" in r.stderr and d.filename in r.stderr and "NOT cached" in r.stderr
    store = Store(tmp_path / "fresh-cache")
    assert not store.blob(hashlib.sha256(data).hexdigest()).exists()
    assert not store.blob(hashlib.sha256(contents["containerd"]).hexdigest()).exists()
    assert not any(d.filename in u for u in store.index())


def test_cli_refuses_a_changed_artifact_until_the_lock_is_updated(small, tmp_path):
    spec, root, _contents, _store = small
    cluster = tmp_path / "cluster"
    assert hw("init", str(cluster), "--mirror", str(root)).returncode == 0
    text = (cluster / "cluster.yaml").read_text()
    (cluster / "cluster.yaml").write_text(text.replace("  images: [pause-3.2, web-1.0]", "  images: [web-1.0]", 1))
    env = {"HARDWAY_CACHE": str(tmp_path / "cli-cache")}
    r = hw("-C", str(cluster), "artifacts", "fetch", env=env)
    assert r.returncode == 0 and "artifacts.lock: recorded" in r.stderr, r.stderr
    offered = _replace_consistently(root, layout.image("web-1.0"), b"not the web image")
    r = hw("-C", str(cluster), "artifacts", "fetch", env=env)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "image/web-1.0:" in r.stderr and offered in r.stderr and "--update-lock" in r.stderr
    r = hw("-C", str(cluster), "artifacts", "fetch", "--update-lock", env=env)
    assert r.returncode == 0 and "image/web-1.0: sha256 " in r.stderr and offered in r.stderr, r.stderr


def test_cli_usage_errors(tmp_path):
    r = hw("artifacts", "mirror", "build", str(tmp_path / "m"))
    assert r.returncode == 2 and "--from-debian" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x").write_text("x")
    r = hw("artifacts", "mirror", "build", str(tmp_path / "junk"), "--from-debian")
    assert r.returncode == 2 and "not empty" in r.stderr
    r = hw("artifacts", "serve", str(tmp_path / "nope"))
    assert r.returncode == 2 and "not a directory" in r.stderr
    cluster = tmp_path / "c"
    assert hw("init", str(cluster), "--mirror", str(tmp_path / "absent")).returncode == 0
    r = hw("-C", str(cluster), "artifacts", "fetch")
    assert r.returncode == 2 and "is not a directory" in r.stderr and "Traceback" not in r.stderr
    for cmd in (["artifacts"], ["artifacts", "mirror", "build"], ["artifacts", "serve"], ["artifacts", "fetch"]):
        r = hw(*cmd, "--help")
        assert r.returncode == 0 and "Usage:" in r.stdout, cmd


def test_cli_serve_prints_url_and_stops(tmp_path):
    (tmp_path / "f").write_text("ok")
    p = subprocess.Popen([sys.executable, "-m", "hardway", "artifacts", "serve", str(tmp_path), "--port", "0"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()
        assert "127.0.0.1" in line, line + p.stderr.read()
        url = line.split(" at ", 1)[1].split()[0].rstrip("/")
        assert urllib.request.urlopen(f"{url}/f", timeout=5).read() == b"ok"
    finally:
        p.terminate()
        out, err = p.communicate(timeout=10)
    assert p.returncode == 0 and "stopped" in out and "Traceback" not in err


# ---------------------------------------------------------------------------------------------
# Debian prerequisites: clear errors


def test_missing_command_names_the_debian_package(monkeypatch):
    from hardway.artifacts.debian import need

    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(OperationError, match=r"missing programs: go, rsync; install with: apt-get install golang-go rsync"):
        need("go", "rsync")


def test_no_deb_src_entry_says_how_to_add_one(tmp_path, monkeypatch):
    import shutil as _sh

    from hardway.artifacts.debian import source_version
    from tests.helpers import require

    require(_sh.which("apt-get") is not None, "needs apt-get (Debian)")
    (tmp_path / "lists" / "partial").mkdir(parents=True)
    (tmp_path / "parts").mkdir()
    (tmp_path / "sources.list").write_text("")
    conf = tmp_path / "apt.conf"
    conf.write_text(f'Dir::Etc::SourceList "{tmp_path}/sources.list";\nDir::Etc::SourceParts "{tmp_path}/parts";\n'
                    f'Dir::State::Lists "{tmp_path}/lists";\nDir::Cache::pkgcache "";\nDir::Cache::srcpkgcache "";\n')
    monkeypatch.setenv("APT_CONFIG", str(conf))  # an apt with no sources at all
    with pytest.raises(OperationError) as e:
        source_version("kubernetes")
    assert "Types: deb-src" in str(e.value) and "apt-get update" in str(e.value)
