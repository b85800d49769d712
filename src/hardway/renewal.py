"""`hardway pki renew`: reissue leaf certificates before they expire, and say what the next `up`
rolls out.

The reissue itself is `pki init --reissue`'s (pki/ensure.py), told to keep each key (unless
`new_key`) and, when given, to run `validity_days` instead of the spec's: the same all-or-nothing
write, and every kubeconfig that embeds a renewed certificate is rewritten with it. Renewing is
explicit: a following `pki init` finds every certificate matching the spec and writes nothing.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

from .clusterdir import ClusterDir
from .errors import UsageError
from .material import MaterialReport, ensure_material, load_material
from .pki import store
from .pki.ensure import renewable
from .render import render_cluster
from .render.certfiles import Rollout, rollout
from .spec.model import MAX_VALIDITY_DAYS, ClusterSpec


@dataclass
class RenewReport:
    material: MaterialReport
    renewed: dict[str, dt.datetime] = field(default_factory=dict)  # profile -> its new end
    new_keys: list[str] = field(default_factory=list)  # of those renewed, the ones with a new key
    kubeconfigs: list[Path] = field(default_factory=list)  # rewritten in DIR/kubeconfigs
    rollout: dict[str, Rollout] = field(default_factory=dict)  # node -> what the next `up` does there

    @property
    def stale(self) -> bool:
        return bool(self.material.pki.stale)


def check_validity_days(days: int | None) -> None:
    if days is not None and not 1 <= days <= MAX_VALIDITY_DAYS:
        raise UsageError(f"--validity-days {days}: must be between 1 and {MAX_VALIDITY_DAYS} (days); "
                         "a certificate never outlives its CA either way")


def renew(cd: ClusterDir, spec: ClusterSpec, names: tuple[str, ...] = (), every: bool = False,
          new_key: bool = False, validity_days: int | None = None,
          now: dt.datetime | None = None) -> RenewReport:
    """Reissue `names` (or with `every` each leaf). Exit 2 for a CA, `sa`, an unknown name or
    a --validity-days out of range, before anything is written."""
    targets = renewable(cd, spec, names, every)
    check_validity_days(validity_days)
    material = ensure_material(cd, spec, targets, keep_keys=not new_key, validity_days=validity_days, now=now)
    report = RenewReport(material)
    pki = material.pki
    for name in pki.reissued + pki.created:
        cert = store.load_cert(cd.cert(name))
        if name in targets and cert is not None:
            report.renewed[name] = cert.not_valid_after_utc
    report.new_keys = [n for n in report.renewed if n not in pki.kept_keys]
    report.kubeconfigs = [p for p in material.written if p.parent == cd.kubeconfigs]
    if not report.stale:  # while anything is stale, `up` refuses to roll anything out
        current = load_material(cd, spec)
        report.rollout = rollout(render_cluster(spec, current), current, set(report.renewed))
    return report
