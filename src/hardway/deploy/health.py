"""Health checks from the operator's machine, over mutual TLS with the cluster directory's
certificates: etcd `/health`, apiserver `/readyz`, and small reads of the Kubernetes API.

Only the standard library (ssl, http.client): the checks must work before kubectl is on the
machine, and they send nothing anywhere but the node addresses in the spec.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from .. import ports
from ..clusterdir import ClusterDir
from ..errors import OperationError
from ..pki.rotation import trust_paths, trust_pem
from ..spec.model import ClusterSpec

ETCD_CLIENT_PORT = ports.port("etcd-client")


@dataclass(frozen=True)
class Identity:
    """A client certificate, and the CA that verifies the server: its file in DIR/pki, or during
    a rotation of it (pki/rotation.py) the old and the new CA, read afresh for each context."""

    cd: ClusterDir
    ca: str
    cert: Path
    key: Path

    @property
    def cafiles(self) -> tuple[Path, ...]:
        return tuple(trust_paths(self.cd, self.ca))

    def context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        ctx.load_verify_locations(cadata=trust_pem(self.cd, self.ca).decode(errors="replace"))
        # In the root layout the nodes' CAs are intermediates; trust them as anchors.
        ctx.verify_flags |= getattr(ssl, "VERIFY_X509_PARTIAL_CHAIN", 0)
        ctx.load_cert_chain(str(self.cert), str(self.key))
        return ctx


def identity(cd: ClusterDir, ca: str, client: str) -> Identity:
    """`client`'s certificate, trusting what `ca`'s servers may present."""
    return Identity(cd, ca, cd.cert(client), cd.key(client))


def https_get(host: str, port: int, path: str, ident: Identity, timeout: float = 5,
              server_name: str | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=ident.context())
    try:
        conn.request("GET", path, headers={"Host": server_name or host})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


async def aget(host: str, port: int, path: str, ident: Identity, timeout: float = 5) -> tuple[int, bytes]:
    return await asyncio.to_thread(https_get, host, port, path, ident, timeout)


def etcd_health(host: str, ident: Identity, timeout: float = 3) -> tuple[bool, str]:
    try:
        status, body = https_get(host, ETCD_CLIENT_PORT, "/health", ident, timeout)
        ok = status == 200 and json.loads(body).get("health") in ("true", True)
        return ok, body.decode(errors="replace").strip()
    except (OSError, ssl.SSLError, ValueError, http.client.HTTPException) as e:
        return False, str(e) or type(e).__name__


def apiserver_ready(host: str, port: int, ident: Identity, timeout: float = 3) -> tuple[bool, str]:
    try:
        status, body = https_get(host, port, "/readyz", ident, timeout)
        text = body.decode(errors="replace")
        failing = [ln[3:].split(" ")[0] for ln in text.splitlines() if ln.startswith("[-]")]
        return status == 200, (f"HTTP {status}, failing: {', '.join(failing)}" if failing
                               else f"HTTP {status}: {text.strip()[-200:]}")
    except (OSError, ssl.SSLError, http.client.HTTPException) as e:
        return False, str(e) or type(e).__name__


class Api:
    """GETs against the Kubernetes API as the cluster admin."""

    def __init__(self, spec: ClusterSpec, cd: ClusterDir) -> None:
        self.host, self.port = str(spec.api_host), spec.api_port
        self.ident = identity(cd, "ca", "admin")

    def get(self, path: str, timeout: float = 5) -> dict:
        """The JSON at `path`; anything else (no answer, an error status, not JSON) is an
        OperationError naming the request."""
        what = f"GET {path} from the API at {self.host}:{self.port}"
        try:
            status, body = https_get(self.host, self.port, path, self.ident, timeout)
        except (OSError, http.client.HTTPException) as e:  # refused, reset, TLS, timeout
            raise OperationError(f"{what}: {str(e) or type(e).__name__}") from None
        if status != 200:
            raise OperationError(f"{what}: HTTP {status}: {body[:300].decode(errors='replace')}")
        try:
            return json.loads(body)
        except ValueError as e:
            raise OperationError(f"{what}: the answer is not JSON ({e})") from None

    def nodes(self) -> dict[str, bool]:
        """node name -> Ready."""
        out = {}
        for item in self.get("/api/v1/nodes").get("items", []):
            conds = {c["type"]: c["status"] for c in item.get("status", {}).get("conditions", [])}
            out[item["metadata"]["name"]] = conds.get("Ready") == "True"
        return out


Progress = Callable[[str], None]


async def wait_for(what: str, probe: Callable[[], Awaitable[tuple[bool, str]]], timeout: float,
                   progress: Progress, interval: float = 0.5, stable: float = 0) -> float:
    """Poll `probe` until it reports True (continuously for `stable` seconds, when given); say
    what is awaited and, every 10 s, what it last saw."""
    start = time.monotonic()
    progress(f"waiting for {what}" + (f" (steadily for {stable:.0f} s)" if stable else ""))
    last_note = start
    detail = ""
    ok_since: float | None = None
    while True:
        ok, detail = await probe()
        now = time.monotonic()
        if ok and ok_since is None:
            ok_since = now
        if not ok:
            ok_since = None
        if ok_since is not None and now - ok_since >= stable:
            progress(f"{what}: ok ({now - start:.1f} s)")
            return now - start
        if now - start > timeout:
            raise TimeoutError(f"{what}: not reached within {timeout:.0f} s (last seen: {detail})")
        if now - last_note >= 10:
            progress(f"  still waiting for {what} ({now - start:.0f} s): {detail}")
            last_note = now
        await asyncio.sleep(interval)
