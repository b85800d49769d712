"""Rolling activation: a change that restarts running units on several hosts restarts them one
host (or one batch of workers) at a time, each followed by that host's own health, so the
cluster keeps serving throughout.

Hosts that only *start* units (a first `up`, a new node) are activated together: nothing runs
there yet, and etcd's first members need each other to start. Hosts that *restart* a running
unit take turns:

| phase          | before the restart                      | healthy again when                       |
|----------------|-----------------------------------------|------------------------------------------|
| etcd           | the apiserver on that host drained in   | its member /health and a quorum; then    |
|                | every HAProxy (it uses only this member) | that apiserver ready and UP again       |
| control plane  | each HAProxy drains it (no new requests) | its /readyz, then UP in every HAProxy   |
| load balancer  | the VIP holder goes last                | its HAProxy sees every apiserver UP, and |
|                |                                         | the API answers through the LB           |
| workers        | drained when kubelet/containerd restart  | its node Ready after the restart         |

A host that does not come back stops the roll: the error names it, and the hosts not yet
restarted keep running the previous configuration (their new files are in place and the
node's pending-restarts record makes the next `up` restart them).

The steps are a table (ROLL); `up.py` calls `activate_phase` for every phase.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import OperationError
from ..kubectl import kubectl
from ..render.bundle import Phase
from ..spec.model import APISERVER_PORT
from . import activate as act
from . import lbstats
from .health import Api, apiserver_ready, etcd_health, identity, wait_for
from .hosts import each_host
from .transport import check

if TYPE_CHECKING:  # up.Session: up.py imports this module, not the other way round
    from .up import Session

# The units whose restart on a worker interrupts its pods' supervision: the node is drained
# first (kubectl drain), uncordoned once Ready again.
DRAIN_ON = ("kubelet.service", "containerd.service")
DRAIN_TIMEOUT_S = 120
HAPROXY_DRAIN_S = 1.0  # after `state drain`: in-flight requests to the apiserver finish


class RollFailed(OperationError):
    pass


# Within a phase, restarts roll in waves: every host's turn of one wave before the next wave
# begins. The apiservers all restart before any controller manager or scheduler: the
# version-skew policy wants those never newer than an apiserver they may reach (an upgrade
# changes every binary at once). None: the phase's units no earlier wave took.
WAVES: dict[Phase, tuple[frozenset[str] | None, ...]] = {
    Phase.control_plane: (frozenset({"kube-apiserver.service"}), None),
}


def waves(s: Session, phase: Phase) -> list[frozenset[str]]:
    """The unit names of each wave of `phase`, across the cluster's bundles."""
    every = frozenset(u.name for n in s.names for u in act.units_in(s.p.desired[n], phase))
    out, taken = [], frozenset()
    for w in WAVES.get(phase, (None,)):
        units = (every - taken) if w is None else (w & every)
        if units:
            out.append(units)
            taken |= units
    return out


def restarting(s: Session, phase: Phase, units: frozenset[str] | None = None) -> list[str]:
    """Hosts that restart a running unit of `phase` (of `units`, when given), in spec order."""
    return [n for n in s.names if _restarting_units(s, n, phase, units)]


def _has_work(s: Session, host: str, phase: Phase, units: frozenset[str]) -> bool:
    plan = s.plans[host]
    return any(u.name in units and u.name in (*plan.starts, *plan.restarts, *plan.reloads)
               for u in act.units_in(s.p.desired[host], phase))


def starting_only(s: Session, phase: Phase, rolled: list[str]) -> list[str]:
    """Hosts with something to do in `phase` that is not a restart: done together."""
    out = []
    for n in s.names:
        if n in rolled:
            continue
        plan = s.plans[n]
        if act.units_in(s.p.desired[n], phase) or (phase is Phase.host and (plan.sysctls or plan.modules)):
            out.append(n)
    return out


def _quiet(_msg: str) -> None:
    pass


def _restarting_units(s: Session, host: str, phase: Phase, units: frozenset[str] | None = None) -> list[str]:
    return [u.name for u in act.units_in(s.p.desired[host], phase)
            if u.name in s.plans[host].restarts and (units is None or u.name in units)]


