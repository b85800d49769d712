"""A small mirror for tests: tiny stand-in files in the real layout and checksum formats."""

from __future__ import annotations

import hashlib
from pathlib import Path

from hardway.artifacts import layout
from hardway.artifacts.mirror import Entry, write_tgz


def fake_mirror(root: Path, spec) -> dict[str, bytes]:
    """Stand-ins in the real layout and checksum formats; returns key -> content."""
    contents: dict[str, bytes] = {}
    sums: dict[str, str] = {}
    for d in layout.downloads_for_spec(spec):
        dest = root / d.path
        dest.parent.mkdir(parents=True, exist_ok=True)
        if d.members:
            entries = [Entry(m, f"#!/bin/sh\necho {name} {d.key}\n".encode()) for name, m in sorted(d.members.items())]
            write_tgz(dest, entries)
        else:
            dest.write_bytes(f"#!/bin/sh\necho {d.key}\n".encode())
        data = dest.read_bytes()
        contents[d.key] = data
        digest = hashlib.sha256(data).hexdigest()
        if d.artifact == "kubernetes-server":
            (root / d.checksum_path).write_text(digest)
        else:
            sums[d.checksum_path] = sums.get(d.checksum_path, "") + layout.sha256sum_line(digest, d.filename)
    for path, text in sums.items():
        (root / path).write_text(text)
    return contents
