"""One lab machine: its root tree, the files that make it a lab node, booting and stopping it.

A machine is `systemd-nspawn --boot` on a copy of the image, started inside its own cgroup in
every hierarchy (cgroups.py). nspawn runs with `--register=no --keep-unit` because the host's
PID 1 may not be systemd (LAB.md 2), so the lab stops a machine itself: SIGRTMIN+4 to the
machine's systemd (power off), a bounded wait, then SIGKILL to everything left in its cgroup.
"""

from __future__ import annotations

import ipaddress
import os
import re
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

from ..errors import OperationError
from . import cgroups
from .host import Progress, run
from .state import MachineState

# ---------------------------------------------------------------------------------------------
# files written into every machine at every `up` (stopped machines only)

NETWORK_SCRIPT = """\
#!/bin/sh
# hardway lab: the machine's static address on host0; no default route (LAB.md 9).
# systemd-networkd leaves links "pending" in a container without udev, so plain `ip` it is.
set -eu
. /etc/hardway-lab/network.env
ip link set lo up
echo 1 > /proc/sys/net/ipv6/conf/host0/disable_ipv6 2>/dev/null || true  # IPv4-only lab
ip link set host0 up
ip addr replace "$ADDRESS" dev host0
"""

NETWORK_UNIT = """\
[Unit]
Description=hardway lab: static address on host0 (no default route)
DefaultDependencies=no
After=systemd-sysctl.service
Before=network.target network-online.target
Wants=network.target
ConditionPathExists=/etc/hardway-lab/network.env

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/hardway-lab-network

[Install]
WantedBy=network-online.target multi-user.target
"""

CGROUPS_SCRIPT = """\
#!/bin/sh
# hardway lab: make the cgroup v1 controllers writable for containerd and the kubelet (LAB.md 4).
# nspawn mounts them read-only; `memory` refuses a remount ("busy") and is mounted afresh.
# The machine's cgroup namespace makes a fresh mount show the machine's own subtree.
set -u
mount -o remount,rw /sys/fs/cgroup 2>/dev/null || true
mounts=$(cat /proc/self/mounts)
echo "$mounts" | while read -r _src dir fstype opts _rest; do
  [ "$fstype" = cgroup ] || continue
  case "$dir" in /sys/fs/cgroup/*) ;; *) continue ;; esac
  case ",$opts," in *,ro,*) ;; *) continue ;; esac
  if mount -o remount,rw "$dir" 2>/dev/null; then continue; fi
  ctrl=$(echo "$opts" | tr , '\\n' | grep -v -x -E 'ro|rw|nosuid|nodev|noexec|relatime|noatime|nodiratime|strictatime|clone_children|xattr' | paste -sd, -)
  umount -l "$dir"
  mount -t cgroup -o "rw,nosuid,nodev,noexec,relatime,$ctrl" cgroup "$dir"
done
"""

CGROUPS_UNIT = """\
[Unit]
Description=hardway lab: writable cgroup controllers for containerd and the kubelet
DefaultDependencies=no
After=local-fs.target
Before=sysinit.target containerd.service kubelet.service
ConditionVirtualization=container

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/hardway-lab-cgroups

[Install]
WantedBy=sysinit.target
"""

# containerd and the kubelet come later (hardway's node bundles); make sure they wait.
RUNTIME_DROPIN = """\
# hardway lab: the cgroup controllers must be writable before this starts (LAB.md 4)
[Unit]
Wants=hardway-lab-cgroups.service
After=hardway-lab-cgroups.service
"""

SYSTEM_CONF = """\
# hardway lab: a stuck process (a pod's PID 1 ignoring SIGTERM) must not hold shutdown for 90 s
[Manager]
DefaultTimeoutStopSec=10s
"""

JOURNALD_CONF = """\
# hardway lab: keep logs across machine restarts, but small
[Journal]
Storage=persistent
SystemMaxUse=64M
RuntimeMaxUse=16M
"""

SSHD_CONF = """\
# hardway lab: key-only root login with the lab key; one host key, made on the host
HostKey /etc/ssh/ssh_host_ed25519_key
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UseDNS no
"""

RESOLV_CONF = """\
# hardway lab: machines have no route off the lab, so no DNS server is configured.
"""

# Units a lab machine has no use for (getty on a console nobody reads, timers that fetch or
# scrub things): masked to save memory and noise.
MASKED = (
    "console-getty.service", "getty@tty1.service", "apt-daily.timer", "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer", "e2scrub_all.timer", "e2scrub_reap.service", "fstrim.timer",
    "systemd-journald-audit.socket",
)


