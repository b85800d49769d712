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
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..hostcheck import need
from ..proc import run, run_logged
from ..errors import OperationError, UsageError
from .cache import cache_dir, cache_key
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


def download_debs(debs: dict[str, AptFile]) -> dict[str, Path]:
    """package -> its .deb in the cache, downloading every missing one with one apt call
    (each call costs about a second)."""
    cache = cache_dir() / "debian" / "debs"
    cache.mkdir(parents=True, exist_ok=True)
    paths = {p: cache / d.filename for p, d in debs.items()}
    missing = {p: d for p, d in debs.items() if not paths[p].exists()}
    if not missing:
        return paths
    need("apt-get")
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        os.chmod(tmp, 0o755)  # apt's _apt sandbox user must be able to write here
        run(["apt-get", "download", "-q", *(f"{p}={deb_version(d)}" for p, d in sorted(missing.items()))],
             f"downloading Debian package(s) {', '.join(sorted(missing))}", cwd=Path(tmp))
        for p, d in missing.items():
            got = Path(tmp) / d.filename
            if not got.exists():
                raise OperationError(f"apt-get download {p} left no {d.filename}")
            os.replace(got, paths[p])
    return paths


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
    deb_path = download_debs({package: deb})[package]
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}."))
    try:
        run(["dpkg-deb", "-x", deb_path, staging], f"unpacking {deb_path.name}")
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
# a root file system from binary packages (for images made from Debian)

_DEPENDS = re.compile(r"^\s(?P<alt>[ |])(?:Pre)?Depends: (?P<name>\S+)$")


def parse_depends(text: str) -> dict[str, list[str]]:
    """`apt-cache depends` output -> package -> the packages it needs: of alternatives
    (`|Depends: a` then `Depends: b`) the first; of a virtual package (`<x>`) its first provider."""
    out: dict[str, list[str]] = {}
    current: list[str] | None = None
    pending_virtual = False
    in_alternatives = False  # the previous line opened an alternative group
    for line in text.splitlines():
        if line and not line[0].isspace():
            current = out.setdefault(line.strip(), [])
            pending_virtual = in_alternatives = False
            continue
        if current is None:
            continue
        m = _DEPENDS.match(line)
        if m:
            chosen_already = in_alternatives  # a later alternative of a group already served
            in_alternatives = m["alt"] == "|"
            pending_virtual = False
            if chosen_already:
                continue
            name = m["name"]
            if name.startswith("<"):
                pending_virtual = True  # its providers follow, indented further
            else:
                current.append(name.split(":", 1)[0])
            continue
        if pending_virtual and line.startswith("    ") and line.strip():
            current.append(line.strip().split(":", 1)[0])
            pending_virtual = False
    return out


def package_closure(packages: Sequence[str]) -> list[str]:
    """`packages` and everything they depend on (Depends, Pre-Depends), sorted; asks apt only."""
    need("apt-cache")
    seen: set[str] = set()
    todo = list(dict.fromkeys(packages))
    while todo:
        seen.update(todo)
        text = run(["apt-cache", "depends", "--no-recommends", "--no-suggests", "--no-conflicts",
                     "--no-breaks", "--no-replaces", "--no-enhances", *todo], "apt-cache depends")
        deps = parse_depends(text)
        todo = sorted({d for pkg in todo for d in deps.get(pkg, [])} - seen)
    return sorted(seen)


# Not needed in an image: documentation, manual pages, translations.
ROOTFS_SKIP = ("usr/share/doc/", "usr/share/man/", "usr/share/info/", "usr/share/locale/",
               "usr/share/lintian/", "usr/share/bug/", "usr/share/bash-completion/")


def package_versions(packages: Sequence[str]) -> dict[str, str]:
    """package -> Debian version of `packages` and everything they depend on (apt, no download)."""
    return {p: deb_version(d) for p, d in binary_packages(*package_closure(packages)).items()}


def package_rootfs(packages: Sequence[str], progress: Progress = _quiet) -> tuple[list[Path], dict[str, str]]:
    """The unpacked trees of `packages` and their dependencies (no maintainer scripts run),
    and package -> Debian version: what an image layer made from them holds."""
    closure = package_closure(packages)
    debs = binary_packages(*closure)
    download_debs(debs)
    roots, versions = [], {}
    for name in closure:
        root, version, _ = unpacked_package(name, progress, debs[name])
        roots.append(root)
        versions[name] = version
    return roots, versions


