"""etcd membership follows the spec's controllers: `up` adds a controller cluster.yaml gained
and removes one it lost, with a quorum throughout.

The running cluster's member list is the truth (read with etcdctl on a controller whose etcd
runs, as the etcd-admin identity the bundle installs there); the spec says what it should be.
`reconcile` (pure) compares them and refuses what would lose the quorum, before anything
changes. Then, in `up`'s order:

1. before any etcd starts: members etcd has that neither vote nor are wanted (an unstarted or
   learner leftover of an interrupted run) are removed (no vote, so no quorum changes); the
   new controller is added as a *learner* (`member add --learner`): it does not vote, so the
   quorum stays what it was however its start goes. Its etcd starts with
   `--initial-cluster-state=existing` and the members etcd has, itself included (render/etcd.py,
   membership.py records that it joined);
2. once started it is promoted to a voting member as soon as it has caught up with the leader
   (`member promote`, retried while etcd says it is not in sync yet);
3. after the control plane rolled onto the new member list (no apiserver uses the leaving
   member's etcd any more) and the load balancers were reloaded without it: each voting member
   the spec dropped, one at a time, unhealthy ones first, its quorum checked again with fresh
   health: its control-plane and load-balancer units are stopped and disabled (it serves
   nothing by then), leadership moves to another member if it leads (`move-leader`, as etcd
   does when it stops), then `member remove`, then its etcd is stopped and disabled.

One controller joins per `up`: etcd (3.4) takes one learner at a time, and a joining member's
initial cluster must be exactly the membership when it starts.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from ..errors import OperationError, UsageError
from ..membership import Membership
from ..render.common import BIN, ETCD_DATA, ETCD_PKI
from ..render.etcd import CLIENT_PORT, peer_url
from ..spec.model import ClusterSpec
from . import activate as act
from .health import wait_for
from .hostkeys import KnownHosts
from .hosts import each_host
from .transport import Result, Transport, connect_ssh

if TYPE_CHECKING:  # up.Session: up.py imports this module, not the other way round
    from .up import Session

Progress = Callable[[str], None]

# What a removed controller ran, stopped and disabled before its member leaves etcd (etcd.service
# after): the load balancer first, so a VIP moves away before the apiserver behind it stops.
CONTROLLER_UNITS = ("keepalived.service", "haproxy.service", "kube-apiserver.service",
                    "kube-controller-manager.service", "kube-scheduler.service")
PROMOTE_NOT_READY = ("in sync with leader", "learner not ready")  # etcd: ErrLearnerNotReady
NOT_A_LEARNER = "can only promote a learner member"  # etcd: ErrMemberNotLearner (promoted already)


def quorum(voters: int) -> int:
    return voters // 2 + 1


@dataclass(frozen=True)
class Member:
    """One entry of `etcdctl member list -w json`."""

    id: int
    name: str  # "" until the member has started once
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...] = ()
    learner: bool = False

    @property
    def started(self) -> bool:
        return bool(self.name)

    @property
    def hex_id(self) -> str:
        return format(self.id, "x")  # how etcdctl takes member IDs

    @property
    def address(self) -> str:
        return (urlsplit(self.peer_urls[0]).hostname or "") if self.peer_urls else ""

    @property
    def label(self) -> str:
        return f"{self.name or '(not started)'} ({self.address or self.hex_id})"


def parse_members(text: str) -> list[Member]:
    try:
        data = json.loads(text)
        return [Member(int(m["ID"]), m.get("name", ""), tuple(m.get("peerURLs") or ()),
                       tuple(m.get("clientURLs") or ()), bool(m.get("isLearner", False)))
                for m in data.get("members", [])]
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise OperationError(f"etcdctl member list: unexpected output ({e}): {text[:300]!r}") from None


def parse_health(text: str) -> set[str]:
    """The client URLs `etcdctl endpoint health --cluster -w json` found healthy."""
    try:
        return {e["endpoint"] for e in json.loads(text) if e.get("health")}
    except (ValueError, KeyError, TypeError, AttributeError):
        raise OperationError(f"etcdctl endpoint health: unexpected output: {text[:300]!r}") from None


def parse_leader(text: str) -> int:
    """The leader's member ID from `etcdctl endpoint status -w json`."""
    try:
        return int(json.loads(text)[0]["Status"]["leader"])
    except (ValueError, KeyError, TypeError, IndexError):
        raise OperationError(f"etcdctl endpoint status: unexpected output: {text[:300]!r}") from None


