"""A lab cluster for the `hardway up` e2e tests: `init --lab --mirror`, `lab up`, always
`lab destroy` at the end (also when a test fails).

    with lab_cluster(tmp, "basic", "hwup", 78, mirror) as c:   # c.dir, c.spec, c.name(node)
        hardway.api.up(c.dir)

Each cluster gets its own name, node names (prefixed) and subnet (10.240.<octet>.0/24), so it
collides neither with a user's lab nor with the other e2e modules.
"""

from __future__ import annotations

import http.client
import itertools
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from hardway import api
from hardway import lab as hwlab
from hardway.clusterdir import ClusterDir
from hardway.deploy.health import identity
from hardway.deploy.lbstats import View, show_stat_command, view_from
from hardway.kubectl import kubectl
from hardway.errors import OperationError
from hardway.spec.load import load_spec
from hardway.spec.model import ClusterSpec
from tests.e2e.lab_fixture import missing_prerequisites
from tests.helpers import require


@dataclass(frozen=True)
class Lab:
    name: str  # the cluster's name and its nodes' prefix
    octet: int  # its subnet: 10.240.<octet>.0/24


# The labs shared by the day-2 modules (tests/e2e/conftest.py).
DAY2_BASIC = Lab("hwdb", 81)
DAY2_HA = Lab("hwda", 85)


def log(msg: str) -> None:
    print(f"[e2e] {msg}", file=sys.stderr, flush=True)


