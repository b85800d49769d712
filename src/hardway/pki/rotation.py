"""The state of a CA rotation under way (`hardway pki rotate-ca`, carotation.py), as the files in
DIR/pki hold it: read by `load_material` (what every render, `up` and kubeconfig carries) and by
the operator's health checks (deploy/health.py `identity`), so that anything built during a
rotation trusts what the nodes may present at that moment.

    DIR/pki/ca-rotation        the record: {"ca": NAME, "done": [steps done]} (0600, JSON)
    DIR/pki/NAME.next.crt|key  the new CA, from step 1 until step 2 makes it NAME.crt|key
    DIR/pki/NAME.old.crt|key   the old CA, from step 2 until the rotation ends

NAME.crt|key is always the CA that signs NAME's leaves in DIR/pki (so `pki init`'s checks and
`--reissue` hold throughout). What each step leaves on the nodes:

    trust    every bundle of NAME: NAME.crt + NAME.next.crt (old, new); the old CA signs
    reissue  NAME.crt is the new CA, every leaf under it reissued; bundles new + old; the
             controller manager still signs with the old CA
    switch   the controller manager signs with the new CA (ca only); bundles still both
    drop     bundles: the new CA alone; NAME.old.* removed once that is rolled out

A step's `up` renders the state *after* that step as soon as the step has begun (the record
holds the steps done): safe, since each state is safe once the one before it is rolled out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..clusterdir import ClusterDir
from ..errors import OperationError
from ..fsio import write_atomic
from .profiles import CA, ETCD_CA, FRONT_PROXY_CA

ROTATABLE = (CA, ETCD_CA, FRONT_PROXY_CA)
STEP_NAMES = ("trust", "reissue", "switch", "drop")
RECORD_MODE = 0o600
RECORD = "ca-rotation"


def next_name(ca: str) -> str:
    return f"{ca}.next"


def old_name(ca: str) -> str:
    return f"{ca}.old"


def record_path(cd: ClusterDir) -> Path:
    return cd.pki / RECORD


@dataclass(frozen=True)
class CaRotation:
    """The record: which CA, and the steps done, in order."""

    ca: str
    done: tuple[str, ...] = ()

    @property
    def current(self) -> str | None:
        """The step under way (its state is what renders), None once every step is done."""
        return STEP_NAMES[len(self.done)] if len(self.done) < len(STEP_NAMES) else None

    def text(self) -> bytes:
        return (json.dumps({"ca": self.ca, "done": list(self.done)}, indent=1) + "\n").encode()


def load_rotation(cd: ClusterDir) -> CaRotation | None:
    path = record_path(cd)
    try:
        doc = json.loads(path.read_bytes())
        r = CaRotation(doc["ca"], tuple(doc["done"]))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as e:
        raise OperationError(f"{path} is damaged ({type(e).__name__}: {e}): restore it from your backup; it "
                             "records how far a CA rotation went") from None
    if r.ca not in ROTATABLE or list(r.done) != list(STEP_NAMES[:len(r.done)]):
        raise OperationError(f"{path} is damaged: {doc!r} is not one of {', '.join(ROTATABLE)} and a prefix "
                             f"of the steps {', '.join(STEP_NAMES)}: restore it from your backup")
    return r


def save_rotation(cd: ClusterDir, r: CaRotation) -> None:
    write_atomic(record_path(cd), r.text(), RECORD_MODE)


def trust_names(cd: ClusterDir, ca: str, r: CaRotation | None = None) -> list[str]:
    """The certificates (by file stem in DIR/pki) every bundle of `ca` holds now, the CA that
    signs its leaves in DIR/pki first."""
    if r is None or r.ca != ca or r.current in ("drop", None):
        return [ca]
    return [ca] + [n for n in (next_name(ca), old_name(ca)) if cd.cert(n).exists()]


def trust_paths(cd: ClusterDir, ca: str) -> list[Path]:
    """The files a client of the operator's (health checks) trusts for `ca`'s servers."""
    return [cd.cert(n) for n in trust_names(cd, ca, load_rotation(cd))]


TRUST_READS = 5


def trust_pem(cd: ClusterDir, ca: str) -> bytes:
    """`ca`'s bundle as DIR/pki holds it now, read consistently while another process may be
    rotating it: step 2 moves the CAs between files (the old one copied to NAME.old first, then
    NAME.crt becomes the new one, then NAME.next goes). Listing the files, then reading them,
    could pair a list made before the move with contents read after it (the new CA twice, the
    old one nowhere), so the files are listed again after the reads and read again when the
    list changed. A missing CA file raises FileNotFoundError, as reading it would."""
    for _ in range(TRUST_READS):
        names = trust_names(cd, ca, load_rotation(cd))
        try:
            data = [cd.cert(n).read_bytes() for n in names]
        except FileNotFoundError:
            continue
        if trust_names(cd, ca, load_rotation(cd)) == names:
            return b"".join(data)
    return b"".join(p.read_bytes() for p in trust_paths(cd, ca))


def signer_name(cd: ClusterDir, r: CaRotation | None) -> str | None:
    """The CA the controller manager signs CSRs with (kubelet client certificates), as a file
    stem in DIR/pki, when it cannot be ca.crt/ca.key on the nodes: while `ca`'s bundle there
    holds two certificates (the signer reads exactly one). None: ca.crt/ca.key as always."""
    if r is None or r.ca != CA or r.current in ("drop", None):
        return None
    if r.current == "switch":
        return CA
    # trust, reissue: the old CA still signs (NAME.old once step 2 has moved it there).
    return old_name(CA) if cd.cert(old_name(CA)).exists() else CA


__all__ = ["ROTATABLE", "STEP_NAMES", "CaRotation", "load_rotation", "next_name", "old_name", "record_path",
           "save_rotation", "signer_name", "trust_names", "trust_paths", "trust_pem"]
