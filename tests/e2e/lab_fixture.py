"""A real 3-machine `hardway lab` for the e2e tests, booted once per module and always taken down.

    from tests.e2e.lab_fixture import running_lab
    with running_lab(tmp_dir) as lab:   # lab.dir, lab.spec, lab.up_report, lab.host_sysctls_before
        hardway.lab.run(lab.dir, "hwe2e-w0", "hostname")

The lab uses its own cluster name (`hwe2e`, bridge `hw-hwe2e`) and subnet (10.240.77.0/24),
so it does not collide with a user's lab. Needs Linux, root, systemd-container, iproute2,
openssh-client and, unless the image is cached already, debootstrap and Debian's archive
(about 80 s, once). Without them the test is skipped (failed under HARDWAY_E2E_REQUIRED=1).
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from hardway import hostcheck
from hardway import api
from hardway import lab as hwlab
from hardway.lab import host, image
from hardway.spec.load import load_spec
from hardway.spec.model import ClusterSpec
from tests.helpers import require

CLUSTER = "hwe2e"
SUBNET = "10.240.77.0/24"
NODES = {  # preset name -> (lab name, address)
    "controller-0": ("hwe2e-c0", "10.240.77.10"),
    "worker-0": ("hwe2e-w0", "10.240.77.20"),
    "worker-1": ("hwe2e-w1", "10.240.77.21"),
}
CONTROLLER, WORKER0, WORKER1 = (n for n, _ in NODES.values())


def missing_prerequisites() -> list[str]:
    if not sys.platform.startswith("linux"):
        return ["Linux"]
    missing = []
    if os.geteuid() != 0:
        missing.append("root")
    if not Path("/sys/fs/cgroup").is_dir():
        missing.append("a cgroup filesystem at /sys/fs/cgroup")
    programs = ["systemd-nspawn", "ip", "ssh", "ssh-keygen"]
    if image.cached_image() is None:
        programs.append("debootstrap")
    missing += [f"{p} (apt-get install {hostcheck.PACKAGES[p]})" for p in programs if shutil.which(p) is None]
    return missing


def write_spec(directory: Path) -> ClusterSpec:
    """The basic preset with the lab profile, renamed and moved to the test subnet."""
    api.init(directory, "basic", name=CLUSTER, force=True, lab=True)
    path = directory / "cluster.yaml"
    text = path.read_text()
    for old, (new, addr) in NODES.items():
        old_addr = {"controller-0": "10.240.0.10", "worker-0": "10.240.0.20", "worker-1": "10.240.0.21"}[old]
        text = text.replace(f"name: {old},", f"name: {new},").replace(f"address: {old_addr},", f"address: {addr},")
    text = text.replace("nodeSubnet: 10.240.0.0/24", f"nodeSubnet: {SUBNET}")
    path.write_text(text)
    return load_spec(path).spec


@dataclass
class Lab:
    dir: Path
    spec: ClusterSpec
    up_report: hwlab.UpReport
    up_seconds: float
    image_was_cached: bool
    host_sysctls_before: dict[str, str]


def _log(msg: str) -> None:
    print(f"[lab] {msg}", file=sys.stderr, flush=True)


@contextmanager
def running_lab(directory: Path) -> Iterator[Lab]:
    missing = missing_prerequisites()
    require(not missing, "a hardway lab needs: " + "; ".join(missing))
    directory.mkdir(parents=True, exist_ok=True)
    if (directory / "lab" / "state.json").exists():  # a crashed earlier run
        hwlab.destroy(directory, _log)
    spec = write_spec(directory)
    # What the host had before any lab changed it: the current values, or, while another lab
    # holds them (or one was killed before restoring them), the originals on record.
    before = host.recorded_originals() or {k: host.read_sysctl(k) for k in host.KUBELET_SYSCTLS}
    cached = image.cached_image() is not None
    t = time.monotonic()
    try:
        report = hwlab.up(directory, _log)
        seconds = time.monotonic() - t
        _log(f"lab up: {len(report.started)} machines in {seconds:.1f} s "
             f"(image {'cached' if cached else 'built now'})")
        yield Lab(directory, spec, report, seconds, cached, before)
    finally:
        t = time.monotonic()
        hwlab.destroy(directory, _log)
        _log(f"lab destroy: {time.monotonic() - t:.1f} s")


# ---------------------------------------------------------------------------------------------
# containerd + runc + a busybox image, from Debian's packages (cached under $HARDWAY_CACHE)


def containerd_files() -> dict[str, Path]:
    """Host paths of containerd, its shim, ctr, runc and a static busybox, or skip."""
    require(shutil.which("apt-get") is not None and shutil.which("dpkg-deb") is not None,
            "containerd for the lab test comes from Debian packages: needs apt-get and dpkg-deb")
    from hardway.artifacts.debian import unpacked_package

    containerd, _, _ = unpacked_package("containerd", _log)
    runc, _, _ = unpacked_package("runc", _log)
    busybox, _, _ = unpacked_package("busybox-static", _log)
    files = {
        "containerd": containerd / "usr/bin/containerd",
        "containerd-shim-runc-v2": containerd / "usr/bin/containerd-shim-runc-v2",
        "ctr": containerd / "usr/bin/ctr",
        "runc": runc / "usr/sbin/runc",
        "busybox": busybox / "bin/busybox",
    }
    for name, path in files.items():
        require(path.is_file(), f"{path} missing from the Debian package for {name}")
    return files


CONTAINERD_CONFIG = """\
version = 2
# the lab cannot lower oom_score_adj (no CAP_SYS_RESOURCE): runc must not try (LAB.md 5)
[plugins."io.containerd.grpc.v1.cri"]
  restrict_oom_score_adj = true
"""

CONTAINERD_UNIT = """\
[Unit]
Description=containerd (hardway lab e2e test)
After=network.target

[Service]
ExecStart=/usr/local/bin/containerd
Delegate=yes
KillMode=process
Restart=on-failure

[Install]
WantedBy=multi-user.target
"""
