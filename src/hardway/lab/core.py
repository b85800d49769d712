"""The lab verbs: up, status, ssh, stop, start, down, destroy. Every one is idempotent.

    DIR/lab/state.json          machines, PIDs, cgroups, saved kernel settings (state.py)
    DIR/lab/machines/<node>/    each machine's root tree (a copy of the cached image)
    DIR/lab/logs/<node>.log     each machine's console
    DIR/lab/id_ed25519(.pub)    the lab's SSH key; DIR/lab/known_hosts: the machines' host keys
"""

from __future__ import annotations

import ipaddress
import os
import shlex
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ..clusterdir import ClusterDir
from ..errors import HardwayError, OperationError, UsageError
from ..lock import cluster_lock
from ..spec.load import load_spec
from ..spec.model import ClusterSpec
from ..spec.presets import require_lab_profile
from . import cgroups, host, image, machine, sshkeys
from .host import Progress
from .state import LabState, MachineState, lab_dir, load_state, save_state, state_path


def _quiet(_msg: str) -> None:
    pass


@dataclass
class UpReport:
    started: list[str] = field(default_factory=list)
    already_running: list[str] = field(default_factory=list)
    copied: list[str] = field(default_factory=list)
    image_built: bool = False
    spec_updated: bool = False
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass(frozen=True)
class MachineStatus:
    name: str
    address: str
    state: str  # running | stopped | absent (no root yet)
    ssh: bool | None  # None: not checked (not running)
    pid: int | None
    rss_bytes: int
    in_spec: bool
    leftover: int = 0  # stopped, yet processes of it live on (its nspawn was killed): `lab stop` ends them


@dataclass
class StatusReport:
    bridge: str | None
    bridge_up: bool
    machines: list[MachineStatus]
    warnings: list[str] = field(default_factory=list)


@dataclass
class DownReport:
    stopped: dict[str, str] = field(default_factory=dict)  # machine -> how it ended
    bridge_removed: bool = False
    nothing_to_do: bool = False
    deleted: list[Path] = field(default_factory=list)  # destroy: what it deleted in DIR/lab
    left: list[Path] = field(default_factory=list)  # destroy: what DIR/lab still holds (not the lab's)


# ---------------------------------------------------------------------------------------------
# helpers


def _spec(directory: Path) -> ClusterSpec:
    return load_spec(ClusterDir.at(directory).spec).spec


def _holder(directory: Path) -> str:
    return str(Path(directory).resolve())


# `lab up` records itself as a holder a few seconds before its machines boot.
_BOOTING_GRACE_SECONDS = 300


def _lab_running(holder: str) -> bool:
    """Whether the lab in this cluster directory runs (or is coming up) and so needs the host's
    kernel settings; a lab left behind by a killed command, its machines gone, does not."""
    try:
        state = load_state(Path(holder))
        age = time.time() - state_path(Path(holder)).stat().st_mtime
    except (OSError, HardwayError):
        return False
    if state is None:
        return False
    return age < _BOOTING_GRACE_SECONDS or any(machine.alive(m) for m in state.machines.values())


def _bridge_address(spec: ClusterSpec) -> ipaddress.IPv4Interface:
    subnet = spec.node_subnet
    if subnet.prefixlen > 30:
        raise UsageError(f"network.nodeSubnet {subnet} is too small for a lab (the host takes its "
                         "first address): use a /30 or larger")
    return ipaddress.IPv4Interface((subnet.network_address + 1, subnet.prefixlen))


def _check_addresses(spec: ClusterSpec, bridge_addr: ipaddress.IPv4Interface) -> None:
    taken = {n.address: f"node {n.name}" for n in spec.nodes}
    if spec.load_balancer.vip is not None:
        taken[spec.load_balancer.vip] = "loadBalancer.vip"
    if bridge_addr.ip in taken:
        raise UsageError(f"{taken[bridge_addr.ip]} uses {bridge_addr.ip}, the first address of "
                         f"network.nodeSubnet {spec.node_subnet}: in the lab that is the host's "
                         "address on the lab bridge. Give it another address")


def _new_state(spec: ClusterSpec) -> LabState:
    return LabState(cluster=spec.name, bridge=host.bridge_name(spec.name),
                    bridge_address=str(_bridge_address(spec)),
                    cgroup_tree=f"/{cgroups.LAB_ROOT}/{spec.name}")


def _machine(spec: ClusterSpec, lab: Path, name: str) -> MachineState:
    node = spec.node(name)
    return MachineState(name=name, address=f"{node.address}/{spec.node_subnet.prefixlen}",
                        root=str((lab / "machines" / name).absolute()), image="",
                        cgroup=cgroups.node_cgroup(spec.name, name),
                        log=str((lab / "logs" / f"{name}.log").absolute()))


