"""`hardway pki init`: make the PKI match the spec, touching only what must change.

Rules: a present, matching certificate is left alone (a second run writes nothing); a CA key is
never regenerated; a missing leaf is issued; a leaf that no longer matches the spec (SANs, CN,
O, key type, issuer) is reported as stale and reissued only when the user names it.

Everything this run issues is built in memory first and written at the end, so a certificate
that cannot be issued leaves the directory untouched. Stale items carry the advice that fixes
them: a command only where the command works (a CA is never reissued, so a CA's advice is a
restore or a spec edit, and certificates under a stale CA wait for it).
"""

from __future__ import annotations

import datetime as dt
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509

from ..clusterdir import ClusterDir
from ..errors import OperationError, UsageError
from ..spec.model import ClusterSpec
from . import store
from .issue import PrivateKey, build_certificate, build_twin, generate_key, key_type_of
from .rotation import ROTATABLE
from .profiles import ROOT_CA, SERVICE_ACCOUNT, CertProfile, certificate_plan
from .verify import Difference, Why, differences


@dataclass(frozen=True)
class Stale:
    """A certificate or key on disk that does not match the spec, and how to fix it."""

    name: str
    reasons: tuple[str, ...]
    fix: str  # what to do, for a person
    reissue: bool = False  # the fix is `hardway pki init --reissue NAME`


@dataclass
class PkiReport:
    created: list[str] = field(default_factory=list)
    reissued: list[str] = field(default_factory=list)
    kept_keys: list[str] = field(default_factory=list)  # of those reissued, the ones signed for their old key
    stale: dict[str, Stale] = field(default_factory=dict)
    written: list[Path] = field(default_factory=list)


class StalePki(UsageError):
    """The PKI on disk does not match the spec: nothing built from it may ship (exit 2)."""

    def __init__(self, cd: ClusterDir, stale: dict[str, Stale], doing: str) -> None:
        self.stale = stale
        lines = [f"{cd.pki} does not match {cd.spec}; {doing}:"]
        # Items with the same reasons and fix (every leaf under a CA whose key type changed)
        # share one entry.
        groups: dict[tuple[tuple[str, ...], str], list[str]] = {}
        for s in stale.values():
            groups.setdefault((s.reasons, s.fix), []).append(s.name)
        for (reasons, fix), names in groups.items():
            lines.append(f"  - {', '.join(names)}: {'; '.join(reasons)}")
            lines.append(f"    fix: {fix}")
        names = [s.name for s in stale.values() if s.reissue]
        if len(names) > 1:
            lines.append(f"all the reissues at once: {reissue_command(cd, names)}")
        super().__init__("\n".join(lines))


def pki_init_command(cd: ClusterDir, *args: str) -> str:
    return " ".join(["hardway", "-C", shlex.quote(str(cd.root)), "pki", "init", *args])


def reissue_command(cd: ClusterDir, names: list[str]) -> str:
    return pki_init_command(cd, *(a for n in names for a in ("--reissue", n)))


def renew_command(cd: ClusterDir, *args: str) -> str:
    return " ".join(["hardway", "-C", shlex.quote(str(cd.root)), "pki", "renew", *args])


def ca_rotation_advice(cd: ClusterDir, profile: CertProfile) -> str:
    """How a CA is replaced: never reissued in place (every node, certificate and kubeconfig
    trusts it), but rotated (carotation.py: trust both, reissue, switch, drop), where built."""
    if profile.name in ROTATABLE and profile.issuer is None and not profile.twin_of:
        return (f"replace it with `hardway -C {shlex.quote(str(cd.root))} pki rotate-ca {profile.name}` "
                "(a new CA rolled out in four steps, each ending with `up`); a CA is never reissued in place")
    return ("a CA is never reissued in place, and CA rotation (`hardway pki rotate-ca`) is built only for the "
            f"flat layout's {', '.join(ROTATABLE)}: not for a root CA, its intermediates or a twin")


def renew_advice(cd: ClusterDir, profile: CertProfile) -> str:
    """What to do about a certificate that expires soon."""
    if profile.is_ca:
        return f"{profile.name} is a CA: {ca_rotation_advice(cd, profile)}"
    return f"renew it: `{renew_command(cd, profile.name)}`, then `hardway -C {shlex.quote(str(cd.root))} up`"


