"""The `hardway` command: parse arguments, call hardway.api, print. Nothing else."""

from __future__ import annotations

import sys
import time
import traceback
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from .. import __version__, api
from ..clusterdir import ClusterDir
from ..errors import HardwayError
from ..pki.ensure import StalePki
from ..pki.inspect import MAX_CHECK_DAYS
from ..spec.presets import PRESETS

# Piped output (CI logs, `| less`) gets wide lines instead of rich's 80-column default.
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 240)
err = Console(stderr=True, highlight=False, soft_wrap=True)

def _resolve_dir(ctx: click.Context, _param: click.Parameter, value: Path | None) -> Path:
    # `hardway -C DIR pki init` and `hardway pki init -C DIR` both work, like git and make.
    if value is not None:
        return value
    return ctx.find_root().meta.get("hardway.dir") or Path(".")


DIR_OPTION = click.option(
    "-C", "--dir", "directory", default=None, callback=_resolve_dir,
    type=click.Path(file_okay=False, path_type=Path),
    help="The cluster directory holding cluster.yaml (default: the global -C, $HARDWAY_DIR, or .).",
)


def _warn(warnings: list[str]) -> None:
    for w in warnings:
        err.print(f"[yellow]warning:[/] {w}", markup=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hardway")
@click.option("-C", "--dir", "directory", envvar="HARDWAY_DIR", default=None,
              type=click.Path(file_okay=False, path_type=Path),
              help="The cluster directory holding cluster.yaml (default .). Env: HARDWAY_DIR.")
@click.pass_context
def cli(ctx: click.Context, directory: Path | None) -> None:
    """Build real Kubernetes clusters the hard way: your own PKI, kubeconfigs, encryption
    config and systemd units, rendered from one cluster.yaml."""
    if directory is not None:
        ctx.meta["hardway.dir"] = directory


@cli.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--preset", type=click.Choice(list(PRESETS)), default="basic", show_default=True,
              help="; ".join(f"{k}: {v.summary}" for k, v in PRESETS.items()))
@click.option("--mirror", metavar="URL_OR_DIR", help="Artifact mirror laid out like the upstream release sites.")
@click.option("--name", help="Cluster name (default: the directory's name).")
@click.option("--force", is_flag=True, help="Replace an existing cluster.yaml.")
@click.option("--lab", is_flag=True, help="Nodes will be `hardway lab` machines: add the nested-host settings.")
def init(directory: Path, preset: str, mirror: str | None, name: str | None, force: bool, lab: bool) -> None:
    """Create DIRECTORY/cluster.yaml from a preset, with comments explaining every field."""
    path = api.init(directory, preset, mirror, name, force, lab)
    out.print(f"wrote {path} (preset {preset}); next: edit it, then `hardway -C {directory} pki init`")


@cli.command()
@DIR_OPTION
def validate(directory: Path) -> None:
    """Check cluster.yaml; exit 2 naming every offending field."""
    loaded = api.validate(directory)
    _warn(loaded.warnings)
    s = loaded.spec
    out.print(
        f"{directory / 'cluster.yaml'}: valid. Kubernetes {s.kubernetes.version}, "
        f"{len(s.controllers)} controller(s), {len(s.workers)} worker(s), "
        f"load balancer {s.load_balancer.mode.value}, API at {s.api_server_url}"
    )


@cli.group()
def pki() -> None:
    """Certificates and keys in DIR/pki."""


@pki.command("init")
@DIR_OPTION
@click.option("--reissue", multiple=True, metavar="NAME",
              help="Reissue this certificate (new key) even if it exists, e.g. a stale one. Repeatable. "
                   "CAs are never reissued. For a leaf: the same as `pki renew NAME --new-key`.")
def pki_init(directory: Path, reissue: tuple[str, ...]) -> None:
    """Create every missing certificate, key, kubeconfig and the encryption key. Idempotent."""
    _warn(api.validate(directory).warnings)
    started = time.monotonic()
    report = api.pki_init(directory, reissue)
    took = time.monotonic() - started
    if report.pki.created:
        out.print(f"issued {len(report.pki.created)}: {', '.join(report.pki.created)}")
    if report.pki.reissued:
        out.print(f"reissued {len(report.pki.reissued)}: {', '.join(report.pki.reissued)}")
    n = len(report.all_written)
    if report.pki.stale:
        if n:
            out.print(f"{n} file(s) written in {took:.2f}s")
        raise StalePki(ClusterDir.at(directory), report.pki.stale, "render, diff and up refuse it until fixed")
    out.print(f"{n} file(s) written in {took:.2f}s" if n else "nothing to do: the PKI matches the spec")


@pki.command("renew")
@DIR_OPTION
@click.argument("names", nargs=-1, metavar="[NAME]...")
@click.option("--all", "every", is_flag=True, help="Renew every leaf certificate.")
@click.option("--new-key", is_flag=True, help="Issue for a new key (default: keep each certificate's key).")
@click.option("--validity-days", type=int, default=None, metavar="N",
              help="Valid N days from now (1 to 36500; default: the spec's pki.certValidityDays), "
                   "never past its CA's end.")
