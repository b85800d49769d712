"""HAProxy's own view of the apiservers: `show stat` read from its stats socket on an LB host.

A TLS connection through the load balancer proves little: HAProxy counts a server UP until
its first check fails, and a client may just have been sent to a live one. What HAProxy
itself thinks of every server (UP after `rise` good checks, DOWN with the reason of its
last check) is what `up` waits for and what `verify` reports.

The parser is pure; `backend_view` runs the one command (socat on the node: nodes need no
Python) and never raises for a node that cannot answer: that is a view too.
"""

from __future__ import annotations

import csv
import shlex
from dataclasses import dataclass

from ..errors import OperationError
from ..render.lb import HAPROXY_BACKEND, HAPROXY_STATS_SOCKET
from .transport import Transport

# A server DOWN with a TLS failure (its certificate does not verify against HAProxy's ca-file,
# or it does not accept HAProxy's client certificate) stays DOWN: no point in waiting for it.
TLS_FAILURES = ("L6RSP", "L6TOUT")
TLS_HOPELESS_S = 15


@dataclass(frozen=True)
class ServerState:
    """One server line of `show stat` (HAProxy management guide, 9.1 "CSV format")."""

    backend: str  # pxname
    server: str  # svname
    status: str  # UP, DOWN, "UP 1/2" (going down), "DOWN 1/2" (coming up), MAINT, NOLB, "no check"
    check_status: str  # L7OK, L7STS, L6RSP, L4CON, L4TOUT, INI (no check yet), ...
    check_code: str  # layer 5-7 code, e.g. the HTTP status of an L7STS
    check_desc: str  # check_status in words: "Layer6 invalid response"
    last_chk: str  # what the last check said: "SSL handshake failure", "Connection refused"
    lastchg: int | None  # seconds since the last UP<->DOWN change

    @property
    def up(self) -> bool:
        """UP for good (not going down) and its last check passed: an answer to /readyz. A
        server not checked yet (INI) is UP to HAProxy but not to us."""
        return self.status == "UP" and self.check_status == "L7OK"

    @property
    def tls_hopeless(self) -> bool:
        return (self.status == "DOWN" and self.check_status in TLS_FAILURES
                and (self.lastchg or 0) >= TLS_HOPELESS_S)

    def describe(self) -> str:
        """`controller-1 DOWN: L6RSP (Layer6 invalid response: SSL handshake failure), for 12 s`."""
        why = ", ".join(x for x in (self.check_desc, self.last_chk) if x)
        if self.check_code and self.check_code not in self.last_chk:
            why += f" (code {self.check_code})"
        text = f"{self.server} {self.status}: {self.check_status or 'no check status'}"
        text += f" ({why})" if why else ""
        if self.lastchg is not None and self.status.startswith("DOWN"):
            text += f", for {self.lastchg} s"
        return text


def parse_show_stat(text: str) -> list[ServerState]:
    """The server lines of `show stat`'s CSV, found by the header's column names (the order of
    columns beyond the static ones is not guaranteed). ValueError if it is not that CSV."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines or not lines[0].startswith("# "):
        raise ValueError(f"not HAProxy's `show stat` output (no '# pxname,...' header): {text.strip()[:200]!r}")
    rows = list(csv.reader([lines[0][2:], *lines[1:]]))
    header = rows[0]
    need = ("pxname", "svname", "status", "check_status", "check_code", "check_desc", "last_chk", "lastchg")
    missing = [c for c in need if c not in header]
    if missing:
        raise ValueError(f"`show stat` lacks the column(s) {', '.join(missing)}")
    at = {name: header.index(name) for name in need}
    out = []
    for row in rows[1:]:
        row += [""] * (len(header) - len(row))
        if row[at["svname"]] in ("FRONTEND", "BACKEND"):
            continue
        lastchg = row[at["lastchg"]]
        out.append(ServerState(
            backend=row[at["pxname"]], server=row[at["svname"]], status=row[at["status"]],
            # "* L7OK": a check is running now, the last one's result follows
            check_status=row[at["check_status"]].removeprefix("* "), check_code=row[at["check_code"]],
            check_desc=row[at["check_desc"]], last_chk=row[at["last_chk"]],
            lastchg=int(lastchg) if lastchg.isdigit() else None))
    return out


def judge(states: list[ServerState], servers: list[str], backend: str = HAPROXY_BACKEND) -> dict[str, str]:
    """HAProxy's verdict on each of `servers` (the controllers) in `backend`: "" when UP with a
    passing check, else what is wrong in HAProxy's words."""
    have = {s.server: s for s in states if s.backend == backend}
    return {name: ("" if have[name].up else have[name].describe()) if name in have
            else f"{name}: not a server of HAProxy's backend {backend}" for name in servers}


