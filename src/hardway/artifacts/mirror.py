"""`hardway artifacts mirror build DIR --from-debian`: an offline mirror made from Debian.

The mirror is laid out like the upstream release sites (see layout.py), so `hardway artifacts
fetch` treats it exactly as it treats upstream: same paths, same checksum files. Its content
comes from Debian bookworm: Kubernetes built from the `kubernetes` source package, etcd,
containerd, runc and the CNI plugins repacked from the binary packages, and two OCI images
(pause from the Kubernetes tree's `build/pause/linux/pause.c`, a busybox httpd test image).

Everything expensive is cached under `cache_dir()/debian`, keyed by Debian version, and every
output is deterministic (fixed mtimes and owners, sorted entries), so a second build writes
nothing. Differences from the real upstream files: the binaries are Debian's (dynamically
linked against bookworm's libc, libseccomp for runc), and the archives hold only the programs
(no READMEs or Documentation beyond a provenance note).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import OperationError, UsageError
from ..spec.versions import default as default_version
from . import layout
from ..proc import run
from .cache import cache_dir, sha256_file
from .debian import (
    KubernetesBuild, Progress, _quiet, binary_packages, build_kubernetes, need, unpacked_package,
    upstream_version,
)
from . import testimages
from .oci import ImageFile, image_tar, symlink

# Bump when the repacked archives' bytes would change for the same Debian input.
REPACK_FORMAT = "1"

PAUSE_TAG = default_version("1.20", "pause")  # kubeadm's pause for 1.20: 3.2
PAUSE_IMAGE_NAME = f"pause-{PAUSE_TAG}"  # DIR/images/pause-3.2.tar
PAUSE_IMAGE_REF = f"registry.k8s.io/pause:{PAUSE_TAG}"
WEB_IMAGE_NAME = "web-1.0"  # DIR/images/web-1.0.tar
WEB_IMAGE_REF = "hardway.local/web:1.0"
WEB_PORT = 8080
WEB_INDEX = b"<html><body><h1>hardway web 1.0</h1><p>served by busybox httpd</p></body></html>\n"
WEB_APPLETS = ("sh", "ls", "cat", "echo", "sleep", "wget", "nc", "httpd", "hostname", "ip", "ps", "env")

MANIFEST = "hardway-mirror.json"
MIRROR_TOP = {"dl.k8s.io", "github.com", "images"}
DEBIAN_PACKAGES = ("etcd-server", "etcd-client", "containerd", "runc", "containernetworking-plugins", "busybox-static")


@dataclass
class MirrorResult:
    root: Path
    written: list[str] = field(default_factory=list)  # relative paths this run wrote
    unchanged: list[str] = field(default_factory=list)  # relative paths already right
    reused: list[str] = field(default_factory=list)  # cached builds/repacks reused
    built: list[str] = field(default_factory=list)  # cached builds/repacks made this run
    kubernetes: KubernetesBuild | None = None
    versions: dict[str, str] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# deterministic writes


def _same(dest: Path, size: int, digest: str, mode: int) -> bool:
    try:
        st = dest.stat()
    except FileNotFoundError:
        return False
    return st.st_size == size and (st.st_mode & 0o7777) == mode and sha256_file(dest) == digest


def _place_file(src: Path, dest: Path, mode: int) -> bool:
    """Copy `src` to `dest` unless it already holds the same bytes and mode. Atomic."""
    digest, size = sha256_file(src), src.stat().st_size
    if _same(dest, size, digest, mode):
        return False
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp.{os.getpid()}")
    try:
        shutil.copyfile(src, tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return True


def _place_bytes(data: bytes, dest: Path, mode: int = 0o644) -> bool:
    if _same(dest, len(data), hashlib.sha256(data).hexdigest(), mode):
        return False
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp.{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.chmod(tmp, mode)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return True


@dataclass(frozen=True)
class Entry:
    name: str  # path inside the archive ("bin/", "./bridge")
    source: Path | bytes | None = None  # None: a directory
    mode: int = 0o755


def write_tgz(dest: Path, entries: Iterable[Entry]) -> None:
    """A deterministic .tar.gz: entries in the given order, mtime 0, root:root, gzip mtime 0."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp.{os.getpid()}")
    try:
        with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0,
                                                   compresslevel=6) as gz, \
                tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar:
            for e in entries:
                info = tarfile.TarInfo(e.name)
                info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "root", "root"
                info.mode = e.mode
                if e.source is None:
                    info.type = tarfile.DIRTYPE
                    tar.addfile(info)
                elif isinstance(e.source, bytes):
                    info.size = len(e.source)
                    tar.addfile(info, io.BytesIO(e.source))
                else:
                    info.size = e.source.stat().st_size
                    with open(e.source, "rb") as f:
                        tar.addfile(info, f)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _repack(name: str, key: str, entries: list[Entry], result: MirrorResult, progress: Progress) -> Path:
    """A cached deterministic archive, made once per `key` (the Debian versions it comes from)."""
    path = cache_dir() / "debian" / "repack" / f"{name}--{key}--f{REPACK_FORMAT}.tar.gz"
    if path.exists():
        result.reused.append(name)
        return path
    progress(f"repacking {name} into the upstream layout")
    write_tgz(path, entries)
    result.built.append(name)
    return path


