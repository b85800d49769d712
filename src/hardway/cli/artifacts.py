"""`hardway artifacts ...`: mirror build, serve, fetch."""

from __future__ import annotations

import click


@click.group()
def artifacts() -> None:
    """Upstream binaries and images: an offline mirror, and the operator's verified cache."""
