"""Write rendered bundles to a directory: one tree per node, as it will lie on the node."""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from .artifacts.cache import sha256_file
from .fsio import write_atomic
from .render.bundle import Bundle, ClusterBundle

BUNDLE_MANIFEST = "hardway-bundle.json"
CLUSTER_DIR = "_cluster"  # node names are DNS labels, so this cannot collide


@dataclass
class ExportReport:
    written: list[Path] = field(default_factory=list)
    removed: list[Path] = field(default_factory=list)
    # recorded by an earlier render but changed since, or outside the tree: left in place
    kept: list[Path] = field(default_factory=list)


def bundle_manifest(bundle: Bundle) -> dict:
    """What deploy/ needs besides the files themselves: units, order, owners, hashes."""
    return {
        "node": bundle.node,
        "roles": list(bundle.roles),
        "files": {
            path: {"sha256": f.sha256, "mode": f"{f.mode:04o}", "owner": f.owner}
            for path, f in sorted(bundle.files.items())
        },
        "units": [
            {"name": u.name, "phase": u.phase.value, "restartOn": list(u.restart_on), "oneshot": u.oneshot}
            for u in bundle.units
        ],
        "sysctls": bundle.sysctls,
        "modules": bundle.modules,
        "binaries": [{"name": b.name, "artifact": b.artifact} for b in bundle.binaries],
        "packages": bundle.packages,
        "images": bundle.images,
    }


def write_bundles(cb: ClusterBundle, out: Path) -> ExportReport:
    """Write every node's tree under `out`. Files an earlier render wrote and this one no longer
    has are removed, and so are the trees of nodes no longer in the spec, but only what the
    earlier render recorded in its hardway-bundle.json, inside that node's tree, still as it
    wrote it (same sha256): a hostile or stale record cannot make it delete anything else."""
    report = ExportReport()
    for name, bundle in cb.nodes.items():
        root = out / name
        previous = _previous_files(root)
        for path, f in bundle.files.items():
            target = root / path.lstrip("/")
            if write_atomic(target, f.content, f.mode):
                report.written.append(target)
        # Files an earlier render wrote that this one no longer has.
        _remove_recorded(root, {p: d for p, d in previous.items() if p not in bundle.files}, report)
        manifest = (json.dumps(bundle_manifest(bundle), indent=2) + "\n").encode()
        if write_atomic(root / BUNDLE_MANIFEST, manifest, 0o644):
            report.written.append(root / BUNDLE_MANIFEST)
    # Nodes an earlier render wrote that the spec no longer has (their keys included).
    for old in sorted(out.glob(f"*/{BUNDLE_MANIFEST}")) if out.is_dir() else []:
        root = old.parent
        if root.name in cb.nodes or root.name == CLUSTER_DIR or root.is_symlink():
            continue
        _remove_recorded(root, _previous_files(root), report)
        old.unlink()
        report.removed.append(old)
        _prune_empty_dirs(root, out)
    for fname, content in cb.manifests.items():
        target = out / CLUSTER_DIR / "manifests" / fname
        if write_atomic(target, content, 0o644):
            report.written.append(target)
    return report


def _previous_files(root: Path) -> dict[str, str]:
    """node path -> sha256, as the last render recorded them; anything malformed is ignored."""
    try:
        files = json.loads((root / BUNDLE_MANIFEST).read_text()).get("files", {})
    except (OSError, ValueError, AttributeError):
        return {}
    if not isinstance(files, dict):
        return {}
    return {p: f["sha256"] for p, f in files.items()
            if isinstance(p, str) and isinstance(f, dict) and isinstance(f.get("sha256"), str)}


def _inside(root: Path, path: str) -> Path | None:
    """`path` (a node path) under `root`, if it names a regular file that really lies inside
    `root`: no `..`, no symbolic link on the way out of the tree, not itself a link."""
    rel = PurePosixPath(path.lstrip("/"))
    if not rel.parts or ".." in rel.parts:
        return None
    target = root / rel
    try:
        if not target.parent.resolve().is_relative_to(root.resolve()):
            return None
        return target if stat.S_ISREG(target.lstat().st_mode) else None
    except OSError:
        return None


def _remove_recorded(root: Path, recorded: dict[str, str], report: ExportReport) -> None:
    for path, digest in sorted(recorded.items()):
        target = _inside(root, path)
        if target is None or sha256_file(target) != digest:
            # outside the tree, not a plain file, or changed since hardway wrote it: not ours
            shown = root / path.lstrip("/")
            if os.path.lexists(shown):
                report.kept.append(shown)
            continue
        target.unlink()
        report.removed.append(target)
        _prune_empty_dirs(target.parent, root)


def _prune_empty_dirs(d: Path, stop: Path) -> None:
    """Remove `d` and its parents up to (not including) `stop` while they are empty."""
    while d != stop and stop in d.parents:
        try:
            d.rmdir()
        except OSError:
            return
        d = d.parent
