"""The container images Kubernetes' conformance tests run, made offline from the same Debian
source as the cluster and from Debian's binary packages.

`CONFORMANCE_IMAGES[minor]` lists, per image the e2e framework of that minor names
(test/utils/image/manifest.go), how it is made here and, for a stand-in, what it lacks
compared with upstream's image. Each is an OCI layout tarball named exactly as the framework
names the image, so pods created by the tests find it in containerd without a registry.

Recipes:
- agnhost: the tree's test/images/agnhost program on a Debian userland with the tools
  upstream's Alpine image carries (bash, curl, dig, ip/ss, iperf, nc) and busybox for the rest.
- busybox: Debian's busybox-static with every applet linked, as the upstream image has.
- kitten/nautilus: agnhost serving two files, exactly upstream's recipe (FROM agnhost).
- httpd/nginx: busybox's httpd on port 80 serving the page those images serve, at the path
  the tests use; nonewprivs: the tree's nnp program, setuid; nonroot: busybox as uid 1234.
- sample-apiserver: k8s.io/sample-apiserver of the same tree; etcd: Debian's etcd.
"""

from __future__ import annotations

import posixpath

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import OperationError
from ..fsio import write_atomic
from ..proc import run
from .cache import cache_key
from .debian import ROOTFS_SKIP, KubernetesBuild, Progress, _quiet, package_rootfs, package_versions
from .oci import ImageFile, directory, image_tar, symlink, tree_files

# Bump when a recipe's output would change for the same inputs.
RECIPE_FORMAT = "2"


@dataclass(frozen=True)
class TestImage:
    ref: str  # as the e2e framework of the minor names it
    recipe: str  # key of RECIPES
    lacks: str = ""  # a stand-in: what upstream's image has that this one does not ("" = faithful)

    @property
    def name(self) -> str:
        """The mirror's file name (images/<name>.tar): e2e-<image>-<tag>."""
        repo, tag = self.ref.rsplit(":", 1)
        return f"e2e-{repo.rsplit('/', 1)[1]}-{tag}"


# test/utils/image/manifest.go of Kubernetes 1.20 (initImageConfigs): every image a
# [Conformance] test of 1.20 runs. Images only non-conformance tests use are not made.
CONFORMANCE_IMAGES: dict[str, tuple[TestImage, ...]] = {
    "1.20": (
        TestImage("k8s.gcr.io/e2e-test-images/agnhost:2.21", "agnhost",
                  "built from the 1.20.2 tree's test/images/agnhost (its VERSION says 2.25, a superset "
                  "of 2.21); Debian's bash, curl, dig, iproute2, iperf and netcat-openbsd instead of "
                  "Alpine's, dash as /bin/sh, busybox for the rest; no coredns binary (upstream bundles "
                  "CoreDNS 1.6.2)"),
        TestImage("docker.io/library/busybox:1.29", "busybox",
                  "Debian's busybox-static 1.35 (upstream: busybox 1.29)"),
        TestImage("k8s.gcr.io/pause:3.2", "pause"),
        TestImage("docker.io/library/httpd:2.4.38-alpine", "httpd",
                  "busybox httpd serving /usr/local/apache2/htdocs on port 80, not Apache httpd "
                  "(no modules, .htaccess or CGI; `httpd-foreground` starts it)"),
        TestImage("docker.io/library/httpd:2.4.39-alpine", "httpd",
                  "busybox httpd serving /usr/local/apache2/htdocs on port 80, not Apache httpd"),
        TestImage("docker.io/library/nginx:1.14-alpine", "nginx",
                  "busybox httpd serving /usr/share/nginx/html on port 80, not nginx (its "
                  "configuration and arguments are ignored)"),
        TestImage("docker.io/library/nginx:1.15-alpine", "nginx",
                  "busybox httpd serving /usr/share/nginx/html on port 80, not nginx"),
        TestImage("gcr.io/kubernetes-e2e-test-images/kitten:1.0", "kitten",
                  "on the agnhost stand-in (upstream: FROM agnhost, the same recipe)"),
        TestImage("gcr.io/kubernetes-e2e-test-images/nautilus:1.0", "nautilus",
                  "on the agnhost stand-in (upstream: FROM agnhost, the same recipe)"),
        TestImage("gcr.io/kubernetes-e2e-test-images/nonewprivs:1.0", "nonewprivs",
                  "busybox userland instead of Alpine's"),
        TestImage("gcr.io/kubernetes-e2e-test-images/nonroot:1.0", "nonroot",
                  "busybox userland instead of debian-base's"),
        TestImage("gcr.io/kubernetes-e2e-test-images/sample-apiserver:1.17", "sample-apiserver",
                  "k8s.io/sample-apiserver of the 1.20.2 tree (upstream: v0.17.0); no Alpine userland"),
        TestImage("k8s.gcr.io/etcd:3.4.13-0", "etcd",
                  "Debian's etcd 3.4.23 with glibc and busybox (upstream: etcd 3.4.13)"),
    ),
}

