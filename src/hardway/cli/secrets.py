"""`hardway secrets rotate` (a new encryption key for Secrets at rest) and `hardway pki rotate-ca`
(a new CA): the rotations, each a few steps that end with `up`."""

from __future__ import annotations

from pathlib import Path

import click

from .. import api
from .cluster import LOCAL_OPTION, _progress, parallel_option
from .main import DIR_OPTION, cli, out, pki


@cli.group()
def secrets() -> None:
    """The keys Secrets are encrypted with at rest (DIR/secrets/encryption-key)."""


@secrets.command("rotate")
@DIR_OPTION
@click.option("--timeout", default=300.0, show_default=True, help="Seconds each health wait of `up` may take.")
@parallel_option("worked on")
@LOCAL_OPTION
@click.option("--worker-batch", default=1, show_default=True, type=click.IntRange(min=1),
              help="As for `up`: workers restarted at once, should other changes of cluster.yaml "
                   "restart them (a key itself restarts only the apiservers).")
@click.option("--dry-run", is_flag=True, help="Print the steps still to do, and change nothing.")
def rotate(directory: Path, timeout: float, parallel: int, local: tuple[str, ...], worker_batch: int,
           dry_run: bool) -> None:
    """Encrypt every Secret with a new key, with no request refused.

    Four steps, each recorded in DIR/secrets/encryption-rotation once done, so a rotation cut
    off anywhere resumes when run again: add the new key as a read key and `up` (the
    apiservers restart one at a time); make it the write key and `up`; rewrite every Secret
    through the API and check in etcd that each carries the new key; drop the old key and `up`.
    """
    r = api.secrets_rotate(directory, _progress(), timeout, parallel, local, worker_batch, dry_run)
    if dry_run:
        out.print(f"dry run: the rotation {r.old} -> {r.new} has "
                  + (f"{', '.join(r.resumed)} done; " if r.resumed else "not started; ")
                  + "nothing was changed")
        return
    steps = ", ".join(f"{k} {v:.1f}s" for k, v in r.steps.items()) or "none left"
    out.print(f"encryption key rotated from {r.old} to {r.new} in {r.seconds:.1f}s ({steps}); "
              f"{r.rewritten} Secret(s) rewritten" + (f", {r.gone} deleted meanwhile" if r.gone else "")
              + f"; etcd holds {r.secrets} Secret(s), every one encrypted with {r.new}")


@pki.command("rotate-ca")
@DIR_OPTION
@click.argument("ca", type=click.Choice(["ca", "etcd-ca", "front-proxy-ca"]))
@click.option("--timeout", default=300.0, show_default=True,
              help="Seconds each health wait of `up` (and each kubelet's new client certificate) may take.")
@parallel_option("worked on")
@LOCAL_OPTION
@click.option("--worker-batch", default=1, show_default=True, type=click.IntRange(min=1),
              help="As for `up`: workers restarted at once.")
def rotate_ca(directory: Path, ca: str, timeout: float, parallel: int, local: tuple[str, ...],
              worker_batch: int) -> None:
    """Replace CA CA with a new one, with no request refused.

    Four steps, each ending with `up` and recorded in DIR/pki/ca-rotation once done, so a
    rotation cut off anywhere resumes when run again: trust (a new CA, every bundle holds old
    and new); reissue (every certificate the CA signed, by the new one, kubeconfigs too);
    switch (ca only: the controller manager signs with the new CA, and each kubelet renews its
    client certificate); drop (the old CA leaves every bundle, then its key is removed).
    Flat layout only: `pki.layout: root` is refused.
    """
    r = api.pki_rotate_ca(directory, ca, _progress(), timeout, parallel, local, worker_batch)
    steps = ", ".join(f"{k} {v:.1f}s" for k, v in r.steps.items()) or "none left"
    out.print(f"{ca} rotated in {r.seconds:.1f}s ({steps}): {len(r.reissued)} certificate(s) reissued"
              + (f", {len(r.kubelets)} kubelet client certificate(s) renewed" if r.kubelets else "")
              + f"; the new {ca} (serial {r.serial}) is valid until {r.not_after:%Y-%m-%d}, the old one is gone")
