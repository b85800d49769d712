"""Upstream artifacts made from Debian: Kubernetes built from the `kubernetes` source package,
etcd/containerd/runc/CNI plugins unpacked from binary packages. Everything is cached under
`cache_dir()/debian`, keyed by the Debian version, so a second mirror build reuses it.

Only Debian's archive is contacted (through apt); nothing here talks to an upstream site.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..hostcheck import need
from ..errors import OperationError
from .cache import cache_dir
from .layout import KUBERNETES_BINARIES

Progress = Callable[[str], None]


def _quiet(_msg: str) -> None:
    pass


# Which Debian package provides a command we run, for the error message when it is missing.


DEB_SRC_HINT = (
    "apt has no deb-src entry for Debian: add one, e.g. create "
    "/etc/apt/sources.list.d/debian-src.sources containing\n"
    "    Types: deb-src\n"
    "    URIs: http://deb.debian.org/debian\n"
    "    Suites: bookworm bookworm-updates\n"
    "    Components: main\n"
    "    Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
    "then run `apt-get update`"
)


def _run(cmd: Sequence[str | Path], what: str, cwd: Path | None = None,
         env: dict[str, str] | None = None) -> str:
    try:
        p = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True)
    except FileNotFoundError:
        need(str(cmd[0]))
        raise
    if p.returncode != 0:
        tail = "\n".join((p.stderr or p.stdout).strip().splitlines()[-15:])
        raise OperationError(f"{what} failed (exit {p.returncode}): {' '.join(map(str, cmd))}\n{tail}")
    return p.stdout


# ---------------------------------------------------------------------------------------------
# versions, from apt's own answers (no download)

_URI_LINE = re.compile(r"^'(?P<url>[^']+)'\s+(?P<file>\S+)\s+(?P<size>\d+)\s+(?P<hash>\S+)")


@dataclass(frozen=True)
class AptFile:
    url: str
    filename: str
    size: int
    hash: str  # e.g. "SHA256:..."


def parse_print_uris(text: str) -> list[AptFile]:
    """Parse `apt-get ... --print-uris` output lines: 'URL' FILE SIZE HASH."""
    files = []
    for line in text.splitlines():
        m = _URI_LINE.match(line.strip())
        if m:
            files.append(AptFile(m["url"], m["file"], int(m["size"]), m["hash"]))
    return files


def source_version(package: str) -> str:
    """The version `apt-get source PACKAGE` would fetch, e.g. 1.20.5+really1.20.2-1.1+deb12u1."""
    need("apt-get")
    with tempfile.TemporaryDirectory() as tmp:
        p = subprocess.run(["apt-get", "source", "--print-uris", package], cwd=tmp,
                           capture_output=True, text=True)
    dsc = [f for f in parse_print_uris(p.stdout) if f.filename.endswith(".dsc")]
    if p.returncode != 0 or not dsc:
        msg = (p.stderr or p.stdout).strip()
        if "deb-src" in msg or "Unable to find a source package" in msg or not dsc:
            raise OperationError(f"cannot find Debian source package {package!r}: {DEB_SRC_HINT}"
                                 + (f"\napt said: {msg.splitlines()[-1]}" if msg else ""))
        raise OperationError(f"apt-get source --print-uris {package} failed: {msg}")
    return dsc[0].filename.split("_", 1)[1].removesuffix(".dsc")


def binary_packages(*packages: str) -> dict[str, AptFile]:
    """The .debs `apt-get download PACKAGE...` would fetch (name, version, URL), without fetching.

    One apt call for all of them: each call costs about a second.
    """
    need("apt-get")
    with tempfile.TemporaryDirectory() as tmp:
        p = subprocess.run(["apt-get", "download", "--print-uris", *packages], cwd=tmp,
                           capture_output=True, text=True)
    found = {f.filename.split("_", 1)[0]: f for f in parse_print_uris(p.stdout)}
    missing = [pkg for pkg in packages if pkg not in found]
    if p.returncode != 0 or missing:
        msg = (p.stderr or p.stdout).strip()
        raise OperationError(
            f"apt cannot find the Debian package(s) {', '.join(missing) or ', '.join(packages)} "
            f"(needed for the mirror): {msg.splitlines()[-1] if msg else 'no candidate'}; "
            "run `apt-get update`, and check that Debian bookworm (main) is in apt's sources"
        )
    return found


def binary_package(package: str) -> AptFile:
    return binary_packages(package)[package]


def deb_version(deb: AptFile) -> str:
    """`etcd-server_3.4.23-4+b4_amd64.deb` -> `3.4.23-4+b4`; `busybox-static_1%3a1.35.0-4_amd64.deb` -> `1:1.35.0-4`."""
    return urllib.parse.unquote(deb.filename.split("_")[1])


def upstream_version(debian_version: str) -> str:
    """`1.6.20~ds1-1+deb12u3` -> `1.6.20`; `1.20.5+really1.20.2-1.1` -> `1.20.2`."""
    v = debian_version.split(":", 1)[-1].rsplit("-", 1)[0]
    if "+really" in v:
        v = v.split("+really", 1)[1]
    return re.split(r"[~+]", v, maxsplit=1)[0]


# ---------------------------------------------------------------------------------------------
# binary packages: download once, unpack once


def unpacked_package(package: str, progress: Progress = _quiet, deb: AptFile | None = None) -> tuple[Path, str, bool]:
    """Download and unpack `package` (candidate version, or `deb`) into the cache.

    Returns (root of the unpacked tree, Debian version, whether it came from the cache).
    """
    deb = deb or binary_package(package)
    version = deb_version(deb)
    root = cache_dir() / "debian" / "packages" / f"{package}_{version}"
    if (root / ".complete").exists():
        return root, version, True
    need("apt-get", "dpkg-deb")
    progress(f"downloading and unpacking Debian package {package} {version}")
    debs = cache_dir() / "debian" / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    deb_path = debs / deb.filename
    if not deb_path.exists():
        with tempfile.TemporaryDirectory(dir=debs) as tmp:
            os.chmod(tmp, 0o755)  # apt's _apt sandbox user must be able to write here
            _run(["apt-get", "download", "-q", f"{package}={version}"], f"downloading Debian package {package}", cwd=Path(tmp))
            got = list(Path(tmp).glob("*.deb"))
            if len(got) != 1:
                raise OperationError(f"apt-get download {package} produced {len(got)} .deb files")
            os.replace(got[0], deb_path)
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}."))
    try:
        _run(["dpkg-deb", "-x", deb_path, staging], f"unpacking {deb_path.name}")
        (staging / ".complete").write_text(json.dumps({"package": package, "version": version, "deb": deb.filename}))
        os.chmod(staging, 0o755)
        if (root / ".complete").exists():  # another process won the race
            return root, version, True
        shutil.rmtree(root, ignore_errors=True)
        os.replace(staging, root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root, version, False


# ---------------------------------------------------------------------------------------------
# Kubernetes from source


@dataclass(frozen=True)
class KubernetesBuild:
    source_version: str  # Debian's, e.g. 1.20.5+really1.20.2-1.1+deb12u1
    version: str  # upstream, e.g. 1.20.2
    bindir: Path  # holds KUBERNETES_BINARIES
    pause_c: Path  # build/pause/linux/pause.c from the same tree
    cached: bool  # True: reused from the cache, nothing was built


def kubernetes_build_dir(source_version: str) -> Path:
    return cache_dir() / "debian" / "kubernetes" / source_version


def build_kubernetes(progress: Progress = _quiet, source: str | None = None) -> KubernetesBuild:
    """Build Kubernetes (KUBERNETES_BINARIES) from Debian's `kubernetes` source package, once.

    `source` pins the Debian source version; by default, the one `apt-get source` would fetch.
    The result is cached under `cache_dir()/debian/kubernetes/<source version>/`; the work tree
    (source, GOPATH, Go build cache) is removed after a successful build.
    """
    if source is None:
        try:
            source = source_version("kubernetes")
        except OperationError:
            cached = cached_kubernetes_builds()
            if not cached:
                raise
            source = cached[-1]
            progress(f"apt offers no kubernetes source package; using the cached build of {source}")
    out = kubernetes_build_dir(source)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.with_name(out.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time; a waiter then finds it cached
        return _build_kubernetes_locked(source, out, progress)


def cached_kubernetes_builds() -> list[str]:
    """Debian source versions with a complete cached build, oldest first (by modification time)."""
    root = cache_dir() / "debian" / "kubernetes"
    done = [m.parent for m in root.glob("*/build.json")] if root.is_dir() else []
    return [d.name for d in sorted(done, key=lambda d: (d / "build.json").stat().st_mtime)]


def _build_kubernetes_locked(source: str, out: Path, progress: Progress) -> KubernetesBuild:
    version = upstream_version(source)
    meta = out / "build.json"
    if meta.exists() and all((out / "bin" / b).exists() for b in KUBERNETES_BINARIES):
        progress(f"Kubernetes {version}: reusing the build of Debian source {source} in {out}")
        return KubernetesBuild(source, version, out / "bin", out / "pause.c", True)

    need("apt-get", "dpkg-source", "go", "rsync", "make", "bash")
    work = out.with_name(out.name + ".work")
    if work.exists() and not (work / ".extracted").exists():
        shutil.rmtree(work)  # an interrupted `apt-get source`: start over
    work.mkdir(parents=True, exist_ok=True)
    os.chmod(work, 0o755)  # apt's _apt sandbox user reads and writes here
    if not (work / ".extracted").exists():
        progress(f"fetching Debian source package kubernetes {source} (about 35 MB)")
        _run(["apt-get", "source", "-q", f"kubernetes={source}"], "apt-get source kubernetes", cwd=work)
        (work / ".extracted").touch()
    srcdirs = [d for d in work.iterdir() if d.is_dir() and (d / "debian" / "rules").exists()]
    if not srcdirs:
        raise OperationError(f"apt-get source kubernetes left no source tree in {work}")
    src = srcdirs[0]

    # As debian/rules does: a GOPATH with k8s.io/kubernetes pointing at the tree, static binaries.
    gopath = src / ".go"
    link = gopath / "src" / "k8s.io" / "kubernetes"
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.is_symlink():
        link.symlink_to("../../..")
    home = work / "home"
    home.mkdir(exist_ok=True)
    env = {
        **os.environ,
        "GOPATH": str(gopath),
        "GOCACHE": str(work / "go-build"),
        "HOME": str(home),
        "CGO_ENABLED": "0",
        "GOFLAGS": "",
        "PATH": "/usr/lib/go/bin:" + os.environ.get("PATH", "/usr/bin:/bin"),
    }
    env.pop("GOROOT", None)
    what = " ".join(f"cmd/{b}" for b in KUBERNETES_BINARIES)
    log = work / "build.log"
    progress(f"building Kubernetes {version} from Debian source {source} "
             f"(takes ~6 min on 2 cores; log: {log})...")
    started = time.monotonic()
    with open(log, "wb") as logf:
        proc = subprocess.Popen(["make", f"WHAT={what}"], cwd=src, env=env, stdout=logf,
                                stderr=subprocess.STDOUT)
        done = threading.Event()

        def heartbeat() -> None:
            while not done.wait(60):
                progress(f"  still building Kubernetes ({int(time.monotonic() - started)} s)...")

        t = threading.Thread(target=heartbeat, daemon=True)
        t.start()
        try:
            rc = proc.wait()
        except BaseException:
            proc.terminate()
            proc.wait()
            raise
        finally:
            done.set()
    if rc != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
        raise OperationError(f"building Kubernetes failed (make exit {rc}); full log: {log}\n{tail}")
    built = src / "_output" / "bin"
    staging = out.with_name(out.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "bin").mkdir(parents=True)
    for b in KUBERNETES_BINARIES:
        if not (built / b).exists():
            raise OperationError(f"the Kubernetes build produced no {b} in {built}; log: {log}")
        shutil.copy2(built / b, staging / "bin" / b)
        os.chmod(staging / "bin" / b, 0o755)
    shutil.copy2(src / "build" / "pause" / "linux" / "pause.c", staging / "pause.c")
    go_version = _run(["go", "version"], "go version", env=env).strip()
    (staging / "build.json").write_text(json.dumps({
        "source": source, "version": version, "binaries": list(KUBERNETES_BINARIES),
        "go": go_version, "seconds": round(time.monotonic() - started),
    }, indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    os.replace(staging, out)
    progress(f"built Kubernetes {version} in {int(time.monotonic() - started)} s; cached in {out}")
    shutil.rmtree(work, ignore_errors=True)
    return KubernetesBuild(source, version, out / "bin", out / "pause.c", False)
