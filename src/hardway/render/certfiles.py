"""Which files of a bundle carry which certificate of the table, and which units a change to
them restarts. Pure: read from the rendered bytes themselves, so a renderer that places a
certificate somewhere new is covered without being told.

`verify` reads exactly these files on each host to judge the certificates deployed there;
`pki renew` says from them what the next `up` will restart.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..material import Material
from ..pki.store import cert_blocks
from .bundle import Bundle, ClusterBundle
from .kubeconfig import client_certificate


@dataclass(frozen=True)
class CertFile:
    path: str  # on the node
    profile: str  # the certificate's row in pki/profiles.py
    kubeconfig: bool = False  # embedded in a kubeconfig as its client certificate


def cert_files(bundle: Bundle, material: Material) -> list[CertFile]:
    """Every certificate file in `bundle` and every kubeconfig's client certificate, each with
    the profile whose certificate (DIR/pki) it is, in path order."""
    by_pem = {block: name for name, pem in material.certs.items() for block in cert_blocks(pem)[:1]}
    out = []
    for path, f in sorted(bundle.files.items()):
        embedded = client_certificate(f.content)
        if embedded is not None:
            out += [CertFile(path, by_pem[b], True) for b in cert_blocks(embedded) if b in by_pem]
            continue
        out += [CertFile(path, by_pem[b]) for b in cert_blocks(f.content) if b in by_pem]
    return out


@dataclass(frozen=True)
class Rollout:
    """What the next `up` does on one node for some renewed certificates (hosts up to date)."""

    files: tuple[str, ...]  # written
    units: tuple[str, ...]  # restarted (their restart_on names a written file)


def rollout(cluster: ClusterBundle, material: Material, profiles: set[str]) -> dict[str, Rollout]:
    """Per node that carries any of `profiles`: the files `up` will write and the units it will
    restart."""
    out = {}
    for name, bundle in cluster.nodes.items():
        files = tuple(dict.fromkeys(c.path for c in cert_files(bundle, material) if c.profile in profiles))
        if files:
            units = tuple(u.name for u in bundle.units if set(u.restart_on) & set(files))
            out[name] = Rollout(files, units)
    return out
