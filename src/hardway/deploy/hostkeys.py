"""SSH host keys: known for lab machines, trusted on first use for the rest, never silently replaced.

Sources, in order: `DIR/lab/known_hosts` (written by `hardway lab up` from keys it made, so
lab machines are never trusted blindly) and `DIR/known_hosts` (hardway's record of every
other host, appended the first time it connects). A host found in either file must present
a recorded key; a different key is an error naming the file to edit. A key trusted on first
use is announced with its fingerprint, so the user can compare it with the host's own.
"""

from __future__ import annotations

import base64
import hashlib
import threading
from collections.abc import Callable
from pathlib import Path

from ..fsio import write_atomic


def _host_field(address: str, port: int) -> str:
    return address if port == 22 else f"[{address}]:{port}"


def fingerprint(public_key: str) -> str:
    """`ssh-ed25519 AAAA...` -> `SHA256:...`, as `ssh-keygen -lf` and ssh itself print it."""
    blob = base64.b64decode(public_key.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


class KnownHosts:
    def __init__(self, directory: Path, announce: Callable[[str], None] = lambda _m: None) -> None:
        self.lab = directory / "lab" / "known_hosts"
        self.own = directory / "known_hosts"
        self.announce = announce  # told about every key trusted on first use
        self._lock = threading.Lock()

    def _lines(self) -> list[tuple[Path, str]]:
        out = []
        for path in (self.lab, self.own):
            if path.is_file():
                out += [(path, ln.strip()) for ln in path.read_text().splitlines()
                        if ln.strip() and not ln.lstrip().startswith("#")]
        return out

    def _matching(self, address: str, port: int) -> list[tuple[Path, str]]:
        want = _host_field(address, port)
        return [(p, ln) for p, ln in self._lines() if want in ln.split()[0].split(",")]

    def trusted(self, address: str, port: int):
        """An asyncssh known-hosts object holding this host's recorded keys, or None if unknown."""
        import asyncssh

        lines = self._matching(address, port)
        if not lines:
            return None
        return asyncssh.import_known_hosts("".join(ln + "\n" for _, ln in lines))

    def describe(self, address: str, port: int = 22) -> str:
        files = sorted({str(p) for p, _ in self._matching(address, port)})
        return " and ".join(files) or str(self.own)

    def record(self, address: str, port: int, public_key: str, node: str = "") -> str:
        """Trust this key from now on; returns its fingerprint (also announced)."""
        kind, blob = public_key.split()[:2]
        with self._lock:
            old = self.own.read_text() if self.own.is_file() else (
                "# SSH host keys hardway trusted on first use (one line per host). A changed key is\n"
                "# refused: delete the host's line here only if you know why it changed.\n")
            write_atomic(self.own, (old + f"{_host_field(address, port)} {kind} {blob}\n").encode(), 0o644)
        fp = fingerprint(public_key)
        self.announce(
            f"{node or address}: SSH host key {kind} {fp} of {_host_field(address, port)} trusted on first use "
            f"and recorded in {self.own}; compare it with `ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub` "
            "run on that host's console")
        return fp
