"""`hardway node remove NAME`: a controller or a worker out of the running cluster."""

from __future__ import annotations

from pathlib import Path

import click

from .. import api
from ..deploy.retire import WorkerRemoval
from .cluster import LOCAL_OPTION, _progress, parallel_option
from .main import DIR_OPTION, cli, out


@cli.group()
def node() -> None:
    """Change the nodes of a running cluster."""


@node.command("remove")
@DIR_OPTION
@click.argument("name")
@click.option("--reissue", multiple=True, metavar="CERT",
              help="Reissue this certificate on the way (repeatable): a controller's removal makes the apiserver's "
                   "stale, since it names every controller. Without it such a removal is refused, changing nothing.")
@click.option("--drain-timeout", default=300.0, show_default=True, metavar="SECONDS",
              help="A worker: how long its drain may take; a drain that does not finish changes nothing.")
@click.option("--force", is_flag=True,
              help="A worker that cannot be reached: delete its Node and its cluster.yaml entry without draining "
                   "or resetting it (the machine keeps everything).")
@click.option("--timeout", default=300.0, show_default=True, help="Seconds each health wait may take.")
@parallel_option("worked on")
@LOCAL_OPTION
def remove(directory: Path, name: str, reissue: tuple[str, ...], drain_timeout: float, force: bool, timeout: float,
           parallel: int, local: tuple[str, ...]) -> None:
    """Remove node NAME from the running cluster; its entry leaves cluster.yaml (comments and
    all else kept).

    A controller: `up` then removes its etcd member (refused if the quorum would not hold),
    reloads the load balancers and rolls the apiservers without it, and stops and disables its
    units. A worker: cordoned and drained (DaemonSets ignored, emptyDir data deleted), its host
    reset as `hardway reset NAME` does, its Node deleted, then `up` removes the other nodes'
    routes to its pods (nothing restarts there). Exit 2: an unknown name, a node with both roles
    or a load balancer, the last worker; exit 1: a drain, reset or `up` that failed (a failed
    drain changes nothing), or an unreachable worker without --force."""
    report = api.node_remove(directory, name, _progress(), reissue, timeout, parallel, local, force, drain_timeout)
    if not isinstance(report, WorkerRemoval):  # a controller: deploy.up.UpReport
        out.print(f"{name} removed in {report.seconds:.1f}s; its machine keeps hardway's files (wipe or retire it)")
    elif report.forced:
        out.print(f"{name} removed in {report.seconds:.1f}s without draining or resetting it (--force). Left on the "
                  f"machine: {report.left}")
    else:
        out.print(f"{name} removed in {report.seconds:.1f}s: drained, its host reset, its Node deleted, and no other "
                  "node routes its pods any more")
