"""`hardway lab ...`: local machines (systemd-nspawn) for the cluster in cluster.yaml."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import click


@click.group()
def lab() -> None:
    """Real Linux machines on this host (systemd-nspawn), one per node in cluster.yaml."""


# Imported after the group exists: main imports this module while it is itself being imported.
from .. import lab as hwlab  # noqa: E402
from .main import DIR_OPTION, err, out  # noqa: E402

_T0 = time.monotonic()


def _progress(msg: str) -> None:
    err.print(f"[{time.monotonic() - _T0:6.1f}s] {msg}", markup=False, highlight=False)


def _warn(warnings: list[str]) -> None:
    for w in warnings:
        err.print(f"[yellow]warning:[/] {w}", markup=True, highlight=False)


@lab.command()
@DIR_OPTION
@click.option("--timeout", default=120.0, show_default=True, help="Seconds to wait for the machines' SSH.")
def up(directory: Path, timeout: float) -> None:
    """Create and boot a machine for every node in cluster.yaml (idempotent).

    The first run builds a Debian image with debootstrap (about 80 s, cached in
    $HARDWAY_CACHE or ~/.cache/hardway). Sets six host kernel settings the kubelet insists on;
    `hardway lab down` restores them."""
    r = hwlab.up(directory, _progress, timeout)
    _warn(r.warnings)
    total = len(r.started) + len(r.already_running)
    parts = []
    if r.started:
        parts.append(f"started {', '.join(r.started)}")
    if r.already_running:
        parts.append(f"already running: {', '.join(r.already_running)}")
    out.print(f"lab up: {total} machine(s) running ({'; '.join(parts)}) in {r.seconds:.1f} s. "
              f"Next: `hardway lab status`, `hardway lab ssh NAME`", markup=False)


@lab.command()
@DIR_OPTION
def status(directory: Path) -> None:
    """Every machine: address, running or stopped, whether SSH answers, memory in use."""
    from rich.table import Table

    r = hwlab.status(directory)
    table = Table("machine", "address", "state", "ssh", "memory (RSS)")
    for m in r.machines:
        ssh = "-" if m.ssh is None else ("yes" if m.ssh else "no")
        mem = f"{m.rss_bytes / 2**20:.0f} MiB" if m.rss_bytes else "-"
        name = m.name if m.in_spec else f"{m.name} (not in cluster.yaml)"
        state = f"{m.state} ({m.leftover} process(es) left)" if m.leftover else m.state
        table.add_row(name, m.address, state, ssh, mem)
    out.print(table)
    if r.bridge:
        out.print(f"bridge {r.bridge}: {'up' if r.bridge_up else 'absent'}", markup=False)
    _warn(r.warnings)


@lab.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@DIR_OPTION
@click.argument("name")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def ssh(directory: Path, name: str, command: tuple[str, ...]) -> None:
    """SSH to machine NAME as root with the lab's key; with COMMAND, run it and exit with its
    status. One COMMAND argument is a shell command line ('ip route | grep default'); several
    arrive as separate arguments."""
    if command[:1] == ("--",):  # `hardway lab ssh NAME -- ls -l`
        command = command[1:]
    argv = hwlab.ssh_argv(directory, name, command)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvp(argv[0], argv)


@lab.command()
@DIR_OPTION
@click.argument("name")
@click.option("--timeout", default=30.0, show_default=True,
              help="Seconds to wait for a clean power-off before killing what is left.")
def stop(directory: Path, name: str, timeout: float) -> None:
    """Power machine NAME off; whatever still runs in it after TIMEOUT is killed."""
    how = hwlab.stop(directory, name, _progress, timeout)
    out.print(f"{name}: {how}", markup=False)


@lab.command()
@DIR_OPTION
@click.argument("name")
@click.option("--timeout", default=120.0, show_default=True, help="Seconds to wait for its SSH.")
def start(directory: Path, name: str, timeout: float) -> None:
    """Boot machine NAME (creating it, the bridge and the host settings if needed)."""
    r = hwlab.start(directory, name, _progress, timeout)
    _warn(r.warnings)
    out.print(f"{name}: {'started' if r.started else 'already running'}", markup=False)


def _down_summary(r: hwlab.DownReport, what: str) -> None:
    if r.nothing_to_do:
        out.print(f"lab {what}: no lab here (no lab/state.json), nothing to do", markup=False)
        return
    for name, how in r.stopped.items():
        out.print(f"{name}: {how}", markup=False)
    out.print(f"lab {what}: every machine stopped, no lab process, cgroup, veth or bridge left"
              + ("; bridge removed" if r.bridge_removed else ""), markup=False)


@lab.command()
@DIR_OPTION
@click.option("--timeout", default=30.0, show_default=True,
              help="Seconds to wait for clean power-offs before killing what is left.")
def down(directory: Path, timeout: float) -> None:
    """Stop every machine; remove the veths, the bridge and the lab's cgroups; restore the
    host's kernel settings. The machines' disks stay for the next `up`."""
    _down_summary(hwlab.down(directory, _progress, timeout), "down")


@lab.command()
@DIR_OPTION
@click.option("--timeout", default=30.0, show_default=True,
              help="Seconds to wait for clean power-offs before killing what is left.")
def destroy(directory: Path, timeout: float) -> None:
    """`down`, then delete what the lab made in DIR/lab: the machines' roots, their logs, the
    lab's key, known_hosts and state. Anything else there is left (and named)."""
    r = hwlab.destroy(directory, _progress, timeout)
    _down_summary(r, "destroy")
    lab = Path(directory) / "lab"
    if r.deleted:
        out.print(f"deleted the lab's machines, logs, key and state in {lab}", markup=False)
    _warn([f"{p}: left in place: the lab did not make it" for p in r.left])
