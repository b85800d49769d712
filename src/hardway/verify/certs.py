"""`verify`: the certificates deployed on each host, read there (one round trip per host), not
only those in DIR/pki: a certificate that was renewed but never rolled out, or one a host kept
from long ago, is what the component serves or presents.

Read on a node: every certificate file hardway placed there and the client certificate of every
kubeconfig it placed (render/certfiles.py knows which files those are and whose certificate each
carries; the node's manifest says hardway placed them), and on a worker the client certificate
the kubelet rotates itself. Only the certificates leave the node: the script prints the PEM
certificate blocks and the kubeconfigs' client-certificate-data lines, never a key.

Each is judged against the window (`--cert-days`, default 30): expired, not yet valid or
expiring within it fails (verify: degraded), named with its host, profile, path and dates. A
certificate placed by hardway that differs from DIR/pki's is named too (not rolled out yet).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import shlex
from collections.abc import Callable
from dataclasses import dataclass

import yaml
from cryptography import x509

from ..clusterdir import ClusterDir
from ..deploy.desired import MANIFEST
from ..deploy.facts import ownership
from ..deploy.transport import Transport, check
from ..errors import OperationError
from ..material import Material
from ..pki.ensure import renew_advice
from ..pki.expiry import State, judge
from ..pki.profiles import CertProfile
from ..pki.store import cert_blocks
from ..render.certfiles import CertFile
from ..render.kubeconfig import CLIENT_CERT_FIELD
from ..render.worker import KUBELET_CLIENT_CURRENT
from .checks import Check

DEFAULT_DAYS = 30
ROTATED_BY_KUBELET = "kubelet client, rotated by the kubelet"


def read_script(paths: list[str], manifest: str = MANIFEST) -> str:
    """Per path: `@ PATH` then its certificate blocks and `DATA ...` client-certificate-data
    lines, or `- PATH` when there is no such file; the node's manifest as `J ...` lines first."""
    q = shlex.quote
    return f"""set -u
[ -f {q(manifest)} ] && sed 's/^/J /' {q(manifest)}
for p in {shlex.join(paths)}; do
  if [ -f "$p" ]; then
    printf '@ %s\\n' "$p"
    sed -n -e '/-----BEGIN CERTIFICATE-----/,/-----END CERTIFICATE-----/p' \\
      -e {q(f's/^[[:space:]]*{CLIENT_CERT_FIELD}:[[:space:]]*/DATA /p')} "$p"
  else
    printf -- '- %s\\n' "$p"
  fi
done
true
"""


@dataclass(frozen=True)
class HostCerts:
    """What a node holds: path -> its certificates (PEM blocks), None when there is no file;
    the paths its manifest lists (None: it has no manifest)."""

    files: dict[str, list[bytes] | None]
    owned: frozenset[str] | None


def parse_read(node: str, text: str) -> HostCerts:
    files: dict[str, list[bytes] | None] = {}
    manifest: list[str] = []
    current: list[bytes] | None = None
    block: list[str] = []
    for line in text.splitlines():
        if line.startswith("J "):
            manifest.append(line[2:])
        elif line.startswith("@ "):
            current = files[line[2:]] = []
        elif line.startswith("- "):
            files[line[2:]] = current = None
        elif current is None:
            continue
        elif line.startswith("DATA "):
            current += _decoded(line[5:])
        elif line.startswith("-----BEGIN CERTIFICATE"):
            block = [line]
        elif block:
            block.append(line)
            if line.startswith("-----END CERTIFICATE"):
                current += cert_blocks(("\n".join(block) + "\n").encode())
                block = []
    owned = frozenset(ownership(node, "\n".join(manifest))[0]) if manifest else None
    return HostCerts(files, owned)


def _decoded(value: str) -> list[bytes]:
    """The certificates in a kubeconfig's client-certificate-data value (YAML scalar, base64)."""
    try:
        scalar = yaml.safe_load(value)
        return cert_blocks(base64.b64decode(str(scalar), validate=True))
    except (yaml.YAMLError, binascii.Error, ValueError):
        return []


