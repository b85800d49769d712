"""Atomic, mode-correct file writes: the only way hardway writes into a cluster directory."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import BinaryIO

# (path, previous bytes or None if absent, previous mode) per file written, and each directory
# created, while an `all_or_nothing` block runs.
_Entry = tuple[Path, "bytes | None", int]
_journal: ContextVar[list[_Entry] | None] = ContextVar("hardway_fsio_journal", default=None)


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> bool:
    """Write `data` to `path` unless it already holds exactly that with that mode.

    The file is created under a temporary name with its final mode (a key is never readable
    by others, not even for a moment), flushed, then renamed over the target: a crash leaves
    the old file or the new one, never half of one. Returns whether anything was written.
    Inside `all_or_nothing`, the previous state is recorded first so it can be put back.
    """
    try:
        st = path.stat()
        if (st.st_mode & 0o7777) == mode and st.st_size == len(data) and path.read_bytes() == data:
            return False
    except FileNotFoundError:
        st = None
    journal = _journal.get()
    if journal is not None:
        missing = [d for d in (path.parent, *path.parent.parents) if not d.exists()]
        journal += [(d, None, -1) for d in reversed(missing)]  # -1: a directory
        journal.append((path, path.read_bytes(), st.st_mode & 0o7777) if st else (path, None, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    _replace(path, data, mode)
    return True


def _replace(path: Path, data: bytes, mode: int) -> None:
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


@contextmanager
def new_file(path: Path, mode: int) -> Iterator[BinaryIO]:
    """A file written as a stream (a snapshot fetched from a node) that appears at `path`
    complete or not at all, with `mode` from creation, and never over an existing file:
    it is written under a temporary name, flushed, then linked to `path` (which fails if
    `path` exists). Outside `all_or_nothing`: the caller owns the result."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    try:
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode), "wb") as f:
            os.fchmod(f.fileno(), mode)  # O_CREAT's mode is filtered by the umask
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def all_or_nothing() -> Iterator[None]:
    """Every `write_atomic` in this block is undone if the block raises (Ctrl-C included):
    files get their previous bytes and mode back, new files and new directories go."""
    journal: list[_Entry] = []
    token = _journal.set(journal)
    try:
        yield
    except BaseException:
        _undo(journal)
        raise
    finally:
        _journal.reset(token)


def _undo(journal: list[_Entry]) -> None:
    for path, old, mode in reversed(journal):
        if mode == -1:
            try:
                path.rmdir()
            except OSError:  # not empty: something else lives there now
                pass
        elif old is None:
            path.unlink(missing_ok=True)
        else:
            _replace(path, old, mode)