def _has_root(m: MachineState) -> bool:
    return (Path(m.root) / "usr").is_dir() and (Path(m.root) / "etc").is_dir()


def _names(state: LabState | None, spec: ClusterSpec | None) -> list[str]:
    names = [n.name for n in spec.nodes] if spec else []
    return names + [n for n in (state.machines if state else {}) if n not in names]


def _unknown(name: str, known: list[str]) -> UsageError:
    return UsageError(f"no machine named {name!r} in this lab; machines: {', '.join(known) or '(none)'}")


# ---------------------------------------------------------------------------------------------
# up / start


def up(directory: str | Path = ".", progress: Progress = _quiet, timeout: float = 120,
       only: list[str] | None = None) -> UpReport:
    """Create (if needed) and boot every machine cluster.yaml names; `only`: just these."""
    started_at = time.monotonic()
    directory = Path(directory)
    command = f"lab start {' '.join(only)}" if only else "lab up"
    spec = _spec(directory)
    require_lab_profile(spec, directory, command)  # before anything starts: it would fail late
    host.require_linux_root()
    host.need("systemd-nspawn", "ip", "ssh", "ssh-keygen", "cp")
    cd = ClusterDir.at(directory)
    lab = lab_dir(directory)
    report = UpReport()
    names = [n.name for n in spec.nodes]
    for name in only or []:
        if name not in names:
            raise _unknown(name, names)
    with cluster_lock(directory, command):
        state = load_state(directory)
        fresh = _new_state(spec)
        if state is None:
            state = fresh
        elif (state.cluster, state.bridge_address) != (fresh.cluster, fresh.bridge_address):
            running = [m.name for m in state.machines.values() if machine.alive(m)]
            if running:
                raise UsageError(
                    f"the lab runs as cluster {state.cluster} on {state.bridge_address} and cluster.yaml "
                    f"now says {fresh.cluster} on {fresh.bridge_address}: run `hardway lab down` first")
            host.delete_bridge(state.bridge, progress)
            cgroups.kill_all(state.cgroup_tree)
            cgroups.remove(state.cgroup_tree)
            state.cluster, state.bridge, state.bridge_address, state.cgroup_tree = \
                fresh.cluster, fresh.bridge, fresh.bridge_address, fresh.cgroup_tree
            for m in state.machines.values():
                m.cgroup = cgroups.node_cgroup(state.cluster, m.name)
        bridge_addr = ipaddress.IPv4Interface(state.bridge_address)
        _check_addresses(spec, bridge_addr)
        host.check_subnet_free(spec.node_subnet, state.bridge)

        wanted = only or names
        for name in names:
            want = _machine(spec, lab, name)
            m = state.machines.get(name)
            if m is None:
                state.machines[name] = want
            elif machine.alive(m):
                if m.address != want.address:
                    report.warnings.append(
                        f"{name} runs with address {m.address}; cluster.yaml says {want.address}: "
                        f"`hardway lab stop {name}` then `hardway lab up` to apply it")
            else:
                m.address, m.cgroup = want.address, want.cgroup
        for name in state.machines:
            if name not in names:
                report.warnings.append(
                    f"machine {name} is in the lab but no longer in cluster.yaml: left as it is; "
                    "`hardway lab down` stops it, `hardway lab destroy` deletes it")

        # roots: copy the image for machines that have none
        missing = [state.machines[n] for n in wanted if not _has_root(state.machines[n])]
        if missing:
            host.check_disk(lab, len(missing) * image.IMAGE_BYTES, f"{len(missing)} machine root(s) in {lab}")
            img = image.ensure_image(progress)
            report.image_built = img.built
            progress(f"copying the image ({img.rootfs}) to {len(missing)} machine root(s) in {lab / 'machines'}")
            t = time.monotonic()
            with ThreadPoolExecutor(max_workers=min(4, len(missing))) as pool:  # I/O bound: in parallel
                list(pool.map(lambda m: machine.copy_image(img.rootfs, Path(m.root), progress), missing))
            for m in missing:
                m.image = img.key
                report.copied.append(m.name)
            progress(f"copied in {time.monotonic() - t:.1f} s")
        current = image.image_key()
        old = [n for n in wanted if state.machines[n].image != current]
        if old:
            report.warnings.append(
                f"machine(s) {', '.join(old)} were made from an older lab image (its packages or recipe "
                "changed since): `hardway lab destroy` then `hardway lab up` remakes them")

        # per-machine files, keys, known_hosts, cluster.yaml's ssh:
        key = sshkeys.ensure_keypair(lab, f"hardway-lab-{spec.name}")
        pub = key.with_name(key.name + ".pub").read_text()
        extra = [(spec.lb_name, str(spec.api_host))] if spec.lb_name else []
        hosts = machine.hosts_text([(n.name, str(n.address)) for n in spec.nodes], extra)
        known = []
        to_boot: list[MachineState] = []
        for node in spec.nodes:
            m = state.machines[node.name]
            if not _has_root(m):
                continue
            root = Path(m.root)
            known.append((node.name, str(node.address), sshkeys.ensure_host_key(root, f"root@{node.name}")))
            if machine.alive(m):
                machine.put(root, "etc/hosts", hosts)  # harmless while it runs; keeps names current
                if node.name in wanted:
                    report.already_running.append(node.name)
                continue
            if node.name in wanted:
                machine.provision(root, node.name, ipaddress.IPv4Interface(m.address), hosts, pub)
                to_boot.append(m)
        for name, m in state.machines.items():  # machines no longer in cluster.yaml, still reachable
            if name not in names and _has_root(m):
                known.append((name, m.address.split("/")[0], sshkeys.ensure_host_key(Path(m.root), f"root@{name}")))
        sshkeys.write_known_hosts(lab, known)
        machine.put(lab, ".gitignore", "# the lab's machines, keys and state: local to this host\n*\n")
        if sshkeys.point_spec_at_lab(cd.spec, key.absolute()):
            report.spec_updated = True
            progress(f"cluster.yaml: ssh: now uses the lab key {key.absolute()} (user root, port 22)")
        save_state(directory, state)

        # the host side, then the machines
        for m in to_boot:
            _clear_leftovers(m, progress)
        for m in to_boot:
            machine.check_veth_free(m)
        host.ensure_bridge(state.bridge, bridge_addr, progress)
        state.saved_sysctls = host.apply_kubelet_sysctls(_holder(directory), progress, state.saved_sysctls,
                                                         _lab_running)
        save_state(directory, state)
        warn = host.forward_drop_warning(state.bridge)
        if warn:
            report.warnings.append(warn)
        for m in to_boot:
            progress(f"{m.name}: booting ({m.address})")
            try:
                machine.boot(m, state.bridge)
            finally:
                save_state(directory, state)
        if to_boot:
            machine.wait_ready(to_boot, sshkeys.ssh_base(lab), progress, timeout)
            report.started = [m.name for m in to_boot]
        for port in host.bridge_ports(state.bridge):
            host.disable_ipv6(port)
    report.seconds = time.monotonic() - started_at
    return report


