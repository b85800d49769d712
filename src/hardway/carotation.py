"""`hardway pki rotate-ca ca|etcd-ca|front-proxy-ca`: a new CA, with no request refused.

Four steps (the table `STEPS`), each ending with one `up`, which restarts the controllers one
at a time (each apiserver drained in HAProxy first) and the workers in batches (deploy/roll.py):

  trust    a new CA is made (DIR/pki/NAME.next.*) and every bundle of NAME hardway renders
           (the CA files on the nodes, the kubeconfigs' certificate-authority-data, HAProxy's
           ca-file) holds the old and the new: whatever either signed is accepted everywhere
           before anything signed by the new one is presented.
  reissue  the new CA becomes NAME.crt|key (the old one kept as NAME.old.*), and every
           certificate NAME signed is reissued by it, for its same key, kubeconfigs included.
  switch   (ca only) the controller manager signs CSRs with the new CA; then each kubelet's
           own client certificate (rotated through CSRs, signed by the old CA) is renewed:
           its current one removed and the kubelet restarted, which presents its kubeconfig's
           certificate (new) and at once asks for a new one.
  drop     the old CA leaves every bundle; once that is rolled out, NAME.old.* are removed.

The record DIR/pki/ca-rotation (0600, JSON: the CA and the steps done, pki/rotation.py) is
written before the new CA exists and after each step: a rotation cut off anywhere resumes when
run again. The old CA's key is removed only after the last step's `up`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from cryptography import x509

from .clusterdir import ClusterDir
from .deploy.hosts import Options, connect_all
from .errors import OperationError, UsageError
from .fsio import all_or_nothing, write_atomic
from .lock import cluster_lock
from .material import current_material, ensure_material
from .pki import store
from .pki.issue import build_certificate, cert_pem, generate_key, key_pem
from .pki.profiles import CA, certificate_plan, profiles_by_name
from .pki.rotation import (ROTATABLE, CaRotation, load_rotation, next_name, old_name, record_path,
                           save_rotation)
from .pki.store import CERT_MODE, KEY_MODE
from .pki.verify import signed_by
from .render.worker import KUBELET_CLIENT_CURRENT
from .spec.load import load_spec
from .spec.model import ClusterSpec

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Step:
    name: str
    does: str  # {ca}: the CA's name
    only: str | None = None  # the one CA this step is for (None: every CA)


STEPS = (
    Step("trust", "make a new {ca} and add it to every bundle of {ca} (the old one still signs), then roll"),
    Step("reissue", "reissue every certificate {ca} signed with the new {ca} (kubeconfigs too), then roll"),
    Step("switch", "the controller manager signs with the new {ca}, then roll; each kubelet renews its "
                   "client certificate with it", only=CA),
    Step("drop", "drop the old {ca} from every bundle, then roll; then remove the old {ca}"),
)
KUBELET_POLL = 1.0  # seconds between reads of a kubelet's client certificate


@dataclass
class CaRotateReport:
    ca: str
    resumed: tuple[str, ...] = ()  # the steps an earlier run had done
    steps: dict[str, float] = field(default_factory=dict)  # step done by this run -> seconds
    skipped: list[str] = field(default_factory=list)  # steps with nothing to do for this CA
    reissued: list[str] = field(default_factory=list)  # leaves reissued by the new CA
    kubelets: list[str] = field(default_factory=list)  # nodes whose kubelet client certificate was renewed
    serial: str = ""  # the new CA's serial number, hex
    not_after: dt.datetime | None = None  # the new CA's end
    seconds: float = 0.0


def check_rotatable(spec: ClusterSpec, ca: str) -> None:
    """Exit 2 for a CA this command cannot rotate."""
    if ca not in ROTATABLE:
        raise UsageError(f"pki rotate-ca {ca}: not a CA hardway rotates; one of {', '.join(ROTATABLE)}")
    if spec.pki.layout == "root":
        # Under a root CA the new intermediate must be signed by the root, and HAProxy's anchor
        # (ca-anchor, the twin of ca) rotated with it: not built.
        raise UsageError(f"pki rotate-ca {ca}: not built for `pki.layout: root` (the CAs there are "
                         "intermediates of root-ca, and HAProxy trusts ca's self-signed twin): only the "
                         "flat layout's CAs can be rotated")


# The actions, one function each (the unit tests put fakes in their place).

def roll(directory: Path, progress: Progress, opts: Options) -> None:
    from .deploy.up import up
    up(directory, progress, opts)


def renew_kubelet_clients(spec: ClusterSpec, cd: ClusterDir, opts: Options, progress: Progress) -> list[str]:
    """On each worker, `opts.worker_batch` at a time: the kubelet's own client certificate
    removed and the kubelet restarted; then waited for until the kubelet holds one signed by
    ca.crt (the new CA) that the controller manager issued (not its kubeconfig's)."""
    workers = [n.name for n in spec.workers]
    if not workers:
        return []
    ca = x509.load_pem_x509_certificate(cd.cert(CA).read_bytes())
    q = shlex.quote
    restart = f"rm -f {q(KUBELET_CLIENT_CURRENT)} && systemctl restart kubelet.service"
    read = f"cat {q(KUBELET_CLIENT_CURRENT)} 2>/dev/null || true"

    async def run() -> None:
        ts = await connect_all(spec, cd, workers, opts, progress)
        try:
            for i in range(0, len(workers), opts.worker_batch):
                batch = workers[i:i + opts.worker_batch]
                await asyncio.gather(*(one(ts, name) for name in batch))
        finally:
            await asyncio.gather(*(t.close() for t in ts.values()), return_exceptions=True)

    async def one(ts, name: str) -> None:
        t = ts[name]
        bootstrap = store.cert_blocks(cd.cert(f"kubelet-{name}").read_bytes())[:1]
        r = await t.run(restart, timeout=120)
        if r.rc != 0:
            raise OperationError(f"{name}: `{restart}` failed (exit {r.rc}): {r.err.strip()[-400:]}")
        deadline = time.monotonic() + opts.timeout
        last = "no certificate yet"
        while time.monotonic() < deadline:
            r = await t.run(read, timeout=30)
            blocks = store.cert_blocks(r.stdout)
            if blocks:
                cert = x509.load_pem_x509_certificate(blocks[0])
                if not signed_by(cert, ca):
                    last = f"holds a certificate of {cert.issuer.rfc4514_string()} not signed by the new CA"
                elif blocks[:1] == bootstrap:
                    last = "holds its kubeconfig's certificate (new CA), waiting for the one it asked for"
                else:
                    progress(f"  {name}: kubelet client certificate renewed by the new CA "
                             f"(serial {cert.serial_number:x}, until {cert.not_valid_after_utc:%Y-%m-%d})")
                    return
            await asyncio.sleep(KUBELET_POLL)
        raise OperationError(
            f"{name}: the kubelet did not get a client certificate from the new CA within {opts.timeout:.0f} s "
            f"({KUBELET_CLIENT_CURRENT} {last}): check its CertificateSigningRequests (`hardway kubectl get csr`), "
            "the controller manager's log (it signs) and the kubelet's journal; then run "
            f"`hardway -C {shlex.quote(str(cd.root))} pki rotate-ca {CA}` again")

    asyncio.run(run())
    return workers


def _make_next(cd: ClusterDir, spec: ClusterSpec, ca: str, progress: Progress) -> x509.Certificate:
    """The new CA as NAME.next.*, made once (a resumed run keeps the one it made)."""
    name = next_name(ca)
    have = store.load_cert(cd.cert(name))
    key = store.load_key(cd.key(name))
    if have is not None and key is not None:
        return have
    if have is not None:  # a certificate without its key: the key is written first, so never ours
        raise OperationError(f"{cd.cert(name)} has no key {cd.key(name)}: remove it and run "
                             f"`hardway pki rotate-ca {ca}` again (nothing trusts it before step 1 is done)")
    profile = profiles_by_name(spec)[ca]
    key = key or generate_key(spec.pki.key_type)
    cert = build_certificate(profile, key, None, spec.pki.ca_validity_days, dt.datetime.now(dt.timezone.utc))
    with all_or_nothing():  # the key first: a certificate is never left without its key
        write_atomic(cd.key(name), key_pem(key), KEY_MODE)
        write_atomic(cd.cert(name), cert_pem(cert), CERT_MODE)
    progress(f"  new {ca}: {cd.cert(name)} (serial {cert.serial_number:x}, until {cert.not_valid_after_utc:%Y-%m-%d})")
    return cert


def _swap(cd: ClusterDir, ca: str, progress: Progress) -> None:
    """NAME.crt|key become the new CA, the old one kept as NAME.old.*: idempotent, and safe to cut
    off anywhere (the old pair is copied first, the new key before its certificate, and
    NAME.next.* go last)."""
    nxt, old = next_name(ca), old_name(ca)
    if not cd.cert(nxt).exists():
        if cd.cert(old).exists():
            return  # done earlier
        raise OperationError(f"neither {cd.cert(nxt)} (the new {ca}) nor {cd.cert(old)} (the old one) exists, "
                             f"but {record_path(cd)} says step 1 is done: restore DIR/pki from your backup")
    new_crt, new_key = cd.cert(nxt).read_bytes(), cd.key(nxt).read_bytes()
    if not cd.cert(old).exists():
        write_atomic(cd.key(old), cd.key(ca).read_bytes(), KEY_MODE)
        write_atomic(cd.cert(old), cd.cert(ca).read_bytes(), CERT_MODE)
    elif cd.cert(ca).read_bytes() not in (new_crt, cd.cert(old).read_bytes()):
        raise OperationError(f"{cd.cert(ca)} is neither the old {ca} ({cd.cert(old)}) nor the new one "
                             f"({cd.cert(nxt)}): restore it from your backup")
    write_atomic(cd.key(ca), new_key, KEY_MODE)
    write_atomic(cd.cert(ca), new_crt, CERT_MODE)
    cd.cert(nxt).unlink()
    cd.key(nxt).unlink()
    progress(f"  {cd.cert(ca)} is the new {ca}; the old one kept as {cd.cert(old)} until the last step")


def _reissue(cd: ClusterDir, spec: ClusterSpec, ca: str, report: CaRotateReport, progress: Progress) -> None:
    """Every leaf of `ca` not yet signed by the new CA, for its same key (a resumed run does not
    reissue twice); the kubeconfigs embedding them are rewritten with it."""
    new = x509.load_pem_x509_certificate(cd.cert(ca).read_bytes())
    leaves = []
    for p in certificate_plan(spec):
        if p.issuer != ca:
            continue
        cert = store.load_cert(cd.cert(p.name))
        if cert is None or not signed_by(cert, new):
            leaves.append(p.name)
    if leaves:
        ensure_material(cd, spec, tuple(leaves), keep_keys=True)
    report.reissued += leaves
    progress(f"  reissued by the new {ca}: {', '.join(leaves) or 'nothing left'}")


def _finish(cd: ClusterDir, ca: str) -> None:
    """The old CA goes, and with it the record: only after the last step's `up`."""
    for name in (old_name(ca), next_name(ca)):
        cd.cert(name).unlink(missing_ok=True)
        cd.key(name).unlink(missing_ok=True)
    record_path(cd).unlink(missing_ok=True)


def rotate_ca(directory: str | Path, ca: str, progress: Progress = lambda _m: None,
              opts: Options | None = None) -> CaRotateReport:
    """Rotate CA `ca`, or finish its rotation recorded in DIR/pki/ca-rotation."""
    started = time.monotonic()
    opts = opts or Options()
    cd = ClusterDir.at(directory)
    spec = load_spec(cd.spec).spec
    check_rotatable(spec, ca)
    report = CaRotateReport(ca)
    with cluster_lock(directory, "pki rotate-ca"):
        r = load_rotation(cd)
        if r is not None and r.ca != ca:
            raise UsageError(f"a rotation of {r.ca} is under way ({record_path(cd)}: done: "
                             f"{', '.join(r.done) or 'no step yet'}): finish it first with "
                             f"`hardway -C {shlex.quote(str(cd.root))} pki rotate-ca {r.ca}`")
        if r is None:
            left = [str(cd.cert(n)) for n in (next_name(ca), old_name(ca)) if cd.cert(n).exists()]
            if left:
                raise UsageError(f"{', '.join(left)} exist(s), but no rotation of {ca} is recorded in "
                                 f"{record_path(cd)}: restore the record from the same backup as {cd.pki}, or "
                                 "remove the files if no node trusts them, then run the command again")
            # The PKI must be sound first: a stale item refuses here (exit 2), naming its fix.
            # (A resumed run may hold leaves of the old CA, which its step 2 reissues.)
            current_material(cd, spec, f"pki rotate-ca {ca}")
            r = CaRotation(ca)
            save_rotation(cd, r)  # before the new CA exists: a cut-off run finds it
        else:
            report.resumed = r.done
            progress(f"resuming the rotation of {ca} recorded in {record_path(cd)}: "
                     + (f"done: {', '.join(r.done)}" if r.done else "no step done yet"))
        for index in range(len(r.done), len(STEPS)):
            step = STEPS[index]
            progress(f"== step {index + 1}/{len(STEPS)} {step.name}: {step.does.format(ca=ca)}")
            t = time.monotonic()
            try:
                if step.only not in (None, ca):
                    progress(f"  nothing to do for {ca}: only {step.only} signs on the nodes")
                    report.skipped.append(step.name)
                else:
                    _ACTIONS[step.name](cd, spec, ca, report, progress, opts)
            except BaseException:
                progress(f"the rotation of {ca} stopped in step {index + 1} ({step.name}); `hardway pki rotate-ca "
                         f"{ca}` resumes it (the steps done are kept in {record_path(cd)}, both CAs in {cd.pki})")
                raise
            r = replace(r, done=r.done + (step.name,))
            save_rotation(cd, r)
            if step.name not in report.skipped:
                report.steps[step.name] = round(time.monotonic() - t, 2)
        _finish(cd, ca)
        new = x509.load_pem_x509_certificate(cd.cert(ca).read_bytes())
        report.serial, report.not_after = f"{new.serial_number:x}", new.not_valid_after_utc
    report.seconds = round(time.monotonic() - started, 2)
    return report


def _kubeconfigs(cd: ClusterDir, spec: ClusterSpec, ca: str, progress: Progress) -> None:
    """DIR/kubeconfigs as this step leaves them (the bundle in certificate-authority-data), before
    its `up`: the operator's kubectl follows the rotation too."""
    report, _ = current_material(cd, spec, f"pki rotate-ca {ca}")
    written = [p.name for p in report.all_written if p.parent == cd.kubeconfigs]
    if written:
        progress(f"  rewritten in {cd.kubeconfigs}: {', '.join(written)}")


def _trust(cd, spec, ca, report, progress, opts) -> None:
    _make_next(cd, spec, ca, progress)
    _kubeconfigs(cd, spec, ca, progress)
    roll(cd.root, progress, opts)


def _reissue_step(cd, spec, ca, report, progress, opts) -> None:
    _swap(cd, ca, progress)
    _reissue(cd, spec, ca, report, progress)
    _kubeconfigs(cd, spec, ca, progress)
    roll(cd.root, progress, opts)


def _switch(cd, spec, ca, report, progress, opts) -> None:
    roll(cd.root, progress, opts)
    report.kubelets = renew_kubelet_clients(spec, cd, opts, progress)


def _drop(cd, spec, ca, report, progress, opts) -> None:
    _kubeconfigs(cd, spec, ca, progress)
    roll(cd.root, progress, opts)


_ACTIONS = {"trust": _trust, "reissue": _reissue_step, "switch": _switch, "drop": _drop}
assert list(_ACTIONS) == [s.name for s in STEPS]

__all__ = ["STEPS", "CaRotateReport", "check_rotatable", "rotate_ca"]