def parse_invocations(text: str) -> dict[str, tuple[str, str]]:
    """unit -> (InvocationID, ActiveState) from `systemctl show -p Id -p InvocationID -p ActiveState`."""
    out = {}
    for block in text.strip().split("\n\n"):
        props = dict(ln.split("=", 1) for ln in block.splitlines() if "=" in ln)
        if "Id" in props:
            out[props["Id"]] = (props.get("InvocationID", ""), props.get("ActiveState", ""))
    return out


async def _invocations(s: Session, host: str, phase: Phase,
                       only: frozenset[str] | None = None) -> dict[str, tuple[str, str]]:
    units = _restarting_units(s, host, phase, only)
    if not units:
        return {}
    r = await check(s.t[host], f"systemctl show -p Id -p InvocationID -p ActiveState {' '.join(units)}",
                        "reading unit invocations", timeout=30)
    return parse_invocations(r.out)


def _restarted(s: Session, host: str, phase: Phase, before: dict[str, tuple[str, str]],
               only: frozenset[str] | None = None):
    """A probe: every unit restarted on `host` runs as a new invocation (systemd started it
    again), so a health check that follows reaches the new process, not the old one."""
    async def probe() -> tuple[bool, str]:
        now = await _invocations(s, host, phase, only)
        waiting = [u for u, (inv, state) in now.items() if inv == before.get(u, ("", ""))[0] or state != "active"]
        if waiting:
            # A unit that fails or crash-loops after its restart will not come good by itself:
            # say so now instead of sitting out the timeout (`systemctl restart` resets NRestarts).
            states = await act.unit_states(s.t[host], waiting)
            bad = act.given_up(states, {u: (st, 0) for u, (st, _n) in states.items()})
            if bad:
                raise OperationError(f"{host}: " + "; ".join(bad.values()))
        return not waiting, f"{host}: not restarted yet: {', '.join(waiting)}"
    return probe


# ---------------------------------------------------------------------------------------------
# per-phase steps


async def _nothing(_s: Session, _hosts: list[str]) -> None:
    return None


def _haproxies(s: Session) -> list[str]:
    return [n for n in s.names if "haproxy.service" in s.p.desired[n].unit_names]


async def _set_servers(s: Session, servers: list[str], state: str) -> None:
    """Every HAProxy: put `servers` in `state` (drain / ready). An HAProxy that cannot be told
    (not running yet) is skipped: it sends nothing anywhere then."""
    async def one(h: str) -> None:
        for server in servers:
            try:
                await lbstats.set_server_state(s.t[h], server, state)
            except OperationError as e:
                s.progress(f"  {h}: HAProxy not told to {state} {server}: {str(e).splitlines()[0]}")
    await each_host(_haproxies(s), one, s.opts.parallel)


async def _drain_apiservers(s: Session, hosts: list[str]) -> None:
    if hosts and _haproxies(s):
        await _set_servers(s, hosts, "drain")
        s.progress(f"  HAProxy: {', '.join(hosts)} drained (no new connections)")
        await asyncio.sleep(HAPROXY_DRAIN_S)


async def _kubectl(s: Session, *args: str, timeout: float = 60) -> None:
    r = await asyncio.to_thread(kubectl, s.p.cd, *args, timeout=timeout + 30)
    if r.returncode != 0:
        raise RollFailed(f"`kubectl {' '.join(args)}` failed: {r.stderr.decode(errors='replace').strip()[-800:]}")


async def _drain_workers(s: Session, hosts: list[str]) -> None:
    api = Api(s.p.spec, s.p.cd)
    registered = await asyncio.to_thread(api.nodes)
    for h in hosts:
        if h in registered and any(u in s.plans[h].restarts for u in DRAIN_ON):
            s.progress(f"  {h}: draining (kubectl drain, at most {DRAIN_TIMEOUT_S} s)")
            try:
                await _kubectl(s, "drain", h, "--ignore-daemonsets", "--delete-emptydir-data",
                               f"--timeout={DRAIN_TIMEOUT_S}s", timeout=DRAIN_TIMEOUT_S)
            except RollFailed as e:
                await _kubectl(s, "uncordon", h)
                raise RollFailed(f"{h} could not be drained before its kubelet/containerd restart (it is "
                                 f"uncordoned again, nothing was restarted there): {e}. Pods that no "
                                 "controller manages block a drain: delete or move them, then run "
                                 "`hardway up` again") from None