def hosts_text(nodes: list[tuple[str, str]], extra: list[tuple[str, str]] = ()) -> str:
    lines = ["127.0.0.1\tlocalhost", "::1\t\tlocalhost ip6-localhost ip6-loopback", "",
             "# hardway lab: every node of the cluster"]
    lines += [f"{addr}\t{name}" for name, addr in nodes]
    lines += [f"{addr}\t{name}" for name, addr in extra]
    return "\n".join(lines) + "\n"


def _safe_parent(root: Path, rel: str) -> Path:
    """The directory for `root/rel`, created as needed; refuse symlinks on the way (the tree
    belongs to the machine: a link there must not send our writes into the host)."""
    d = root
    for part in Path(rel).parent.parts:
        d = d / part
        if d.is_symlink():
            raise OperationError(f"{d} is a symbolic link; refusing to write through it")
        if not d.exists():
            d.mkdir(mode=0o755)
    return d


def put(root: Path, rel: str, data: str | bytes, mode: int = 0o644) -> bool:
    """Write root/rel atomically unless it already holds `data`; returns whether it wrote."""
    data = data.encode() if isinstance(data, str) else data
    parent = _safe_parent(root, rel)
    path = parent / Path(rel).name
    if not path.is_symlink() and path.is_file():
        if path.read_bytes() == data and (path.stat().st_mode & 0o7777) == mode:
            return False
    tmp = parent / f".{path.name}.hardway-tmp"
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
    return True


def link(root: Path, rel: str, target: str) -> None:
    parent = _safe_parent(root, rel)
    path = parent / Path(rel).name
    if path.is_symlink() and os.readlink(path) == target:
        return
    tmp = parent / f".{path.name}.hardway-tmp"
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, path)


def provision(root: Path, name: str, address: ipaddress.IPv4Interface, hosts: str,
              authorized_key: str) -> None:
    """Make a copied image into this machine (idempotent; run while it is stopped)."""
    put(root, "etc/hostname", f"{name}\n")
    put(root, "etc/hosts", hosts)
    mid = root / "etc/machine-id"
    if mid.is_symlink() or not mid.exists() or len(mid.read_text().strip()) != 32:
        put(root, "etc/machine-id", uuid.uuid4().hex + "\n", 0o444)
    put(root, "etc/resolv.conf", RESOLV_CONF)
    put(root, "etc/hardway-lab/network.env", f"NODE={name}\nADDRESS={address}\n")
    put(root, "usr/local/sbin/hardway-lab-network", NETWORK_SCRIPT, 0o755)
    put(root, "usr/local/sbin/hardway-lab-cgroups", CGROUPS_SCRIPT, 0o755)
    put(root, "etc/systemd/system/hardway-lab-network.service", NETWORK_UNIT)
    put(root, "etc/systemd/system/hardway-lab-cgroups.service", CGROUPS_UNIT)
    for target in ("multi-user.target", "network-online.target"):
        link(root, f"etc/systemd/system/{target}.wants/hardway-lab-network.service",
             "/etc/systemd/system/hardway-lab-network.service")
    link(root, "etc/systemd/system/sysinit.target.wants/hardway-lab-cgroups.service",
         "/etc/systemd/system/hardway-lab-cgroups.service")
    for unit in ("containerd.service", "kubelet.service"):
        put(root, f"etc/systemd/system/{unit}.d/10-hardway-lab.conf", RUNTIME_DROPIN)
    put(root, "etc/systemd/system.conf.d/hardway-lab.conf", SYSTEM_CONF)
    put(root, "etc/systemd/journald.conf.d/hardway-lab.conf", JOURNALD_CONF)
    _safe_parent(root, "var/log/journal/x")
    put(root, "etc/ssh/sshd_config.d/hardway-lab.conf", SSHD_CONF)
    for unit in MASKED:
        link(root, f"etc/systemd/system/{unit}", "/dev/null")
    _safe_parent(root, "root/.ssh/x").chmod(0o700)
    put(root, "root/.ssh/authorized_keys", authorized_key.strip() + "\n", 0o600)


# ---------------------------------------------------------------------------------------------
# processes


def proc_start(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks) of a process, or None if there is none."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return fields[0], int(fields[19])


def alive(m: MachineState) -> bool:
    """Whether this machine's nspawn still runs (a zombie or a reused PID does not count)."""
    if not m.pid:
        return False
    got = proc_start(m.pid)
    return got is not None and got[0] not in ("Z", "X") and got[1] == m.pid_start


