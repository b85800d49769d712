"""Kubernetes' data as etcd stores it, read with etcdctl on a controller: the one way hardway
looks below the API (is a Secret encrypted at rest, and with which key).

The apiserver stores an encrypted object as `k8s:enc:<provider>:v1:<key name>:<ciphertext>`
(k8s.io/apiserver/pkg/storage/value/encrypt/*), an unencrypted one as plain `k8s\\x00` protobuf.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shlex
from collections.abc import Callable

from ..clusterdir import ClusterDir
from ..deploy.hosts import Options, connect_all
from ..errors import OperationError
from ..render.etcd import etcdctl
from ..spec.model import ClusterSpec

SECRETS = "/registry/secrets/"
UNENCRYPTED = "(not encrypted)"


def etcdctl_get(spec: ClusterSpec, cd: ClusterDir, key: str, opts: Options,
                progress: Callable[[str], None], prefix: bool = False) -> dict[str, bytes]:
    """Each etcd key (`key`, or every key under it with `prefix`) and its value as stored,
    read with etcdctl on the first controller."""
    ctl = spec.controllers[0]
    command = shlex.join([*etcdctl(ctl), "get", key, *(["--prefix"] if prefix else []), "-w", "json"])

    async def read() -> bytes:
        ts = await connect_all(spec, cd, [ctl.name], opts, progress)
        try:
            r = await ts[ctl.name].run(command, timeout=60)
        finally:
            await ts[ctl.name].close()
        if r.rc != 0:
            raise OperationError(f"etcdctl get {key} on {ctl.name}: {r.err.strip()[-600:]}")
        return r.stdout

    out = asyncio.run(read())
    try:  # etcdctl's JSON carries keys and values base64-encoded (Go's []byte)
        kvs = json.loads(out).get("kvs") or []
        return {base64.b64decode(kv["key"]).decode(errors="replace"): base64.b64decode(kv.get("value", ""))
                for kv in kvs}
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise OperationError(f"etcdctl get {key} on {ctl.name} printed no usable JSON ({e}): {out[:200]!r}") from None


def stored_key(raw: bytes, provider: str) -> str:
    """The name of the key a stored value is encrypted with by `provider`; UNENCRYPTED when
    it is not (another provider is named as such)."""
    head = f"k8s:enc:{provider}:v1:".encode()
    if raw.startswith(head):
        return raw[len(head):].split(b":", 1)[0].decode(errors="replace")
    if raw.startswith(b"k8s:enc:"):
        return "provider " + raw.split(b":", 3)[2].decode(errors="replace")
    return UNENCRYPTED


def secrets_by_key(stored: dict[str, bytes], provider: str) -> dict[str, list[str]]:
    """The Secrets of an etcdctl_get of SECRETS (as namespace/name), grouped by the name of the
    key each is stored with."""
    out: dict[str, list[str]] = {}
    for path, raw in sorted(stored.items()):
        out.setdefault(stored_key(raw, provider), []).append(path.removeprefix(SECRETS))
    return out


def describe_keys(by_key: dict[str, list[str]], most: int = 5) -> str:
    """`key2: 31 Secrets; key1: 2 (default/a, default/b)`."""
    def one(name: str, paths: list[str]) -> str:
        shown = ", ".join(paths[:most]) + (f" and {len(paths) - most} more" if len(paths) > most else "")
        return f"{name}: {len(paths)} ({shown})"
    return "; ".join(one(n, p) for n, p in sorted(by_key.items())) or "no Secret at all"


__all__ = ["SECRETS", "UNENCRYPTED", "describe_keys", "etcdctl_get", "secrets_by_key", "stored_key"]