def socket_command(command: str, socket: str = HAPROXY_STATS_SOCKET) -> str:
    # -t 5: after sending the command (stdin's EOF), wait up to 5 s for HAProxy's answer.
    return f"echo {shlex.quote(command)} | socat -t 5 stdio {shlex.quote('UNIX-CONNECT:' + socket)}"


def show_stat_command(socket: str = HAPROXY_STATS_SOCKET) -> str:
    return socket_command("show stat", socket)


SERVER_STATES = ("ready", "drain", "maint")


def set_state_command(server: str, state: str, socket: str = HAPROXY_STATS_SOCKET) -> str:
    """`set server`: drain (no new connections, the open ones finish), ready (back in rotation).
    Held in memory only: a restarted HAProxy starts with every server ready."""
    if state not in SERVER_STATES:
        raise ValueError(f"HAProxy server state {state!r}: one of {', '.join(SERVER_STATES)}")
    return socket_command(f"set server {HAPROXY_BACKEND}/{server} state {state}", socket)


async def set_server_state(t: Transport, server: str, state: str, socket: str = HAPROXY_STATS_SOCKET) -> None:
    """Tell the HAProxy on `t`'s node; OperationError naming the node when it does not take it
    (HAProxy answers an accepted `set server` with an empty line)."""
    r = await t.run(set_state_command(server, state, socket), timeout=15)
    said = (r.out + r.err).strip()
    if r.rc != 0 or said:
        raise OperationError(f"{t.node}: HAProxy did not set {HAPROXY_BACKEND}/{server} to {state} "
                             f"(exit {r.rc}): {said[:200] or 'no answer'}")


@dataclass(frozen=True)
class View:
    """One HAProxy's view of the apiserver backend."""

    host: str
    servers: dict[str, str]  # server -> "" (UP) or what HAProxy says is wrong
    error: str = ""  # the stats could not be read: why
    hopeless: tuple[str, ...] = ()  # servers DOWN with a TLS failure for TLS_HOPELESS_S or more

    @property
    def ok(self) -> bool:
        return not self.error and not any(self.servers.values())

    @property
    def problems(self) -> list[str]:
        return [self.error] if self.error else [why for why in self.servers.values() if why]


def view_from(host: str, text: str, servers: list[str]) -> View:
    """Pure: the View of `show stat` output `text`."""
    try:
        states = parse_show_stat(text)
    except ValueError as e:
        return View(host, {}, f"HAProxy's stats: {e}")
    hopeless = tuple(s.server for s in states
                     if s.backend == HAPROXY_BACKEND and s.server in servers and s.tls_hopeless)
    return View(host, judge(states, servers), hopeless=hopeless)


async def backend_view(t: Transport, servers: list[str], socket: str = HAPROXY_STATS_SOCKET,
                       timeout: float = 10) -> View:
    """HAProxy's view on `t`'s node; a node that cannot answer (HAProxy down, no socket, SSH
    trouble) gives a View with the error, never an exception."""
    try:
        r = await t.run(show_stat_command(socket), timeout=timeout)
    except OperationError as e:
        return View(t.node, {}, str(e).splitlines()[0])
    if r.rc != 0:
        said = (r.err or r.out).strip().splitlines()
        return View(t.node, {}, f"cannot read HAProxy's stats socket {socket} (exit {r.rc}"
                    + (f": {said[-1]}" if said else "") + "): is haproxy.service running, with the "
                    "haproxy.cfg of `hardway up`?")
    return view_from(t.node, r.out, servers)
