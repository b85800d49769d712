"""What a host had before hardway changed it: recorded by every push, for `hardway reset`.

The node manifest says what hardway owns; it cannot say what was there before. So each push,
before it writes anything, appends to /var/lib/hardway/found (one fact a line):

    dir PATH                 a directory it is about to create (a parent of a file it writes)
    data PATH                a directory a unit of this node fills while it runs (Unit.data),
                             absent so far: the component will make it
    user NAME / group NAME   an account a sysusers.d file of the bundle creates, absent so far
    sysctl KEY VALUE         the value a kernel setting had when first seen (VALUE empty: the
                             key did not exist, e.g. before br_netfilter was loaded)
    unit NAME ENABLED ACTIVE a unit's `systemctl is-enabled`/`is-active` when first seen
    tables CMD T1 T2 ...     the tables `CMD-save` listed when first seen (iptables, ip6tables)

Absent things are recorded when they are absent, so a later push never claims what the host
already had; values and states are recorded once, the first time. A host that got its manifest
from a hardway without this record gets none (its first recorded state would be hardway's own),
and reset falls back to what it can tell without one (deploy/reset.py).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from ..render.bundle import Bundle
from .desired import HARDWAY_STATE, MANIFEST

FOUND = f"{HARDWAY_STATE}/found"
SYSUSERS = "/etc/sysusers.d/"
IPTABLES = ("iptables", "ip6tables")


@dataclass(frozen=True)
class Probe:
    """What one push records about the host before it changes anything (plan.py makes it)."""

    dirs: tuple[str, ...] = ()
    data: tuple[str, ...] = ()
    users: tuple[str, ...] = ()
    sysctls: tuple[str, ...] = ()
    units: tuple[str, ...] = ()


def sysusers_names(content: bytes) -> list[str]:
    """The users a sysusers.d file creates (`u NAME ...` lines; systemd-sysusers makes a group
    of the same name with each)."""
    out = []
    for line in content.decode(errors="replace").splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "u":
            out.append(words[1])
    return out


def probe_for(bundle: Bundle, written: dict) -> Probe:
    """`written`: path -> File | Blob this push writes."""
    dirs: set[str] = set()
    for path in written:
        if path.startswith(HARDWAY_STATE + "/"):
            continue  # hardway's own state: reset removes all of it anyway
        for parent in PurePosixPath(path).parents:
            if str(parent) != "/":
                dirs.add(str(parent))
    users = [u for p, it in sorted(written.items()) if p.startswith(SYSUSERS) and hasattr(it, "content")
             for u in sysusers_names(it.content)]
    data = sorted({d for u in bundle.units for d in u.data})
    return Probe(tuple(sorted(dirs)), tuple(data), tuple(dict.fromkeys(users)),
                 tuple(sorted(bundle.sysctls)), tuple(u.name for u in bundle.units))


def record_script(probe: Probe, root: str = "") -> str:
    """Shell: append what the host has now to FOUND, before the push changes anything. Only on a
    host without a manifest yet, or one recording already (see the module's docstring). `root`
    prefixes paths (tests run the push into a scratch directory); it has no accounts, sysctls,
    units or iptables of its own, so those are not probed there."""
    q = lambda p: shlex.quote(root + p)  # noqa: E731
    f = q(FOUND)
    lines = [f"if [ -e {f} ] || [ ! -e {q(MANIFEST)} ]; then", f"mkdir -p {q(HARDWAY_STATE)}", "{"]
    for kind, paths in (("dir", probe.dirs), ("data", probe.data)):
        if paths:
            lines.append(f"for d in {' '.join(shlex.quote(p) for p in paths)}; do "
                         f"[ -e \"{root}$d\" ] || [ -L \"{root}$d\" ] || printf '{kind} %s\\n' \"$d\"; done")
    if root:
        probe = Probe(probe.dirs, probe.data)
    for u in probe.users:
        w = shlex.quote(u)
        lines.append(f"getent passwd {w} >/dev/null || echo {shlex.quote('user ' + u)}")
        lines.append(f"getent group {w} >/dev/null || echo {shlex.quote('group ' + u)}")
    for k in probe.sysctls:
        proc = shlex.quote("/proc/sys/" + k.replace(".", "/"))
        lines.append(f"grep -q {shlex.quote('^sysctl ' + k + ' ')} {f} 2>/dev/null || "
                     f"printf 'sysctl %s %s\\n' {shlex.quote(k)} \"$(cat {proc} 2>/dev/null)\"")
    for u in probe.units:
        w = shlex.quote(u)
        lines.append(f"grep -q {shlex.quote('^unit ' + u + ' ')} {f} 2>/dev/null || "
                     f"printf 'unit %s %s %s\\n' {w} \"$(systemctl is-enabled {w} 2>/dev/null || :)\" "
                     f"\"$(systemctl is-active {w} 2>/dev/null || :)\"")
    for cmd in () if root else IPTABLES:
        lines.append(f"command -v {cmd}-save >/dev/null && ! grep -qE '^tables {cmd}( |$)' {f} 2>/dev/null && "
                     f"printf 'tables {cmd}%s\\n' \"$({cmd}-save 2>/dev/null | sed -n 's/^\\*/ /p' | tr -d '\\n')\"")
    lines += [f"true; }} >> {f}", "fi"]
    return "\n".join(lines) + "\n"


@dataclass
class Found:
    """FOUND, read back."""

    dirs: set[str] = field(default_factory=set)
    data: set[str] = field(default_factory=set)
    users: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    sysctls: dict[str, str] = field(default_factory=dict)
    units: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (enabled, active)
    tables: dict[str, set[str]] = field(default_factory=dict)  # iptables -> tables

    def was_active(self, unit: str) -> bool:
        return self.units.get(unit, ("", ""))[1] == "active"

    def was_enabled(self, unit: str) -> bool:
        # is-enabled's words for a unit that starts at boot (or could not be turned off)
        return self.units.get(unit, ("", ""))[0] in ("enabled", "enabled-runtime", "static", "alias",
                                                      "indirect", "generated")


def parse_found(text: str) -> Found:
    f = Found()
    for line in text.splitlines():
        kind, _, rest = line.partition(" ")
        if kind == "dir" and rest:
            f.dirs.add(rest)
        elif kind == "data" and rest:
            f.data.add(rest)
        elif kind == "user" and rest and rest not in f.users:
            f.users.append(rest)
        elif kind == "group" and rest and rest not in f.groups:
            f.groups.append(rest)
        elif kind == "sysctl" and rest:
            k, _, v = rest.partition(" ")
            f.sysctls.setdefault(k, v.strip())
        elif kind == "unit" and rest:
            words = rest.split(" ")
            f.units.setdefault(words[0], (words[1] if len(words) > 1 else "", words[2] if len(words) > 2 else ""))
        elif kind == "tables" and rest:
            cmd, *tables = rest.split()
            f.tables.setdefault(cmd, set(tables))
    return f
