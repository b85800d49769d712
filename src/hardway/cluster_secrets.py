"""The cluster's secrets besides the PKI: one row each, made once by `pki init`, judged by
`pki check`, read for rendering (material.py). Each lives in DIR/secrets/, mode 0600.

    encryption-key   the encryption keys, base64 of 32 random bytes each: Secrets are encrypted
                     with the first in etcd, the others only read (a rotation, keyrotation.py)
    vrrp-password    keepalived's VRRP password (load balancer mode keepalived only)

The key file is one key a line, the write key first: `NAME SECRET`, or a bare `SECRET`, which
is the key named key1 (the one line every cluster had before rotation: such a file stays as it
is, and a new cluster's is written that way). Secrets in etcd are stored as
`k8s:enc:<provider>:v1:<key name>:...`, so a key keeps its name for ever.
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
from .errors import OperationError
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


FIRST_KEY = "key1"  # the name of a bare key: every cluster's key before its first rotation
# The apiserver finds a Secret's key by the name between colons in the stored prefix.
KEY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
KEY_FILE_HEADER = ("# hardway encryption keys: one `NAME BASE64` a line. The first encrypts new Secrets,\n"
                   "# the others only read them. Never rename or drop a key by hand: `hardway secrets rotate`.\n")


@dataclass(frozen=True)
class EncryptionKey:
    name: str
    secret: str  # base64 of 32 bytes

    def __repr__(self) -> str:  # never a key in a traceback or a test failure
        return f"EncryptionKey({self.name!r})"


def new_key_secret() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def _key_flaw(secret: str) -> str | None:
    try:
        raw = base64.b64decode(secret, validate=True)
    except (binascii.Error, ValueError):
        return "is not base64"
    if len(raw) != 32:
        return f"holds {len(raw)} bytes, not 32 (the encryption providers need a 32-byte key)"
    return None


def parse_keys(text: str) -> tuple[tuple[EncryptionKey, ...], list[str]]:
    """The keys of an encryption-key file in its order (the write key first), and what is wrong
    with it. A file of one bare key (every cluster's before rotation) is key1."""
    keys: list[EncryptionKey] = []
    flaws: list[str] = []
    lines = [(n, ln.strip()) for n, ln in enumerate(text.splitlines(), 1)
             if ln.strip() and not ln.lstrip().startswith("#")]
    for n, line in lines:
        words = line.split()
        if len(words) > 2:
            flaws.append(f"line {n}: {len(words)} words, not `NAME BASE64` (or one bare key, key1)")
            continue
        name, secret = words if len(words) == 2 else (FIRST_KEY, words[0])
        where = "" if len(lines) == 1 and name == FIRST_KEY else f" line {n} (key {name}):"
        if not KEY_NAME.fullmatch(name):
            flaws.append(f"line {n}: key name {name!r} is not 1 to 63 letters, digits, '.', '_', '-'")
            continue
        flaw = _key_flaw(secret)
        if flaw:
            flaws.append(f"{where} {flaw}".strip())
        if name in (k.name for k in keys):
            flaws.append(f"line {n}: key {name} is named twice (a key's name is its identity in etcd)")
        keys.append(EncryptionKey(name, secret))
    if not lines:
        flaws.append("holds no key")
    return tuple(keys), flaws


def format_keys(keys: tuple[EncryptionKey, ...] | list[EncryptionKey]) -> bytes:
    """The file for `keys`: key1 alone as the one bare line it always was, else named lines."""
    if len(keys) == 1 and keys[0].name == FIRST_KEY:
        return f"{keys[0].secret}\n".encode()
    return (KEY_FILE_HEADER + "".join(f"{k.name} {k.secret}\n" for k in keys)).encode()


def _encryption_key_flaw(text: str) -> str | None:
    return "; ".join(parse_keys(text)[1]) or None


def _vrrp_flaw(text: str) -> str | None:
    if not re.fullmatch(f"[{re.escape(VRRP_ALPHABET)}]{{1,{VRRP_LENGTH}}}", text):
        return f"is not 1 to {VRRP_LENGTH} letters and digits (VRRP PASS authentication uses 8 at most)"
    return None


SECRET_FILES: tuple[SecretFile, ...] = (
    SecretFile(
        "encryption-key", lambda spec: True,
        new_key_secret,
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


def read_keys(cd: ClusterDir) -> tuple[EncryptionKey, ...]:
    """The encryption keys in DIR/secrets/encryption-key, write key first; an OperationError
    naming the file and what to do when it is missing or unusable."""
    row = next(s for s in SECRET_FILES if s.name == "encryption-key")
    path = cd.secret(row.name)
    try:
        text = path.read_bytes().decode(errors="replace")
    except FileNotFoundError:
        raise OperationError(f"{path} is missing: {row.if_lost}") from None
    keys, flaws = parse_keys(text)
    if flaws:
        raise OperationError(f"{path} {'; '.join(flaws)}: {row.if_lost}")
    return keys
