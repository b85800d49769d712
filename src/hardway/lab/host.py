"""The host side of the lab: preconditions, the bridge, kernel settings, the firewall check.

Network rule (shared/design/LAB.md): the lab creates one bridge and the veths nspawn attaches
to it, and nothing else. It never enables forwarding or NAT on the host and never touches the
host's other interfaces or routes.
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from ..hostcheck import need
from ..render.host import KUBELET_KERNEL_DEFAULTS
from ..errors import OperationError, UsageError

Progress = Callable[[str], None]

# Which Debian package provides each program the lab runs.


def require_linux_root() -> None:
    if not sys.platform.startswith("linux"):
        raise UsageError(f"hardway lab needs Linux (systemd-nspawn machines); this is {sys.platform}")
    if os.geteuid() != 0:
        raise UsageError("hardway lab needs root (it creates a bridge, cgroups and systemd-nspawn "
                         "machines); run it with sudo")
    if not Path("/sys/fs/cgroup").is_dir() or not Path("/proc/self/mountinfo").exists():
        raise OperationError("no cgroup filesystem under /sys/fs/cgroup: the lab needs cgroups to track machines")


def free_bytes(path: Path) -> int:
    path = Path(path)
    while not path.exists():
        path = path.parent
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def check_disk(path: Path, need_bytes: int, what: str) -> None:
    free = free_bytes(path)
    if free < need_bytes:
        raise OperationError(
            f"not enough disk space for {what}: {free / 2**20:.0f} MiB free where {path} lives, "
            f"{need_bytes / 2**20:.0f} MiB needed"
        )


def run(cmd: Sequence[str | Path], what: str, check: bool = True, timeout: float | None = 120) -> subprocess.CompletedProcess:
    try:
        p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        need(str(cmd[0]))
        raise
    except subprocess.TimeoutExpired:
        raise OperationError(f"{what}: `{' '.join(map(str, cmd))}` did not finish in {timeout:.0f} s") from None
    if check and p.returncode != 0:
        tail = "\n".join((p.stderr or p.stdout).strip().splitlines()[-10:])
        raise OperationError(f"{what} failed (exit {p.returncode}): {' '.join(map(str, cmd))}\n{tail}")
    return p


# ---------------------------------------------------------------------------------------------
# names


def bridge_name(cluster: str) -> str:
    """`hw-<cluster>`, at most 15 characters (IFNAMSIZ); long names keep a hash to stay distinct."""
    name = f"hw-{cluster}"
    if len(name) <= 15:
        return name
    import hashlib

    digest = hashlib.sha256(cluster.encode()).hexdigest()[:4]
    return f"hw-{cluster[:7].rstrip('-')}-{digest}"


# ---------------------------------------------------------------------------------------------
# links and addresses


def _ip_json(*args: str) -> list[dict]:
    p = run(["ip", "-j", *args], f"ip {' '.join(args)}")
    return json.loads(p.stdout or "[]")


def link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def bridge_ports(bridge: str) -> list[str]:
    if not link_exists(bridge):
        return []
    return sorted(p.name for p in Path("/sys/class/net", bridge, "brif").iterdir())


def check_subnet_free(subnet: ipaddress.IPv4Network, bridge: str) -> None:
    """Refuse a node subnet that overlaps an address or a route of the host (other than ours)."""
    clashes = []
    for link in _ip_json("addr", "show"):
        if link.get("ifname") == bridge:
            continue
        for a in link.get("addr_info", []):
            if a.get("family") != "inet":
                continue
            net = ipaddress.IPv4Network(f"{a['local']}/{a['prefixlen']}", strict=False)
            if net.overlaps(subnet):
                clashes.append(f"address {a['local']}/{a['prefixlen']} on {link['ifname']}")
    for r in _ip_json("route", "show", "table", "all"):
        dst, dev = r.get("dst", ""), r.get("dev", "")
        if dst in ("default", "") or dev == bridge or r.get("type") in ("local", "broadcast"):
            continue
        try:
            net = ipaddress.IPv4Network(dst if "/" in dst else f"{dst}/32", strict=False)
        except ValueError:
            continue
        if net.prefixlen > 0 and net.overlaps(subnet):
            clashes.append(f"route {dst}" + (f" on {dev}" if dev else ""))
    if clashes:
        raise UsageError(
            f"network.nodeSubnet {subnet} overlaps this host's {'; '.join(sorted(set(clashes)))}. "
            "The lab would take those addresses over: pick a free subnet in cluster.yaml "
            "(e.g. one inside 10.240.0.0/16 that nothing here uses)"
        )


def ensure_bridge(name: str, address: ipaddress.IPv4Interface, progress: Progress) -> None:
    """Create the lab bridge with the host's address on it, or check the one that is there."""
    if link_exists(name):
        if not Path("/sys/class/net", name, "bridge").is_dir():
            raise UsageError(f"a network interface named {name} exists and is not a bridge; "
                             "the lab needs that name (rename the cluster, or remove the interface)")
        have = [f"{a['local']}/{a['prefixlen']}" for link in _ip_json("addr", "show", "dev", name)
                for a in link.get("addr_info", []) if a.get("family") == "inet"]
        if str(address) not in have:
            if have:
                raise UsageError(f"bridge {name} exists with address {', '.join(have)}, not {address}: "
                                 "another lab with this cluster name may be up; run `hardway lab down` "
                                 "in its directory, or rename this cluster")
            run(["ip", "addr", "add", str(address), "dev", name], f"adding {address} to {name}")
        run(["ip", "link", "set", name, "up"], f"bringing {name} up")
        return
    progress(f"creating bridge {name} with {address} (the host's address on the lab network)")
    run(["ip", "link", "add", "name", name, "type", "bridge"], f"creating bridge {name}")
    disable_ipv6(name)  # the lab is IPv4 only: no link-local chatter from the host
    run(["ip", "addr", "add", str(address), "dev", name], f"adding {address} to {name}")
    run(["ip", "link", "set", name, "up"], f"bringing {name} up")


