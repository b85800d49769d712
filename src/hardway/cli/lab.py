"""`hardway lab ...`: local machines (systemd-nspawn) for the cluster in cluster.yaml."""

from __future__ import annotations

import click


@click.group()
def lab() -> None:
    """Real Linux machines on this host (systemd-nspawn), one per node in cluster.yaml."""
