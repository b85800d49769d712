"""`hardway verify`: is the cluster healthy, degraded (still serving, something down) or broken?

Checked: every etcd member's /health, every apiserver's /readyz (and the API through the load
balancer where there is one), every hardway unit on every host (over SSH), each HAProxy's own
view of every apiserver (its stats socket), the certificates deployed on every host (certs.py),
every node Ready.
Broken: no etcd quorum, the API unreachable at its advertised address, or no node Ready.
Degraded: anything else short of everything healthy (a member, an apiserver, a unit, a
backend HAProxy holds DOWN, a certificate expiring within the window or not rolled out, a node).

"LB answering via another backend" is not "LB down": the probe through the load balancer is
tried a few times with short timeouts (a connection HAProxy sent to an apiserver that just
died is retried on another after its connect timeout), and HAProxy's view names each backend
it holds DOWN, with its reason: degraded, not broken.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from ..clusterdir import ClusterDir
from ..deploy.activate import unit_states
from ..deploy.health import Api, Identity, apiserver_ready, etcd_health, identity, wait_for
from ..deploy.lbstats import backend_view
from ..deploy.transport import Transport
from ..deploy.hosts import Options, connect_all, each_host
from ..errors import OperationError
from ..material import load_material
from ..pki.expiry import check_window
from ..pki.profiles import profiles_by_name
from ..render import render_cluster
from ..render.certfiles import cert_files
from ..spec.load import load_spec
from ..spec.model import APISERVER_PORT, ClusterSpec
from .certs import DEFAULT_DAYS, Judge, host_cert_checks
from .checks import Check


class Status(str, Enum):
    healthy = "healthy"
    degraded = "degraded"
    broken = "broken"

    @property
    def exit_code(self) -> int:
        return {"healthy": 0, "degraded": 3, "broken": 1}[self.value]


_SEVERITY = {0: 0, 3: 1, 1: 2}  # exit codes: healthy/passed < degraded/explained < broken/failed


def worst_exit(*codes: int) -> int:
    """The exit code of several verdicts (verify, smoke, conformance): the most severe one, so a
    failure (1) is never reported as merely degraded (3)."""
    return max(codes, key=lambda c: _SEVERITY.get(c, 2), default=0)


@dataclass
class VerifyReport:
    checks: list[Check] = field(default_factory=list)
    status: Status = Status.healthy
    reasons: list[str] = field(default_factory=list)  # why broken/degraded

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]


def classify(etcd_ok: int, etcd_total: int, api_reachable: bool, nodes_ready: int, nodes_total: int,
             failed: list[Check]) -> tuple[Status, list[str]]:
    """Pure: the verdict from the counts."""
    broken = []
    if etcd_ok <= etcd_total // 2:
        broken.append(f"etcd has no quorum: {etcd_ok} of {etcd_total} member(s) healthy")
    if not api_reachable:
        broken.append("the Kubernetes API does not answer at its advertised address")
    if nodes_total and nodes_ready == 0:
        broken.append(f"no node is Ready (0 of {nodes_total})")
    if broken:
        return Status.broken, broken
    if failed:
        return Status.degraded, [f"{c.name}: {c.detail}" for c in failed]
    return Status.healthy, []


async def unit_checks(spec: ClusterSpec, cd: ClusterDir, units: dict[str, list[str]], opts: Options,
                      add: Callable[[Check], None], progress: Callable[[str], None] = lambda _m: None,
                      more: Callable[[Transport], Awaitable[None]] | None = None) -> None:
    """Every host's units, and on a host running HAProxy its view of every apiserver, then
    `more` (the deployed certificates) on the same connection; each host on a connection of its
    own (an unreachable host is reported, the others are still checked), at most
    `opts.parallel` connections open at once: each is closed before the next host's is opened."""
    async def one(name: str) -> None:
        try:
            t = (await connect_all(spec, cd, [name], opts, progress))[name]
        except OperationError as e:
            add(Check(f"{name}: SSH", False, str(e).split(": ", 1)[-1].splitlines()[0]))
            return
        try:
            try:
                states = await unit_states(t, units[name])
                if "haproxy.service" in units[name]:
                    await haproxy_checks(t, [n.name for n in spec.controllers], add)
            except OperationError as e:
                add(Check(f"{name}: units", False, str(e).splitlines()[0]))
                states = {}
            if more is not None:
                await more(t)
        finally:
            await t.close()
        for unit, (state, _restarts) in states.items():
            add(Check(f"{name}: {unit}", state == "active", "" if state == "active" else state))

    await each_host(list(units), one, opts.parallel)


