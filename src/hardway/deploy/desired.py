"""Everything one node should hold: its bundle's files, plus the binaries and image tarballs
from the operator's artifact cache, plus the manifest of what hardway owns there.

Binaries and images are `Blob`s: the same path/sha256/mode/owner as a rendered `File`, but
their bytes stay in the cache until a push needs them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..render.bundle import Binary, Bundle, File
from ..render.common import BIN

HARDWAY_STATE = "/var/lib/hardway"
MANIFEST = f"{HARDWAY_STATE}/manifest.json"
PENDING = f"{HARDWAY_STATE}/pending-restarts"
SUMS = f"{HARDWAY_STATE}/sums"  # facts.py: sha256 cache keyed by size, inode, ctime
# Paths a push is about to write, recorded before its first rename and removed once the
# manifest (which then lists them) is in place: an interrupted push still owns what it wrote.
CLAIMS = f"{HARDWAY_STATE}/claims"
BACKUP_DIR = f"{HARDWAY_STATE}/backup"  # `up --adopt`: the originals of adopted files
IMAGES_DIR = f"{HARDWAY_STATE}/images"
CNI_BIN = "/opt/cni/bin"
CNI_PLUGINS = "cni-plugins"


@dataclass(frozen=True)
class Blob:
    path: str
    sha256: str
    size: int
    source: Path  # on the operator's machine
    mode: int = 0o755
    owner: str = "root:root"


Item = File | Blob


@dataclass
class Desired:
    node: str
    bundle: Bundle
    items: dict[str, Item] = field(default_factory=dict)
    images: dict[str, list[str]] = field(default_factory=dict)  # tarball path on node -> refs

    @property
    def unit_names(self) -> list[str]:
        return [u.name for u in self.bundle.units]


def binary_path(b: Binary) -> str:
    return f"{CNI_BIN}/{b.name}" if b.artifact == CNI_PLUGINS else f"{BIN}/{b.name}"


def file_sha256(path: Path) -> str:
    """sha256 of a cached file; blobs are named by it, other files get a sidecar (.NAME.sha256)
    keyed by size and mtime so a no-op `up` does not re-hash hundreds of megabytes."""
    if path.parent.name == "sha256" and len(path.name) == 64:
        return path.name
    st = path.stat()
    stamp = f"{st.st_size} {st.st_mtime_ns}"
    side = path.with_name(f".{path.name}.sha256")
    try:
        got_stamp, digest = side.read_text().rsplit(" ", 1)
        if got_stamp == stamp:
            return digest.strip()
    except (OSError, ValueError):
        pass
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    digest = h.hexdigest()
    try:
        side.write_text(f"{stamp} {digest}")
    except OSError:
        pass  # a read-only cache just costs a re-hash next time
    return digest


def _blob(path: str, source: Path, mode: int) -> Blob:
    return Blob(path, file_sha256(source), source.stat().st_size, source, mode)


def backup_path(path: str) -> str:
    """Where `up --adopt` keeps the original of a file it took over."""
    return BACKUP_DIR + path


def manifest_file(d: Desired, adopted: Mapping[str, str] | None = None) -> File:
    """What hardway owns on the node: `reset` removes exactly this and puts each adopted file's
    original (path -> its backup) back; `up` treats any other existing file as foreign."""
    doc = {
        "generatedBy": "hardway up (do not edit: rewritten on every change)",
        "node": d.node,
        "files": {p: it.sha256 for p, it in sorted(d.items.items()) if p != MANIFEST},
        "units": d.unit_names,
        "images": {p: refs for p, refs in sorted(d.images.items())},
    }
    if adopted:  # absent otherwise: manifests written before adoption existed stay unchanged
        doc["adopted"] = dict(sorted(adopted.items()))
    return File(MANIFEST, (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode(), 0o644)


def record_adopted(d: Desired, adopted: Mapping[str, str]) -> None:
    """Rewrite the node's manifest to list `adopted` (path -> backup): earlier adoptions, which
    the node's manifest lists, and this run's."""
    d.items[MANIFEST] = manifest_file(d, adopted)


def desired_for(bundle: Bundle, binaries: Mapping[Binary, Path],
                images: Mapping[str, tuple[Path, list[str]]]) -> Desired:
    """`binaries`: the cached file for each of the bundle's binaries; `images`: name ->
    (cached OCI tarball, image refs it holds), for the bundle's images."""
    d = Desired(bundle.node, bundle, dict(bundle.files))
    for b in bundle.binaries:
        d.items[binary_path(b)] = _blob(binary_path(b), binaries[b], 0o755)
    for name in bundle.images:
        source, refs = images[name]
        path = f"{IMAGES_DIR}/{Path(name).name.removesuffix('.tar')}.tar"
        d.items[path] = _blob(path, source, 0o644)
        d.images[path] = refs
    d.items[MANIFEST] = manifest_file(d)
    return d