@dataclass
class LabCluster:
    dir: Path
    spec: ClusterSpec
    before: dict | None = None  # a host's state before the first `up` (hoststate.capture), when a test needs it

    def run(self, node: str, command: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return hwlab.run(self.dir, node, command, timeout=timeout)

    def ok(self, node: str, command: str, timeout: float = 60) -> str:
        p = self.run(node, command, timeout)
        assert p.returncode == 0, f"{node}: {command!r} exited {p.returncode}\n{p.stdout}\n{p.stderr}"
        return p.stdout

    def vip_holders(self, vip: str) -> list[str]:
        """The controllers that have `vip` on an interface (one, unless VRRP is split)."""
        out = []
        for n in self.spec.controllers:
            try:
                r = self.run(n.name, "ip -4 -o addr show")
            except OperationError:  # a stopped machine holds nothing
                continue
            if r.returncode == 0 and f" {vip}/" in r.stdout:
                out.append(n.name)
        return out

    def steady_vip_holders(self, vip: str, steady: float = 8, limit: float = 60) -> list[str]:
        """The VIP's holders once unchanged for `steady` seconds. A controller that rejoins
        preempts the VIP (it has the highest priority) a few seconds after its apiserver is
        ready again, and for a moment during the move nobody holds it."""
        t = time.monotonic()
        seen, since = self.vip_holders(vip), time.monotonic()
        while time.monotonic() - since < steady:
            assert time.monotonic() - t < limit, f"VIP {vip} holders kept changing for {limit} s: {seen}"
            time.sleep(0.5)
            now = self.vip_holders(vip)
            if now != seen:
                seen, since = now, time.monotonic()
        return seen

    def haproxy_view(self, node: str) -> View:
        """HAProxy's own view of the apiservers on `node`, read as `up` and `verify` read it."""
        p = self.run(node, show_stat_command(), timeout=30)
        assert p.returncode == 0, f"{node}: {show_stat_command()} exited {p.returncode}: {p.stderr}"
        return view_from(node, p.stdout, [n.name for n in self.spec.controllers])

    def until_haproxy_says(self, node: str, server: str, prefix: str, limit: float = 30) -> float:
        """Seconds until HAProxy on `node` says `server` is `prefix...` ("" for UP)."""
        t = time.monotonic()
        while True:
            said = self.haproxy_view(node).servers[server]
            if said.startswith(prefix) if prefix else said == "":
                return time.monotonic() - t
            assert time.monotonic() - t < limit, f"HAProxy on {node} after {limit} s: {said!r}"
            time.sleep(0.2)

    def write_until_ok(self, name: str, limit: float = 60) -> float:
        """Seconds until `kubectl create configmap NAME` through the LB/VIP succeeds."""
        t = time.monotonic()
        while True:
            # The cluster's kubectl itself: no Python start-up in the measured time.
            r = kubectl(ClusterDir(self.dir), "--request-timeout=2s", "create", "configmap", name,
                        "--from-literal=k=v", timeout=30)
            # AlreadyExists: an earlier attempt's write landed though its answer was lost.
            if r.returncode == 0 or b"AlreadyExists" in r.stderr:
                return time.monotonic() - t
            assert time.monotonic() - t < limit, f"no write through the load balancer in {limit} s: {r.stderr!r}"
            time.sleep(0.2)


FIGURES_ENV = "HARDWAY_FIGURES"  # a JSON file the figures are added to (bench/day2.py)
_DONE = re.compile(r"done: (\d+) of (\d+) host\(s\) change: (\d+) file\(s\) to write, (\d+) unit\(s\) to start, "
                   r"(\d+) to restart")
_ROLL = re.compile(r"rolling restart of (\S+) \(([^)]*)\) on (\d+) host\(s\)")


def touched(out: str) -> dict:
    """What a hardway run changed, as its output says: hosts, files, units started and
    restarted (every `up` it ran, summed), and each rolling restart (phase, units, hosts)."""
    done = [tuple(map(int, m.groups())) for m in _DONE.finditer(out)]
    return {"hosts_changed": sum(d[0] for d in done), "files_written": sum(d[2] for d in done),
            "units_started": sum(d[3] for d in done), "units_restarted": sum(d[4] for d in done),
            "rolls": [f"{m.group(1)} ({m.group(2)}) on {m.group(3)} host(s)" for m in _ROLL.finditer(out)]}


def figure(name: str, **values) -> None:
    """Log a measured figure; with $HARDWAY_FIGURES set, also add it to that JSON file (the
    day-2 bench runs the e2e modules and reports what they measured)."""
    log(f"FIGURE {name}: " + ", ".join(f"{k}={v}" for k, v in values.items()))
    path = os.environ.get(FIGURES_ENV)
    if path:
        p = Path(path)
        figures = json.loads(p.read_text()) if p.exists() else {}
        figures[name] = values
        p.write_text(json.dumps(figures, indent=2) + "\n")


def hw(directory: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """The real CLI, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "hardway", "-C", str(directory), *args],
                          capture_output=True, text=True, timeout=timeout)


def write_spec(directory: Path, preset: str, name: str, octet: int, mirror: Path,
               edits: dict[str, str] | None = None) -> ClusterSpec:
    """The preset's cluster.yaml for a lab, with `edits` (a line's text -> its replacement;
    each must match exactly once, so a preset that changes cannot skip one silently)."""
    api.init(directory, preset, mirror=str(mirror), name=name, force=True, lab=True)
    path = directory / "cluster.yaml"
    text = path.read_text().replace("10.240.0.", f"10.240.{octet}.")
    text = re.sub(r"\{name: ([a-z0-9-]+),", lambda m: f"{{name: {name}-{m.group(1)},", text)
    for old, new in (edits or {}).items():
        assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times in the {preset} preset"
        text = text.replace(old, new)
    path.write_text(text)
    return load_spec(path).spec


@contextmanager
def lab_cluster(directory: Path, preset: str, name: str, octet: int, mirror: Path,
                edits: dict[str, str] | None = None) -> Iterator[LabCluster]:
    missing = missing_prerequisites()
    require(not missing, "a hardway lab needs: " + "; ".join(missing))
    directory.mkdir(parents=True, exist_ok=True)
    if (directory / "lab" / "state.json").exists():
        hwlab.destroy(directory, log)
    spec = write_spec(directory, preset, name, octet, mirror, edits)
    try:
        hwlab.up(directory, log)
        yield LabCluster(directory, spec)
    finally:
        hwlab.destroy(directory, log)


_WRITERS = itertools.count()


class Writer(threading.Thread):
    """Creates ConfigMaps through the LB, `rate` per second, a new TLS connection each (as many
    independent clients would): every failure is kept with its reason. `follow`: each
    connection reads the admin identity and the CA bundle afresh from DIR/pki, as a client that
    follows a CA rotation does (pki/rotation.py: both CAs trusted while it runs)."""

    def __init__(self, spec, cd: ClusterDir, rate: float = 6.0, follow: bool = False, prefix: str = "") -> None:
        super().__init__(daemon=True)
        # Of the ConfigMaps' names: each writer its own, several write into one shared lab
        # (tests/e2e/conftest.py).
        self.prefix = prefix or f"w{next(_WRITERS)}-{int(time.time())}"
        self.host, self.port = str(spec.api_host), spec.api_port
        self.cd, self.follow = cd, follow
        self.ctx = identity(cd, "ca", "admin").context()
        self.interval = 1 / rate
        self.stop = threading.Event()
        self.created: list[str] = []
        self.failures: list[str] = []
        self.started = self.ended = 0.0

    def write(self, name: str) -> str | None:
        body = json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
                           "data": {"k": "v"}})
        try:
            ctx = identity(self.cd, "ca", "admin").context() if self.follow else self.ctx
        except (OSError, ValueError) as e:  # ssl.SSLError is an OSError
            return f"reading the admin identity: {type(e).__name__}: {e}"
        conn = http.client.HTTPSConnection(self.host, self.port, context=ctx, timeout=10)
        try:
            conn.request("POST", "/api/v1/namespaces/default/configmaps", body,
                         {"Content-Type": "application/json"})
            r = conn.getresponse()
            text = r.read()
            return None if r.status == 201 else f"HTTP {r.status}: {text[:200]!r}"
        except (OSError, http.client.HTTPException) as e:
            return f"{type(e).__name__}: {e}"
        finally:
            conn.close()

    def run(self) -> None:
        self.started = time.monotonic()
        i = 0
        while not self.stop.is_set():
            t = time.monotonic()
            name = f"{self.prefix}-{i:05d}"
            why = self.write(name)
            if why is None:
                self.created.append(name)
            else:
                self.failures.append(f"{time.monotonic() - self.started:6.1f} s {name}: {why}")
            i += 1
            self.stop.wait(max(0.0, self.interval - (time.monotonic() - t)))
        self.ended = time.monotonic()

    @property
    def rate(self) -> float:
        return (len(self.created) + len(self.failures)) / max(self.ended - self.started, 1e-9)