# ---------------------------------------------------------------------------------------------
# Kubernetes from source


@dataclass(frozen=True)
class VendorFix:
    """A vendored Go module of the Kubernetes tree replaced by Debian's packaged source before
    building: `broken` is the version the tree vendors, `package` the golang-*-dev package whose
    /usr/share/gocode/src holds the fixed `version`."""

    module: str
    broken: str
    version: str
    package: str
    why: str


# Debian builds Kubernetes 1.20 with its Go 1.19; the tree was released for Go 1.15. Every
# vendored module that reaches into Go's runtime or reflect internals (go:linkname) was
# checked against the upstream trackers: reflect2 v1.0.1 is the one that breaks, x/net's
# internal/socket links only syscall functions Go 1.19 still has. See docs/design.md.
VENDOR_FIXES = (
    VendorFix(
        "github.com/modern-go/reflect2", "v1.0.1", "v1.0.2", "golang-github-modern-go-reflect2-dev",
        "v1.0.1 links reflect.mapiterinit with Go 1.17's iterator layout; built with Go >= 1.18 "
        "it corrupts map iteration (fatal error ... aeshashbody ... runtime.mapiternext): "
        "kube-apiserver dies as soon as it serves CRDs, kubectl/kubeadm panic writing YAML "
        "(kubernetes/kubernetes#115698 is Debian's own 1.20 build; openshift/hive#1849 the same fix)",
    ),
)

# What each build stage makes: output binary -> `make WHAT=` target. The server stage is what
# a cluster runs; the test stage what `hardway verify --conformance` runs (Kubernetes' own
# e2e suite) and the programs of the test images made from the same tree.
SERVER_TARGETS = {b: f"cmd/{b}" for b in KUBERNETES_BINARIES}
TEST_TARGETS = {
    "e2e.test": "test/e2e/e2e.test",
    "ginkgo": "vendor/github.com/onsi/ginkgo/ginkgo",
    "agnhost": "test/images/agnhost",
    "sample-apiserver": "vendor/k8s.io/sample-apiserver",
    "nonewprivs": "test/images/nonewprivs",
}
# Source files the test images carry (kept from the tree, relative to it).
TEST_FILES = (
    "test/images/agnhost/porter/localhost.crt", "test/images/agnhost/porter/localhost.key",
    "test/images/kitten/html/data.json", "test/images/kitten/html/kitten.jpg",
    "test/images/nautilus/html/data.json", "test/images/nautilus/html/nautilus.jpg",
    "test/images/agnhost/VERSION", "build/pause/linux/pause.c",
)
STAGES = {"server": SERVER_TARGETS, "test": TEST_TARGETS}
# Bump when the same inputs would build different bytes (build flags, the patching).
BUILD_FORMAT = "2"


@dataclass(frozen=True)
class KubernetesBuild:
    source_version: str  # Debian's, e.g. 1.20.5+really1.20.2-1.1+deb12u1
    version: str  # upstream, e.g. 1.20.2
    root: Path  # the cached build: bin/, files/, build.json
    cached: bool  # True: reused from the cache, nothing was built
    fixes: dict[str, str] = field(default_factory=dict)  # module -> "v1.0.1 -> v1.0.2 (Debian pkg ver)"

    @property
    def bindir(self) -> Path:
        return self.root / "bin"

    @property
    def pause_c(self) -> Path:
        return self.root / "files" / "build/pause/linux/pause.c"

    def file(self, rel: str) -> Path:
        return self.root / "files" / rel

    def has_stage(self, stage: str) -> bool:
        return all((self.bindir / b).exists() for b in STAGES[stage])


def _fix_packages(progress: Progress) -> dict[str, tuple[Path, str]]:
    """package -> (unpacked root, Debian version) for every VENDOR_FIXES package."""
    debs = binary_packages(*(f.package for f in VENDOR_FIXES))
    out = {}
    for f in VENDOR_FIXES:
        root, version, _ = unpacked_package(f.package, progress, debs[f.package])
        out[f.package] = (root, version)
    return out


def build_key(source: str, fix_versions: dict[str, str]) -> str:
    """The cache key of a build: the Debian source, the Debian packages patched in, the format."""
    return source + "--" + cache_key({
        "source": source, "format": BUILD_FORMAT,
        "fixes": [[f.module, f.broken, f.version, f.package, fix_versions[f.package]] for f in VENDOR_FIXES]})