async def haproxy_checks(t: Transport, servers: list[str], add: Callable[[Check], None]) -> None:
    """One check per apiserver in the HAProxy on `t`'s node: UP, or DOWN with HAProxy's reason."""
    view = await backend_view(t, servers)
    if view.error:
        add(Check(f"{t.node}: HAProxy's view of the apiservers", False, view.error))
        return
    for server, why in view.servers.items():
        add(Check(f"{t.node}: HAProxy backend {server}", not why, why))


LB_TIMEOUT = 3.0  # per try: HAProxy redispatches a connect that fails after 1 s (render/lb.py)
LB_PATIENCE = 6.0  # 2 to 3 tries before the API is called unreachable (broken)
LB_PAUSE = 1.0


def api_through_lb(spec: ClusterSpec, ident: Identity) -> tuple[bool, str]:
    """/readyz through the load balancer, tried again for LB_PATIENCE seconds: one connection
    that met an apiserver dying under it is not the LB down. The last failure when none answers."""
    async def probe() -> tuple[bool, str]:
        return await asyncio.to_thread(apiserver_ready, str(spec.api_host), spec.api_port, ident, LB_TIMEOUT)

    try:
        asyncio.run(wait_for("an answer", probe, LB_PATIENCE, lambda _m: None, interval=LB_PAUSE))
    except TimeoutError as e:
        return False, str(e)
    return True, ""


def verify(directory: str | Path = ".", progress: Callable[[str], None] = lambda _m: None,
           opts: Options | None = None, cert_days: int = DEFAULT_DAYS) -> VerifyReport:
    """`cert_days`: a certificate deployed on a host that expires within this many days is
    reported (degraded)."""
    check_window(cert_days, "--cert-days")
    cd = ClusterDir.at(directory)
    spec = load_spec(cd.spec).spec
    material = load_material(cd, spec)
    cluster = render_cluster(spec, material)
    report = VerifyReport()
    add = report.checks.append

    etcd_ident = identity(cd, "etcd-ca", "etcd-admin")
    admin = identity(cd, "ca", "admin")
    etcd_ok = 0
    for n in spec.controllers:
        ok, detail = etcd_health(str(n.address), etcd_ident)
        etcd_ok += ok
        add(Check(f"etcd member {n.name}", ok, "" if ok else detail))
        ok, detail = apiserver_ready(str(n.address), APISERVER_PORT, admin)
        add(Check(f"kube-apiserver {n.name} /readyz", ok, "" if ok else detail))
    if spec.load_balancer.mode.value != "none":
        api_ok, detail = api_through_lb(spec, admin)
        add(Check(f"API through the load balancer ({spec.api_server_url})", api_ok, detail))
    else:
        api_ok, _ = apiserver_ready(str(spec.api_host), spec.api_port, admin)
    progress(f"etcd: {etcd_ok} of {len(spec.controllers)} member(s) healthy")

    judge = Judge(cd, profiles_by_name(spec), material, cert_days)

    async def certificates(t: Transport) -> None:
        bundle = cluster.nodes[t.node]
        await host_cert_checks(t, cert_files(bundle, material), judge, add,
                               kubelet=any(u.name == "kubelet.service" for u in bundle.units))

    asyncio.run(unit_checks(spec, cd, {name: [u.name for u in b.units] for name, b in cluster.nodes.items()},
                            opts or Options(), add, progress, certificates))

    ready_count = 0
    workers = [n.name for n in spec.workers]
    if api_ok:
        try:
            nodes = Api(spec, cd).nodes()
            for w in workers:
                state = nodes.get(w)
                ready_count += bool(state)
                add(Check(f"node {w} Ready", bool(state), "" if state else
                          ("not registered" if state is None else "NotReady")))
        except (OSError, OperationError) as e:
            add(Check("list nodes", False, str(e)))
    report.status, report.reasons = classify(etcd_ok, len(spec.controllers), api_ok, ready_count,
                                             len(workers), report.failed)
    return report