def _note(what: str, packages: dict[str, str]) -> bytes:
    pk = ", ".join(f"{p} {v}" for p, v in sorted(packages.items()))
    return (f"{what}, repacked by hardway from Debian packages ({pk}) into the upstream release "
            "layout, for an offline mirror. Not an upstream build.\n").encode()


# ---------------------------------------------------------------------------------------------
# the build


def _check_dest(dest: Path) -> None:
    if dest.exists() and not dest.is_dir():
        raise UsageError(f"{dest} exists and is not a directory")
    if dest.is_dir() and not (dest / MANIFEST).exists():
        # an interrupted build left only mirror paths: fine to continue
        other = sorted(p.name for p in dest.iterdir() if p.name not in MIRROR_TOP)
        if other:
            raise UsageError(f"{dest} is not empty ({', '.join(other[:5])}) and holds no {MANIFEST}: "
                             "choose an empty or new directory, or a mirror built before")


def build_mirror(dest: Path, progress: Progress = _quiet, kubernetes_source: str | None = None,
                 conformance: bool = False) -> MirrorResult:
    """Build (or bring up to date) a mirror in `dest` from Debian. See the module doc.

    `conformance`: also Kubernetes' e2e test binaries (kubernetes-test tarball) and the test
    images of testimages.py, for `hardway verify --conformance` (about 5 more minutes, once)."""
    dest = Path(dest)
    _check_dest(dest)
    need("apt-get", "dpkg-deb", "gcc")
    result = MirrorResult(dest)
    files: dict[str, tuple[Path | bytes, int]] = {}  # relpath -> (source, mode)
    provenance: dict[str, dict] = {}

    # Debian binary packages (quick; fail early on a missing one, before the long build).
    pkgs = {}
    debs = binary_packages(*DEBIAN_PACKAGES)
    for p in DEBIAN_PACKAGES:
        root, version, cached = unpacked_package(p, progress, debs[p])
        pkgs[p] = (root, version)
        (result.reused if cached else result.built).append(f"debian:{p}")

    def pkgfile(package: str, *candidates: str) -> Path:
        root = pkgs[package][0]
        for c in candidates:
            if (root / c).is_file():
                return (root / c).resolve()
        raise OperationError(f"Debian package {package} {pkgs[package][1]} has none of {', '.join(candidates)}")

    # etcd
    etcd_v = upstream_version(pkgs["etcd-server"][1])
    d = layout.etcd(etcd_v)
    top = d.members["etcd"].split("/")[0]
    src = {"etcd-server": pkgs["etcd-server"][1], "etcd-client": pkgs["etcd-client"][1]}
    tgz = _repack("etcd", f"{src['etcd-server']}+{src['etcd-client']}", [
        Entry(f"{top}/"),
        Entry(f"{top}/README.md", _note(f"etcd {etcd_v}", src), 0o644),
        Entry(d.members["etcd"], pkgfile("etcd-server", "usr/bin/etcd")),
        Entry(d.members["etcdctl"], pkgfile("etcd-client", "usr/bin/etcdctl")),
    ], result, progress)
    files[d.path] = (tgz, 0o644)
    files[d.checksum_path] = (layout.sha256sum_line(sha256_file(tgz), d.filename).encode(), 0o644)
    provenance["etcd"] = {"version": etcd_v, "debian": src}

    # containerd
    ctd_v = upstream_version(pkgs["containerd"][1])
    d = layout.containerd(ctd_v)
    src = {"containerd": pkgs["containerd"][1]}
    tgz = _repack("containerd", src["containerd"], [Entry("bin/")] + [
        Entry(d.members[b], pkgfile("containerd", f"usr/bin/{b}")) for b in layout.CONTAINERD_BINARIES
    ], result, progress)
    files[d.path] = (tgz, 0o644)
    files[d.checksum_path] = (layout.sha256sum_line(sha256_file(tgz), d.filename).encode(), 0o644)
    provenance["containerd"] = {"version": ctd_v, "debian": src}

    # runc: a bare binary, and runc.sha256sum listing it
    runc_v = upstream_version(pkgs["runc"][1])
    d = layout.runc(runc_v)
    runc_bin = pkgfile("runc", "usr/sbin/runc", "usr/bin/runc")
    files[d.path] = (runc_bin, 0o755)
    files[d.checksum_path] = (layout.sha256sum_line(sha256_file(runc_bin), d.filename).encode(), 0o644)
    provenance["runc"] = {"version": runc_v, "debian": {"runc": pkgs["runc"][1]}}

    # CNI plugins: flat ./NAME
    cni_v = upstream_version(pkgs["containernetworking-plugins"][1])
    d = layout.cni_plugins(cni_v)
    src = {"containernetworking-plugins": pkgs["containernetworking-plugins"][1]}
    tgz = _repack("cni-plugins", src["containernetworking-plugins"], [Entry("./")] + [
        Entry(d.members[p], pkgfile("containernetworking-plugins", f"usr/lib/cni/{p}"))
        for p in layout.CNI_PLUGINS
    ], result, progress)
    files[d.path] = (tgz, 0o644)
    files[d.checksum_path] = (layout.sha256sum_line(sha256_file(tgz), d.filename).encode(), 0o644)
    provenance["cni-plugins"] = {"version": cni_v, "debian": src}

    # Kubernetes, built from source (the long step; cached)
    kb = build_kubernetes(progress, kubernetes_source, ("server", "test") if conformance else ("server",))
    result.kubernetes = kb
    (result.reused if kb.cached else result.built).append("kubernetes")
    for b in layout.KUBERNETES_BINARIES:
        d = layout.kubernetes_binary(kb.version, b)
        files[d.path] = (kb.bindir / b, 0o755)
        files[d.checksum_path] = (sha256_file(kb.bindir / b).encode(), 0o644)  # bare digest, as dl.k8s.io
    provenance["kubernetes"] = {"version": kb.version, "debian": {"kubernetes (source)": kb.source_version},
                                "vendored modules replaced": kb.fixes}

    # Images
    pause = _pause_binary(kb, result, progress)
    images: dict[str, bytes | Path] = {
        PAUSE_IMAGE_NAME: image_tar(PAUSE_IMAGE_REF, {"pause": ImageFile(pause.read_bytes(), 0o755)}, ["/pause"]),
        WEB_IMAGE_NAME: _web_image(pkgfile("busybox-static", "bin/busybox")),
    }
    if conformance:
        images.update(_conformance(kb, pause, pkgfile, files, provenance, result, progress))
    sums = ""
    for name in sorted(images):
        d = layout.image(name)
        data = images[name]
        files[d.path] = (data, 0o644)
        digest = hashlib.sha256(data).hexdigest() if isinstance(data, bytes) else sha256_file(data)
        sums += layout.sha256sum_line(digest, d.filename)
    files[f"{layout.IMAGES_DIR}/SHA256SUMS"] = (sums.encode(), 0o644)
    provenance["images"] = {
        PAUSE_IMAGE_NAME: {"ref": PAUSE_IMAGE_REF, "from": f"build/pause/linux/pause.c of kubernetes {kb.source_version}, gcc -static"},
        WEB_IMAGE_NAME: {"ref": WEB_IMAGE_REF, "from": f"busybox-static {pkgs['busybox-static'][1]}",
                         "cmd": f"httpd -f -p {WEB_PORT} -h /www"},
    }

    # Place everything, then the manifest (last: its presence means a complete mirror).
    progress(f"writing the mirror into {dest}")
    digests = {}
    for rel in sorted(files):
        source, mode = files[rel]
        changed = _place_bytes(source, dest / rel, mode) if isinstance(source, bytes) else _place_file(source, dest / rel, mode)
        (result.written if changed else result.unchanged).append(rel)
        digests[rel] = hashlib.sha256(source).hexdigest() if isinstance(source, bytes) else sha256_file(dest / rel)
    manifest = {"source": "debian", "artifacts": provenance, "files": digests}
    data = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    (result.written if _place_bytes(data, dest / MANIFEST) else result.unchanged).append(MANIFEST)
    result.versions = {k: v["version"] for k, v in provenance.items() if "version" in v}
    return result