def _etcd_ok(s: Session, host: str) -> Callable[[], Awaitable[tuple[bool, str]]]:
    ident = identity(s.p.cd, "etcd-ca", "etcd-admin")
    addresses = {n.name: str(n.address) for n in s.p.spec.controllers}
    quorum = len(addresses) // 2 + 1

    async def probe() -> tuple[bool, str]:
        results = await asyncio.gather(*(asyncio.to_thread(etcd_health, a, ident) for a in addresses.values()))
        health = dict(zip(addresses, results, strict=True))
        healthy = sum(ok for ok, _ in health.values())
        if not health[host][0]:
            return False, f"member {host}: {health[host][1]}"
        if healthy < quorum:
            return False, f"{healthy} of {len(addresses)} member(s) healthy, a quorum needs {quorum}"
        return True, ""
    return probe


def _apiserver_ok(s: Session, host: str) -> Callable[[], Awaitable[tuple[bool, str]]]:
    admin = identity(s.p.cd, "ca", "admin")
    address = str(s.p.spec.node(host).address)
    servers = [n.name for n in s.p.spec.controllers]
    readied = False

    async def probe() -> tuple[bool, str]:
        nonlocal readied
        ok, detail = await asyncio.to_thread(apiserver_ready, address, APISERVER_PORT, admin)
        if not ok:
            return False, f"{host} /readyz: {detail}"
        if not _haproxies(s):
            return True, ""
        if not readied:  # ready again: back into every HAProxy's rotation
            await _set_servers(s, [host], "ready")
            readied = True
        views = await each_host(_haproxies(s), lambda h: lbstats.backend_view(s.t[h], servers), s.opts.parallel)
        bad = [f"{h}: {v.error or v.servers.get(host, '')}" for h, v in views.items()
               if v.error or v.servers.get(host)]
        return not bad, "; ".join(bad)
    return probe


def _lb_ok(s: Session, host: str) -> Callable[[], Awaitable[tuple[bool, str]]]:
    admin = identity(s.p.cd, "ca", "admin")
    spec = s.p.spec
    servers = [n.name for n in spec.controllers]

    async def probe() -> tuple[bool, str]:
        bad = []
        if "haproxy.service" in s.p.desired[host].unit_names:
            v = await lbstats.backend_view(s.t[host], servers)
            bad += [f"{host}: {p}" for p in v.problems]
        ok, detail = await asyncio.to_thread(apiserver_ready, str(spec.api_host), spec.api_port, admin)
        if not ok:
            bad.append(f"the API at {spec.api_server_url}: {detail}")
        return not bad, "; ".join(bad)
    return probe


def _node_ready_after(s: Session, host: str, since: dt.datetime | None) -> Callable[[], Awaitable[tuple[bool, str]]]:
    """The node Ready, as the kubelet reported after the restart (a status posted before it
    says nothing about the restarted kubelet). `since` None: the kubelet did not restart (only
    kube-proxy, say), and with node leases it posts its status only every few minutes when
    nothing changed, so Ready as it stands is the answer."""
    api = Api(s.p.spec, s.p.cd)

    async def probe() -> tuple[bool, str]:
        try:
            node = await asyncio.to_thread(api.get, f"/api/v1/nodes/{host}")
        except OperationError as e:
            return False, str(e)
        ready = next((c for c in node.get("status", {}).get("conditions", []) if c.get("type") == "Ready"), {})
        beat = ready.get("lastHeartbeatTime", "")
        try:
            fresh = since is None or dt.datetime.fromisoformat(beat.replace("Z", "+00:00")) >= since
        except ValueError:
            fresh = False
        if ready.get("status") != "True":
            return False, f"node {host} is not Ready: {ready.get('reason', 'no Ready condition')}"
        return fresh, "" if fresh else f"node {host}: no status from the restarted kubelet yet"
    return probe


