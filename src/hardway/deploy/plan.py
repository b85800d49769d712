"""What `hardway up` would change on one host: desired bundle vs the host's facts. Pure.

A file is written when its content, mode or owner differs. A unit restarts only when a
file in its `restart_on` was written; systemd reloads once when any unit file changed.
`hardway diff` prints these plans; `hardway up` carries them out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..render.bundle import Bundle, File


@dataclass(frozen=True)
class FileFact:
    sha256: str
    mode: int
    owner: str


@dataclass(frozen=True)
class Facts:
    """One round trip's worth of what a host is: enough to decide every change."""

    node: str
    arch: str = ""
    os_release: str = ""
    kernel: str = ""
    swap_on: bool = False
    files: dict[str, FileFact | None] = field(default_factory=dict)  # None: absent
    active_units: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Change:
    path: str
    reason: str  # "new", "content", "mode 0644 -> 0600", "owner ..."


@dataclass
class HostPlan:
    node: str
    writes: list[tuple[File, Change]] = field(default_factory=list)
    daemon_reload: bool = False
    restarts: list[str] = field(default_factory=list)
    starts: list[str] = field(default_factory=list)  # units not running yet

    @property
    def empty(self) -> bool:
        return not (self.writes or self.restarts or self.starts or self.daemon_reload)


def _change(f: File, fact: FileFact | None) -> Change | None:
    if fact is None:
        return Change(f.path, "new")
    if fact.sha256 != f.sha256:
        return Change(f.path, "content")
    if fact.mode != f.mode:
        return Change(f.path, f"mode {fact.mode:04o} -> {f.mode:04o}")
    if fact.owner != f.owner:
        return Change(f.path, f"owner {fact.owner} -> {f.owner}")
    return None


def plan_host(bundle: Bundle, facts: Facts) -> HostPlan:
    plan = HostPlan(bundle.node)
    changed: set[str] = set()
    for path, f in sorted(bundle.files.items()):
        c = _change(f, facts.files.get(path))
        if c is not None:
            plan.writes.append((f, c))
            changed.add(path)
    plan.daemon_reload = any(p.startswith("/etc/systemd/system/") for p in changed)
    for unit in bundle.units:
        if unit.name not in facts.active_units:
            plan.starts.append(unit.name)
        elif any(p in changed for p in unit.restart_on):
            plan.restarts.append(unit.name)
    return plan