# Debian packages on the agnhost stand-in: what upstream's Dockerfile adds to Alpine
# (`apk add bind-tools curl netcat-openbsd iproute2 iperf bash`), by Debian's names, plus
# dash as /bin/sh: Debian's busybox runs its own applets before anything on PATH (it is built
# "standalone"), so a busybox /bin/sh would run busybox's nc for `sh -c 'nc -u ...'`; Alpine's
# busybox does not, and the tests rely on netcat-openbsd's options.
AGNHOST_PACKAGES = ("bash", "curl", "bind9-dnsutils", "iproute2", "iperf", "netcat-openbsd", "dash")
# What Debian's etcd (dynamically linked against glibc) needs to run.
ETCD_PACKAGES = ("libc6",)
# Links Debian makes at install time (update-alternatives, maintainer scripts), not in the packages.
AGNHOST_ALTERNATIVES = {"bin/nc": "nc.openbsd", "usr/bin/awk": "gawk", "bin/sh": "dash"}

PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
ETC_PASSWD = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
ETC_GROUP = b"root:x:0:\nnogroup:x:65534:\n"
HTTPD_INDEX = b"<html><body><h1>It works!</h1></body></html>\n"
NGINX_INDEX = (b"<!DOCTYPE html>\n<html>\n<head>\n<title>Welcome to nginx!</title>\n</head>\n<body>\n"
               b"<h1>Welcome to nginx!</h1>\n</body>\n</html>\n")


@dataclass(frozen=True)
class Inputs:
    """What the recipes are made from."""

    kb: KubernetesBuild  # with the test stage
    busybox: Path  # Debian's busybox-static binary
    etcd: Path  # Debian's etcd binary
    etcdctl: Path
    pause: Path  # the static pause binary


def busybox_applets(busybox: Path) -> list[str]:
    """Where the upstream busybox image puts each applet (`busybox --list-full`: bin/sh, ...)."""
    out = run([busybox, "--list-full"], f"listing the applets of {busybox}", timeout=30)
    return [line.strip() for line in out.splitlines() if line.strip() and line.strip() != "bin/busybox"]


def _base(busybox: Path, applets: list[str]) -> dict[str, ImageFile]:
    """A busybox userland: /bin/busybox, every applet linked, /etc/passwd, /tmp."""
    files = {"bin/busybox": ImageFile(busybox.read_bytes(), 0o755)}
    for a in applets:
        files[a] = symlink("/bin/busybox")
    files.update({"etc/passwd": ImageFile(ETC_PASSWD, 0o644), "etc/group": ImageFile(ETC_GROUP, 0o644),
                  "tmp": directory(0o1777), "root": directory(0o700)})
    return files


PATH_DIRS = ("usr/local/sbin", "usr/local/bin", "usr/sbin", "usr/bin", "sbin", "bin")


