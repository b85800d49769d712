"""`hardway artifacts fetch` against the real Debian-built mirror (tests/mirror_fixture.py):
over HTTP on 127.0.0.1 and from a directory, checksums verified, a second fetch transfers
nothing, the programs come out of the cache runnable, and a tampered file is refused."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hardway.artifacts import layout
from hardway.artifacts.cache import sha256_file
from hardway.artifacts.fetch import Store, fetch_for_spec
from hardway.artifacts.mirror import PAUSE_IMAGE_NAME, WEB_IMAGE_NAME
from hardway.artifacts.serve import serving
from hardway.errors import OperationError
from tests.helpers import E2E_TIMEOUT
from tests.mirror_fixture import mirror  # noqa: F401 (fixture)
from tests.specs import make_spec

# The session's first use of the mirror may build it (~15 min on a fresh machine).
pytestmark = [pytest.mark.integration, pytest.mark.timeout(E2E_TIMEOUT)]

IMAGES = [PAUSE_IMAGE_NAME, WEB_IMAGE_NAME]


@pytest.fixture
def store(tmp_path):
    """An empty cache; removed afterwards (each holds ~0.5 GB, pytest keeps old tmp dirs)."""
    s = Store(tmp_path / "cache")
    yield s
    shutil.rmtree(s.root, ignore_errors=True)


def _spec(mirror_ref: str | None = None):
    def edit(d):
        d["kubernetes"]["version"] = "1.20.2"
        d.setdefault("artifacts", {}).update(images=IMAGES, **({"mirror": mirror_ref} if mirror_ref else {}))
    return make_spec(edit=edit)


def _out(*cmd) -> str:
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=60)
    return p.stdout + p.stderr


def test_fetch_over_http_verifies_caches_and_second_fetch_downloads_nothing(mirror, tmp_path, store):  # noqa: F811
    spec = _spec()
    requests: list[str] = []
    with serving(mirror, log=requests.append) as url:
        t = time.monotonic()
        r = fetch_for_spec(spec, tmp_path, store=store, mirror=url)
        cold = time.monotonic() - t
        n = len(requests)
        t = time.monotonic()
        again = fetch_for_spec(spec, tmp_path, store=store, mirror=url)
        warm = time.monotonic() - t
        assert len(requests) == n  # the second fetch sent no request at all
    print(f"fetch over HTTP: {cold:.1f} s cold, {warm:.2f} s warm", file=sys.stderr)
    keys = {d.key for d in layout.downloads_for_spec(spec)}
    assert set(r) == keys and sorted(r.downloaded) == sorted(keys)
    assert again.downloaded == [] and sorted(again.reused) == sorted(keys)
    for d in layout.downloads_for_spec(spec):
        assert r[d.key].name == sha256_file(mirror / d.path) == sha256_file(r[d.key])
    # each file requested once, checksum files once each
    assert sum(" /images/SHA256SUMS " in line for line in requests) == 1
    # the programs, as the deploy step will ask for them
    assert "Kubernetes v1.20.2" in _out(r.binary("kubernetes-server", "kubelet"), "--version")
    assert "etcd Version: 3.4.23" in _out(r.binary("etcd", "etcd"), "--version")
    assert "1.6.20" in _out(r.binary("containerd", "containerd"), "--version")
    assert "runc version 1.1.5" in _out(r.binary("runc", "runc"), "--version")
    bins = r.binaries([_B("containerd-shim-runc-v2", "containerd"), _B("host-local", "cni-plugins")])
    assert all(os.access(p, os.X_OK) for p in bins.values())


class _B:  # shaped like hardway.render.Binary
    def __init__(self, name: str, artifact: str) -> None:
        self.name, self.artifact = name, artifact


def test_fetch_from_a_directory_mirror_named_in_the_spec(mirror, tmp_path, store):  # noqa: F811
    r = fetch_for_spec(_spec(str(mirror)), tmp_path, store=store)
    assert len(r.downloaded) == len(r) == len(layout.KUBERNETES_BINARIES) + 4 + len(IMAGES)
    assert fetch_for_spec(_spec(str(mirror)), tmp_path, store=store).downloaded == []


def _linked_copy(src: Path, dest: Path) -> None:
    for p in src.rglob("*"):
        if p.is_file():
            q = dest / p.relative_to(src)
            q.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(p, q)
            except OSError:
                shutil.copy2(p, q)


def test_tampered_mirror_file_is_refused_and_nothing_bad_is_cached(mirror, tmp_path, store):  # noqa: F811
    copy = tmp_path / "mirror"
    _linked_copy(mirror, copy)
    d = layout.etcd("3.4.23")
    victim = copy / d.path
    data = bytearray(victim.read_bytes())
    victim.unlink()  # break the hard link: the real mirror stays intact
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(bytes(data))
    with serving(copy) as url, pytest.raises(OperationError) as e:
        fetch_for_spec(_spec(), tmp_path, store=store, mirror=url)
    msg = str(e.value)
    assert "1 of 12 artifact(s) failed" in msg and "checksum mismatch" in msg
    assert f"{url}/{d.path}" in msg and "NOT cached" in msg
    assert sha256_file(mirror / d.path) in msg  # the published digest
    assert not store.blob(sha256_file(victim)).exists()
    assert not store.blob(sha256_file(mirror / d.path)).exists()
    assert not any(u.endswith(d.filename) for u in store.index())
    assert list((store.root / "tmp").iterdir()) == []
    assert sha256_file(mirror / d.path) != sha256_file(victim)
    assert len(store.index()) == 11  # everything else was fetched