def pki_renew(directory: Path, names: tuple[str, ...], every: bool, new_key: bool, validity_days: int | None) -> None:
    """Reissue leaf certificates (and the kubeconfigs embedding them); `hardway up` then rolls
    them out. CAs are refused: `pki rotate-ca` replaces a CA."""
    _warn(api.validate(directory).warnings)
    report = api.pki_renew(directory, names, every, new_key, validity_days)
    for name, end in report.renewed.items():
        key = "new key" if name in report.new_keys else "same key"
        out.print(f"renewed {name} ({key}), valid until {end:%Y-%m-%d %H:%M} UTC")
    for path in report.kubeconfigs:
        out.print(f"rewrote {path}")
    if report.stale:
        raise StalePki(ClusterDir.at(directory), report.material.pki.stale,
                       "render, diff and up refuse it until fixed")
    if not report.rollout:
        out.print("no node carries these certificates: nothing for `up` to roll out")
    for node, r in report.rollout.items():
        out.print(f"{node}: `up` will write {len(r.files)} file(s) ({', '.join(r.files)}) and restart "
                  + (", ".join(r.units) if r.units else "nothing"))
    if report.rollout:
        out.print(f"next: hardway -C {directory} up")


@pki.command("show")
@DIR_OPTION
def pki_show(directory: Path) -> None:
    """List every certificate: issuer, CN, O, SANs and expiry."""
    table = Table("cert", "issuer", "CN", "O", "SANs", "not after", "key")
    for r in api.pki_show(directory):
        table.add_row(r.name, r.issuer, r.cn, ",".join(r.orgs), ", ".join(r.sans),
                      f"{r.not_after:%Y-%m-%d}" if r.not_after else "-", r.key_type)
    out.print(table)


@pki.command("check")
@DIR_OPTION
@click.option("--days", default=30, show_default=True, type=click.IntRange(0, MAX_CHECK_DAYS),
              help="Flag certificates expiring within N days.")
def pki_check(directory: Path, days: int) -> None:
    """Verify chains, SANs against the spec, expiry, key/cert match and key file modes."""
    problems = api.pki_check(directory, days)
    for p in problems:
        out.print(f"[red]problem:[/] {p}", markup=True)
    if problems:
        out.print(f"{len(problems)} problem(s)")
        sys.exit(1)
    out.print("PKI OK: every chain, SAN, expiry, key, secret and file mode checks out")


@cli.command()
@DIR_OPTION
@click.option("--path", "show_path", is_flag=True, help="Print where the admin kubeconfig is.")
@click.option("--merge", is_flag=True, help="Merge it into ~/.kube/config (other contexts untouched).")
@click.option("--kubeconfig", "target", type=click.Path(dir_okay=False, path_type=Path),
              help="With --merge: the file to merge into (default ~/.kube/config).")
def kubeconfig(directory: Path, show_path: bool, merge: bool, target: Path | None) -> None:
    """Print the admin kubeconfig."""
    if merge:
        written = api.merge_admin_kubeconfig(directory, target)
        out.print(f"merged into {written}; current context: {api.validate(directory).spec.name}")
    elif show_path:
        out.print(str(api.admin_kubeconfig_path(directory).resolve()))
    else:
        sys.stdout.write(api.admin_kubeconfig_path(directory).read_text())


@cli.command()
@DIR_OPTION
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where to write the bundles (default DIR/bundles).")
def render(directory: Path, out_dir: Path | None) -> None:
    """Write one tree per node (etc/..., var/lib/...) with everything it needs."""
    _warn(api.validate(directory).warnings)
    bundles, report, material = api.render(directory, out_dir)
    target = out_dir or directory / "bundles"
    for name, b in bundles.nodes.items():
        out.print(f"{name:<20} {', '.join(b.roles):<20} {len(b.files):>3} files, "
                  f"units: {', '.join(u.name for u in b.units)}")
    if material.all_written:
        out.print(f"(pki init first wrote {len(material.all_written)} file(s))")
    _warn([f"{p}: left in place: an earlier render recorded it, but it changed since (or lies "
           "outside the node's tree), so it is not hardway's to delete" for p in report.kept])
    out.print(f"{target}: {len(report.written)} file(s) written, {len(report.removed)} removed"
              if report.written or report.removed else f"{target}: up to date, nothing written")


from .artifacts import artifacts as _artifacts  # noqa: E402
from .etcd import etcd as _etcd  # noqa: E402
from .lab import lab as _lab  # noqa: E402
from . import cluster as _cluster  # noqa: E402,F401  (registers up, diff, verify, kubectl)
from . import secrets as _secrets  # noqa: E402,F401  (registers secrets rotate, pki rotate-ca)
from . import node as _node  # noqa: E402,F401  (registers node remove)

cli.add_command(_artifacts)
cli.add_command(_etcd)
cli.add_command(_lab)


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except HardwayError as e:
        err.print(f"error: {e}", markup=False)
        sys.exit(e.exit_code)
    except click.exceptions.Abort:  # Ctrl-C (click turns KeyboardInterrupt into Abort)
        err.print("interrupted; every hardway command can simply be run again (`up` converges "
                  "from wherever it stopped)")
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except Exception:
        # Every failure a user can cause is a HardwayError above. Anything else is a bug in
        # hardway: its traceback is what a bug report needs, so it is printed, and said so.
        traceback.print_exc()
        err.print("hardway failed unexpectedly: this is a bug in hardway. Please report it with the "
                  "traceback above and the command you ran.", markup=False)
        sys.exit(1)
