"""No half-written PKI: `pki init` that fails part-way leaves the cluster directory exactly as it
was (files, bytes, modes, directories), whether the failure is a certificate that cannot be
issued or a write that fails (full disk, Ctrl-C)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from hardway import fsio
from hardway.clusterdir import ClusterDir
from hardway.errors import OperationError
from hardway.material import ensure_material
from hardway.pki import ensure
from hardway.pki.profiles import certificate_plan
from tests.specs import make_spec


def tree(root: Path) -> dict[str, tuple[int, bytes | None]]:
    return {
        str(p.relative_to(root)): (stat.S_IMODE(p.stat().st_mode), None if p.is_dir() else p.read_bytes())
        for p in root.rglob("*")
    }


def add_worker(d: dict) -> None:
    d["nodes"].append({"name": "worker-2", "address": "10.240.0.22", "roles": ["worker"]})


def fail_on_call(n: int, exc: BaseException, real):
    calls = [0]

    def wrapper(*args, **kwargs):
        calls[0] += 1
        if calls[0] == n:
            raise exc
        return real(*args, **kwargs)
    return wrapper, calls


@pytest.fixture(params=["fresh", "existing"])
def cluster(request, tmp_path):
    """A directory with only cluster.yaml, or with a PKI to which this run adds and reissues."""
    cd = ClusterDir(tmp_path)
    cd.spec.write_text("# the spec lives here\n")
    if request.param == "existing":
        ensure_material(cd, make_spec("basic"))
    return cd


def certificates_to_issue(cd: ClusterDir) -> int:
    """This run issues every certificate into a fresh directory; else kubelet-worker-2 and admin."""
    return len(certificate_plan(make_spec("basic", edit=add_worker))) if not cd.cert("ca").exists() else 2


@pytest.mark.parametrize("which", ["first", "middle", "last"])
def test_a_certificate_that_cannot_be_issued_writes_nothing(cluster, monkeypatch, which):
    before = tree(cluster.root)
    total = certificates_to_issue(cluster)
    nth = {"first": 1, "middle": (total + 1) // 2, "last": total}[which]
    boom, calls = fail_on_call(nth, ValueError("attribute's length must be >= 1 and <= 64"),
                               ensure.build_certificate)
    monkeypatch.setattr(ensure, "build_certificate", boom)
    with pytest.raises(OperationError, match="cannot issue this certificate"):
        ensure_material(cluster, make_spec("basic", edit=add_worker), reissue=("admin",))
    assert calls[0] == nth
    assert tree(cluster.root) == before


@pytest.mark.parametrize("nth", [1, 4, 9])
@pytest.mark.parametrize("exc", [OSError(28, "No space left on device"), KeyboardInterrupt()],
                         ids=["disk-full", "ctrl-c"])
def test_a_write_that_fails_part_way_is_rolled_back(cluster, monkeypatch, nth, exc):
    before = tree(cluster.root)
    boom, calls = fail_on_call(nth, exc, fsio._replace)
    monkeypatch.setattr(fsio, "_replace", boom)
    with pytest.raises(type(exc)):
        ensure_material(cluster, make_spec("basic", edit=add_worker), reissue=("admin", "kube-proxy"))
    assert calls[0] >= nth
    assert tree(cluster.root) == before
    assert not list(cluster.root.rglob(".*.tmp.*"))


def test_the_same_run_succeeds_afterwards(cluster):
    report = ensure_material(cluster, make_spec("basic", edit=add_worker), reissue=("admin",))
    assert "kubelet-worker-2" in report.pki.created
