"""Checks of the operator's own machine: is a program there, and which Debian package has it."""

from __future__ import annotations

import shutil

from .errors import OperationError

# Program -> Debian package, for every program hardway runs on the operator's machine.
PACKAGES = {
    "apt-get": "apt", "apt-cache": "apt", "dpkg-source": "dpkg-dev", "dpkg-deb": "dpkg",
    "go": "golang-go", "rsync": "rsync", "make": "make", "gcc": "gcc", "bash": "bash",
    "systemd-nspawn": "systemd-container", "debootstrap": "debootstrap", "ip": "iproute2",
    "ssh": "openssh-client", "ssh-keygen": "openssh-client", "cp": "coreutils",
}


def need(*programs: str) -> None:
    """Fail naming every missing program and the Debian package to install."""
    missing = [p for p in programs if shutil.which(p) is None]
    if missing:
        pkgs = sorted({PACKAGES.get(p, p) for p in missing})
        raise OperationError(
            f"missing program{'s' if len(missing) > 1 else ''}: {', '.join(missing)}; "
            f"install with: apt-get install {' '.join(pkgs)}"
        )
