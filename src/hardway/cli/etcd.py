"""`hardway etcd snapshot | restore`: etcd backups (deploy/etcd_backup.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.group()
def etcd() -> None:
    """Back up etcd (snapshot) and restore it (every member, new cluster token)."""


# Imported after the group exists: main imports this module while it is itself being imported.
from .. import api  # noqa: E402
from ..errors import UsageError  # noqa: E402
from .cluster import _progress, parallel_option, print_verify  # noqa: E402
from .main import DIR_OPTION, out  # noqa: E402


@etcd.command()
@DIR_OPTION
@click.option("--out", "out_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Where the snapshot goes (default DIR/backups/etcd-<cluster>-<UTC time>.db); never over "
                   "an existing file.")
def snapshot(directory: Path, out_file: Path | None) -> None:
    """Save a snapshot of etcd from a healthy member to this machine.

    The file is mode 0600 (it holds every Secret), its sha256 is checked against the member's
    and written beside it (FILE.sha256), and etcd's own tool reports its revision, keys and size.
    """
    r = api.etcd_snapshot(directory, out_file, _progress())
    out.print(f"{r.path}: {r.status} from {r.member} in {r.seconds:.1f}s", markup=False)
    out.print(f"sha256 {r.sha256} (also in {r.path.name}.sha256)", markup=False)


@etcd.command()
@DIR_OPTION
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--sha256", "digest", metavar="HEX",
              help="The snapshot's sha256, when FILE.sha256 is not beside it.")
@click.option("--timeout", default=300.0, show_default=True, help="Seconds each health wait may take.")
@parallel_option("worked on")
@click.option("--yes", is_flag=True, help="Do not ask: every change made to the cluster since the snapshot is "
              "undone.")
def restore(directory: Path, file: Path, digest: str | None, timeout: float, parallel: int, yes: bool) -> None:
    """Replace the data of every etcd member with a snapshot, then verify.

    Checks FILE against its sha256 first; restores it on every member (new cluster token) while
    the cluster still runs; stops every API client, apiserver and etcd member; moves each old
    data directory aside (kept, named in the output) and the restored one in; starts everything
    as `hardway up` does, waiting for each health; then runs `hardway verify` (its exit code).
    """
    if not yes:
        if not sys.stdin.isatty():
            raise UsageError("etcd restore undoes every change made since the snapshot: pass --yes to confirm")
        click.confirm(f"Replace the data of every etcd member with {file}? Every change made to the cluster "
                      "since that snapshot is undone", abort=True)
    r = api.etcd_restore(directory, file, _progress(), digest, timeout, parallel)
    steps = ", ".join(f"{k} {v:.1f}s" for k, v in r.step_seconds.items())
    out.print(f"restored {r.status} on {len(r.kept)} member(s) in {r.seconds:.1f}s ({steps}); cluster token "
              f"{r.token}", markup=False)
    for member, kept in r.kept.items():
        out.print(f"  {member}: old data directory kept in {kept}", markup=False)
    sys.exit(print_verify(api.verify(directory, _progress(), parallel=parallel)))
