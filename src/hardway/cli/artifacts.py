"""`hardway artifacts ...`: mirror build, serve, fetch."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import click


@click.group()
def artifacts() -> None:
    """Upstream binaries and images: an offline mirror, and the operator's verified cache."""


# Imported after the group exists: main imports this module while it is itself being imported.
from .. import api  # noqa: E402
from ..errors import UsageError  # noqa: E402
from .main import DIR_OPTION, err, out  # noqa: E402


def _progress(msg: str) -> None:
    err.print(msg, markup=False, highlight=False)


@artifacts.group()
def mirror() -> None:
    """An offline mirror laid out like the upstream release sites."""


@mirror.command("build")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--from-debian", "from_debian", is_flag=True,
              help="Make every artifact from Debian: Kubernetes built from the `kubernetes` source "
                   "package, etcd/containerd/runc/CNI plugins from the binary packages.")
@click.option("--kubernetes-source", metavar="VERSION",
              help="Debian source version of `kubernetes` to build (default: what `apt-get source` picks).")
@click.option("--conformance", is_flag=True,
              help="Also Kubernetes' e2e test binaries and the test images (from the same source and "
                   "Debian packages) that `hardway verify --conformance` runs: ~5 min more, once.")
def mirror_build(directory: Path, from_debian: bool, kubernetes_source: str | None, conformance: bool) -> None:
    """Build (or bring up to date) a mirror in DIRECTORY. Long steps are cached under
    $HARDWAY_CACHE (default ~/.cache/hardway); a second run reuses them and writes nothing new."""
    from ..artifacts.mirror import build_mirror

    if not from_debian:
        raise UsageError("say where the artifacts come from: --from-debian (the only source so far)")
    started = time.monotonic()
    r = build_mirror(directory, _progress, kubernetes_source, conformance)
    kb = r.kubernetes
    assert kb is not None
    how = "reused the cached build" if kb.cached else "built it"
    out.print(f"mirror {directory}: Kubernetes {kb.version} ({how} of Debian source {kb.source_version}), "
              + ", ".join(f"{k} {v}" for k, v in r.versions.items() if k != "kubernetes")
              + f"; images {', '.join(sorted(p.rsplit('/', 1)[1][:-4] for p in r.written + r.unchanged if p.startswith('images/') and p.endswith('.tar')))}")
    out.print(f"{len(r.written)} file(s) written, {len(r.unchanged)} unchanged; "
              f"cache: {len(r.reused)} reused, {len(r.built)} made ({time.monotonic() - started:.0f} s)")
    out.print(f"use it: `hardway artifacts serve {directory}`, or set artifacts.mirror: {directory.absolute()}")


@artifacts.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True,
              help="Port on 127.0.0.1 (0: any free port).")
@click.option("--quiet", is_flag=True, help="Do not log requests.")
def serve(directory: Path, port: int, quiet: bool) -> None:
    """Serve the mirror in DIRECTORY over HTTP on 127.0.0.1 until Ctrl-C."""
    from ..artifacts.mirror import is_mirror
    from ..artifacts.serve import serve_forever

    if directory.is_dir() and not is_mirror(directory):
        err.print(f"warning: {directory} has no hardway-mirror.json; serving it anyway", markup=False)

    def ready(url: str) -> None:
        out.print(f"serving {directory} at {url}/ (127.0.0.1 only); set artifacts.mirror: {url}; Ctrl-C stops")

    def on_term(_sig: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        serve_forever(directory, port, ready, None if quiet else _progress)
    except KeyboardInterrupt:
        out.print("stopped")


@artifacts.command()
@DIR_OPTION
@click.option("--mirror", "mirror_", metavar="URL_OR_DIR",
              help="Fetch from this mirror instead of spec.artifacts.mirror (or upstream).")
@click.option("--update-lock", is_flag=True,
              help="Accept digests that differ from DIR/artifacts.lock (a deliberately rebuilt mirror) "
                   "and record them; review the lock file's diff.")
@click.option("--conformance", is_flag=True,
              help="Also what `verify --conformance` runs: Kubernetes' test binaries and test images.")
def fetch(directory: Path, mirror_: str | None, update_lock: bool, conformance: bool) -> None:
    """Download and verify everything cluster.yaml needs into the cache (by sha256);
    print where each file is. A second run downloads nothing.

    The first fetch records every digest in DIR/artifacts.lock; a later fetch that is offered
    other bytes (even with a matching checksum file) is refused unless --update-lock."""
    from ..artifacts.fetch import fetch_for_spec

    loaded = api.validate(directory)
    for w in loaded.warnings:
        err.print(f"warning: {w}", markup=False)
    started = time.monotonic()
    r = fetch_for_spec(loaded.spec, directory, _progress, mirror=mirror_, update_lock=update_lock)
    if conformance:
        from ..artifacts.fetch import fetch_for_cluster
        from ..artifacts.testimages import conformance_downloads
        extra = fetch_for_cluster(loaded.spec, conformance_downloads(loaded.spec), directory, _progress,
                                  mirror=mirror_, update_lock=update_lock)
        r.files.update(extra.files)
        r.downloaded += extra.downloaded
        r.reused += extra.reused
    for key in sorted(r):
        out.print(f"{key:42} {r[key]}", markup=False, highlight=False)
    out.print(f"{len(r)} artifact(s) from {r.source}: {len(r.downloaded)} downloaded and verified, "
              f"{len(r.reused)} already cached ({time.monotonic() - started:.1f} s)")
