"""What `hardway up` would change on one host: desired state vs the host's facts. Pure.

A file is written when its content, mode or owner differs. A unit restarts when a file in its
`restart_on` was written, when the binary it runs was replaced, or when an earlier,
interrupted run wrote its files but never restarted it (the node's pending-restarts record).
A unit that can re-read its files without dropping connections (HAProxy, keepalived) is
reloaded instead when only a file in its `reload_on` was written.
systemd reloads once when any unit file changed. `hardway diff` prints these plans;
`hardway up` carries them out.

A file the node's manifest lists that the bundle no longer has (a scheduler config a newer
hardway does not render, a CNI file renamed) is removed, its unit stopped and disabled first
when it is a unit file: an obsolete CNI config left in /etc/cni/net.d would still be used.

A file the host already has, that the node's manifest does not list and that differs from
ours, is *foreign* (someone else's haproxy.cfg): `up` refuses to replace it unless `--adopt`,
which keeps the original for a later reset. A package's configuration file as shipped is
taken over the same way without asking.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from ..render.bundle import Bundle, File
from .desired import HARDWAY_STATE, Desired, backup_path, record_adopted
from .found import Probe, probe_for


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
    systemd: bool = True
    cgroup_version: int = 0  # 1 or 2 (facts.CGROUP_FS); 0: unknown
    files: dict[str, FileFact | None] = field(default_factory=dict)  # None/absent: no file
    active_units: frozenset[str] = frozenset()
    pending_restarts: tuple[str, ...] = ()
    images: frozenset[str] = frozenset()
    sysctls: dict[str, str] = field(default_factory=dict)
    modules: dict[str, bool] = field(default_factory=dict)
    packages: frozenset[str] = frozenset()  # of those asked about, the installed ones
    owned: frozenset[str] = frozenset()  # paths the node's manifest (or an interrupted push) claims
    adopted: dict[str, str] = field(default_factory=dict)  # path -> backup: the manifest's, and backups found
    pristine: frozenset[str] = frozenset()  # package configuration files as shipped (dpkg's md5)


@dataclass(frozen=True)
class Change:
    path: str
    reason: str  # "new", "content", "mode 0644 -> 0600", "owner ..."


@dataclass
class HostPlan:
    node: str
    writes: list[tuple[object, Change]] = field(default_factory=list)  # (File | Blob, Change)
    daemon_reload: bool = False
    restarts: list[str] = field(default_factory=list)
    reloads: list[str] = field(default_factory=list)  # running units told to re-read their files (Unit.reload_on)
    starts: list[str] = field(default_factory=list)  # units not running yet
    sysctls: dict[str, tuple[str, str]] = field(default_factory=dict)  # key -> (now, wanted)
    modules: list[str] = field(default_factory=list)  # to load
    imports: list[str] = field(default_factory=list)  # image tarballs to import into containerd
    foreign: list[str] = field(default_factory=list)  # existing files hardway does not own (foreign())
    adopt: dict[str, str] = field(default_factory=dict)  # taken over, original kept: path -> backup
    removes: list[str] = field(default_factory=list)  # owned before, no longer rendered (obsolete())
    stops: list[str] = field(default_factory=list)  # units whose unit file is removed: stopped first
    probe: Probe = Probe()  # what the push records of the host before it writes (found.py)

    @property
    def empty(self) -> bool:
        return not (self.writes or self.restarts or self.reloads or self.starts or self.daemon_reload
                    or self.sysctls or self.modules or self.imports or self.removes)

    @property
    def bytes_to_send(self) -> int:
        return sum(getattr(it, "size", None) or len(getattr(it, "content", b"")) for it, _ in self.writes)


def _change(f, fact: FileFact | None) -> Change | None:
    if fact is None:
        return Change(f.path, "new")
    if fact.sha256 != f.sha256:
        return Change(f.path, "content")
    if fact.mode != f.mode:
        return Change(f.path, f"mode {fact.mode:04o} -> {f.mode:04o}")
    if fact.owner != f.owner:
        return Change(f.path, f"owner {fact.owner} -> {f.owner}")
    return None


FOREIGN = "foreign: would refuse (or adopt with --adopt)"


def _not_ours(items: dict, facts: Facts) -> list[str]:
    """Paths the host has, that hardway does not own (neither its manifest nor an interrupted
    push claims them), and whose content differs from ours. A file identical to ours is simply
    taken over; hardway's own state directory is its own."""
    return sorted(p for p, f in items.items()
                  if (fact := facts.files.get(p)) is not None and fact.sha256 != f.sha256
                  and p not in facts.owned and not p.startswith(HARDWAY_STATE + "/"))


def foreign(items: dict, facts: Facts) -> list[str]:
    """Files not ours that someone made or edited: a haproxy.cfg, a containerd config, a runc."""
    return [p for p in _not_ours(items, facts) if p not in facts.pristine]


def adoptions(items: dict, facts: Facts, adopt: bool) -> dict[str, str]:
    """Files a push takes over keeping the original (path -> backup): a package's configuration
    file as shipped always (hardway asks for the package; nobody's work is in that file, e.g.
    Debian haproxy's haproxy.cfg), foreign ones with `adopt`."""
    return {p: backup_path(p) for p in _not_ours(items, facts) if adopt or p in facts.pristine}


