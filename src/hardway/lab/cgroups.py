"""One cgroup per machine, in every mounted hierarchy, so the lab can find all its processes.

Each machine's systemd-nspawn starts inside `/hardway-lab/<cluster>/<node>` of every cgroup
hierarchy the host mounts (v1 controllers, name=systemd, the unified v2 one). nspawn gives the
machine a cgroup namespace rooted there, so whatever runs in the machine, pods in their own
PID namespaces included, stays below it (LAB.md 11, 16). Stopping a machine ends with killing
everything listed under it and removing the tree depth-first.
"""

from __future__ import annotations

import errno
import os
import signal
import time
from pathlib import Path

LAB_ROOT = "hardway-lab"


def node_cgroup(cluster: str, node: str) -> str:
    return f"/{LAB_ROOT}/{cluster}/{node}"


def hierarchies() -> list[Path]:
    """Mount points of every cgroup (v1) and cgroup2 hierarchy, from this process's view."""
    out: list[Path] = []
    seen: set[str] = set()
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, fstype = left.split(), right.split()[0] if right else ""
            if fstype not in ("cgroup", "cgroup2") or fields[3] != "/":
                continue
            dev = fields[2]  # major:minor identifies the hierarchy; mounted twice counts once
            if dev in seen:
                continue
            seen.add(dev)
            out.append(Path(fields[4].replace("\\040", " ")))
    return out


def _dirs(rel: str) -> list[Path]:
    return [h / rel.strip("/") for h in hierarchies()]


def create(rel: str) -> list[Path]:
    """mkdir -p `rel` in every hierarchy; in cpuset, each new level copies cpus/mems from its parent."""
    made = []
    for h in hierarchies():
        d = h
        for part in rel.strip("/").split("/"):
            parent, d = d, d / part
            if not d.is_dir():
                d.mkdir()
            for name in ("cpuset.cpus", "cpuset.mems"):
                f = d / name
                if f.exists() and not f.read_text().strip():
                    f.write_text((parent / name).read_text().strip() or "\n")
        made.append(d)
    return made


def procs_files(rel: str) -> list[Path]:
    """The cgroup.procs of `rel` in every hierarchy (write a PID to each to move it in)."""
    return [d / "cgroup.procs" for d in _dirs(rel)]


def _walk(d: Path) -> list[Path]:
    """`d` and every cgroup below it, children first."""
    out: list[Path] = []
    for top, _subdirs, _files in os.walk(d, topdown=False):
        out.append(Path(top))
    return out


def pids(rel: str) -> set[int]:
    """Every process in `rel` or below, in any hierarchy."""
    found: set[int] = set()
    for d in _dirs(rel):
        if not d.is_dir():
            continue
        for c in _walk(d):
            try:
                text = (c / "cgroup.procs").read_text()
            except OSError:
                continue
            found.update(int(x) for x in text.split())
    return found


def exists(rel: str) -> bool:
    return any(d.is_dir() for d in _dirs(rel))


def _thaw(rel: str) -> None:
    for d in _dirs(rel):
        if not d.is_dir():
            continue
        for c in _walk(d):
            for name, value in (("freezer.state", "THAWED"), ("cgroup.freeze", "0")):
                f = c / name
                if f.exists():
                    try:
                        f.write_text(value)
                    except OSError:
                        pass


def kill_all(rel: str, timeout: float = 10.0) -> set[int]:
    """SIGKILL every process under `rel` until none is left; return the survivors (normally none)."""
    _thaw(rel)  # a frozen task does not die until thawed
    deadline = time.monotonic() + timeout
    while True:
        left = pids(rel)
        if not left or time.monotonic() > deadline:
            return left
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)


def remove(rel: str) -> list[Path]:
    """rmdir `rel` depth-first in every hierarchy, then its empty lab parents; return what stayed."""
    left: list[Path] = []
    for h in hierarchies():
        d = h / rel.strip("/")
        if d.is_dir():
            for c in _walk(d):
                for attempt in range(20):
                    try:
                        c.rmdir()
                        break
                    except FileNotFoundError:
                        break
                    except OSError as e:
                        if e.errno == errno.EBUSY and attempt < 19:  # a task is still exiting
                            time.sleep(0.05)
                            continue
                        left.append(c)
                        break
        # the shared parents (/hardway-lab/<cluster>, /hardway-lab) go when nothing else uses them
        parent = d.parent
        while parent != h and parent.name and (h / LAB_ROOT) in (parent, *parent.parents):
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent
    return left


def rss_bytes(rel: str) -> int:
    """Resident memory of every process under `rel` (VmRSS summed; shared pages count per process)."""
    total = 0
    for pid in pids(rel):
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
                        break
        except OSError:
            pass
    return total


def leftover_trees() -> list[Path]:
    """Every /hardway-lab directory on the host (for tests and `status`)."""
    return [h / LAB_ROOT for h in hierarchies() if (h / LAB_ROOT).is_dir()]