def renewable(cd: ClusterDir, spec: ClusterSpec, names: tuple[str, ...], every: bool) -> tuple[str, ...]:
    """The leaves `pki renew` reissues: `names`, or with `every` all of them. Exit 2 for a CA
    (rotation is another procedure), the service-account key pair (no certificate, nothing
    expires), an unknown name, or neither names nor --all."""
    plan = certificate_plan(spec)
    leaves = [p.name for p in plan if not p.is_ca]
    if every and names:
        raise UsageError(f"pki renew: name certificates ({', '.join(names)}) or give --all, not both")
    if every:
        return tuple(leaves)
    if not names:
        raise UsageError(f"pki renew: name the certificates to renew, or --all; leaves: {', '.join(leaves)}")
    by_name = {p.name: p for p in plan}
    for name in names:
        if name == SERVICE_ACCOUNT:
            raise UsageError(f"pki renew {name}: the service-account signing key is a key pair, not a "
                             "certificate, and does not expire; to replace it (every service-account token "
                             "becomes invalid) run `hardway pki init --reissue sa`")
        if name not in by_name:
            raise UsageError(f"pki renew {name}: no such certificate; leaves: {', '.join(leaves)}")
        if by_name[name].is_ca:
            what = f"the self-signed twin of {by_name[name].twin_of}" if by_name[name].twin_of else "a CA"
            raise UsageError(f"pki renew {name}: {what}; `pki renew` reissues leaf certificates only: "
                             f"{ca_rotation_advice(cd, by_name[name])}")
    return tuple(dict.fromkeys(names))


# What fixes a CA, by what differs, most fundamental first. A CA is never reissued (every node,
# certificate and kubeconfig trusts it), and `pki rotate-ca` starts only from a sound PKI, so
# the fix is to bring back the CA the cluster trusts, or to put the spec back the way the CA was made.
_CA_FIXES: dict[Why, str] = {
    Why.key_mismatch: "{pair}",
    Why.issuer: "{crt} is not the one its issuer signed: restore {crt} and {key} from your backup of {root}",
    Why.names: "this is not the CA made for this cluster: undo the change to {spec} that renamed it "
               "(a root CA's name follows `name`), or restore {crt} and {key} from your backup of {root}",
    Why.sans: "restore {crt} and {key} from your backup of {root}",
    Why.key_type: "a CA keeps the key type it was made with: set `pki.keyType: {have}` back in {spec} "
                  "(`pki rotate-ca` starts only from a PKI that matches the spec; for new key types, start "
                  "a new cluster directory)",
}


def ensure_pki(
    cd: ClusterDir,
    spec: ClusterSpec,
    reissue: tuple[str, ...] = (),
    now: dt.datetime | None = None,
    keep_keys: bool = False,
    validity_days: int | None = None,
) -> PkiReport:
    """`reissue`: leaves (and twins, and `sa`) to issue again even though they match. Their new
    certificates keep the key on disk with `keep_keys` (`pki renew`), where it is of the spec's
    key type, and run `validity_days` (default: the spec's; never past the issuer's end)."""
    now = now or dt.datetime.now(dt.timezone.utc)
    plan = certificate_plan(spec)
    names = {p.name for p in plan} | {SERVICE_ACCOUNT}
    for name in reissue:
        if name not in names:
            raise UsageError(
                f"--reissue {name}: no such certificate; known: {', '.join(sorted(names))}"
            )
    report = PkiReport()
    run = _Run(cd, spec, reissue, now, report, keep_keys, validity_days)
    for profile in plan:
        run.ensure(profile)
    sa_key, sa_stale = _ensure_service_account(cd, spec, reissue, report)
    report.stale = run.advise(plan)
    if sa_stale is not None:
        report.stale[SERVICE_ACCOUNT] = sa_stale
    # Only now, with every certificate built, does anything reach the disk.
    twins = {p.name for p in plan if p.twin_of}
    for name, (cert, key) in run.new.items():
        # A twin's key is its CA's, already on disk: never a second copy of a CA key.
        report.written += store.save_cert(cd, name, cert) if name in twins else store.save_pair(cd, name, cert, key)
    report.written += store.save_keypair(cd, SERVICE_ACCOUNT, sa_key)
    return report


