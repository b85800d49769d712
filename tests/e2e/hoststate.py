"""A lab machine's state, as `hardway reset` must leave it: captured before the first `up`,
compared after the reset.

    before = capture(c, node)
    ...
    assert not (d := difference(before, capture(c, node))), d

Each section is one command's output, normalised only where the text changes with nothing
changing on the host:

- `files`: every path of the root file system (`find / -xdev`: type, mode, owner, path, link
  target), minus EXCLUDED below. -xdev leaves out the other file systems of a machine: /proc,
  /sys, /dev (the kernel's views, not files of the host) and the tmpfs at /run and /tmp (empty
  at every boot); /run is listed in its own section.
- `etc`: the sha256 of every file in /etc: hardway's adopted originals back byte for byte, and
  /etc/passwd, group, shadow, gshadow as they were (the etcd account gone) - except their
  backups (`passwd-` ...), which the account tools rewrite with the previous version at each
  change by definition (their presence and mode are still in `files`).
- `run`: /run two levels deep (containerd's and runc's state, the pods' network namespaces),
  minus /run/systemd and /run/user: systemd's and logind's bookkeeping of the SSH sessions this
  capture itself opens, and of any transient unit (two captures of a machine nothing ran on
  differ there).
- `mounts`: every mount point and its type (pod volumes, sandboxes' shm, network namespaces).
- `links`, `routes`, `rules`: `ip -o link`, `ip route show table all`, `ip rule`.

Two names change when a machine boots again, with nothing else changing (a test reboots one):
systemd's private /tmp of a service (`/var/tmp/systemd-private-<boot id>-<unit>-<random>`,
named as `systemd-private-*-<unit>` here) and the index of a veth's peer in the host's
namespace (`host0@if196`, named `host0@if*`: the host end is made anew at each boot).
- `iptables`, `ip6tables`: `-save` output without its comment lines (time stamps) and with every
  counter set to [0:0] (packets counted since).
- `unit-files`: `systemctl list-unit-files` (every unit file and its enablement).
- `units`: `systemctl list-units --all`, minus session scopes and user@ units (the SSH logins of
  the capture) and the mount/swap/device units systemd makes for every mount it sees (the
  `mounts` section covers them, and pods' mounts come and go with them).
- `sysctls`: the kernel settings hardway sets (render/host.py), in the machine's namespace.
"""

from __future__ import annotations

import difflib
import re

from hardway.render.host import KUBELET_KERNEL_DEFAULTS

# Path prefixes left out of `files`, each with why.
EXCLUDED = {
    "/var/log": "logs: the journal grows while the machine runs, whatever hardway does (the issue "
                "excludes it); reset still removes the pods' and the apiserver's log directories",
}

SYSCTLS = ("net.ipv4.ip_forward", "net.bridge.bridge-nf-call-iptables", "net.bridge.bridge-nf-call-ip6tables",
           *KUBELET_KERNEL_DEFAULTS)

_PRUNE = " -o ".join(f"-path {p}" for p in EXCLUDED)
SECTIONS = {
    "files": f"find / -xdev \\( {_PRUNE} \\) -prune -o -printf '%y %m %u:%g %p %l\\n' | sort",
    "etc": "find /etc -xdev -type f ! -name passwd- ! -name group- ! -name shadow- ! -name gshadow- "
           "-exec sha256sum {} + | sort -k2",
    "run": "find /run -xdev -maxdepth 2 \\( -path /run/systemd -o -path /run/user \\) -prune -o -printf '%y %m %p\\n' | sort",
    "mounts": "findmnt -rn -o TARGET,FSTYPE | sort",
    "links": "ip -o link",
    "routes": "ip route show table all",
    "rules": "ip rule",
    "iptables": "iptables-save",
    "ip6tables": "ip6tables-save",
    "unit-files": "systemctl list-unit-files --no-legend --no-pager | sort",
    "units": "systemctl list-units --all --no-legend --no-pager --plain | sort",
    "sysctls": "sysctl " + " ".join(SYSCTLS) + " 2>&1",
}

_COUNTERS = re.compile(r"\[\d+:\d+\]")
_PRIVATE_TMP = re.compile(r"/systemd-private-[0-9a-f]{32}-(\S+?)-[A-Za-z0-9]{6}(?=/| |$)")
_PEER = re.compile(r"@if\d+:")
_TRANSIENT_UNIT = re.compile(r"^(session-\d+\.scope|user@\d+\.service|user-runtime-dir@\d+\.service|user-\d+\.slice"
                             r"|\S+\.(mount|swap|device))\s")


def normalise(section: str, text: str) -> list[str]:
    lines = text.splitlines()
    if section in ("iptables", "ip6tables"):
        lines = [_COUNTERS.sub("[0:0]", ln) for ln in lines if not ln.startswith("#")]
    if section == "files":
        lines = sorted(_PRIVATE_TMP.sub(r"/systemd-private-*-\1", ln) for ln in lines)
    if section == "links":
        lines = [_PEER.sub("@if*:", ln) for ln in lines]
    if section == "units":
        lines = [ln for ln in lines if not _TRANSIENT_UNIT.match(ln)]
    return lines


def capture(c, node: str) -> dict[str, list[str]]:
    """Every section of `node` (a LabCluster's machine)."""
    mark = "@@hardway-section@@"
    script = "".join(f"echo '{mark} {name}'\n{cmd}\n" for name, cmd in SECTIONS.items())
    out = c.ok(node, script, timeout=180)
    got: dict[str, list[str]] = {}
    for chunk in out.split(mark + " ")[1:]:
        name, _, body = chunk.partition("\n")
        got[name] = normalise(name, body)
    assert set(got) == set(SECTIONS), f"{node}: sections missing from the capture: {set(SECTIONS) - set(got)}"
    return got


def difference(before: dict[str, list[str]], after: dict[str, list[str]], limit: int = 80) -> str:
    """A unified diff per section that differs ('' when none does), at most `limit` lines each."""
    parts = []
    for name in SECTIONS:
        d = list(difflib.unified_diff(before[name], after[name], f"{name} before", f"{name} after", lineterm="", n=0))
        if d:
            more = f"\n... {len(d) - limit} more line(s)" if len(d) > limit else ""
            parts.append("\n".join(d[:limit]) + more)
    return "\n".join(parts)
