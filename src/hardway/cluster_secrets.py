"""The cluster's secrets besides the PKI: one row each, made once by `pki init`, judged by
`pki check`, read for rendering (material.py). Each lives in DIR/secrets/, mode 0600.

    encryption-key   base64 of 32 random bytes: Secrets are encrypted with it in etcd
    vrrp-password    keepalived's VRRP password (load balancer mode keepalived only)
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
import string
from collections.abc import Callable
from dataclasses import dataclass

from .clusterdir import ClusterDir
from .spec.model import ClusterSpec, LoadBalancerMode

SECRET_MODE = 0o600

# VRRP PASS authentication carries at most 8 characters (keepalived: "Only the first eight (8)
# characters are used"); letters and digits need no quoting in keepalived.conf.
VRRP_ALPHABET = string.ascii_letters + string.digits
VRRP_LENGTH = 8


@dataclass(frozen=True)
class SecretFile:
    name: str  # file name in DIR/secrets; also the Material field (dashes as underscores)
    needed: Callable[[ClusterSpec], bool]
    make: Callable[[], str]
    flaw: Callable[[str], str | None]  # why this content is unusable; None: it is fine
    if_lost: str  # what to do when it is missing or unusable
    # Data depends on it once the cluster ran (Secrets in etcd are encrypted with the key): a
    # lost one is never replaced silently, or the next `up` would make every Secret unreadable.
    irreplaceable: bool = False


def _encryption_key_flaw(text: str) -> str | None:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return "is not base64"
    if len(raw) != 32:
        return f"holds {len(raw)} bytes, not 32 (the encryption providers need a 32-byte key)"
    return None


def _vrrp_flaw(text: str) -> str | None:
    if not re.fullmatch(f"[{re.escape(VRRP_ALPHABET)}]{{1,{VRRP_LENGTH}}}", text):
        return f"is not 1 to {VRRP_LENGTH} letters and digits (VRRP PASS authentication uses 8 at most)"
    return None


SECRET_FILES: tuple[SecretFile, ...] = (
    SecretFile(
        "encryption-key", lambda spec: True,
        lambda: base64.b64encode(os.urandom(32)).decode(),
        _encryption_key_flaw,
        "restore it from your backup: the Secrets in etcd are encrypted with it and cannot be read "
        "without it (for a cluster that never ran, `hardway pki init` makes a new one once the file is gone)",
        irreplaceable=True,
    ),
    SecretFile(
        "vrrp-password", lambda spec: spec.load_balancer.mode is LoadBalancerMode.keepalived,
        lambda: "".join(secrets.choice(VRRP_ALPHABET) for _ in range(VRRP_LENGTH)),
        _vrrp_flaw,
        "`hardway pki init` makes a new one once the file is gone (`hardway up` then gives it to every controller)",
    ),
)


def needed(spec: ClusterSpec) -> list[SecretFile]:
    return [s for s in SECRET_FILES if s.needed(spec)]


def read_secrets(cd: ClusterDir, spec: ClusterSpec) -> tuple[dict[str, str], list[str]]:
    """Each secret the spec needs, by name, and what is wrong with them (missing, unusable)."""
    values: dict[str, str] = {}
    problems: list[str] = []
    for s in needed(spec):
        path = cd.secret(s.name)
        try:
            text = path.read_bytes().decode(errors="replace").strip()
        except FileNotFoundError:
            problems.append(f"{path} is missing: {s.if_lost}")
            continue
        flaw = s.flaw(text)
        if flaw:
            problems.append(f"{path} {flaw}: {s.if_lost}")
        values[s.name] = text
    return values, problems