def with_busybox(files: dict[str, ImageFile], busybox: Path, applets: list[str]) -> dict[str, ImageFile]:
    """A userland of Debian's packages (`files`), and busybox for every command they do not
    bring, as Alpine's base does upstream. An applet is left out when a real program of that
    name is anywhere on PATH: busybox's `nc` in /usr/bin would otherwise shadow netcat-openbsd's
    in /bin (PATH searches /usr/bin first), and tests rely on the real one's options (-u, -z)."""
    real = {posixpath.basename(p) for p in files if posixpath.dirname(p) in PATH_DIRS}
    out = dict(files)
    for path, f in _base(busybox, applets).items():
        if posixpath.dirname(path) in PATH_DIRS and posixpath.basename(path) in real:
            continue
        out.setdefault(path, f)
    return out


def _agnhost_files(inp: Inputs, applets: list[str], progress: Progress) -> tuple[dict[str, ImageFile], dict]:
    roots, versions = package_rootfs(AGNHOST_PACKAGES, progress)
    files = tree_files(roots, ROOTFS_SKIP)
    for path, target in AGNHOST_ALTERNATIVES.items():
        files[path] = symlink(target)
    files = with_busybox(files, inp.busybox, applets)
    kb = inp.kb
    files.update({
        "agnhost": ImageFile((kb.bindir / "agnhost").read_bytes(), 0o755),
        "agnhost-2": symlink("agnhost"),  # entrypoint-tester tests run it under this name
        "uploads": directory(0o755),  # netexec stores uploads here
        "localhost.crt": ImageFile(kb.file("test/images/agnhost/porter/localhost.crt").read_bytes(), 0o644),
        "localhost.key": ImageFile(kb.file("test/images/agnhost/porter/localhost.key").read_bytes(), 0o644),
    })
    return files, versions


def _webserver(inp: Inputs, applets: list[str], root: str, index: bytes, script: str, cmd: list[str]) -> dict:
    files = _base(inp.busybox, applets)
    files[f"{root}/index.html"] = ImageFile(index, 0o644)
    files[script] = ImageFile(f"#!/bin/sh\n# hardway stand-in: busybox httpd on port 80\n"
                              f"exec httpd -f -p 80 -h {root}\n".encode(), 0o755)
    return {"files": files, "entrypoint": [], "cmd": cmd}


def _recipes(inp: Inputs, progress: Progress) -> dict[str, Callable[[], dict]]:
    applets = busybox_applets(inp.busybox)
    kb = inp.kb
    agnhost_cache: dict = {}

    def agnhost_files() -> dict[str, ImageFile]:
        if not agnhost_cache:
            agnhost_cache["files"], agnhost_cache["versions"] = _agnhost_files(inp, applets, progress)
        return dict(agnhost_cache["files"])

    def picture(name: str) -> dict:
        files = agnhost_files()
        for f in ("data.json", f"{name}.jpg"):
            files[f] = ImageFile(kb.file(f"test/images/{name}/html/{f}").read_bytes(), 0o644)
        return {"files": files, "entrypoint": ["/agnhost"], "cmd": ["test-webserver"]}

    def etcd() -> dict:
        roots, _ = package_rootfs(ETCD_PACKAGES, progress)
        files = with_busybox(tree_files(roots, ROOTFS_SKIP), inp.busybox, applets)
        files["usr/local/bin/etcd"] = ImageFile(inp.etcd.read_bytes(), 0o755)
        files["usr/local/bin/etcdctl"] = ImageFile(inp.etcdctl.read_bytes(), 0o755)
        files["var/etcd"] = directory(0o700)
        return {"files": files, "entrypoint": [], "cmd": ["/usr/local/bin/etcd"]}

    return {
        "agnhost": lambda: {"files": agnhost_files(), "entrypoint": ["/agnhost"], "cmd": ["pause"]},
        "busybox": lambda: {"files": _base(inp.busybox, applets), "entrypoint": [], "cmd": ["sh"]},
        "pause": lambda: {"files": {"pause": ImageFile(inp.pause.read_bytes(), 0o755)},
                          "entrypoint": ["/pause"], "cmd": []},
        "httpd": lambda: _webserver(inp, applets, "usr/local/apache2/htdocs", HTTPD_INDEX,
                                    "usr/local/bin/httpd-foreground", ["httpd-foreground"]),
        "nginx": lambda: _webserver(inp, applets, "usr/share/nginx/html", NGINX_INDEX,
                                    "usr/sbin/nginx", ["nginx", "-g", "daemon off;"]),
        "kitten": lambda: picture("kitten"),
        "nautilus": lambda: picture("nautilus"),
        "nonewprivs": lambda: {"files": {**_base(inp.busybox, applets),
                                         "usr/local/bin/nnp": ImageFile((kb.bindir / "nonewprivs").read_bytes(), 0o4755)},
                               "entrypoint": [], "cmd": ["nnp"]},
        "nonroot": lambda: {"files": _base(inp.busybox, applets), "entrypoint": [], "cmd": ["sh"],
                            "user": "1234"},
        "sample-apiserver": lambda: {"files": {"sample-apiserver": ImageFile(
            (kb.bindir / "sample-apiserver").read_bytes(), 0o755), "tmp": directory(0o1777)},
            "entrypoint": ["/sample-apiserver"], "cmd": []},
        "etcd": etcd,
    }