async def _uncordon(s: Session, hosts: list[str]) -> None:
    for h in hosts:
        if any(u in s.plans[h].restarts for u in DRAIN_ON):
            await _kubectl(s, "uncordon", h)
            s.progress(f"  {h}: uncordoned")


@dataclass(frozen=True)
class RollStep:
    """How one phase's restarts take turns."""

    before: Callable[[Session, list[str]], Awaitable[None]]  # the hosts about to restart
    healthy: Callable[[Session, str, dt.datetime], Callable[[], Awaitable[tuple[bool, str]]]] | None
    after: Callable[[Session, list[str]], Awaitable[None]] = _nothing  # once they are healthy
    what: str = ""  # the health awaited, in words


def _both(first, then):
    """A probe: `first`, then (once it held) `then`."""
    passed = False

    async def probe() -> tuple[bool, str]:
        nonlocal passed
        if not passed:
            ok, detail = await first()
            if not ok:
                return False, detail
            passed = True
        return await then()
    return probe


def _apiservers_here(s: Session, hosts: list[str]) -> list[str]:
    """Of `hosts`, those running an apiserver now (its own etcd member is its only one)."""
    return [h for h in hosts if "kube-apiserver.service" in s.p.desired[h].unit_names
            and "kube-apiserver.service" in s.facts[h].active_units]


async def _drain_local_apiservers(s: Session, hosts: list[str]) -> None:
    await _drain_apiservers(s, _apiservers_here(s, hosts))


def _etcd_then_apiserver(s: Session, host: str):
    """Its member healthy with a quorum; then, where an apiserver runs on it (drained before
    the restart), that apiserver ready and UP in every HAProxy again."""
    if host not in _apiservers_here(s, [host]):
        return _etcd_ok(s, host)
    return _both(_etcd_ok(s, host), _apiserver_ok(s, host))


ROLL: dict[Phase, RollStep] = {
    Phase.etcd: RollStep(_drain_local_apiservers, lambda s, h, _t: _etcd_then_apiserver(s, h),
                         what="its etcd member healthy with a quorum, its apiserver ready and UP in every HAProxy"),
    Phase.control_plane: RollStep(_drain_apiservers, lambda s, h, _t: _apiserver_ok(s, h),
                                  what="its apiserver /readyz and UP in every HAProxy"),
    Phase.load_balancer: RollStep(_nothing, lambda s, h, _t: _lb_ok(s, h),
                                  what="its HAProxy's view of every apiserver and the API through the LB"),
    Phase.worker: RollStep(_drain_workers,
                           lambda s, h, t: _node_ready_after(s, h, t if "kubelet.service" in s.plans[h].restarts
                                                             else None),
                           _uncordon, what="its node Ready (reported by the kubelet, if restarted)"),
}


async def _journals(s: Session, batch: list[str], phase: Phase, units: frozenset[str]) -> str:
    """The state and journal tail of the units a failed turn restarted: what says why."""
    parts = []
    for h in batch:
        here = _restarting_units(s, h, phase, units)
        if not here:
            continue
        try:
            parts.append(f"[{h}]\n" + await act.journal_tail(s.t[h], here))
        except OperationError as e:  # the host itself is the problem: the error above says so
            parts.append(f"[{h}] no journal: {e}")
    return "\n".join(parts)


def batches(hosts: list[str], size: int) -> list[list[str]]:
    return [hosts[i:i + size] for i in range(0, len(hosts), size)]


def vip_holder_last(s: Session, hosts: list[str], holder: str | None) -> list[str]:
    """The host holding the VIP restarts last: its keepalived restart moves the VIP, once."""
    return sorted(hosts, key=lambda h: h == holder)


RunHost = Callable[[str, "frozenset[str] | None"], Awaitable[None]]


