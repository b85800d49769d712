"""The rendered haproxy.cfg run by the real HAProxy (Debian's, 2.6 on bookworm), in front of
test apiservers on this machine, its view read through the stats socket as `up` and `verify`
read it (deploy/lbstats.py, socat).

With the root layout HAProxy's OpenSSL needs a self-signed anchor: given the intermediate `ca`
it holds every apiserver DOWN ("SSL handshake failure", the defect seen on a live `ha` lab);
given the root it would let a server of the etcd domain pass; given ca's twin (what hardway
ships) it accepts exactly the apiservers.

Needs `haproxy` and `socat` (Debian packages; scripts/prereqs installs them, starting nothing).
HAProxy runs in the foreground on ports of its own and is stopped by PID.
"""

from __future__ import annotations

import asyncio
import http.server
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import pytest

from hardway.clusterdir import ClusterDir
from hardway.deploy.health import apiserver_ready, identity
from hardway.deploy.lbstats import View, backend_view, set_server_state
from hardway.deploy.transport import LocalTransport
from hardway.material import ensure_material
from hardway.pki.profiles import openssl_anchor
from hardway.render.lb import HAPROXY_CA, HAPROXY_CRT, HAPROXY_STATS_SOCKET, haproxy_cfg
from tests.helpers import require
from tests.specs import make_spec

pytestmark = pytest.mark.integration

SERVERS = [f"controller-{i}" for i in range(4)]


def need_haproxy() -> None:
    missing = [p for p in ("haproxy", "socat") if shutil.which(p) is None]
    require(not missing, f"{' and '.join(missing)} not installed (Debian packages: haproxy socat)")


def four_controllers(d: dict, layout: str) -> None:
    d["pki"].update(layout=layout, keyType="ed25519")
    d["nodes"].insert(3, {"name": "controller-3", "address": "10.240.0.13", "roles": ["controller"]})


def local_cfg(text: str, tmp: Path, bind: str | None = None, servers: dict[str, str] | None = None) -> str:
    """The rendered config with this machine's paths and, to run it, addresses (and no syslog)."""
    text = text.replace(HAPROXY_CA, str(tmp / "ca.crt")).replace(HAPROXY_CRT, str(tmp / "healthcheck.pem"))
    text = text.replace(HAPROXY_STATS_SOCKET, str(tmp / "stats.sock"))
    if bind:
        text = text.replace("    log /dev/log local0\n", "").replace("    option tcplog\n", "")
        text = re.sub(r"(?m)^    bind \S+$", f"    bind {bind}", text)
    for name, address in (servers or {}).items():
        text, n = re.subn(rf"(?m)^    server {name} \S+$", f"    server {name} {address}", text)
        assert n == 1, name
    return text


