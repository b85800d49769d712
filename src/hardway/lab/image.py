"""The lab's machine image: Debian bookworm from debootstrap, built once and cached.

    cache_dir()/lab/images/<suite>-<key>/rootfs      the pristine tree machines are copied from
    cache_dir()/lab/images/<suite>-<key>/image.json  its inputs, size and build time

The key hashes every input (suite, variant, package list, architecture, IMAGE_RECIPE): change
one and the next `lab up` builds a new image. The recipe stays small on purpose: the lab's own
units and settings are written into each machine by `machine.provision` at every `up`, so a
newer hardway fixes existing machines without a rebuild.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..artifacts.cache import cache_dir, cache_key
from ..errors import OperationError
from .host import Progress, check_disk, need

SUITE = "bookworm"
VARIANT = "minbase"
# LAB.md 1, plus iputils-ping (ping between machines while debugging the lab network).
# containerd, kubelet and kube-proxy need iptables, conntrack, socat (port-forward), kmod,
# mount/nsenter (util-linux, in minbase) and procps; systemd + dbus + sshd make the machine.
# haproxy, keepalived and curl (keepalived's apiserver check) serve the ha and ha-vip presets
# (socat also reads HAProxy's stats socket for `up` and `verify`):
# machines have no route to a Debian mirror during `up` (LAB.md 17).
PACKAGES = (
    "systemd", "systemd-sysv", "dbus", "openssh-server", "iproute2", "iptables",
    "ca-certificates", "conntrack", "socat", "kmod", "procps", "iputils-ping",
    "haproxy", "keepalived", "curl",
)
# Bump when what happens to the tree after debootstrap changes.
IMAGE_RECIPE = 1
DEFAULT_MIRROR = "http://deb.debian.org/debian"
MIRROR_ENV = "HARDWAY_DEBIAN_MIRROR"
IMAGE_BYTES = 400 * 2**20  # what one tree takes, with headroom (debootstrap's is ~280 MB)


@dataclass(frozen=True)
class Image:
    key: str
    rootfs: Path
    built: bool  # True: built by this call; False: from the cache


def architecture() -> str:
    p = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True)
    if p.returncode == 0 and p.stdout.strip():
        return p.stdout.strip()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)


def image_inputs() -> dict:
    return {"suite": SUITE, "variant": VARIANT, "packages": sorted(PACKAGES),
            "arch": architecture(), "recipe": IMAGE_RECIPE}


def image_key() -> str:
    return cache_key(image_inputs(), 16)


def images_dir() -> Path:
    return cache_dir() / "lab" / "images"


def image_dir(key: str) -> Path:
    return images_dir() / f"{SUITE}-{key}"


def cached_image() -> Image | None:
    key = image_key()
    d = image_dir(key)
    if (d / "image.json").exists():
        return Image(key, d / "rootfs", False)
    return None


def ensure_image(progress: Progress) -> Image:
    """The current image, built now if the cache lacks it (about 80 s and 280 MB)."""
    found = cached_image()
    if found:
        return found
    key = image_key()
    images_dir().mkdir(parents=True, exist_ok=True)
    with open(images_dir() / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another `lab up` may be building it right now
        found = cached_image()
        if found:
            return found
        return _build(key, progress)


def _build(key: str, progress: Progress) -> Image:
    need("debootstrap")
    check_disk(images_dir(), 2 * IMAGE_BYTES, "building the lab image")
    mirror = os.environ.get(MIRROR_ENV) or DEFAULT_MIRROR
    final = image_dir(key)
    staging = images_dir() / f".build-{key}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    log = images_dir() / f"{SUITE}-{key}.log"
    cmd = ["debootstrap", f"--variant={VARIANT}", f"--include={','.join(PACKAGES)}",
           f"--arch={architecture()}", SUITE, str(staging / "rootfs"), mirror]
    progress(f"building the lab image: debootstrap {SUITE} from {mirror} (about 80 s, once; "
             f"cached in {final}; log {log})")
    started = time.monotonic()
    done = threading.Event()

    def heartbeat() -> None:
        while not done.wait(20):
            progress(f"  debootstrap still running ({time.monotonic() - started:.0f} s)")

    t = threading.Thread(target=heartbeat, daemon=True)
    t.start()
    try:
        with open(log, "w") as out:
            p = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        done.set()
        t.join()
    if p.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        tail = "\n".join(log.read_text(errors="replace").strip().splitlines()[-15:])
        raise OperationError(f"debootstrap failed (exit {p.returncode}); full log: {log}\n{tail}\n"
                             f"(set {MIRROR_ENV} to use another Debian mirror)")
    root = staging / "rootfs"
    _trim(root)
    size = sum(f.lstat().st_size for f in root.rglob("*") if not f.is_dir())
    (staging / "image.json").write_text(json.dumps({
        **image_inputs(), "key": key, "mirror": mirror, "bytes": size,
        "build_seconds": round(time.monotonic() - started, 1),
        "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }, indent=2) + "\n")
    os.replace(staging, final)
    progress(f"lab image built in {time.monotonic() - started:.0f} s ({size / 2**20:.0f} MB)")
    for old in images_dir().glob(f"{SUITE}-*"):  # machines are copies: older images are not needed
        if old.is_dir() and old != final:
            shutil.rmtree(old, ignore_errors=True)
    return Image(key, final / "rootfs", True)


def _trim(root: Path) -> None:
    """Make the tree a template: nothing machine-specific, nothing a machine can't use."""
    for f in (root / "etc/ssh").glob("ssh_host_*"):
        f.unlink()  # every machine gets its own host keys
    (root / "etc/machine-id").write_text("")
    (root / "etc/hostname").write_text("localhost\n")
    # Machines have no route out: apt's lists and downloaded .debs are dead weight (~100 MB per
    # machine copy). Nodes install extra packages with `dpkg -i` from the operator's cache.
    for d in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for f in (root / d).glob("*"):
            if f.is_file():
                f.unlink()
    for d in ("usr/share/man", "usr/share/locale"):
        shutil.rmtree(root / d, ignore_errors=True)
        (root / d).mkdir()
    for doc in (root / "usr/share/doc").glob("*"):
        if doc.is_dir() and not doc.is_symlink():
            for f in doc.iterdir():
                if f.name != "copyright":
                    if f.is_dir() and not f.is_symlink():
                        shutil.rmtree(f, ignore_errors=True)
                    else:
                        f.unlink()
