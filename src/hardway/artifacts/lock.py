"""DIR/artifacts.lock: the sha256 of every artifact a cluster uses, recorded at its first fetch.

A checksum file comes from the same place as the file it vouches for: a hostile or careless
mirror that changes both still passes the checksum check. The lock closes that gap: the first
fetch records, per download key, the path (the same on upstream and on every mirror), sha256
and size; every later fetch, from any source, must offer the same digest, or it is refused.
A deliberate change (a rebuilt mirror, a re-released file) is accepted with
`hardway artifacts fetch --update-lock`, and shows up as a diff of this file: commit it with
cluster.yaml and review it like code.

Entries are keyed by `layout.Download.key`, whatever the artifact: a new kind of download
needs nothing here. A key whose path changed (a new version in the spec) is a new artifact
and is recorded afresh. Keys not fetched this time are kept as they are.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import OperationError, UsageError
from ..fsio import write_atomic
from .layout import Download

ABOUT = ("sha256 of every artifact this cluster fetched, recorded at the first fetch; a later fetch "
         "offering other bytes is refused. Accept a deliberate change with `hardway artifacts fetch "
         "--update-lock`, and review this file's diff like code.")


@dataclass(frozen=True)
class Locked:
    path: str
    sha256: str
    size: int


class ArtifactLock:
    def __init__(self, path: Path, entries: dict[str, Locked], update: bool = False) -> None:
        self.path = path
        self.entries = entries
        self.update = update  # --update-lock: a different digest replaces the recorded one
        self.changes: list[str] = []  # what this run recorded or replaced, for the progress log

    @classmethod
    def load(cls, path: Path, update: bool = False) -> ArtifactLock:
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls(path, {}, update)
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise UsageError(f"{path}: not readable as an artifact lock ({e}); restore it from version "
                             "control, or delete it to record the digests afresh at the next fetch") from None
        try:
            entries = {str(k): Locked(str(v["path"]), str(v["sha256"]), int(v["size"]))
                       for k, v in doc["artifacts"].items()}
        except (AttributeError, KeyError, TypeError, ValueError) as e:
            raise UsageError(f"{path}: not an artifact lock (missing or malformed {e}); restore it from "
                             "version control, or delete it to record the digests afresh at the next fetch") from None
        return cls(path, entries, update)

    def check(self, d: Download, digest: str, offered_by: str) -> None:
        """Refuse `digest` for `d` when the lock recorded another one for the same file."""
        was = self.entries.get(d.key)
        if was is None or was.path != d.path or was.sha256 == digest or self.update:
            return
        raise OperationError(
            f"{offered_by} offers sha256 {digest} for {d.filename}, but {self.path} recorded sha256 "
            f"{was.sha256} at the first fetch. Refused: a mirror that changes a file together "
            "with its checksum file passes the checksum check. If the change is deliberate (a rebuilt "
            f"mirror, a re-released file), accept it with `hardway -C {self.path.parent} artifacts fetch "
            "--update-lock` (add --conformance for Kubernetes' test binaries and images) and review the "
            "lock file's diff.")

    def record(self, d: Download, digest: str, size: int) -> None:
        was = self.entries.get(d.key)
        now = Locked(d.path, digest, size)
        if was == now:
            return
        if was is None or was.path != d.path:
            self.changes.append(f"recorded {d.key} sha256 {digest}")
        else:
            self.changes.append(f"{d.key}: sha256 {was.sha256} -> {digest} (--update-lock)")
        self.entries[d.key] = now

    def text(self) -> str:
        """JSON, sorted, one artifact per line: a changed artifact is a one-line diff."""
        rows = [f"  {json.dumps(k)}: {json.dumps(vars(e))}" for k, e in sorted(self.entries.items())]
        return (f'{{\n "about": {json.dumps(ABOUT)},\n "version": 1,\n "artifacts": {{\n'
                + ",\n".join(rows) + "\n }\n}\n")

    def save(self) -> bool:
        """Write the lock if anything changed; returns whether it did."""
        return bool(self.changes) and write_atomic(self.path, self.text().encode(), 0o644)


__all__ = ["ABOUT", "ArtifactLock", "Locked"]