async def activate_phase(s: Session, phase: Phase, run_host: RunHost, holder: str | None = None) -> None:
    """Carry out `phase` on every host: starts together, restarts in turns (ROLL), wave by
    wave (WAVES)."""
    step = ROLL.get(phase)
    plan = [(w, restarting(s, phase, w)) for w in waves(s, phase)] if step else []
    rolled = [h for h in s.names if any(h in hosts for _, hosts in plan)]
    await each_host(starting_only(s, phase, rolled), lambda h: run_host(h, None), s.opts.parallel)
    done: dict[str, frozenset[str]] = {h: frozenset() for h in rolled}
    for units, hosts in plan:
        if hosts:
            await _roll(s, phase, step, units, hosts, run_host, holder)
            for h in hosts:
                done[h] |= units
    # what the rolled hosts have besides their restarts (a unit to start in another wave)
    leftover = {h: frozenset(u.name for u in act.units_in(s.p.desired[h], phase)) - d for h, d in done.items()}
    await each_host([h for h in rolled if _has_work(s, h, phase, leftover[h])],
                    lambda h: run_host(h, leftover[h]), s.opts.parallel)


async def _roll(s: Session, phase: Phase, step: RollStep, units: frozenset[str], rolled: list[str],
                run_host: RunHost, holder: str | None) -> None:
    if phase is Phase.load_balancer:
        rolled = vip_holder_last(s, rolled, holder)
    size = s.opts.worker_batch if phase is Phase.worker else 1
    turns = batches(rolled, size)
    which = ", ".join(sorted({u.removesuffix(".service") for h in rolled
                              for u in _restarting_units(s, h, phase, units)}))
    s.progress(f"  rolling restart of {phase.value} ({which}) on {len(rolled)} host(s), "
               f"{size} at a time: {', '.join('+'.join(b) for b in turns)}")
    for i, batch in enumerate(turns):
        rest = [h for b in turns[i + 1:] for h in b]
        try:
            await step.before(s, batch)
            since = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
            t = time.monotonic()
            before = await each_host(batch, lambda h: _invocations(s, h, phase, units), s.opts.parallel)
            await each_host(batch, lambda h: run_host(h, units), s.opts.parallel)
            for h in batch:  # `restart --no-block` returned at once: the old process may still answer
                await wait_for(f"{h}: the restarted {phase.value} unit(s) running",
                               _restarted(s, h, phase, before[h], units), s.opts.timeout, _quiet)
            if step.healthy is not None:
                for h in batch:
                    await wait_for(f"{h}: {step.what}", step.healthy(s, h, since), s.opts.timeout, s.progress)
            await step.after(s, batch)
            s.progress(f"  {'+'.join(batch)}: back in {time.monotonic() - t:.1f} s")
        except (OperationError, TimeoutError) as e:
            journals = await _journals(s, batch, phase, units)
            raise RollFailed(
                f"phase {phase.value}: the rolling restart stopped at {'+'.join(batch)} (turn {i + 1} of "
                f"{len(turns)}): {e}" + (f"\nNot restarted yet (still on the previous configuration, their "
                                         f"new files in place; the next `hardway up` restarts them): "
                                         f"{', '.join(rest)}" if rest else "")
                + (f"\n{journals}" if journals else "")) from None


async def all_ready(s: Session) -> None:
    """Every apiserver back in every HAProxy's rotation: after a roll that was interrupted
    between `drain` and `ready` (HAProxy keeps that state until it restarts). Quiet: an HAProxy
    that is not running has nothing to put back."""
    servers = [n.name for n in s.p.spec.controllers]

    async def one(h: str) -> None:
        for server in servers:
            try:
                await lbstats.set_server_state(s.t[h], server, "ready")
            except OperationError:
                return
    await each_host(_haproxies(s), one, s.opts.parallel)


async def vip_holder(s: Session) -> str | None:
    """The host holding the load balancer's VIP now, if there is a VIP."""
    vip = s.p.spec.load_balancer.vip
    if vip is None:
        return None
    hosts = [n for n in s.names if "keepalived.service" in s.p.desired[n].unit_names]

    async def one(h: str) -> bool:
        try:
            r = await s.t[h].run(f"ip -o -4 addr show to {vip}/32", timeout=15)
        except OperationError:
            return False
        return r.rc == 0 and bool(r.out.strip())
    held = await each_host(hosts, one, s.opts.parallel)
    return next((h for h, yes in held.items() if yes), None)

__all__ = ["DRAIN_ON", "ROLL", "RollFailed", "activate_phase", "all_ready", "batches", "restarting", "vip_holder", "waves",
           "vip_holder_last"]