def machine_init(m: MachineState) -> int | None:
    """The machine's PID 1 (systemd) as the host sees it: nspawn's child that is PID 1 inside."""
    if not alive(m):
        return None
    for pid in cgroups.pids(m.cgroup):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        ns = fields.get("NSpid", "").split()
        if fields.get("PPid", "").strip() == str(m.pid) and len(ns) >= 2 and ns[-1] == "1":
            return pid
    return None


# The shell that starts nspawn moves itself into the machine's cgroups first, so nspawn and
# everything it starts live there; it then starts nspawn in the background and prints its PID.
_LAUNCH = """\
IFS=:
for f in $HARDWAY_CGROUP_PROCS; do echo $$ > "$f" || { echo "cannot join cgroup $f" >&2; exit 97; }; done
unset IFS HARDWAY_CGROUP_PROCS
"$@" </dev/null >>"$HARDWAY_LOG" 2>&1 &
echo $!
"""


def nspawn_command(m: MachineState, bridge: str) -> list[str]:
    return [
        "systemd-nspawn",
        "--directory", m.root,
        "--boot",
        f"--machine={m.name}",
        "--register=no", "--keep-unit",  # the host's PID 1 may not be systemd (LAB.md 2)
        "--capability=all", "--bind=/dev/kmsg",  # containerd + kubelet inside (LAB.md 3)
        f"--network-bridge={bridge}",
        "--resolv-conf=off", "--link-journal=no", "--settings=no",
        "--console=read-only",
    ]


def nspawn_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYSTEMD_NSPAWN")}
    # Not SYSTEMD_NSPAWN_API_VFS_WRITABLE: with /proc/sys writable every kubelet would rewrite
    # the host's kernel settings (LAB.md 3, 15). SYSTEMD_SECCOMP=0 lets runc do its work.
    env["SYSTEMD_SECCOMP"] = "0"
    return env


def check_veth_free(m: MachineState, wait: float = 3.0) -> None:
    """Fail if the host end of this machine's veth exists: a network namespace being torn
    down (processes of the machine just ended) may hold it for a moment, so wait a little."""
    veth = f"vb-{m.name}"  # nspawn's name for the host end (longer names get a hash: no clash)
    if len(veth) > 15:
        return
    deadline = time.monotonic() + wait
    while Path("/sys/class/net", veth).exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    if Path("/sys/class/net", veth).exists():
        raise OperationError(f"network interface {veth} already exists, so nspawn cannot give machine "
                             f"{m.name} its veth: another lab with a machine named {m.name} is up? "
                             "Machine names must be unique among the labs running on this host")


def boot(m: MachineState, bridge: str) -> None:
    """Start the machine in the background; records its nspawn PID in `m`."""
    cgroups.create(m.cgroup)
    strays = cgroups.pids(m.cgroup)
    if strays:
        raise OperationError(
            f"machine {m.name}'s cgroup {m.cgroup} still holds processes {sorted(strays)[:5]}: left "
            "from an earlier run of this machine (`hardway lab down` ends them), or another lab "
            "with the same cluster name is up (run `hardway lab down` in its directory)")
    log = Path(m.log or Path(m.root).with_suffix(".log"))
    log.parent.mkdir(parents=True, exist_ok=True)
    if log.exists() and log.stat().st_size > 2**20:  # keep the previous boot's console, no more
        os.replace(log, log.with_name(log.name + ".1"))
    with open(log, "a") as f:
        f.write(f"\n=== hardway lab: starting {m.name} at {time.strftime('%Y-%m-%d %H:%M:%S')} ===\n")
    env = nspawn_env()
    env["HARDWAY_CGROUP_PROCS"] = ":".join(str(p) for p in cgroups.procs_files(m.cgroup))
    env["HARDWAY_LOG"] = str(log)
    p = subprocess.run(["sh", "-c", _LAUNCH, "sh", *nspawn_command(m, bridge)], env=env,
                       capture_output=True, text=True, stdin=subprocess.DEVNULL, start_new_session=True)
    if p.returncode != 0 or not p.stdout.strip().isdigit():
        raise OperationError(f"could not start machine {m.name}: {p.stderr.strip() or p.stdout.strip()}")
    pid = int(p.stdout.strip())
    got = proc_start(pid)
    m.pid, m.pid_start, m.log = pid, got[1] if got else None, str(log)