def _conformance(kb: KubernetesBuild, pause: Path, pkgfile, files: dict, provenance: dict,
                 result: MirrorResult, progress: Progress) -> dict[str, Path]:
    """The kubernetes-test tarball and the test images (cached): what `verify --conformance` runs."""
    d = layout.kubernetes_test(kb.version)
    tgz = _repack("kubernetes-test", kb.root.name, [
        Entry("kubernetes/"), Entry("kubernetes/test/"), Entry("kubernetes/test/bin/"),
        Entry("kubernetes/README.hardway", _note(f"Kubernetes {kb.version} test binaries (built from source)",
                                                 {"kubernetes (source)": kb.source_version}), 0o644),
        *(Entry(d.members[b], kb.bindir / b) for b in layout.TEST_BINARIES),
    ], result, progress)
    files[d.path] = (tgz, 0o644)
    files[d.checksum_path] = (sha256_file(tgz).encode(), 0o644)  # bare digest, as dl.k8s.io
    provenance["kubernetes-test"] = {"version": kb.version, "debian": {"kubernetes (source)": kb.source_version}}

    minor = ".".join(kb.version.split(".")[:2])
    inp = testimages.Inputs(kb, pkgfile("busybox-static", "bin/busybox"), pkgfile("etcd-server", "usr/bin/etcd"),
                            pkgfile("etcd-client", "usr/bin/etcdctl"), pause)
    key = testimages.images_key(minor, inp, {"busybox": sha256_file(inp.busybox), "etcd": sha256_file(inp.etcd)})
    out = cache_dir() / "debian" / "repack" / f"test-images-{minor}--{key}"
    before = set(p.name for p in out.glob("*.tar")) if out.is_dir() else set()
    paths = testimages.build_images(minor, inp, out, progress)
    (result.reused if set(f"{n}.tar" for n in paths) <= before else result.built).append("test-images")
    provenance["test-images"] = {
        img.name: {"ref": img.ref, **({"stand-in, lacks": img.lacks} if img.lacks else {"faithful": True})}
        for img in testimages.CONFORMANCE_IMAGES[minor]}
    return paths