@dataclass(frozen=True)
class Wanted:
    name: str
    peer_url: str
    address: str


def wanted(spec: ClusterSpec) -> list[Wanted]:
    return [Wanted(n.name, peer_url(n), str(n.address)) for n in spec.etcd_members]


@dataclass
class Changes:
    join: Wanted | None = None  # the controller that joins in this run
    add: bool = False  # etcd does not know it yet (else an interrupted run added it already)
    promote: list[str] = field(default_factory=list)  # peer URLs of learners to promote once started
    drop_early: list[Member] = field(default_factory=list)  # leaving, and voting for nobody
    remove: list[Member] = field(default_factory=list)  # leaving voters, in removal order

    @property
    def empty(self) -> bool:
        return not (self.join or self.promote or self.drop_early or self.remove)

    def describe(self) -> list[str]:
        out = [f"remove {m.label} (not in cluster.yaml, votes for nothing) before anything starts"
               for m in self.drop_early]
        if self.join:
            out.append((f"add {self.join.name} ({self.join.peer_url}) as a learner, " if self.add else
                        f"start {self.join.name}, added to etcd by an earlier run, ")
                       + "start it as `existing`, promote it once it has caught up")
        out += [f"promote the learner at {u} once it has caught up" for u in self.promote
                if not self.join or u != self.join.peer_url]
        out += [f"remove {m.label} after the control plane and load balancers no longer use it: its "
                "units stopped and disabled" for m in self.remove]
        return out


def reconcile(live: list[Member], want: list[Wanted], healthy: set[int]) -> Changes:
    """What to change so that etcd's members are the spec's controllers (`plan_changes`), refusing
    anything that would leave fewer healthy voters than a quorum (`check_quorum`)."""
    ch = plan_changes(live, want, healthy)
    if not ch.empty:
        check_quorum(live, healthy, ch)
    return ch


def plan_changes(live: list[Member], want: list[Wanted], healthy: set[int] | None = None) -> Changes:
    """The changes, in order; refuses an address or name change of a member (that is `etcdctl
    member update`) and more than one controller joining at once. `healthy` (member IDs) orders
    the removals, dead ones first."""
    healthy = healthy or set()
    by_url = {u: m for m in live for u in m.peer_urls}
    by_name = {m.name: m for m in live if m.started}
    ch = Changes()
    joining: list[tuple[Wanted, bool]] = []
    matched: set[int] = set()
    for w in want:
        m = by_url.get(w.peer_url)
        if m is None:
            other = by_name.get(w.name)
            if other is not None:
                raise UsageError(
                    f"{w.name}: etcd knows this member at {', '.join(other.peer_urls)} and cluster.yaml gives "
                    f"it {w.peer_url}: a member's address changes with `etcdctl member update`, which hardway "
                    f"does not run yet; put {w.name}'s old address back in cluster.yaml")
            joining.append((w, True))
            continue
        matched.add(m.id)
        if m.started and m.name != w.name:
            raise UsageError(f"{w.name}: the etcd member at {w.peer_url} is named {m.name!r}: cluster.yaml names "
                             f"it {w.name!r}; give the node its old name back (etcd member names do not change)")
        if not m.started:
            joining.append((w, False))
        if m.learner:
            ch.promote.append(w.peer_url)
    if len(joining) > 1:
        names = ", ".join(w.name for w, _ in joining)
        raise UsageError(f"cluster.yaml adds {len(joining)} etcd members ({names}); one controller joins per "
                         "`hardway up` (etcd admits one learner at a time, and a joining member must start "
                         f"with the exact membership): leave all but {joining[0][0].name} out of cluster.yaml, "
                         "run `hardway up`, then add the next")
    if joining:
        ch.join, ch.add = joining[0]
    leaving = [m for m in live if m.id not in matched]
    ch.drop_early = [m for m in leaving if m.learner or not m.started]
    # Unhealthy first: removing a dead member raises the cluster's tolerance, a live one lowers it.
    ch.remove = sorted((m for m in leaving if m not in ch.drop_early), key=lambda m: m.id in healthy)
    return ch