def disable_ipv6(link: str) -> None:
    try:
        Path("/proc/sys/net/ipv6/conf", link, "disable_ipv6").write_text("1")
    except OSError:
        pass  # no IPv6 in this kernel, or the link is gone


def delete_bridge(name: str, progress: Progress) -> None:
    for port in bridge_ports(name):  # veths of machines already gone normally die with them
        run(["ip", "link", "del", port], f"removing {port}", check=False)
    if link_exists(name):
        run(["ip", "link", "del", name], f"removing bridge {name}")
        progress(f"removed bridge {name}")


# ---------------------------------------------------------------------------------------------
# kernel settings the kubelet insists on (LAB.md 15)

# The same values the node bundles put in /etc/sysctl.d (render/host.py).
KUBELET_SYSCTLS = KUBELET_KERNEL_DEFAULTS

# Several labs (cluster directories) may be up at once; the originals are kept once, host-wide,
# and restored when the last of them goes down.
REGISTRY_DIR = Path("/run/hardway-lab")


def _sysctl_path(name: str) -> Path:
    return Path("/proc/sys", *name.split("."))


def read_sysctl(name: str) -> str:
    return _sysctl_path(name).read_text().strip()


def write_sysctl(name: str, value: str) -> None:
    try:
        _sysctl_path(name).write_text(value)
    except OSError as e:
        raise OperationError(f"cannot set {name}={value} on the host: {e.strerror}") from None