def _pause_binary(kb: KubernetesBuild, result: MirrorResult, progress: Progress) -> Path:
    """pause.c compiled statically, as build/pause/Makefile does (cached per source version)."""
    out = cache_dir() / "debian" / "repack" / f"pause-{PAUSE_TAG}--{kb.source_version}" / "pause"
    if out.exists():
        result.reused.append("pause")
        return out
    need("gcc")
    progress(f"compiling pause {PAUSE_TAG} from {kb.pause_c.name} (gcc -static)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".pause.tmp.{os.getpid()}")
    try:
        run(["gcc", "-Os", "-Wall", "-Werror", "-static", f"-DVERSION=v{PAUSE_TAG}-hardway",
              "-o", tmp, kb.pause_c], "compiling pause.c (needs gcc and libc6-dev: apt-get install build-essential)")
        run(["strip", tmp], "strip pause (apt-get install binutils)")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, out)
    result.built.append("pause")
    return out


def _web_image(busybox: Path) -> bytes:
    files = {"bin/busybox": ImageFile(busybox.read_bytes(), 0o755), "www/index.html": ImageFile(WEB_INDEX, 0o644)}
    files.update({f"bin/{a}": symlink("busybox") for a in WEB_APPLETS})
    return image_tar(WEB_IMAGE_REF, files, ["/bin/busybox"],
                     ["httpd", "-f", "-p", str(WEB_PORT), "-h", "/www"])


def is_mirror(path: Path) -> bool:
    return (path / MANIFEST).is_file()
