"""Write rendered bundles to a directory: one tree per node, as it will lie on the node."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .fsio import write_atomic
from .render.bundle import Bundle, ClusterBundle

BUNDLE_MANIFEST = "hardway-bundle.json"
CLUSTER_DIR = "_cluster"  # node names are DNS labels, so this cannot collide


@dataclass
class ExportReport:
    written: list[Path] = field(default_factory=list)
    removed: list[Path] = field(default_factory=list)


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
    report = ExportReport()
    for name, bundle in cb.nodes.items():
        root = out / name
        previous = _previous_files(root)
        for path, f in bundle.files.items():
            target = root / path.lstrip("/")
            if write_atomic(target, f.content, f.mode):
                report.written.append(target)
        # Files an earlier render wrote that this one no longer has.
        for path in sorted(previous - set(bundle.files)):
            target = root / path.lstrip("/")
            if target.exists():
                target.unlink()
                report.removed.append(target)
        manifest = (json.dumps(bundle_manifest(bundle), indent=2) + "\n").encode()
        if write_atomic(root / BUNDLE_MANIFEST, manifest, 0o644):
            report.written.append(root / BUNDLE_MANIFEST)
    for fname, content in cb.manifests.items():
        target = out / CLUSTER_DIR / "manifests" / fname
        if write_atomic(target, content, 0o644):
            report.written.append(target)
    return report


def _previous_files(root: Path) -> set[str]:
    try:
        data = json.loads((root / BUNDLE_MANIFEST).read_text())
        return set(data.get("files", {}))
    except (FileNotFoundError, ValueError):
        return set()