def check_quorum(live: list[Member], healthy: set[int], ch: Changes) -> None:
    voters = [m for m in live if not m.learner]
    up = [m for m in voters if m.id in healthy]
    if len(up) < quorum(len(voters)):
        down = ", ".join(m.label for m in voters if m.id not in healthy)
        raise OperationError(
            f"etcd has no quorum: {len(up)} of {len(voters)} voting member(s) healthy, {quorum(len(voters))} "
            f"needed (not healthy: {down}); its membership cannot change now. Bring those members back "
            "(`hardway verify` names them), then run `hardway up` again")
    # After the steps before it: leftovers gone, the joiner promoted (a healthy voter).
    ids = {m.id for m in voters} - {m.id for m in ch.drop_early}
    good = {i for i in ids if i in healthy}
    if ch.join:
        ids, good = ids | {-1}, good | {-1}
    for m in ch.remove:
        check_removal(m, ids, good, {v.id: v for v in voters})
        ids, good = ids - {m.id}, good - {m.id}


def check_removal(m: Member, voters: set[int], healthy: set[int], known: dict[int, Member]) -> None:
    rest, rest_good = voters - {m.id}, healthy - {m.id}
    if not rest:
        raise UsageError(f"{m.label} is etcd's last voting member: a cluster needs one; add its successor "
                         "to cluster.yaml first (`hardway up` adds it), then remove this one")
    if len(rest_good) < quorum(len(rest)):
        down = ", ".join(known[i].label for i in rest - rest_good if i in known)
        only = " (it is the only healthy one)" if m.id in healthy and not rest_good else ""
        raise OperationError(
            f"removing {m.label}{only} would leave {len(rest_good)} healthy of {len(rest)} voting member(s), "
            f"and a quorum needs {quorum(len(rest))}" + (f"; not healthy: {down}" if down else "")
            + ". Nothing was removed: bring the unhealthy members back first, or keep this one in cluster.yaml")


# ---------------------------------------------------------------------------------------------
# etcdctl on a controller


@dataclass(frozen=True)
class Etcdctl:
    """etcdctl as a controller runs it: its own member's client URL, the etcd-admin identity."""

    program: str = f"{BIN}/etcdctl"
    pki: str = ETCD_PKI

    def script(self, endpoint: str, *args: str, command_timeout: int = 15) -> str:
        return "ETCDCTL_API=3 exec " + shlex.join([
            self.program, f"--endpoints={endpoint}", f"--cacert={self.pki}/ca.crt",
            f"--cert={self.pki}/etcdctl.crt", f"--key={self.pki}/etcdctl.key",
            "--dial-timeout=3s", f"--command-timeout={command_timeout}s", *args])


ETCDCTL = Etcdctl()


async def etcdctl(t: Transport, endpoint: str, *args: str, ctl: Etcdctl | None = None, check: bool = True,
                  command_timeout: int = 15) -> Result:
    r = await t.run((ctl or ETCDCTL).script(endpoint, *args, command_timeout=command_timeout), timeout=60)
    if check and r.rc != 0:
        raise OperationError(f"{t.node}: `etcdctl {' '.join(args)}` failed (exit {r.rc}): "
                             f"{(r.err or r.out).strip()[-600:]}")
    return r


async def list_members(t: Transport, endpoint: str, ctl: Etcdctl | None = None) -> list[Member]:
    return parse_members((await etcdctl(t, endpoint, "member", "list", "-w", "json", ctl=ctl)).out)


async def healthy_members(t: Transport, endpoint: str, live: list[Member], ctl: Etcdctl | None = None) -> set[int]:
    """The IDs of the members whose client URL answers a read (`endpoint health --cluster`:
    exit 1 when any does not, with every verdict on stdout). A learner serves no reads: never
    healthy here, and it votes for nothing anyway."""
    # A dead member costs this timeout: short. No verdicts at all (this endpoint is down): raises.
    r = await etcdctl(t, endpoint, "endpoint", "health", "--cluster", "-w", "json", ctl=ctl, check=False,
                      command_timeout=4)
    ok = parse_health(r.out)
    return {m.id for m in live if m.client_urls and all(u in ok for u in m.client_urls)}


# ---------------------------------------------------------------------------------------------
# in `up`