@pytest.mark.parametrize("preset", ["ha", "ha-vip"])
@pytest.mark.parametrize("layout", ["flat", "root"])
def test_haproxy_accepts_the_rendered_config(tmp_path, preset, layout):
    need_haproxy()
    spec = make_spec(preset, edit=lambda d: d["pki"].update(layout=layout))
    cd = ClusterDir(tmp_path / "cluster")
    ensure_material(cd, spec)
    (tmp_path / "ca.crt").write_bytes(cd.cert(openssl_anchor(spec)).read_bytes())
    (tmp_path / "healthcheck.pem").write_bytes(cd.cert("healthcheck").read_bytes() + cd.key("healthcheck").read_bytes())
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(local_cfg(haproxy_cfg(spec, "*"), tmp_path))  # -c binds nothing
    r = subprocess.run(["haproxy", "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "[WARNING]" not in r.stdout + r.stderr, r.stdout + r.stderr


class Readyz(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"ok" if self.server.status == 200 else b"[-]etcd failed: reason withheld"
        self.send_response(self.server.status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args) -> None:
        pass


class StandInApiserver(http.server.ThreadingHTTPServer):
    """HTTPS /readyz like kube-apiserver's: a client certificate of the cluster CA required
    (the intermediate, trusted as an anchor as Go does), serving `chain`."""

    daemon_threads = True

    def __init__(self, chain: Path, key: Path, client_ca: Path, status: int) -> None:
        super().__init__(("127.0.0.1", 0), Readyz)
        self.status = status
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(chain, key)
        ctx.load_verify_locations(client_ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
        self.socket = ctx.wrap_socket(self.socket, server_side=True)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def handle_error(self, request, client_address) -> None:
        pass  # a refused handshake is the point of some of these servers

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def view_until(sock: Path, decided, limit: float = 15) -> View:
    """HAProxy's view, read as `up` reads it, once `decided(view)` or after `limit` seconds."""
    t = LocalTransport("lb-0")
    deadline = time.monotonic() + limit
    while True:
        view = asyncio.run(backend_view(t, SERVERS, socket=str(sock)))
        if (not view.error and decided(view)) or time.monotonic() > deadline:
            return view
        time.sleep(0.2)


# anchor given to HAProxy -> which servers it must hold UP ("" below) or DOWN, and why
EXPECTED = {
    "twin": {"controller-0": "", "controller-1": "controller-1 DOWN: L6RSP (Layer6 invalid response, SSL handshake failure)",
             "controller-2": "controller-2 DOWN: L7STS (Layer7 wrong status, Internal Server Error (code 500))",
             "controller-3": "controller-3 DOWN: L4CON (Layer4 connection problem, Connection refused)"},
    # before the twin: the good apiserver held DOWN, as seen on the live `ha` lab
    "intermediate": {"controller-0": "controller-0 DOWN: L6RSP (Layer6 invalid response, SSL handshake failure)"},
    # the root anchors the etcd domain too: a server with an etcd certificate passes
    "root": {"controller-0": "", "controller-1": ""},
}


@pytest.mark.parametrize("anchor", list(EXPECTED))
def test_haproxy_holds_exactly_the_apiservers_up_and_says_why_not(tmp_path, anchor):
    need_haproxy()
    spec = make_spec("ha", edit=lambda d: four_controllers(d, "root"))
    cd = ClusterDir(tmp_path / "cluster")
    ensure_material(cd, spec)
    etcd_chain = tmp_path / "etcd-chain.pem"  # an etcd-domain server sending its intermediate too
    etcd_chain.write_bytes(cd.cert("etcd-server-controller-0").read_bytes() + cd.cert("etcd-ca").read_bytes())
    ca = cd.cert("ca")
    backends = [StandInApiserver(cd.cert("apiserver"), cd.key("apiserver"), ca, 200),
                StandInApiserver(etcd_chain, cd.key("etcd-server-controller-0"), ca, 200),
                StandInApiserver(cd.cert("apiserver"), cd.key("apiserver"), ca, 500)]
    addresses = {s: b.address for s, b in zip(SERVERS[:3], backends, strict=True)}
    addresses["controller-3"] = f"127.0.0.1:{free_port()}"  # nothing listens
    anchor_file = {"twin": openssl_anchor(spec), "intermediate": "ca", "root": "root-ca"}[anchor]
    assert openssl_anchor(spec) == "ca-anchor"
    (tmp_path / "ca.crt").write_bytes(cd.cert(anchor_file).read_bytes())
    (tmp_path / "healthcheck.pem").write_bytes(cd.cert("healthcheck").read_bytes() + cd.key("healthcheck").read_bytes())
    front = free_port()
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(local_cfg(haproxy_cfg(spec, "*"), tmp_path, f"127.0.0.1:{front}", addresses))
    log = (tmp_path / "haproxy.log").open("wb")
    proc = subprocess.Popen(["haproxy", "-db", "-f", str(cfg)], stdout=log, stderr=subprocess.STDOUT)
    try:
        sock = tmp_path / "stats.sock"
        expected = EXPECTED[anchor]
        view = view_until(sock, lambda v: all(v.servers[s].startswith(w) if w else not v.servers[s]
                                               for s, w in expected.items()))
        assert not view.error, view.error + (tmp_path / "haproxy.log").read_text()
        for server, want in expected.items():
            got = view.servers[server]
            assert (got.startswith(want + ", for ") if want else got == ""), (server, got, view)
        if anchor == "twin":
            # the LB passes clients to the one good apiserver; TLS end to end with the intermediate
            ok, detail = apiserver_ready("127.0.0.1", front, identity(cd, "ca", "admin"))
            assert ok, detail
            # `up` drains an apiserver before restarting it (roll.py): the socket takes it, the
            # view names the drained server (not in rotation), and `ready` puts it back
            for state, want in (("drain", "controller-0 DRAIN"), ("ready", "")):
                asyncio.run(set_server_state(LocalTransport("lb-0"), "controller-0", state, socket=str(sock)))
                got = view_until(sock, lambda v, w=want: v.servers["controller-0"].startswith(w) if w
                                 else v.servers["controller-0"] == "").servers["controller-0"]
                assert (got.startswith(want) if want else got == ""), (state, got)
    finally:
        proc.kill()  # by PID; nothing of this HAProxy is worth a graceful stop
        proc.wait(10)
        log.close()
        for b in backends:
            b.shutdown()
            b.server_close()