UNIT_DIR = "/etc/systemd/system/"


def obsolete(items: dict, facts: Facts) -> list[str]:
    """Paths the node's manifest claims that hardway no longer renders for it. Not hardway's own
    state, and not an adopted file (its original waits in the backup for a reset)."""
    return sorted(p for p in facts.owned
                  if p not in items and not p.startswith(HARDWAY_STATE + "/") and p not in facts.adopted)


def plan_host(bundle: Bundle, facts: Facts, items: dict | None = None,
              images: dict[str, list[str]] | None = None, adopt: bool = False) -> HostPlan:
    """`items`: path -> File | Blob (default: the bundle's files); `images`: tarball path ->
    the refs it holds (imported when the tarball is written or a ref is missing). A foreign
    file is planned as a write marked FOREIGN (`up` refuses it), or, with `adopt`, as one
    whose original the push first keeps under desired.BACKUP_DIR."""
    items = items if items is not None else bundle.files
    plan = HostPlan(bundle.node, foreign=foreign(items, facts), adopt=adoptions(items, facts, adopt))
    changed: set[str] = set()
    for path, f in sorted(items.items()):
        c = _change(f, facts.files.get(path))
        if c is not None:
            if path in plan.adopt:
                what = "package default" if path in facts.pristine else "adopt"
                c = Change(path, f"{what}: original kept in {plan.adopt[path]}")
            elif path in plan.foreign:
                c = Change(path, FOREIGN)
            plan.writes.append((f, c))
            changed.add(path)
    plan.probe = probe_for(bundle, {path: items[path] for path in changed})
    plan.removes = obsolete(items, facts)
    plan.stops = [p.removeprefix(UNIT_DIR) for p in plan.removes
                  if p.startswith(UNIT_DIR) and p.endswith(".service")]
    plan.daemon_reload = any(p.startswith(UNIT_DIR) for p in (*changed, *plan.removes))
    binaries = {p for p in changed if p.startswith(("/usr/local/bin/", "/opt/cni/bin/"))}
    for unit in bundle.units:
        unit_file = bundle.files.get(f"/etc/systemd/system/{unit.name}")
        runs_changed_binary = unit_file is not None and any(
            f"{b} ".encode() in unit_file.content or f"{b}\n".encode() in unit_file.content for b in binaries)
        if unit.name not in facts.active_units:
            plan.starts.append(unit.name)
        elif (any(p in changed for p in unit.restart_on) or runs_changed_binary
              or unit.name in facts.pending_restarts):
            plan.restarts.append(unit.name)
        elif any(p in changed for p in unit.reload_on):
            plan.reloads.append(unit.name)
    for key, wanted in bundle.sysctls.items():
        now = facts.sysctls.get(key, "")
        if " ".join(now.split()) != " ".join(wanted.split()):
            plan.sysctls[key] = (now, wanted)
    plan.modules = [m for m in bundle.modules if not facts.modules.get(m, False)]
    for path, refs in sorted((images or {}).items()):
        if path in changed or not set(refs) <= facts.images:
            plan.imports.append(path)
    return plan


def plan_for(d: Desired, facts: Facts, adopt: bool = False) -> HostPlan:
    """The plan for one host, its manifest first brought up to date with what is adopted:
    earlier adoptions (facts.adopted), this run's package defaults and, with `adopt`, its
    foreign files."""
    record_adopted(d, {**facts.adopted, **adoptions(d.items, facts, adopt)})
    return plan_host(d.bundle, facts, d.items, d.images, adopt)


def describe(plan: HostPlan) -> list[str]:
    """Human lines for `hardway diff` and `up`'s summary."""
    lines = [f"write {c.path} ({c.reason})" for _, c in plan.writes]
    lines += [f"stop and disable {u} (no longer rendered)" for u in plan.stops]
    lines += [f"remove {p} (no longer rendered)" for p in plan.removes]
    lines += [f"sysctl {k}: {now or '(unset)'} -> {want}" for k, (now, want) in plan.sysctls.items()]
    lines += [f"load kernel module {m}" for m in plan.modules]
    if plan.daemon_reload:
        lines.append("systemctl daemon-reload")
    lines += [f"start {u}" for u in plan.starts]
    lines += [f"restart {u}" for u in plan.restarts]
    lines += [f"reload {u}" for u in plan.reloads]
    lines += [f"import image {p}" for p in plan.imports]
    return lines


def summary(plans: Iterable[HostPlan]) -> str:
    plans = list(plans)
    changed = [p for p in plans if not p.empty]
    if not changed:
        return f"no changes on any of {len(plans)} host(s)"
    files = sum(len(p.writes) for p in changed)
    restarts = sum(len(p.restarts) for p in changed)
    reloads = sum(len(p.reloads) for p in changed)
    starts = sum(len(p.starts) for p in changed)
    return (f"{len(changed)} of {len(plans)} host(s) change: {files} file(s) to write, "
            f"{starts} unit(s) to start, {restarts} to restart" + (f", {reloads} to reload" if reloads else ""))


__all__ = ["FOREIGN", "Change", "Facts", "FileFact", "HostPlan", "adoptions", "describe", "foreign", "plan_for",
           "plan_host", "summary", "File"]