@dataclass
class Survey:
    live: list[Member]
    healthy: set[int]
    via: list[str]  # controllers whose etcd runs, in spec order: etcdctl runs on these
    changes: Changes

    def membership(self, before: Membership, spec: ClusterSpec) -> Membership:
        """The record rendering reads, after this run: who joined (the joiner now too, names no
        longer in the spec dropped), and for the joiner the voters still to be removed."""
        names = {n.name for n in spec.etcd_members}
        joined = (before.joined & names) | ({self.changes.join.name} if self.changes.join else set())
        leaving = tuple((m.name or f"member-{m.hex_id}", m.peer_urls[0]) for m in self.changes.remove
                        if m.peer_urls) if self.changes.join else ()
        return Membership(frozenset(joined), leaving)


def _endpoint(s: Session, name: str) -> str:
    return f"https://{s.p.spec.node(name).address}:{CLIENT_PORT}"


async def _on_any(s: Session, via: list[str], fn, what: str):
    """`fn(transport, endpoint)` on the first controller of `via` where it works."""
    errors = []
    for name in via:
        try:
            return await fn(s.t[name], _endpoint(s, name))
        except OperationError as e:
            errors.append(str(e))
    raise OperationError(f"etcd: {what} failed on every controller whose etcd runs:\n  "
                         + "\n  ".join(errors))


async def survey(s: Session) -> Survey | None:
    """Read etcd's members and plan the changes (refusing the unsafe ones); None when etcd runs
    on no controller (a new cluster: every member starts as `new`)."""
    spec = s.p.spec
    names = [n.name for n in spec.etcd_members]
    via = [n for n in names if "etcd.service" in s.facts[n].active_units]
    if not via:
        await _refuse_partial_data(s, names)
        return None
    live = await _on_any(s, via, list_members, "member list")
    healthy: set[int] = set()
    if not plan_changes(live, wanted(spec)).empty:  # health only matters for a change (a no-op saves the trip)
        healthy = await _on_any(s, via, lambda t, e: healthy_members(t, e, live), "endpoint health")
    changes = reconcile(live, wanted(spec), healthy)
    if changes.join and changes.add:
        _require_learners(spec, changes.join.name)
        await _refuse_old_data(s, changes.join.name)
    sv = Survey(live, healthy, via, changes)
    for line in changes.describe():
        s.progress(f"etcd membership: {line}")
    return sv


# etcd's --strict-reconfig-check (on by default) refuses a membership change until every voting
# member has been connected to the leader for 5 s (ErrUnhealthy): after a member's (re)start.
RECONFIG_LATER = "unhealthy cluster"


async def _reconfigure(s: Session, via: list[str], what: str, args: tuple[str, ...]) -> Result:
    """`etcdctl member add/remove`, tried again while etcd says the cluster is not steady yet."""
    done: list[Result] = []

    async def one(t: Transport, endpoint: str) -> Result:
        r = await etcdctl(t, endpoint, *args, check=False)
        if r.rc != 0 and RECONFIG_LATER not in r.err + r.out:  # another error: try the next controller
            raise OperationError(f"{t.node}: `etcdctl {' '.join(args)}` failed (exit {r.rc}): "
                                 f"{(r.err or r.out).strip()[-600:]}")
        return r

    async def probe() -> tuple[bool, str]:
        r = await _on_any(s, via, one, f"etcdctl {' '.join(args)}")
        if r.rc == 0:
            done.append(r)
            return True, ""
        return False, f"etcd: {(r.err or r.out).strip().splitlines()[-1]} (a member connected less than 5 s ago)"

    await wait_for(f"etcd: {what}", probe, s.opts.timeout, s.progress, interval=1)
    return done[0]


def _require_learners(spec: ClusterSpec, name: str) -> None:
    major, minor = (int(x) for x in spec.artifacts.versions.etcd.split(".")[:2])
    if (major, minor) < (3, 4):
        raise UsageError(f"{name} joins a running etcd {spec.artifacts.versions.etcd} cluster: hardway adds a "
                         "member as a learner (no vote until it has caught up, so the quorum holds), which needs "
                         "etcd 3.4 or later: upgrade etcd first (artifacts.versions.etcd)")


DATA_PROBE = f"test -e {shlex.quote(ETCD_DATA)}/member && echo data || true"


async def _refuse_old_data(s: Session, name: str) -> None:
    r = await s.t[name].run(DATA_PROBE, timeout=30)
    if r.out.strip() == "data":
        raise OperationError(
            f"{name} joins etcd but already has etcd data ({ETCD_DATA}/member) from an earlier membership: a "
            f"member started from it would not join (etcd remembers a removed member's ID). Nothing was changed. "
            f"Clear it on {name} first (`systemctl disable --now etcd; rm -rf {ETCD_DATA}/member`), then run "
            "`hardway up` again")