class _Run:
    def __init__(self, cd: ClusterDir, spec: ClusterSpec, reissue: tuple[str, ...],
                 now: dt.datetime, report: PkiReport, keep_keys: bool = False,
                 validity_days: int | None = None) -> None:
        self.cd, self.spec, self.reissue, self.now, self.report = cd, spec, reissue, now, report
        self.keep_keys, self.validity_days = keep_keys, validity_days
        self.pairs: dict[str, tuple[x509.Certificate, PrivateKey]] = {}
        self.new: dict[str, tuple[x509.Certificate, PrivateKey]] = {}  # to write, in order
        self.found: dict[str, list[Difference]] = {}  # differences of what is kept

    def ensure(self, profile: CertProfile) -> None:
        if profile.twin_of:
            return self._twin(profile)
        cd, name = self.cd, profile.name
        cert = store.load_cert(cd.cert(name))
        key = store.load_key(cd.key(name))
        issuer = self.pairs[profile.issuer] if profile.issuer else None
        if profile.is_ca and (cert is None) != (key is None):
            present, missing = (cd.cert(name), cd.key(name)) if key is None else (cd.key(name), cd.cert(name))
            raise OperationError(
                f"{missing} is missing but {present} exists: a CA is never regenerated; "
                f"restore {missing.name} from your backup of {cd.root}"
            )
        if profile.is_ca and cert is None:
            signed = [p.name for p in certificate_plan(self.spec)
                      if p.issuer == name and cd.cert(p.name).exists()]
            if signed:  # a new CA here would silently replace the one the cluster trusts
                raise OperationError(
                    f"{cd.cert(name)} and {cd.key(name)} are missing but certificates they signed "
                    f"exist ({', '.join(signed[:3])}{', ...' if len(signed) > 3 else ''}): restore "
                    f"both from your backup of {cd.root}; a CA is never regenerated (to start a new "
                    f"PKI instead, move {cd.pki} away first)")
        if cert is not None and key is not None:
            if profile.is_ca and name in self.reissue:
                raise UsageError(
                    f"--reissue {name}: CA keys are never regenerated by hardway; every "
                    "certificate and kubeconfig in the cluster trusts this one"
                )
            if name not in self.reissue:
                reasons = differences(profile, cert, key, issuer[0] if issuer else None,
                                      self.spec.pki.key_type)
                if reasons:
                    self.found[name] = reasons
                self.pairs[name] = (cert, key)
                return
            if profile.issuer in self.found:
                raise UsageError(
                    f"--reissue {name}: its issuer {profile.issuer} is stale "
                    f"({'; '.join(map(str, self.found[profile.issuer]))}); fix {profile.issuer} first")
        if profile.issuer in self.found:
            # Signed by a stale CA it would be stale at birth (or signed by a foreign key).
            self.found[name] = [Difference(Why.issuer, f"{cd.cert(name)} is missing; not issued while "
                                           f"its issuer {profile.issuer} is stale")]
            return
        # Issue (or reissue) this certificate: for the key it has when asked to keep it and the
        # key is still of the spec's type (a leaf made stale by a key type change needs a new
        # one), otherwise for a fresh key.
        keep = (self.keep_keys and cert is not None and key is not None and not profile.is_ca
                and key_type_of(key) == self.spec.pki.key_type)
        new_key = key if keep else generate_key(self.spec.pki.key_type)
        if keep:
            self.report.kept_keys.append(name)
        days = self.spec.pki.ca_validity_days if profile.is_ca else (
            self.validity_days or self.spec.pki.cert_validity_days)
        path_length = 1 if name == ROOT_CA else 0
        try:
            cert_new = build_certificate(profile, new_key, issuer, days, self.now, path_length=path_length)
        except ValueError as e:  # e.g. a CN longer than X.509's 64 characters
            raise OperationError(f"{name}: cannot issue this certificate ({e}); nothing was written "
                                 f"to {cd.pki}") from None
        self.pairs[name] = self.new[name] = (cert_new, new_key)
        (self.report.reissued if cert is not None else self.report.created).append(name)

    def _twin(self, profile: CertProfile) -> None:
        """A CA's self-signed twin: made from the CA's certificate and key, so it may be
        remade freely (`--reissue`), but only from a sound CA."""
        cd, name, source = self.cd, profile.name, profile.twin_of
        assert source is not None
        cert = store.load_cert(cd.cert(name))
        if source in self.found or source not in self.pairs:
            if name in self.reissue:
                raise UsageError(f"--reissue {name}: it is made from {source}, which is stale; fix {source} first")
            self.found[name] = [Difference(Why.twin, f"not checked or made while {source} is stale")]
            return
        ca, key = self.pairs[source]
        if cert is not None and name not in self.reissue:
            reasons = differences(profile, cert, key, None, self.spec.pki.key_type, twin_of=ca)
            if reasons:
                self.found[name] = reasons
            self.pairs[name] = (cert, key)
            return
        twin = build_twin(ca, key)
        self.pairs[name] = self.new[name] = (twin, key)
        (self.report.reissued if cert is not None else self.report.created).append(name)

    def advise(self, plan: list[CertProfile]) -> dict[str, Stale]:
        cd = self.cd
        by_name = {p.name: p for p in plan}
        out: dict[str, Stale] = {}
        for name, diffs in self.found.items():
            reasons = tuple(map(str, diffs))
            profile = by_name[name]
            blocked = profile.depends_on in self.found
            if blocked:
                out[name] = Stale(name, reasons, f"fix {profile.depends_on} first (above), then run "
                                  f"`{pki_init_command(cd)}` again")
            elif profile.is_ca and not profile.twin_of:
                out[name] = Stale(name, reasons, self._ca_fix(profile, diffs, plan))
            else:
                fix = f"`{reissue_command(cd, [name])}`"
                if any(d.why is Why.issuer for d in diffs):
                    fix += (f" (if {cd.cert(profile.issuer or name)} was replaced, restore the original "
                            "from your backup instead)")
                out[name] = Stale(name, reasons, fix, reissue=True)
        return out

    def _ca_fix(self, profile: CertProfile, diffs: list[Difference], plan: list[CertProfile]) -> str:
        cd, name = self.cd, profile.name
        crt, key = cd.cert(name), cd.key(name)
        # Which half is foreign: the certificates it signed still verify against the real
        # certificate; none verify against a foreign one.
        signed = [p.name for p in plan if p.issuer == name and p.name in self.pairs and p.name not in self.new]
        cert_is_good = any(not any(d.why is Why.issuer for d in self.found.get(n, ())) for n in signed)
        pair = (f"{key} is not the key of {crt} (which signed the other certificates): restore {key.name}"
                if cert_is_good else
                f"{crt} is not the certificate of {key} (no certificate it should have signed "
                f"verifies against it): restore {crt.name}")
        pair += f" from your backup of {cd.root}; hardway never replaces a CA"
        values = {"crt": crt, "key": key, "root": cd.root, "spec": cd.spec, "pair": pair}
        fixes = []
        for why, text in _CA_FIXES.items():
            hit = [d for d in diffs if d.why is why]
            if hit:
                fixes.append(text.format(have=hit[0].have, **values))
        return "; ".join(dict.fromkeys(fixes))


def _ensure_service_account(
    cd: ClusterDir, spec: ClusterSpec, reissue: tuple[str, ...], report: PkiReport
) -> tuple[PrivateKey, Stale | None]:
    """The key pair to keep (its public half is rewritten if someone deleted it)."""
    want = spec.pki.service_account_key_type
    key = store.load_key(cd.key(SERVICE_ACCOUNT))
    if key is not None and SERVICE_ACCOUNT not in reissue:
        have = key_type_of(key)
        stale = None
        if have != want:
            stale = Stale(
                SERVICE_ACCOUNT,
                (f"key type is {have}, spec wants {want}",),
                f"`{reissue_command(cd, [SERVICE_ACCOUNT])}` (this invalidates every service-account "
                f"token), or set `pki.serviceAccountKeyType: {have}` back in {cd.spec}",
                reissue=True,
            )
        return key, stale
    (report.reissued if key is not None else report.created).append(SERVICE_ACCOUNT)
    return generate_key(want), None
