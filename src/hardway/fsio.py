"""Atomic, mode-correct file writes: the only way hardway writes into a cluster directory."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> bool:
    """Write `data` to `path` unless it already holds exactly that with that mode.

    The file is created under a temporary name with its final mode (a key is never readable
    by others, not even for a moment), flushed, then renamed over the target: a crash leaves
    the old file or the new one, never half of one. Returns whether anything was written.
    """
    try:
        st = path.stat()
        if (st.st_mode & 0o7777) == mode and st.st_size == len(data) and path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)  # O_CREAT's mode is filtered by the umask
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return True