def log_tail(m: MachineState, lines: int = 12) -> str:
    try:
        text = Path(m.log or "").read_text(errors="replace")
    except OSError:
        return ""
    text = text.rsplit("=== hardway lab: starting", 1)[-1].split("\n", 1)[-1]
    text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text)  # the console's colours
    return "\n".join(text.strip().splitlines()[-lines:])


def port_open(address: str, port: int = 22, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def ssh_ok(ssh_base: list[str], address: str, timeout: float = 10) -> bool:
    try:
        p = subprocess.run([*ssh_base, "-o", "BatchMode=yes", f"root@{address}", "true"],
                           capture_output=True, stdin=subprocess.DEVNULL, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False
    return p.returncode == 0


_AFTER_FAILURE = "(`hardway lab status` shows what runs; `hardway lab down` stops all of it)"


def wait_ready(machines: list[MachineState], ssh_base: list[str], progress: Progress,
               timeout: float = 120) -> None:
    """Wait until every machine's sshd accepts the lab key; fail with its console's last lines."""
    pending = {m.name: m for m in machines}
    deadline = time.monotonic() + timeout
    started = time.monotonic()
    while pending:
        for name, m in list(pending.items()):
            if not alive(m):
                raise OperationError(f"machine {name} stopped while booting; its console ({m.log}):\n"
                                     f"{log_tail(m)}\n{_AFTER_FAILURE}")
            addr = m.address.split("/")[0]
            if port_open(addr) and ssh_ok(ssh_base, addr):
                progress(f"{name}: up, SSH answers at {addr} ({time.monotonic() - started:.1f} s)")
                del pending[name]
        if pending and time.monotonic() > deadline:
            names = ", ".join(sorted(pending))
            m = next(iter(pending.values()))
            raise OperationError(f"machine(s) {names} did not answer SSH within {timeout:.0f} s; "
                                 f"console of {m.name} ({m.log}):\n{log_tail(m)}\n{_AFTER_FAILURE}")
        if pending:
            time.sleep(0.3)


def request_poweroff(m: MachineState) -> bool:
    """Ask the machine's systemd to power off (SIGRTMIN+4); False if it has no running init."""
    init = machine_init(m)
    if init is None:
        return False
    try:
        os.kill(init, signal.SIGRTMIN + 4)
    except ProcessLookupError:
        return False
    return True


def finish(machines: list[MachineState], cgroup_of: dict[str, str], timeout: float) -> dict[str, str]:
    """Wait (bounded) for powered-off machines to exit, then kill whatever is left in their
    cgroups, pods included, and remove the cgroups. Returns per machine how it ended."""
    how: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    waiting = [m for m in machines if alive(m)]
    while waiting and time.monotonic() < deadline:
        time.sleep(0.2)
        waiting = [m for m in waiting if alive(m)]
    for m in machines:
        rel = cgroup_of[m.name]
        left = cgroups.pids(rel)
        if not left:
            how[m.name] = "powered off"
        elif m in waiting:
            how[m.name] = f"did not power off within {timeout:.0f} s: killed {len(left)} process(es)"
        else:
            how[m.name] = f"powered off; killed {len(left)} process(es) left behind"
        survivors = cgroups.kill_all(rel)
        if survivors:
            raise OperationError(f"could not end processes {sorted(survivors)} of machine {m.name}")
        leftover = cgroups.remove(rel)
        if leftover:
            raise OperationError(f"could not remove cgroup(s) {', '.join(map(str, leftover[:5]))} of machine {m.name}")
        _forget_nspawn_runtime(m)
        m.pid = m.pid_start = None
    return how


def _forget_nspawn_runtime(m: MachineState) -> None:
    """What a killed nspawn leaves in /run: its image lock and its (empty) propagation dir."""
    try:
        st = os.stat(m.root)
        Path(f"/run/systemd/nspawn/locks/inode-{st.st_dev}:{st.st_ino}").unlink(missing_ok=True)
    except OSError:
        pass
    try:
        Path("/run/systemd/nspawn/propagate", m.name).rmdir()
    except OSError:
        pass


def copy_image(image_root: Path, dest: Path, progress: Progress) -> None:
    tmp = dest.with_name(f".{dest.name}.copying")
    if tmp.exists():
        run(["rm", "-rf", "--one-file-system", tmp], f"removing {tmp}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    run(["cp", "--reflink=auto", "-a", image_root, tmp], f"copying the image to {dest}", timeout=900)
    os.replace(tmp, dest)