def kubernetes_build_dir(key: str) -> Path:
    return cache_dir() / "debian" / "kubernetes" / key


def build_kubernetes(progress: Progress = _quiet, source: str | None = None,
                     stages: Sequence[str] = ("server",)) -> KubernetesBuild:
    """Build Kubernetes from Debian's `kubernetes` source package, once per input.

    `source` pins the Debian source version; by default, the one `apt-get source` would fetch.
    VENDOR_FIXES are applied first. `stages`: "server" (KUBERNETES_BINARIES), "test" (e2e.test,
    ginkgo and the test images' programs). The result is cached under
    `cache_dir()/debian/kubernetes/<source>--<key>/`; the work tree (source, Go build cache) is
    kept until every stage is built, so a later stage reuses the compiled packages.
    """
    unknown = set(stages) - set(STAGES)
    if unknown:
        raise UsageError(f"unknown build stage(s): {', '.join(sorted(unknown))} (known: {', '.join(STAGES)})")
    if source is None:
        try:
            source = source_version("kubernetes")
        except OperationError:
            cached = cached_kubernetes_builds()
            if not cached:
                raise
            source = cached[-1]
            progress(f"apt offers no kubernetes source package; using the cached build of {source}")
    fixes = _fix_packages(progress)
    key = build_key(source, {p: v for p, (_, v) in fixes.items()})
    out = kubernetes_build_dir(key)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.with_name(out.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time; a waiter then finds it cached
        return _build_kubernetes_locked(source, out, fixes, list(stages), progress)


def cached_kubernetes_builds() -> list[str]:
    """Debian source versions with a complete cached build, oldest first (by modification time)."""
    root = cache_dir() / "debian" / "kubernetes"
    done = [m.parent for m in root.glob("*/build.json")] if root.is_dir() else []
    done.sort(key=lambda d: (d / "build.json").stat().st_mtime)
    return [json.loads((d / "build.json").read_text())["source"] for d in done]


def apply_vendor_fixes(src: Path, fixes: dict[str, tuple[Path, str]]) -> dict[str, str]:
    """Replace each VENDOR_FIXES module in the tree `src` by Debian's source; update
    vendor/modules.txt and go.mod to say so. Idempotent. Returns module -> what was done."""
    modules_txt = src / "vendor" / "modules.txt"
    go_mod = src / "go.mod"
    done = {}
    for f in VENDOR_FIXES:
        pkg_root, deb_v = fixes[f.package]
        new = pkg_root / "usr" / "share" / "gocode" / "src" / f.module
        if not new.is_dir():
            raise OperationError(f"Debian package {f.package} {deb_v} has no {new.relative_to(pkg_root)}")
        text = modules_txt.read_text()
        if f"# {f.module} {f.broken} " not in text and f"=> {f.module} {f.version}" not in text:
            raise OperationError(
                f"the Kubernetes source vendors {f.module} at neither {f.broken} nor {f.version} "
                f"(vendor/modules.txt); hardway's fix for it does not apply to this source: "
                f"build with --kubernetes-source of a tested version")
        vendored = src / "vendor" / f.module
        shutil.rmtree(vendored, ignore_errors=True)
        shutil.copytree(new, vendored, ignore=shutil.ignore_patterns("go.mod", "go.sum"))
        # GOPATH mode (Kubernetes 1.20's build sets GO111MODULE=off) reads only the files;
        # the module metadata is updated so that the tree says what it holds.
        modules_txt.write_text(text.replace(f"{f.module} {f.broken}", f"{f.module} {f.version}"))
        go_mod.write_text(go_mod.read_text().replace(f"{f.module} {f.broken}", f"{f.module} {f.version}"))
        done[f.module] = f"{f.broken} -> {f.version} (Debian {f.package} {deb_v})"
    return done


def replace_entry(out: Path, files: dict[str, tuple[Path, int]], data: dict[str, bytes]) -> None:
    """Swap in a new cache entry at `out`: what `out` held, plus `files` (relative path ->
    (source, mode)) and `data` (relative path -> bytes). The old entry's files are hard-linked,
    not copied (hundreds of MB), and every new file is a new inode: nothing is written through a
    link into the entry still in use, and a run killed half-way leaves the old entry whole."""
    staging = out.with_name(out.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    if out.exists():
        shutil.copytree(out, staging, copy_function=os.link)
    for rel, (source, mode) in files.items():
        dest = staging / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.unlink(missing_ok=True)
        shutil.copy2(source, dest)
        os.chmod(dest, mode)
    for rel, content in data.items():
        dest = staging / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.unlink(missing_ok=True)
        dest.write_bytes(content)
    old = out.with_name(out.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        os.replace(out, old)
    os.replace(staging, out)
    shutil.rmtree(old, ignore_errors=True)


def _build_kubernetes_locked(source: str, out: Path, fixes: dict[str, tuple[Path, str]],
                             stages: list[str], progress: Progress) -> KubernetesBuild:
    version = upstream_version(source)
    meta = out / "build.json"
    record = json.loads(meta.read_text()) if meta.exists() else {}
    have = [s for s in STAGES if all((out / "bin" / b).exists() for b in STAGES[s])]
    todo = [s for s in stages if s not in have]
    if not todo:
        progress(f"Kubernetes {version}: reusing the build of Debian source {source} in {out}")
        return KubernetesBuild(source, version, out, True, record.get("fixes", {}))

    need("apt-get", "dpkg-source", "go", "rsync", "make", "bash")
    work = out.with_name(out.name + ".work")
    if work.exists() and not (work / ".extracted").exists():
        shutil.rmtree(work)  # an interrupted `apt-get source`: start over
    work.mkdir(parents=True, exist_ok=True)
    os.chmod(work, 0o755)  # apt's _apt sandbox user reads and writes here
    if not (work / ".extracted").exists():
        progress(f"fetching Debian source package kubernetes {source} (about 35 MB)")
        run(["apt-get", "source", "-q", f"kubernetes={source}"], "apt-get source kubernetes", cwd=work)
        (work / ".extracted").touch()
    srcdirs = [d for d in work.iterdir() if d.is_dir() and (d / "debian" / "rules").exists()]
    if not srcdirs:
        raise OperationError(f"apt-get source kubernetes left no source tree in {work}")
    src = srcdirs[0]
    applied = apply_vendor_fixes(src, fixes)
    for module, what in applied.items():
        progress(f"vendored {module}: {what}")

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
    targets = {b: t for s in todo for b, t in STAGES[s].items()}
    log = work / "build.log"
    minutes = {"server": 6, "test": 5}
    progress(f"building Kubernetes {version} ({' + '.join(todo)}: {', '.join(targets)}) from Debian "
             f"source {source} (takes ~{sum(minutes[s] for s in todo)} min on 2 cores; log: {log})...")
    started = time.monotonic()
    rc = run_logged(["make", f"WHAT={' '.join(targets.values())}"], log, "building Kubernetes", progress,
                    cwd=src, env=env, append=True)
    if rc != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
        raise OperationError(f"building Kubernetes failed (make exit {rc}); full log: {log}\n{tail}")
    built = src / "_output" / "bin"
    # The new cache entry: what was there, plus this run's binaries; swapped in atomically.
    for b in targets:
        if not (built / b).exists():
            raise OperationError(f"the Kubernetes build produced no {b} in {built}; log: {log}")
    go_version = run(["go", "version"], "go version", env=env).strip()
    seconds = dict(record.get("seconds", {}))
    seconds[" + ".join(todo)] = round(time.monotonic() - started)
    meta_text = json.dumps({
        "source": source, "version": version, "format": BUILD_FORMAT,
        "binaries": sorted({*record.get("binaries", []), *targets}),
        "fixes": applied, "go": go_version, "seconds": seconds,
    }, indent=2) + "\n"
    replace_entry(out, {**{f"bin/{b}": (built / b, 0o755) for b in targets},
                        **{f"files/{rel}": (src / rel, 0o644) for rel in TEST_FILES}},
                  {"build.json": meta_text.encode()})
    progress(f"built Kubernetes {version} ({' + '.join(todo)}) in {int(time.monotonic() - started)} s; cached in {out}")
    if all(all((out / "bin" / b).exists() for b in STAGES[s]) for s in STAGES):
        shutil.rmtree(work, ignore_errors=True)  # every stage built: the work tree is done with
    else:
        progress(f"kept the work tree {work} (Go build cache) for the test stage "
                 "(`hardway artifacts mirror build --conformance`); it is removed once that is built")
    return KubernetesBuild(source, version, out, False, applied)