@dataclass(frozen=True)
class Judge:
    """What judging needs besides the host: DIR/pki's certificates and profiles, the window."""

    cd: ClusterDir
    profiles: dict[str, CertProfile]
    material: Material
    days: int = DEFAULT_DAYS
    now: dt.datetime | None = None


def _load(pem: bytes) -> x509.Certificate | None:
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError:
        return None


def judge_host(node: str, expected: list[CertFile], extra: list[str], found: HostCerts, j: Judge) -> list[Check]:
    """One failed check per certificate that is expired, not yet valid, expiring within the
    window, missing, unreadable, or different from DIR/pki's; one passing check for the rest.
    `extra`: paths of certificates not placed by hardway (the kubelet's own), judged on expiry
    only, and only where they exist."""
    now = j.now or dt.datetime.now(dt.timezone.utc)
    out: list[Check] = []
    good: list[tuple[dt.datetime, str]] = []

    def fail(label: str, detail: str) -> None:
        out.append(Check(f"{node}: certificate {label}", False, detail))

    for c in expected:
        label = f"{c.profile} ({c.path}{', client certificate' if c.kubeconfig else ''})"
        certs = found.files.get(c.path)
        if certs is None:
            fail(label, f"missing on the host: run `hardway -C {shlex.quote(str(j.cd.root))} up`")
            continue
        if found.owned is not None and c.path not in found.owned:
            fail(label, f"not placed by hardway (absent from {node}'s {MANIFEST}): run `hardway up`")
            continue
        cert = _load(certs[0]) if certs else None
        if cert is None:
            fail(label, "no readable certificate in it")
            continue
        ours = cert_blocks(j.material.cert(c.profile))[:1]
        differs = certs[0] not in ours
        when = judge(cert, now, j.days)
        if when.ok and not differs:
            good.append((when.not_after, label))
            continue
        detail = []
        if not when.ok:
            detail.append(when.describe() + (f" (within --cert-days {j.days})" if when.state is State.expiring else ""))
        if differs:
            mine = _load(ours[0]) if ours else None
            new = f" (serial {mine.serial_number:x}, until {mine.not_valid_after_utc:%Y-%m-%d})" if mine else ""
            detail.append(f"differs from {j.cd.cert(c.profile)}{new}: not rolled out yet, run "
                          f"`hardway -C {shlex.quote(str(j.cd.root))} up`")
        elif not when.ok:
            detail.append(renew_advice(j.cd, j.profiles[c.profile]))
        fail(label, "; ".join(detail))
    for path in extra:
        certs = found.files.get(path)
        if not certs:
            continue  # the kubelet makes it at its first start; its unit's check covers a kubelet that is down
        label = f"{ROTATED_BY_KUBELET} ({path})"
        cert = _load(certs[0])
        when = judge(cert, now, j.days) if cert else None
        if when is None:
            fail(label, "no readable certificate in it")
        elif when.ok:
            good.append((when.not_after, label))
        else:
            fail(label, f"{when.describe()}: the kubelet renews it through a CSR at 70-90% of its life; "
                        "check the controller manager (it signs) and the kubelet's journal")
    if good:
        first, label = min(good)
        out.append(Check(f"{node}: certificates", True,
                         f"{len(good)} valid beyond {j.days} day(s); first to expire: {label} on {first:%Y-%m-%d}"))
    return out


async def host_cert_checks(t: Transport, expected: list[CertFile], j: Judge, add: Callable[[Check], None],
                           kubelet: bool = False) -> None:
    """Read `expected` (and on a kubelet's host its own client certificate) on `t`'s node in one
    round trip and add the verdicts."""
    extra = [KUBELET_CLIENT_CURRENT] if kubelet else []
    paths = list(dict.fromkeys([c.path for c in expected] + extra))
    try:
        r = await check(t, read_script(paths), "reading the deployed certificates", timeout=60)
        found = parse_read(t.node, r.out)
    except OperationError as e:
        add(Check(f"{t.node}: certificates", False, str(e).splitlines()[0]))
        return
    for c in judge_host(t.node, expected, extra, found, j):
        add(c)
