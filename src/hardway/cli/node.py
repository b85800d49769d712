"""`hardway node remove NAME`: a node out of the running cluster."""

from __future__ import annotations

from pathlib import Path

import click

from .. import api
from .cluster import LOCAL_OPTION, _progress, parallel_option
from .main import DIR_OPTION, cli, out


@cli.group()
def node() -> None:
    """Change the nodes of a running cluster."""


@node.command("remove")
@DIR_OPTION
@click.argument("name")
@click.option("--reissue", multiple=True, metavar="CERT",
              help="Reissue this certificate on the way (repeatable): the removal makes the apiserver's stale, "
                   "since it names every controller. Without it such a removal is refused, changing nothing.")
@click.option("--timeout", default=300.0, show_default=True, help="Seconds each health wait may take.")
@parallel_option("worked on")
@LOCAL_OPTION
def remove(directory: Path, name: str, reissue: tuple[str, ...], timeout: float, parallel: int,
           local: tuple[str, ...]) -> None:
    """Remove controller NAME: its entry leaves cluster.yaml (comments and all else kept), then
    `up` removes its etcd member (refused if the quorum would not hold), reloads the load
    balancers and rolls the apiservers without it, and stops and disables its units."""
    report = api.node_remove(directory, name, _progress(), reissue, timeout, parallel, local)
    out.print(f"{name} removed in {report.seconds:.1f}s; its machine keeps hardway's files (wipe or retire it)")