def _clear_leftovers(m: MachineState, progress: Progress) -> None:
    """End what an earlier run of this (stopped) machine left in its cgroup: after a crash of its
    nspawn, its pods may live on (LAB.md 11). A running nspawn there is someone else's machine."""
    left = cgroups.pids(m.cgroup)
    if not left:
        return
    for pid in left:
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        if comm == "systemd-nspawn":
            raise OperationError(
                f"another machine runs in {m.name}'s cgroup {m.cgroup} (systemd-nspawn, PID {pid}): "
                "another lab with the same cluster name is up? Run `hardway lab down` in its directory")
    progress(f"{m.name}: ending {len(left)} process(es) left from its previous run")
    machine.finish([m], {m.name: m.cgroup}, 0)


def start(directory: str | Path, name: str, progress: Progress = _quiet, timeout: float = 120) -> UpReport:
    """Boot one machine (and the bridge and host settings if the lab is down)."""
    return up(directory, progress, timeout, only=[name])


# ---------------------------------------------------------------------------------------------
# stop / down / destroy


def stop(directory: str | Path, name: str, progress: Progress = _quiet, timeout: float = 30) -> str:
    """Power one machine off (bounded wait), then end every process left in its cgroup."""
    directory = Path(directory)
    host.require_linux_root()
    if not state_path(directory).exists():
        raise _unknown(name, [])
    with cluster_lock(directory, f"lab stop {name}"):
        state = load_state(directory)
        if state is None or name not in state.machines:
            raise _unknown(name, list(state.machines) if state else [])
        m = state.machines[name]
        was_running = machine.alive(m)
        if was_running:
            progress(f"{name}: powering off (SIGRTMIN+4 to its systemd; at most {timeout:.0f} s)")
            machine.request_poweroff(m)
        how = machine.finish([m], {name: m.cgroup}, timeout)[name]
        save_state(directory, state)
    return how if was_running else "already stopped"