def conformance_downloads(spec) -> list:
    """What `verify --conformance` fetches for `spec` (a ClusterSpec): Kubernetes' test
    binaries, and with a mirror the test images of its minor (without one the nodes pull
    upstream's images themselves)."""
    from . import layout

    out = [layout.kubernetes_test(spec.kubernetes.version)]
    if spec.artifacts.mirror and spec.minor in CONFORMANCE_IMAGES:
        out += [layout.image(n) for n in dict.fromkeys(i.name for i in CONFORMANCE_IMAGES[spec.minor])]
    return out


def images_key(minor: str, inp: Inputs, extra: dict[str, str]) -> str:
    """Cache key of a minor's image set: the recipes' format, the Kubernetes build, the Debian
    versions of every package an image is made from, and `extra` (digests of other inputs)."""
    return cache_key({"format": RECIPE_FORMAT, "minor": minor, "kubernetes": inp.kb.root.name,
                      "images": [(i.ref, i.recipe) for i in CONFORMANCE_IMAGES[minor]],
                      "packages": rootfs_versions(), **extra})


def rootfs_versions() -> dict[str, str]:
    """package -> Debian version of everything the images' userlands are unpacked from (apt's
    answer, no download)."""
    return package_versions([*AGNHOST_PACKAGES, *ETCD_PACKAGES])


def build_images(minor: str, inp: Inputs, out_dir: Path, progress: Progress = _quiet) -> dict[str, Path]:
    """Write every image of CONFORMANCE_IMAGES[minor] into `out_dir` (name.tar); return name -> path.
    An image already there is kept (the caller keys `out_dir` by images_key)."""
    if minor not in CONFORMANCE_IMAGES:
        raise OperationError(f"hardway has no conformance image recipes for Kubernetes {minor} "
                             f"(it has: {', '.join(CONFORMANCE_IMAGES)})")
    out_dir.mkdir(parents=True, exist_ok=True)
    recipes = _recipes(inp, progress)
    paths = {}
    for img in CONFORMANCE_IMAGES[minor]:
        dest = out_dir / f"{img.name}.tar"
        paths[img.name] = dest
        if dest.exists():
            continue
        progress(f"making test image {img.ref}" + (" (stand-in)" if img.lacks else ""))
        r = recipes[img.recipe]()
        data = image_tar(img.ref, r["files"], r["entrypoint"], r["cmd"] or None, env=[PATH_ENV],
                         user=r.get("user"))
        write_atomic(dest, data, 0o644)
    return paths


__all__ = ["CONFORMANCE_IMAGES", "Inputs", "TestImage", "build_images", "images_key"]