async def _refuse_partial_data(s: Session, names: list[str]) -> None:
    """etcd runs nowhere: a new cluster, or a stopped one. A controller without data among
    controllers with data would try to form a cluster of its own: refused."""
    found = await each_host(names, lambda n: s.t[n].run(DATA_PROBE, timeout=30), s.opts.parallel)
    have = [n for n in names if found[n].out.strip() == "data"]
    if have and len(have) < len(names):
        fresh = [n for n in names if n not in have]
        raise OperationError(
            f"etcd runs on no controller, so its members cannot be read, and {', '.join(fresh)} would start without "
            f"data beside {', '.join(have)}, which have some: it would not join them. Nothing was changed. Leave "
            f"{', '.join(fresh)} out of cluster.yaml and run `hardway up` (it starts the existing members), then "
            "add it back")


async def before_start(s: Session, sv: Survey) -> None:
    """Leftovers that vote for nothing out, the joiner in as a learner: before any etcd starts."""
    ch = sv.changes
    for m in ch.drop_early:
        await _reconfigure(s, sv.via, f"{m.label} removed", ("member", "remove", m.hex_id))
        s.progress(f"etcd: removed {m.label} (not in cluster.yaml, voting for nothing)")
    if ch.join and ch.add:
        w = ch.join
        r = await _reconfigure(s, sv.via, f"{w.name} added as a learner",
                               ("member", "add", w.name, f"--peer-urls={w.peer_url}", "--learner", "-w", "json"))
        try:
            new_id = format(int(json.loads(r.out)["member"]["ID"]), "x")
        except (ValueError, KeyError, TypeError):
            new_id = "?"
        s.progress(f"etcd: {w.name} added as learner {new_id} ({w.peer_url}); it starts as `existing`")
        ch.promote.append(w.peer_url)


async def promote(s: Session, sv: Survey) -> None:
    """Each learner of the spec a voting member, once it has caught up with the leader."""
    for url in sv.changes.promote:
        await _promote(s, sv, url, next((w.name for w in wanted(s.p.spec) if w.peer_url == url), url))


async def _promote(s: Session, sv: Survey, url: str, name: str) -> None:
    async def probe() -> tuple[bool, str]:
        live = await _on_any(s, sv.via, list_members, "member list")
        m = next((m for m in live if url in m.peer_urls), None)
        if m is None:
            raise OperationError(f"etcd: the member at {url} ({name}) is gone from the member list")
        if not m.learner:
            return True, ""
        if not m.started:
            if name in s.t:  # a joiner whose etcd will not start: say so now, not after the timeout
                try:
                    states = await act.unit_states(s.t[name], ["etcd.service"])
                except OperationError:  # no verdict (busy, or no systemd): keep waiting
                    states = {}
                bad = act.given_up(states, {u: (st, 0) for u, (st, _n) in states.items()})
                if bad:
                    raise OperationError(f"etcd: {name} does not start ({'; '.join(bad.values())}); it stays a "
                                         f"learner (no vote: the quorum is as before)\n[{name}]\n"
                                         + await act.journal_tail(s.t[name], ["etcd.service"]))
            return False, f"{name} has not started yet"
        r = await _on_any(s, sv.via, lambda t, e: etcdctl(t, e, "member", "promote", m.hex_id, check=False),
                          "member promote")
        said = (r.err or r.out).strip()
        if r.rc == 0 or NOT_A_LEARNER in said and "in sync" not in said:
            return True, ""
        if any(p in said for p in PROMOTE_NOT_READY):
            return False, f"{name} not caught up yet: {said[-200:]}"
        raise OperationError(f"etcd: `member promote {m.hex_id}` ({name}) failed: {said[-400:]}")

    try:
        await wait_for(f"etcd: {name} caught up and promoted to a voting member", probe, s.opts.timeout, s.progress)
    except TimeoutError as e:
        journal = await act.journal_tail(s.t[name], ["etcd.service"]) if name in s.t else ""
        raise OperationError(f"{e}\nIt stays a learner (no vote: the quorum is as before); the next "
                             f"`hardway up` tries again.\n[{name}]\n{journal}".rstrip()) from None