def down(directory: str | Path = ".", progress: Progress = _quiet, timeout: float = 30) -> DownReport:
    """Stop every machine, remove the veths, the bridge and the lab's cgroups, restore the host."""
    directory = Path(directory)
    host.require_linux_root()
    report = DownReport()
    if not state_path(directory).exists():
        report.nothing_to_do = True
        return report
    with cluster_lock(directory, "lab down"):
        state = load_state(directory)
        if state is None:
            report.nothing_to_do = True
            return report
        machines = list(state.machines.values())
        running = [m for m in machines if machine.alive(m)]
        for m in running:
            machine.request_poweroff(m)
        if running:
            progress(f"powering off {', '.join(m.name for m in running)} (at most {timeout:.0f} s)")
        how = machine.finish(machines, {m.name: m.cgroup for m in machines}, timeout)
        report.stopped = {m.name: how[m.name] for m in running}
        save_state(directory, state)
        # anything else under this lab's tree (a machine dropped from the state by hand)
        stray = cgroups.kill_all(state.cgroup_tree)
        if stray:
            raise OperationError(f"could not end processes {sorted(stray)} under {state.cgroup_tree}")
        left = cgroups.remove(state.cgroup_tree)
        if left:
            raise OperationError(f"could not remove cgroup(s) {', '.join(map(str, left[:5]))}")
        if host.link_exists(state.bridge):
            host.delete_bridge(state.bridge, progress)
            report.bridge_removed = True
        host.restore_sysctls(_holder(directory), state.saved_sysctls, progress, _lab_running)
        state.saved_sysctls = None
        save_state(directory, state)
    return report


def _users_of(path: Path) -> list[int]:
    """Processes whose root or working directory is inside `path` (a machine still running)."""
    path = path.resolve()
    found = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        for what in ("root", "cwd"):
            try:
                target = Path(os.readlink(p / what))
            except OSError:
                continue
            if target == path or path in target.parents:
                found.append(int(p.name))
                break
    return found


def _mounts_under(path: Path) -> list[str]:
    path = path.resolve()
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mnt = Path(line.split()[4].replace("\\040", " "))
            if mnt == path or path in mnt.parents:
                out.append(str(mnt))
    return out


def destroy(directory: str | Path = ".", progress: Progress = _quiet, timeout: float = 30) -> DownReport:
    """`down`, then delete what the lab made in DIR/lab: the machines its state records, their
    logs, its key, known_hosts and state. Nothing else: without a state file there is no lab
    here, and DIR/lab is left exactly as it is."""
    directory = Path(directory)
    if not state_path(directory).exists():
        return down(directory, progress, timeout)  # no lab here: nothing to do
    with cluster_lock(directory, "lab destroy"):
        report = down(directory, progress, timeout)
        return _delete_lab(directory, report, progress)


def _delete_lab(directory: Path, report: DownReport, progress: Progress) -> DownReport:
    lab = lab_dir(directory)
    state = load_state(directory)
    if state is None:
        report.nothing_to_do = True
        return report
    # destroy holds the cluster lock (DIR/.hardway.lock) around this
    busy = _users_of(lab)
    if busy:
        raise OperationError(f"processes {busy[:10]} still run inside {lab}; not deleting it")
    mounts = _mounts_under(lab)
    if mounts:
        raise OperationError(f"{', '.join(mounts[:5])} mounted inside {lab}; unmount, then retry")
    for path in _made_by_lab(directory, state):
        if path.is_dir() and not path.is_symlink():
            progress(f"deleting {path}")
            shutil.rmtree(path)
        else:
            path.unlink()
        report.deleted.append(path)
    for d in (lab / "machines", lab / "logs"):
        _rmdir_if_empty(d)
    (lab / ".lock").unlink(missing_ok=True)  # the lock file of labs made by earlier versions
    _rmdir_if_empty(lab)
    report.left = sorted(lab.iterdir()) if lab.is_dir() else []
    return report


def _made_by_lab(directory: Path, state: LabState) -> list[Path]:
    """What `lab up` creates in DIR/lab (see the module doc), as far as it exists. A machine's
    root or log counts only where `lab up` puts it: a state file naming a path elsewhere
    gets nothing deleted there."""
    lab = lab_dir(directory)
    fixed = [lab / n for n in (sshkeys.KEY_NAME, sshkeys.KEY_NAME + ".pub", sshkeys.KNOWN_HOSTS, ".gitignore")]
    per_machine = []
    for name, m in state.machines.items():
        root = lab / "machines" / name
        if _same(m.root, root):
            per_machine += [root, root.with_name(f".{name}.copying")]  # copy_image's temporary
        log = lab / "logs" / f"{name}.log"
        if m.log and _same(m.log, log):
            per_machine += [log, log.with_name(log.name + ".1")]  # boot keeps one previous log
    # the state last: a deletion cut short leaves a lab that the next destroy still knows
    return [p for p in per_machine + fixed + [state_path(directory)] if os.path.lexists(p)]


