"""One changing command at a time per cluster directory: `up`, `diff`, `reset`, `pki init`,
`render`, `etcd snapshot|restore` and the lab verbs that change the lab hold DIR/.hardway.lock
(an exclusive flock) while they run.

A second one refuses at once and names the holder (PID, command, start time): racing would
push half of one run's files and half of another's, or issue the PKI twice. The holder's
details are written inside the file; the kernel drops the flock when the holder exits, however
it exits, so a lock file left behind never blocks anyone. Read-only commands (validate,
pki show/check, kubeconfig, kubectl, verify, lab status/ssh) take no lock.
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import OperationError

LOCK_FILE = ".hardway.lock"

# Re-entrant within one thread (`lab destroy` runs `lab down`); another thread of this process
# contends like another process would (flock is per open file, and each holder opens its own).
_held = threading.local()


def _holder_text(command: str) -> bytes:
    # The command line as typed: `hardway -C lab1 up --timeout 600` (the console script, or
    # `python -m hardway`); a library caller's own argv otherwise.
    cli = Path(sys.argv[0]).name in ("hardway", "__main__.py")
    argv = shlex.join(["hardway", *sys.argv[1:]] if cli else sys.argv)
    return (json.dumps({"pid": os.getpid(), "command": command, "argv": argv,
                        "started": time.time()}) + "\n").encode()


def describe_holder(text: str) -> str:
    """The holder, in words, from the lock file's content."""
    try:
        h = json.loads(text)
        started = float(h["started"])
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started))
        return (f"PID {int(h['pid'])} runs `hardway {h['command']}` (command line: {h['argv']}), "
                f"started {when} ({max(0, time.time() - started):.0f} s ago)")
    except (ValueError, KeyError, TypeError):
        return "a process that has not written its details yet"


@contextmanager
def cluster_lock(directory: str | Path, command: str) -> Iterator[None]:
    """Hold DIR's lock while the block runs; refuse at once if another command holds it."""
    path = Path(directory).resolve() / LOCK_FILE
    held: dict[Path, int] = _held.__dict__.setdefault("paths", {})
    if path in held:
        held[path] += 1
        try:
            yield
        finally:
            held[path] -= 1
        return
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise OperationError(f"cannot open the cluster directory's lock file {path}: {e.strerror}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = describe_holder(os.pread(fd, 4096, 0).decode(errors="replace"))
            raise OperationError(
                f"{Path(directory)} is in use by another hardway command: {holder}. Wait for it to "
                f"finish (or stop it), then run `hardway {command}` again") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, _holder_text(command), 0)
        held[path] = 1
        try:
            yield
        finally:
            del held[path]
            os.ftruncate(fd, 0)  # still locked: nobody reads a half-cleared file
    finally:
        os.close(fd)  # releases the flock