async def remove_leaving(s: Session, sv: Survey) -> None:
    """Each voting member the spec dropped, one at a time, its quorum checked with fresh health
    first: its units stopped (it serves nothing now), `member remove`, its etcd stopped."""
    for m in sv.changes.remove:
        via = sv.via  # controllers of the spec: never the one leaving
        live = await _on_any(s, via, list_members, "member list")
        current = next((x for x in live if x.id == m.id), None)
        if current is None:
            s.progress(f"etcd: {m.label} is no longer a member")
            continue
        healthy = await _on_any(s, via, lambda t, e, live=live: healthy_members(t, e, live), "endpoint health")
        voters = {x.id: x for x in live if not x.learner}
        check_removal(current, set(voters), healthy & set(voters), voters)
        t, why = await _connect(s, m)
        try:
            if t is not None:
                stopped = await _stop(t, CONTROLLER_UNITS)
                s.progress(f"  {m.name}: stopped and disabled {', '.join(stopped) or 'nothing (no such units)'}")
            await _move_leadership(s, via, current, (healthy & set(voters)) - {m.id})
            await _reconfigure(s, via, f"{m.label} removed", ("member", "remove", m.hex_id))
            left = len(live) - 1
            s.progress(f"etcd: removed {m.label}; {left} member(s) left")
            if t is not None:
                await _stop(t, ("etcd.service",))
                s.progress(f"  {m.name}: etcd stopped and disabled. hardway's files stay on the machine "
                           "(`hardway reset` is to remove them); retire or wipe it")
            else:
                s.progress(f"  {m.name}: not reached ({why}): its units were NOT stopped. Stop and disable "
                           "etcd, kube-apiserver, kube-controller-manager, kube-scheduler (and haproxy, "
                           "keepalived) there before it comes back, or wipe the machine")
        finally:
            if t is not None:
                await t.close()


async def _move_leadership(s: Session, via: list[str], m: Member, others: set[int]) -> None:
    """A leaving leader hands leadership to a healthy voter first (as etcd does when it stops):
    removed while leading, it would leave the cluster without a leader until an election."""
    r = await _on_any(s, via, lambda t, e: etcdctl(t, e, "endpoint", "status", "-w", "json"), "endpoint status")
    if parse_leader(r.out) != m.id or not others or not m.client_urls:
        return
    target = min(others)
    await _on_any(s, via, lambda t, _e: etcdctl(t, m.client_urls[0], "move-leader", format(target, "x")),
                  f"move-leader {format(target, 'x')}")
    s.progress(f"etcd: leadership moved from {m.label} to member {format(target, 'x')} before its removal")


async def _connect(s: Session, m: Member) -> tuple[Transport | None, str]:
    """A connection to a member's host, which the spec no longer lists: its address from etcd,
    the spec's SSH settings, the host key as recorded (lab or DIR/known_hosts)."""
    ssh = s.p.spec.ssh
    try:
        return await connect_ssh(m.name or m.address, m.address, ssh.user or "root", ssh.port or 22, ssh.key,
                                 KnownHosts(s.p.cd.root, s.progress)), ""
    except OperationError as e:
        return None, str(e)


def stop_script(units: tuple[str, ...]) -> str:
    """Stop and disable each of `units` that exists on the host; print those. A unit whose
    program exits non-zero on SIGTERM (kube-apiserver may, when its etcd member goes away
    at once) is then `failed`: that state is cleared, since hardway stopped it on purpose."""
    return "".join(f"if systemctl cat {u} >/dev/null 2>&1; then systemctl disable -q --now {u} && "
                   f"{{ systemctl reset-failed {u} 2>/dev/null || true; }} && echo {u}; fi\n"
                   for u in map(shlex.quote, units))


async def _stop(t: Transport, units: tuple[str, ...]) -> list[str]:
    r = await t.run(stop_script(units), timeout=120)
    if r.rc != 0:
        raise OperationError(f"{t.node}: stopping {', '.join(units)} failed: {(r.err or r.out).strip()[-400:]}")
    return r.out.split()


__all__ = ["Changes", "Etcdctl", "Member", "Survey", "Wanted", "before_start", "check_quorum", "check_removal",
           "healthy_members", "list_members", "parse_members", "plan_changes", "promote", "quorum", "reconcile", "remove_leaving",
           "survey", "wanted"]