def _same(a: str | Path, b: Path) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def _rmdir_if_empty(d: Path) -> None:
    try:
        d.rmdir()
    except OSError:
        pass


# ---------------------------------------------------------------------------------------------
# status / ssh


def status(directory: str | Path = ".") -> StatusReport:
    directory = Path(directory)
    host.require_linux_root()
    state = load_state(directory)
    try:
        spec: ClusterSpec | None = _spec(directory)
    except HardwayError:
        if state is None:
            raise
        spec = None  # a broken cluster.yaml must not hide what runs
    lab = lab_dir(directory)
    rows: list[tuple[MachineState, bool]] = []
    for name in _names(state, spec):
        m = state.machines.get(name) if state else None
        if m is None and spec is not None:
            m = _machine(spec, lab, name)
        assert m is not None
        rows.append((m, spec is not None and name in [n.name for n in spec.nodes]))
    running = [m for m, _ in rows if machine.alive(m)]
    warnings: list[str] = []
    base = sshkeys.ssh_base(lab)
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(running)))) as pool:
        reach = dict(zip([m.name for m in running],
                         pool.map(lambda m: machine.ssh_ok(base, m.address.split("/")[0], timeout=8), running),
                         strict=True))
    machines = []
    for m, in_spec in rows:
        on = m in running
        machines.append(MachineStatus(
            name=m.name, address=m.address.split("/")[0],
            state="running" if on else ("stopped" if _has_root(m) else "absent"),
            ssh=reach.get(m.name) if on else None, pid=m.pid if on else None,
            rss_bytes=cgroups.rss_bytes(m.cgroup), in_spec=in_spec,
            leftover=0 if on else len(cgroups.pids(m.cgroup))))
    for ms in machines:
        if ms.leftover:
            warnings.append(f"{ms.name} is stopped but {ms.leftover} of its processes still run (its "
                            f"systemd-nspawn was killed?): `hardway lab stop {ms.name}` ends them")
    bridge = state.bridge if state else (host.bridge_name(spec.name) if spec else None)
    if bridge and host.link_exists(bridge):
        w = host.forward_drop_warning(bridge)
        if w:
            warnings.append(w)
    return StatusReport(bridge=bridge, bridge_up=bool(bridge and host.link_exists(bridge)),
                        machines=machines, warnings=warnings)


def ssh_argv(directory: str | Path, name: str, command: list[str] | tuple[str, ...] = ()) -> list[str]:
    """The ssh command line for a machine. One argument is a remote shell command as written
    (`'ip route | grep default'`); several are quoted so each arrives as one argument."""
    directory = Path(directory)
    state = load_state(directory)
    if state is None or name not in state.machines:
        raise _unknown(name, list(state.machines) if state else [])
    m = state.machines[name]
    if not machine.alive(m):
        raise OperationError(f"machine {name} is not running: `hardway lab start {name}` (or `hardway lab up`)")
    argv = [*sshkeys.ssh_base(lab_dir(directory)), f"root@{m.address.split('/')[0]}"]
    if command:
        argv += ["--", command[0] if len(command) == 1 else shlex.join(command)]
    return argv


def run(directory: str | Path, name: str, command: str | list[str], timeout: float = 120,
        input: str | None = None) -> subprocess.CompletedProcess:
    """Run a command in a machine over SSH; returns the completed process (text output)."""
    cmd = [command] if isinstance(command, str) else list(command)
    argv = ssh_argv(directory, name, cmd)
    argv.insert(1, "-o")
    argv.insert(2, "BatchMode=yes")
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, input=input,
                          stdin=None if input is not None else subprocess.DEVNULL)


def machine_pids(directory: str | Path, name: str) -> set[int]:
    """Every host PID in a machine's cgroup (its nspawn, its systemd, services, pods)."""
    state = load_state(Path(directory))
    if state is None or name not in state.machines:
        return set()
    return cgroups.pids(state.machines[name].cgroup)


__all__ = ["DownReport", "MachineStatus", "StatusReport", "UpReport", "destroy", "down",
           "machine_pids", "run", "ssh_argv", "start", "status", "stop", "up", "state_path"]
