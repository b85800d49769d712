"""The offline mirror the e2e tests use, built once from Debian and kept outside the repo.

    from tests.mirror_fixture import built_mirror, mirror   # `mirror`: a session fixture
    root = built_mirror()   # cache_dir()/test-mirror, built (or brought up to date) once

It is built with `--conformance` (the e2e test binaries and test images too), so that one
mirror serves every test. The first build on a machine compiles Kubernetes and its e2e suite
(about 11 minutes on 2 cores); later builds reuse the cache under $HARDWAY_CACHE (default
~/.cache/hardway) and take seconds. Without the
prerequisites the calling test is skipped (failed under HARDWAY_E2E_REQUIRED=1), naming what
is missing.
"""

from __future__ import annotations

import fcntl
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hardway.artifacts.cache import cache_dir
from hardway.artifacts.mirror import MirrorResult, build_mirror
from tests.helpers import require

_result: MirrorResult | None = None
_seconds: float | None = None


def mirror_dir() -> Path:
    return cache_dir() / "test-mirror"


def missing_prerequisites() -> list[str]:
    """What this machine lacks to build the mirror (empty: nothing)."""
    if not sys.platform.startswith("linux"):
        return ["Linux"]
    missing = [f"{c} (apt-get install {p})" for c, p in
               (("apt-get", "apt"), ("dpkg-deb", "dpkg"), ("gcc", "build-essential"), ("strip", "binutils"))
               if shutil.which(c) is None]
    if missing:
        return missing
    # Kubernetes must be built unless some build is cached already.
    built = (cache_dir() / "debian" / "kubernetes").glob("*/build.json")
    if not any(built):
        missing += [f"{c} (apt-get install {p})" for c, p in
                    (("go", "golang-go"), ("rsync", "rsync"), ("make", "make"), ("dpkg-source", "dpkg-dev"))
                    if shutil.which(c) is None]
        p = subprocess.run(["apt-get", "source", "--print-uris", "kubernetes"], capture_output=True,
                           text=True, cwd="/tmp")
        if ".dsc" not in p.stdout:
            missing.append("a deb-src entry for Debian bookworm in apt's sources (then apt-get update)")
    return missing


def built_mirror() -> Path:
    """Build the test mirror once per session (idempotent across sessions); return its root."""
    global _result, _seconds
    missing = missing_prerequisites()
    require(not missing, "building the Debian mirror needs: " + "; ".join(missing))
    if _result is None:
        root = mirror_dir()
        root.parent.mkdir(parents=True, exist_ok=True)
        with open(root.parent / "test-mirror.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another pytest process may be building it
            started = time.monotonic()
            _result = build_mirror(root, lambda m: print(f"[mirror] {m}", file=sys.stderr, flush=True),
                                   conformance=True)
            _seconds = time.monotonic() - started
    return _result.root


def last_build() -> tuple[MirrorResult, float]:
    """The session's build result and its duration (after built_mirror())."""
    assert _result is not None and _seconds is not None
    return _result, _seconds


def kubernetes_cache() -> Path:
    assert _result is not None and _result.kubernetes is not None
    return _result.kubernetes.root


@pytest.fixture(scope="session")
def mirror() -> Path:
    return built_mirror()