@contextmanager
def _registry() -> Iterator[tuple[Path, dict]]:
    REGISTRY_DIR.mkdir(parents=True, exist_ok=True)
    fd = os.open(REGISTRY_DIR / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        path = REGISTRY_DIR / "sysctls.json"
        try:
            reg = json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            reg = {"saved": None, "holders": []}
        yield path, reg
    finally:
        os.close(fd)


def recorded_originals() -> dict[str, str] | None:
    """The host's values from before the first lab still on record changed them, if any."""
    with _registry() as (_path, reg):
        return reg.get("saved")


def _live_holders(holders: list[str], running: Callable[[str], bool], progress: Progress) -> list[str]:
    # A lab whose commands were killed (its machines gone with them) must not keep the host's
    # settings changed for ever: only a lab still running holds them.
    live = [h for h in holders if running(h)]
    for h in holders:
        if h not in live:
            progress(f"lab in {h} no longer runs: it no longer holds the host kernel settings")
    return live


def apply_kubelet_sysctls(holder: str, progress: Progress, saved_before: dict[str, str] | None,
                          running: Callable[[str], bool]) -> dict[str, str]:
    """Set the six values on the host; return the originals (recorded once, host-wide).

    `running(holder)` says whether the lab in that cluster directory still runs."""
    with _registry() as (path, reg):
        holders = _live_holders([h for h in reg.get("holders", []) if h != holder], running, progress)
        if reg.get("saved") is None:
            # `saved_before`: this lab's own record, if the registry was lost (e.g. /run wiped)
            reg["saved"] = saved_before or {k: read_sysctl(k) for k in KUBELET_SYSCTLS}
        if holder not in holders:
            holders.append(holder)
        reg["holders"] = holders
        changes = [(k, read_sysctl(k), v) for k, v in KUBELET_SYSCTLS.items() if read_sysctl(k) != v]
        if changes:
            progress("setting host kernel settings the kubelet requires (they are not per machine; "
                     "`hardway lab down` restores them): "
                     + ", ".join(f"{k} {old} -> {new}" for k, old, new in changes))
        for k, _old, new in changes:
            write_sysctl(k, new)
        path.write_text(json.dumps(reg, indent=2) + "\n")
        return dict(reg["saved"])


def restore_sysctls(holder: str, saved: dict[str, str] | None, progress: Progress,
                    running: Callable[[str], bool]) -> None:
    with _registry() as (path, reg):
        holders = _live_holders([h for h in reg.get("holders", []) if h != holder], running, progress)
        original = reg.get("saved") or saved
        if holders:
            reg["holders"] = holders
            path.write_text(json.dumps(reg, indent=2) + "\n")
            progress(f"host kernel settings left as the kubelet needs them: lab(s) still up in {', '.join(holders)}")
            return
        if original:
            changes = [(k, read_sysctl(k), v) for k, v in original.items() if read_sysctl(k) != v]
            for k, _cur, v in changes:
                write_sysctl(k, v)
            if changes:
                progress("restored host kernel settings: " + ", ".join(f"{k}={v}" for k, _c, v in changes))
        path.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# the host firewall (LAB.md 14)


BRIDGE_NF_CALL_IPTABLES = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")


def forward_drop_warning(bridge: str) -> str | None:
    """Say so if the host's firewall will drop traffic between lab machines; change nothing."""
    try:
        if BRIDGE_NF_CALL_IPTABLES.read_text().strip() != "1":
            return None
    except OSError:
        return None  # bridged traffic does not traverse iptables
    dropping = []
    for tool in ("iptables-legacy", "iptables-nft"):
        if shutil.which(tool) is None:
            continue
        p = subprocess.run([tool, "-w", "-S", "FORWARD"], capture_output=True, text=True)
        lines = p.stdout.splitlines()
        if p.returncode != 0 or not lines or lines[0].split()[-1:] != ["DROP"]:
            continue
        if any(f"-i {bridge} " in line and f"-o {bridge} " in line and line.endswith("-j ACCEPT")
               for line in lines):
            continue
        dropping.append(tool)
    if not dropping and shutil.which("iptables-legacy") is None and shutil.which("iptables-nft") is None:
        if shutil.which("iptables") is None:
            return None
        p = subprocess.run(["iptables", "-w", "-S", "FORWARD"], capture_output=True, text=True)
        if p.stdout.startswith("-P FORWARD DROP"):
            dropping.append("iptables")
    if not dropping:
        return None
    return (
        f"the host's iptables FORWARD policy is DROP ({', '.join(dropping)}) and "
        "net.bridge.bridge-nf-call-iptables=1, so traffic between lab machines (it crosses bridge "
        f"{bridge}) is dropped; the host can still reach every machine. hardway leaves your firewall "
        f"alone. To let lab machines talk: `iptables -I FORWARD -i {bridge} -o {bridge} -j ACCEPT`"
    )
