"""Where hardway keeps what it downloads or builds: outside any cluster directory or repo."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

CACHE_ENV = "HARDWAY_CACHE"


def cache_dir() -> Path:
    """`$HARDWAY_CACHE` if set, else `~/.cache/hardway`. Not created here."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser().absolute()
    return Path.home() / ".cache" / "hardway"


def cache_key(inputs: object, length: int = 12) -> str:
    """A short digest of `inputs` (anything JSON can write): the name of a cache entry made
    from exactly those inputs, so a changed input makes a new entry instead of reusing an old one."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:length]


_DIGESTS: dict[tuple[str, int, int, int], str] = {}


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file; remembered per (path, inode, size, mtime) within this process."""
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_ino, st.st_size, st.st_mtime_ns)
    if key in _DIGESTS:
        return _DIGESTS[key]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]
