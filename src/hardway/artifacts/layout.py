"""Where each upstream artifact lives, and how its checksum is published. Pure: no I/O.

A *mirror* holds the same relative paths as the upstream URLs with the scheme stripped, e.g.
`dl.k8s.io/release/v1.20.2/bin/linux/amd64/kube-apiserver`. The release layouts below follow
the projects' own release scripts:

| artifact | file | checksum file (format) | inside |
|---|---|---|---|
| kubernetes-server | `dl.k8s.io/release/vV/bin/linux/ARCH/NAME` | `NAME.sha256` (bare hex digest) | the binary |
| etcd | `github.com/etcd-io/etcd/releases/download/vV/etcd-vV-linux-ARCH.tar.gz` | `SHA256SUMS` (`shasum -a 256` of every archive) | `etcd-vV-linux-ARCH/{etcd,etcdctl}` (and `etcdutl` from 3.5) |
| containerd | `github.com/containerd/containerd/releases/download/vV/containerd-V-linux-ARCH.tar.gz` | `<file>.sha256sum` | `bin/{containerd,ctr,containerd-shim-runc-v2,...}` |
| runc | `github.com/opencontainers/runc/releases/download/vV/runc.ARCH` | `runc.sha256sum` (one line per file) | the binary |
| cni-plugins | `github.com/containernetworking/plugins/releases/download/vV/cni-plugins-linux-ARCH-vV.tgz` | `<file>.sha256` | flat: `./bridge`, `./host-local`, ... |
| kubernetes-test | `dl.k8s.io/release/vV/kubernetes-test-linux-ARCH.tar.gz` | `<file>.sha256` (bare hex digest) | `kubernetes/test/bin/{e2e.test,ginkgo}` |
| image | `images/NAME.tar` (hardway's own) | `images/SHA256SUMS` | an OCI image layout |

Images in `spec.artifacts.images`: an entry that is a bare name (`pause-3.2`) means the
mirror's `images/<name>.tar`, checked against `images/SHA256SUMS`; an entry with a `/` or
ending in `.tar` is a local file path (relative to the cluster directory), used as it is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..spec.versions import etcd_has

ARCH = "amd64"

KUBERNETES_BINARIES = (
    "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "kubectl",
)
ETCD_BINARIES = ("etcd", "etcdctl")  # and etcdutl from 3.5 on: etcd_binaries()
# What the containerd 1.6 release tarball's bin/ holds (Makefile BINARIES) that Debian ships too;
# upstream also has containerd-stress, which Debian's package does not carry.
CONTAINERD_BINARIES = ("containerd", "containerd-shim", "containerd-shim-runc-v1", "containerd-shim-runc-v2", "ctr")
# The plugins of the CNI plugins 1.1.x release (flat in the archive).
CNI_PLUGINS = (
    "bandwidth", "bridge", "dhcp", "firewall", "host-device", "host-local", "ipvlan", "loopback",
    "macvlan", "portmap", "ptp", "sbr", "static", "tuning", "vlan", "vrf",
)
ARTIFACTS = ("kubernetes-server", "etcd", "containerd", "runc", "cni-plugins")


@dataclass(frozen=True)
class Download:
    """One file to fetch, and where its published checksum is."""

    key: str  # unique within a fetch: "kubernetes-server/kubelet", "etcd", "image/pause-3.2"
    artifact: str  # kubernetes-server, etcd, containerd, runc, cni-plugins, image
    path: str  # relative to a site root / mirror root, e.g. "dl.k8s.io/release/v1.20.2/..."
    checksum_path: str  # the published checksum file, same convention
    # binary name -> member path inside the archive; {} for a file that is itself the binary
    members: dict[str, str] = field(default_factory=dict)
    executable: bool = False  # the file itself is a program (kubelet, runc.amd64)

    @property
    def filename(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def upstream_url(self) -> str:
        return "https://" + self.path

    def member(self, name: str) -> str:
        try:
            return self.members[name]
        except KeyError:
            raise KeyError(f"{self.filename} has no {name!r} (it has: {', '.join(sorted(self.members))})") from None


def _v(version: str) -> str:
    return version.removeprefix("v")


def kubernetes_binary(version: str, name: str, arch: str = ARCH) -> Download:
    path = f"dl.k8s.io/release/v{_v(version)}/bin/linux/{arch}/{name}"
    return Download(f"kubernetes-server/{name}", "kubernetes-server", path, path + ".sha256", executable=True)


def etcd_binaries(version: str) -> tuple[str, ...]:
    """The programs of etcd's release tarball hardway uses: etcdutl (snapshot status and
    restore) is there from 3.5 on (spec/catalogue.py ETCD_SINCE)."""
    return ETCD_BINARIES + (("etcdutl",) if etcd_has(_v(version), "etcdutl") else ())


def etcd(version: str, arch: str = ARCH) -> Download:
    top = f"etcd-v{_v(version)}-linux-{arch}"
    base = f"github.com/etcd-io/etcd/releases/download/v{_v(version)}"
    return Download("etcd", "etcd", f"{base}/{top}.tar.gz", f"{base}/SHA256SUMS",
                    {b: f"{top}/{b}" for b in etcd_binaries(version)})


def containerd(version: str, arch: str = ARCH) -> Download:
    path = (f"github.com/containerd/containerd/releases/download/v{_v(version)}/"
            f"containerd-{_v(version)}-linux-{arch}.tar.gz")
    return Download("containerd", "containerd", path, path + ".sha256sum",
                    {b: f"bin/{b}" for b in CONTAINERD_BINARIES})


def runc(version: str, arch: str = ARCH) -> Download:
    base = f"github.com/opencontainers/runc/releases/download/v{_v(version)}"
    return Download("runc", "runc", f"{base}/runc.{arch}", f"{base}/runc.sha256sum", executable=True)


def cni_plugins(version: str, arch: str = ARCH) -> Download:
    path = (f"github.com/containernetworking/plugins/releases/download/v{_v(version)}/"
            f"cni-plugins-linux-{arch}-v{_v(version)}.tgz")
    return Download("cni-plugins", "cni-plugins", path, path + ".sha256",
                    {p: f"./{p}" for p in CNI_PLUGINS})


# Kubernetes' own test binaries (e2e.test and the ginkgo runner), as the release publishes them
# for conformance runs (Sonobuoy's image is made from this tarball).
TEST_BINARIES = ("e2e.test", "ginkgo")


def kubernetes_test(version: str, arch: str = ARCH) -> Download:
    path = f"dl.k8s.io/release/v{_v(version)}/kubernetes-test-linux-{arch}.tar.gz"
    return Download("kubernetes-test", "kubernetes-test", path, path + ".sha256",
                    {b: f"kubernetes/test/bin/{b}" for b in TEST_BINARIES})


IMAGES_DIR = "images"


def image(name: str) -> Download:
    return Download(f"image/{name}", "image", f"{IMAGES_DIR}/{name}.tar", f"{IMAGES_DIR}/SHA256SUMS")


def image_is_path(entry: str) -> bool:
    """An images entry naming a local file rather than a mirror image (see the module doc)."""
    return "/" in entry or entry.endswith(".tar")


def downloads_for(kubernetes_version: str, etcd_v: str, containerd_v: str, runc_v: str, cni_v: str,
                  images: list[str] | tuple[str, ...] = ()) -> list[Download]:
    out = [kubernetes_binary(kubernetes_version, b) for b in KUBERNETES_BINARIES]
    out += [etcd(etcd_v), containerd(containerd_v), runc(runc_v), cni_plugins(cni_v)]
    out += [image(i) for i in images if not image_is_path(i)]
    return out


def downloads_for_spec(spec) -> list[Download]:  # spec: hardway.spec.model.ClusterSpec
    v = spec.artifacts.versions
    return downloads_for(spec.kubernetes.version, v.etcd, v.containerd, v.runc, v.cni_plugins,
                         spec.artifacts.images)


# ---------------------------------------------------------------------------------------------
# checksum files

_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
_BSD = re.compile(r"^SHA256 \((?P<name>.+)\) = (?P<hex>[0-9a-fA-F]{64})$")


class ChecksumFormatError(ValueError):
    pass


def parse_checksums(text: str) -> dict[str, str]:
    """Parse a checksum file into {file name: lowercase hex}; a bare digest maps from "".

    Accepts what the projects publish: a bare digest (Kubernetes' `NAME.sha256`),
    `sha256sum`/`shasum` lines (`HEX  NAME`, `HEX *NAME` for binary mode, `./NAME`), and BSD
    `SHA256 (NAME) = HEX`. Names are reduced to their last path component.
    """
    sums: dict[str, str] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _BSD.match(line)
        if m:
            name, hexd = m["name"], m["hex"]
        else:
            parts = line.split(None, 1)
            hexd = parts[0]
            name = parts[1].lstrip("*") if len(parts) > 1 else ""
        if not _HEX64.match(hexd):
            raise ChecksumFormatError(f"line {n}: not a sha256 digest: {raw[:80]!r}")
        name = name.strip().rsplit("/", 1)[-1]
        if name in sums and sums[name] != hexd.lower():
            raise ChecksumFormatError(f"line {n}: two different digests for {name or 'the file'}")
        sums[name] = hexd.lower()
    if not sums:
        raise ChecksumFormatError("no sha256 digest in it")
    return sums


def expected_digest(checksum_text: str, filename: str) -> str:
    """The digest a checksum file publishes for `filename` (a bare digest applies to any)."""
    sums = parse_checksums(checksum_text)
    if filename in sums:
        return sums[filename]
    if set(sums) == {""}:
        return sums[""]
    raise ChecksumFormatError(f"it lists no digest for {filename} (it lists: {', '.join(sorted(sums))})")


def sha256sum_line(hexdigest: str, filename: str) -> str:
    return f"{hexdigest}  {filename}\n"
