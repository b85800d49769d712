"""`hardway up` and `hardway diff`: spec -> material -> bundles -> artifacts -> facts -> plan ->
push -> activate, phase by phase across the cluster, each phase ending in a health wait.

Phases (each parallel across its hosts): host settings -> etcd (every member healthy) ->
control plane (every apiserver /readyz) -> load balancer (every apiserver UP in HAProxy's own
view, and the API answering through it) ->
cluster objects (RBAC, add-ons) -> workers (every kubelet registered) -> nodes Ready.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..artifacts.fetch import Fetched, fetch_for_spec
from ..artifacts.oci import image_refs
from ..clusterdir import ClusterDir
from ..errors import OperationError, UsageError
from ..fsio import write_atomic
from ..kubectl import kubectl
from ..lab.state import state_path
from ..lock import cluster_lock
from ..material import Material, current_material
from ..membership import Membership, load_membership, save_membership
from ..render import render_cluster
from ..render.bundle import ClusterBundle, Phase
from ..render.lb import HAPROXY_CA, HAPROXY_CRT, HAPROXY_TIMING
from ..render.worker import kubelet_refuses_cgroup_v1
from ..spec.load import load_spec
from ..spec.model import APISERVER_PORT, ClusterSpec, Role
from ..spec.presets import require_lab_profile
from . import activate as act
from . import lbstats, members, roll, upgrade
from .desired import BACKUP_DIR, MANIFEST, Desired, desired_for, file_sha256
from .facts import gather
from .health import Api, Identity, apiserver_ready, etcd_health, identity, wait_for
from .plan import Facts, HostPlan, describe, plan_for, summary
from .push import push
from .hosts import Options, connect_all, each_host
from .transport import Transport

Progress = Callable[[str], None]
MANIFESTS_RECORD = ("kube-system", "hardway-applied-manifests")  # ConfigMap: sha256 of what was applied


def _quiet(_msg: str) -> None:
    pass


@dataclass
class UpReport:
    plans: dict[str, HostPlan]
    phase_seconds: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    changed: bool = False
    manifests_applied: bool = False
    hosts_touched: bool = False  # the run got as far as changing a host (push, etcd membership)


@dataclass
class Prepared:
    spec: ClusterSpec
    cd: ClusterDir
    cluster: ClusterBundle
    fetched: Fetched
    desired: dict[str, Desired]
    material: Material
    images: dict[str, tuple[Path, list[str]]]
    membership: Membership  # what the bundles were rendered with (membership.py)

    def rerender(self, membership: Membership) -> None:
        """The bundles again, for the etcd membership this run makes (members.py)."""
        self.membership = membership
        self.cluster = render_cluster(self.spec, self.material, membership)
        self.desired = {name: desired_for(b, self.fetched.binaries(b.binaries), self.images)
                        for name, b in self.cluster.nodes.items()}


def prepare(directory: Path, progress: Progress, command: str = "up", reissue: tuple[str, ...] = (),
            etcd_token: str = "") -> Prepared:
    """`etcd_token`: render with this etcd cluster token instead of the recorded one (a restore
    renders the members it is about to make before it records their token)."""
    cd = ClusterDir.at(directory)
    spec = load_spec(cd.spec).spec
    report, material = current_material(cd, spec, command, reissue)
    if etcd_token:
        material = replace(material, etcd_token=etcd_token)
    if report.all_written:
        progress(f"pki: wrote {len(report.all_written)} file(s) in {cd.root}")
    membership = load_membership(cd)
    cluster = render_cluster(spec, material, membership)
    fetched = fetch_for_spec(spec, cd.root, progress)
    images: dict[str, tuple[Path, list[str]]] = {}
    for entry in spec.artifacts.images:
        path = fetched.files[f"image/{entry}"]
        try:
            refs, why = image_refs(path), "it names no image (index.json annotation io.containerd.image.name)"
        except ValueError as e:
            refs, why = [], str(e)
        if not refs:
            raise UsageError(f"spec.artifacts.images: {entry}: {path} is not an OCI image tarball with "
                             f"an image name: {why}")
        images[entry] = (path, refs)
    desired = {name: desired_for(b, fetched.binaries(b.binaries), images) for name, b in cluster.nodes.items()}
    # The operator's kubectl: the same version as the cluster, beside its kubeconfig.
    kubectl = fetched.binary("kubernetes-server", "kubectl")
    target = cd.kubectl
    if not target.exists() or file_sha256(target) != file_sha256(kubectl):
        write_atomic(target, kubectl.read_bytes(), 0o755)
    return Prepared(spec, cd, cluster, fetched, desired, material, images, membership)


def _check_facts(facts: dict[str, Facts], desired: dict[str, Desired], spec: ClusterSpec) -> None:
    problems = []
    no_cgroup_v1 = kubelet_refuses_cgroup_v1(spec)
    for name, f in facts.items():
        if no_cgroup_v1 and f.cgroup_version == 1 and Role.worker.value in desired[name].bundle.roles:
            problems.append(f"{name}: cgroup v1 (/sys/fs/cgroup is not cgroup2fs), and Kubernetes "
                            f"{spec.minor}'s kubelet refuses to start on cgroup v1 (KubeletConfiguration "
                            "failCgroupV1, true by default from 1.35): boot the host with cgroup v2 "
                            "(kernel parameter systemd.unified_cgroup_hierarchy=1), or set "
                            "kubelet.failCgroupV1: false in cluster.yaml (as `init --lab` does)")
        missing = [p for p in desired[name].bundle.packages if p not in f.packages]
        if missing:
            problems.append(f"{name}: Debian package(s) {', '.join(missing)} not installed; hardway does not "
                            f"install packages yet: `apt-get install {' '.join(missing)}` on the node first")
        if not f.systemd:
            problems.append(f"{name}: no systemctl: hardway's units need systemd as the init system")
        if f.arch and f.arch not in ("x86_64", "amd64"):
            problems.append(f"{name}: architecture {f.arch}; the artifacts fetched are for amd64")
    if problems:
        raise OperationError("hosts not usable:\n" + "\n".join(f"  - {p}" for p in problems))


def _refuse_foreign(plans: dict[str, HostPlan]) -> None:
    """Exit 1, like any host that is not usable as it is: the request is valid, the hosts hold
    files that are not hardway's to replace. Nothing has been changed anywhere yet."""
    found = [f"  - {name}: {path}" for name, p in plans.items() for path in p.foreign]
    if found:
        raise OperationError(
            f"{len(found)} file(s) exist that hardway does not own (absent from the node's {MANIFEST}) and "
            "that differ from what it would write:\n" + "\n".join(found) + "\nNothing was changed. Move "
            "them away, or run `hardway up --adopt`: it keeps each original under "
            f"{BACKUP_DIR}/<path> on its node (for a later reset) and then replaces it.")


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


class Session:
    """One run against the cluster: open connections, facts, plans."""

    def __init__(self, p: Prepared, opts: Options, progress: Progress) -> None:
        self.p, self.opts, self.progress = p, opts, progress
        self.t: dict[str, Transport] = {}
        self.facts: dict[str, Facts] = {}
        self.plans: dict[str, HostPlan] = {}
        self.members: members.Survey | None = None  # etcd's members and the changes to make

    @property
    def names(self) -> list[str]:
        return list(self.p.desired)

    def plans_touch(self, unit: str) -> bool:
        """Whether this run starts, restarts or reloads `unit` anywhere."""
        return any(unit in p.starts or unit in p.restarts or unit in p.reloads for p in self.plans.values())

    async def open(self) -> None:
        self.t = await connect_all(self.p.spec, self.p.cd, self.names, self.opts, self.progress)

    async def gather_and_plan(self) -> None:
        self.facts = await each_host(self.names, lambda n: gather(self.t[n], self.p.desired[n]), self.opts.parallel)
        _check_facts(self.facts, self.p.desired, self.p.spec)
        # etcd's members decide how a joining controller's etcd first starts: read them before
        # planning (facts cover the same paths whatever the membership renders into them).
        self.members = await members.survey(self)
        if self.members is not None:
            wanted = self.members.membership(self.p.membership, self.p.spec)
            if wanted != self.p.membership:
                self.p.rerender(wanted)
        for name, d in self.p.desired.items():
            self.plans[name] = plan_for(d, self.facts[name], self.opts.adopt)

    async def close(self) -> None:
        await asyncio.gather(*(t.close() for t in self.t.values()), return_exceptions=True)


async def _run_with_session(p: Prepared, opts: Options, progress: Progress,
                            body: Callable[[Session], Awaitable]) -> None:
    s = Session(p, opts, progress)
    try:
        await s.open()
        await s.gather_and_plan()
        await body(s)
    finally:
        await s.close()


def diff(directory: str | Path = ".", progress: Progress = _quiet, opts: Options | None = None) -> dict[str, HostPlan]:
    """What `up` would change on each host, changing nothing."""
    load_spec(ClusterDir.at(directory).spec)  # a missing or invalid spec says so before the lock
    with cluster_lock(directory, "diff"):
        p = prepare(Path(directory), progress, "diff")
        out: dict[str, HostPlan] = {}

        async def body(s: Session) -> None:
            out.update(s.plans)

        asyncio.run(_run_with_session(p, opts or Options(), progress, body))
    return out


# ---------------------------------------------------------------------------------------------
# up


class PhaseFailed(OperationError):
    pass


async def _phase_hosts(s: Session, phase: Phase) -> None:
    """The phase on every host: starts together, restarts of running units in turns (roll.py)."""
    async def one(name: str, only: frozenset[str] | None = None) -> None:
        try:
            done = await act.activate(s.t[name], s.p.desired[name], s.plans[name], phase, only)
        except OperationError as e:
            raise PhaseFailed(f"phase {phase.value}: {e}") from None
        if done:
            s.progress(f"  {name}: {', '.join(done)}")

    holder = await roll.vip_holder(s) if phase is Phase.load_balancer else None
    try:
        await roll.activate_phase(s, phase, one, holder)
    except roll.RollFailed as e:
        raise PhaseFailed(str(e)) from None


SETTLE_SECONDS = 20
VRRP_SETTLE = 8.0  # check script rise (2 x 2 s) + VRRP master-down interval (~3.6 s)


async def _settled(s: Session, phase: Phase) -> None:
    """Every unit of the phase is running, and none started now has crashed since: a unit the
    health waits do not cover (kube-proxy, the scheduler) cannot fail unnoticed."""
    hosts = [n for n in s.names if act.units_in(s.p.desired[n], phase)]
    if not any(s.plans_touch(u.name) for n in hosts for u in act.units_in(s.p.desired[n], phase)):
        return  # nothing of this phase (re)started: facts saw every unit of it running just now

    seen: dict[str, dict] = {}
    bad_units: dict[str, dict[str, str]] = {}

    async def probe() -> tuple[bool, str]:
        async def one(name: str) -> None:
            units = [u.name for u in act.units_in(s.p.desired[name], phase)]
            touched = set(s.plans[name].starts) | set(s.plans[name].restarts) | set(s.plans[name].reloads)
            states = await act.unit_states(s.t[name], units)
            bad_units[name] = act.unsettled(states, touched, seen.get(name))
            seen[name] = states
        await each_host(hosts, one, s.opts.parallel)
        return not _said(bad_units), _said(bad_units)

    try:  # the same poll loop as the health waits, quietly: a settled phase says nothing
        await wait_for(f"the {phase.value} units running", probe, SETTLE_SECONDS, _quiet, interval=3)
    except TimeoutError as e:
        raise PhaseFailed(f"phase {phase.value}: {e}\n{await _journals(s, bad_units)}".rstrip()) from None


def _said(bad: dict[str, dict[str, str]]) -> str:
    """host -> unit -> what is wrong, in one line."""
    return "; ".join(f"{n}: {why}" for n, units in bad.items() for why in units.values())


def _units_on(s: Session, name: str, units: list[str]) -> list[str]:
    return [u for u in units if u in s.p.desired[name].unit_names]


async def _journals(s: Session, units: dict[str, list[str]] | dict[str, dict[str, str]]) -> str:
    """The state and journal tail of each host's given units, for a failure report."""
    parts = []
    for name, these in units.items():
        have = _units_on(s, name, list(these))
        if have:
            parts.append(f"[{name}]\n" + await act.journal_tail(s.t[name], have))
    return "\n".join(parts)


UNIT_WATCH_INTERVAL = 5.0


async def _units_given_up(s: Session, hosts: list[str], units: list[str]) -> dict[str, dict[str, str]]:
    """Poll the units a wait depends on until one has failed or keeps crashing; then return
    them (host -> unit -> why): the wait is hopeless, its timeout not worth sitting out."""
    baseline: dict[str, dict[str, tuple[str, int]]] = {}

    async def one(name: str) -> dict[str, str]:
        have = _units_on(s, name, units)
        if not have:
            return {}
        try:
            states = await act.unit_states(s.t[name], have)
        except OperationError:  # the host is busy or unreachable: the wait itself will tell
            return {}
        baseline.setdefault(name, states)
        return act.given_up(states, baseline[name])

    while True:
        # First look after one interval: most waits (every one of a no-op `up`) are over by
        # then, and cost no SSH round trip for this.
        await asyncio.sleep(UNIT_WATCH_INTERVAL)
        found = {n: bad for n, bad in (await each_host(hosts, one, s.opts.parallel)).items() if bad}
        if found:
            return found


async def _wait(s: Session, phase: str, what: str, probe, hosts: list[str], units: list[str],
                stable: float = 0) -> None:
    waiting = asyncio.ensure_future(wait_for(what, probe, s.opts.timeout, s.progress, stable=stable))
    watching = asyncio.ensure_future(_units_given_up(s, hosts, units))
    try:
        await asyncio.wait([waiting, watching], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (waiting, watching):
            task.cancel()
        await asyncio.gather(waiting, watching, return_exceptions=True)
    if waiting.done() and not waiting.cancelled():
        try:
            waiting.result()
            return
        except TimeoutError as e:
            detail = await _journals(s, {h: units for h in hosts})
            raise PhaseFailed(f"phase {phase}: {e}\n{detail}".rstrip()) from None
        except PhaseFailed as e:  # the probe saw the wait is hopeless
            detail = await _journals(s, {h: units for h in hosts})
            raise PhaseFailed(f"{e}\n{detail}".rstrip()) from None
    found = watching.result()  # raises what the watcher raised, if anything
    # only the journals of the units given up on: theirs say why
    raise PhaseFailed(f"phase {phase}: stopped waiting for {what}: {_said(found)}\n"
                      f"{await _journals(s, found)}".rstrip())


def _nodes(api: Api, workers: list[str], bad_is: str, good: Callable[[bool | None], bool]):
    """A probe: every worker's node (Ready: True/False, unregistered: None) is `good`."""
    async def probe() -> tuple[bool, str]:
        try:
            nodes = await asyncio.to_thread(api.nodes)
        except (OSError, OperationError) as e:
            return False, str(e)
        bad = [w for w in workers if not good(nodes.get(w))]
        return not bad, f"{bad_is}: {', '.join(bad)}"
    return probe


def _all(check: Callable[[str], tuple[bool, str]], hosts: list[str]):
    async def probe() -> tuple[bool, str]:
        results = await asyncio.gather(*(asyncio.to_thread(check, h) for h in hosts))
        bad = [f"{h}: {d}" for h, (ok, d) in zip(hosts, results, strict=True) if not ok]
        return not bad, "; ".join(bad)[:400]
    return probe


def _lb_probe(s: Session, haproxies: list[str], admin: Identity):
    """A probe: every apiserver UP with a passing check in each HAProxy's own view (stats
    socket), and /readyz answering through the LB address. A server HAProxy keeps DOWN for a
    TLS failure ends the wait at once: its certificate will not start to verify by itself."""
    spec = s.p.spec
    servers = [n.name for n in spec.controllers]

    async def probe() -> tuple[bool, str]:
        views = await each_host(haproxies, lambda h: lbstats.backend_view(s.t[h], servers), s.opts.parallel)
        hopeless = [f"{h}: " + v.servers[n] for h, v in views.items() for n in v.hopeless]
        if hopeless:
            raise PhaseFailed(
                "phase load-balancer: HAProxy keeps these apiservers DOWN because TLS fails between them "
                f"({lbstats.TLS_HOPELESS_S} s or more): " + "; ".join(hopeless) + ". HAProxy verifies each "
                f"apiserver against {HAPROXY_CA} and authenticates with {HAPROXY_CRT}: check that they "
                f"are the cluster's (`hardway pki check`), and the journal of haproxy.service")
        bad = [f"{h}: {why}" for h, v in views.items() for why in v.problems]
        ok, detail = await asyncio.to_thread(apiserver_ready, str(spec.api_host), spec.api_port, admin)
        if not ok:
            bad.append(f"the API at {spec.api_server_url}: {detail}")
        return not bad, "; ".join(bad)
    return probe


def _lb_settle(s: Session) -> float:
    """How long the load-balancer probe must hold. A (re)started HAProxy counts a server UP
    after one good check: hold it for `rise` checks. VRRP elects (and may preempt) over a few
    advert intervals after a (re)start: one good answer through the VIP is not yet the final
    holder."""
    return max(HAPROXY_TIMING.rise_s if s.plans_touch("haproxy.service") else 0,
               VRRP_SETTLE if s.plans_touch("keepalived.service") else 0)


def _manifests_yaml(p: Prepared) -> tuple[bytes, str]:
    body = b"".join(c if c.endswith(b"\n") else c + b"\n" for _, c in sorted(p.cluster.manifests.items()))
    return body, hashlib.sha256(body).hexdigest()


def _record_manifest(namespace: str, name: str, digest: str) -> bytes:
    return (f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: {namespace}\n"
            f"  labels: {{app.kubernetes.io/managed-by: hardway}}\ndata:\n  sha256: \"{digest}\"\n").encode()


async def _apply_manifests(s: Session) -> bool:
    body, digest = _manifests_yaml(s.p)
    api = Api(s.p.spec, s.p.cd)
    ns, name = MANIFESTS_RECORD
    try:
        current = (await asyncio.to_thread(api.get, f"/api/v1/namespaces/{ns}/configmaps/{name}"))["data"]["sha256"]
    except (OperationError, KeyError, TypeError):
        current = None
    if current == digest:
        s.progress(f"cluster objects: unchanged ({len(s.p.cluster.manifests)} manifest file(s), sha256 {digest[:12]})")
        return False
    full = body + b"---\n" + _record_manifest(ns, name, digest)
    for retries_left in (2, 1, 0):  # a connection reset by a moving VIP is worth another try
        r = await asyncio.to_thread(kubectl, s.p.cd, "apply", "-f", "-", input=full)
        if r.returncode == 0 or not retries_left:
            break
        await asyncio.sleep(2)
    if r.returncode != 0:
        raise PhaseFailed("phase cluster-objects: `kubectl apply` of the RBAC and add-on manifests failed:\n"
                          + r.stderr.decode(errors="replace")[-2000:])
    s.progress(f"cluster objects: applied {len(r.stdout.splitlines())} object(s)")
    return True


async def _up(s: Session, report: UpReport) -> None:
    spec, cd, progress = s.p.spec, s.p.cd, s.progress
    if not s.opts.adopt:
        _refuse_foreign(s.plans)
    await upgrade.check_skew(spec, cd, s.plans.values(), progress)
    for name in s.names:
        plan = s.plans[name]
        if plan.empty:
            progress(f"{name}: up to date")
        else:
            progress(f"{name}: {len(plan.writes)} file(s) to write ({_mb(plan.bytes_to_send)}), "
                     f"{len(plan.starts)} unit(s) to start, {len(plan.restarts)} to restart"
                     + (f", {len(plan.reloads)} to reload" if plan.reloads else ""))
    sv = s.members
    report.changed = any(not p.empty for p in s.plans.values()) or bool(sv and not sv.changes.empty)
    if save_membership(cd, Membership(s.p.membership.joined)):  # before the joiner's files go out
        progress(f"recorded in {cd.etcd_members}: controllers that joined the running etcd cluster: "
                 f"{', '.join(sorted(s.p.membership.joined)) or 'none'}")

    @contextmanager
    def timed(label: str) -> Iterator[None]:
        t = time.monotonic()
        progress(f"== {label}")
        try:
            yield
        finally:
            report.phase_seconds[label] = round(time.monotonic() - t, 2)

    report.hosts_touched = True
    with timed("push"):
        async def push_one(name: str) -> None:
            plan = s.plans[name]
            if plan.writes:
                t = time.monotonic()
                await push(s.t[name], plan)
                progress(f"  {name}: pushed {len(plan.writes)} file(s), {_mb(plan.bytes_to_send)} "
                         f"in {time.monotonic() - t:.1f} s")
            if plan.daemon_reload:
                await act.daemon_reload(s.t[name])
        await each_host(s.names, push_one, s.opts.parallel)

    controllers = [str(n.address) for n in spec.controllers]
    ctl_names = [n.name for n in spec.controllers]
    with timed("host"):
        await _phase_hosts(s, Phase.host)
        await _settled(s, Phase.host)
    with timed("etcd"):
        if sv is not None:
            await members.before_start(s, sv)  # the joiner added as a learner before its etcd starts
        await _phase_hosts(s, Phase.etcd)
        if sv is not None:
            await members.promote(s, sv)
        ident = identity(cd, "etcd-ca", "etcd-admin")
        await _wait(s, "etcd", f"etcd: {len(controllers)} member(s) healthy",
                    _all(lambda h: etcd_health(h, ident), controllers), ctl_names, ["etcd.service"])
        await _settled(s, Phase.etcd)
    with timed("control-plane"):
        await _phase_hosts(s, Phase.control_plane)
        admin = identity(cd, "ca", "admin")
        await _wait(s, "control-plane", f"kube-apiserver /readyz on {len(controllers)} controller(s)",
                    _all(lambda h: apiserver_ready(h, APISERVER_PORT, admin), controllers), ctl_names,
                    ["kube-apiserver.service", "etcd.service"])
        await _settled(s, Phase.control_plane)
    if spec.load_balancer.mode.value != "none":
        with timed("load-balancer"):
            await _phase_hosts(s, Phase.load_balancer)
            lb_hosts = [n.name for n in spec.nodes if act.units_in(s.p.desired[n.name], Phase.load_balancer)]
            haproxies = [h for h in lb_hosts if "haproxy.service" in s.p.desired[h].unit_names]
            if not s.plans_touch("haproxy.service"):
                await roll.all_ready(s)  # an interrupted roll may have left an apiserver drained
            await _wait(s, "load-balancer", f"every apiserver UP in HAProxy's view on {', '.join(haproxies)}, "
                        f"and the API through the load balancer at {spec.api_server_url}",
                        _lb_probe(s, haproxies, admin), lb_hosts, ["haproxy.service", "keepalived.service"],
                        stable=_lb_settle(s))
            await _settled(s, Phase.load_balancer)
    if sv is not None and sv.changes.remove:
        # Last: no apiserver uses the leaving member's etcd now, and no load balancer sends to it.
        with timed("etcd-members"):
            await members.remove_leaving(s, sv)
    with timed("cluster-objects"):
        report.manifests_applied = await _apply_manifests(s)
    workers = [n.name for n in spec.workers]
    api = Api(spec, cd)
    with timed("workers"):
        await _phase_hosts(s, Phase.worker)

        await _wait(s, "workers", f"{len(workers)} kubelet(s) registered",
                    _nodes(api, workers, "not registered", lambda ready: ready is not None), workers,
                    ["kubelet.service", "containerd.service"])
    with timed("ready"):
        await _wait(s, "ready", f"{len(workers)} node(s) Ready",
                    _nodes(api, workers, "not Ready", bool), workers,
                    ["kubelet.service", "kube-proxy.service", "containerd.service"])
        await _settled(s, Phase.worker)
    pending = [n for n in s.names if s.facts[n].pending_restarts or s.plans[n].restarts or s.plans[n].reloads]
    await each_host(pending, lambda n: act.clear_pending(s.t[n]), s.opts.parallel)


def up(directory: str | Path = ".", progress: Progress = _quiet, opts: Options | None = None,
       reissue: tuple[str, ...] = (), report: UpReport | None = None) -> UpReport:
    """Bring the cluster described by DIR/cluster.yaml up (or up to date). Idempotent.
    `reissue`: certificates reissued first (`pki init --reissue`); `report`: filled in as the
    run goes, for a caller that must know how far a failed run got."""
    start = time.monotonic()
    opts = opts or Options()
    spec = load_spec(ClusterDir.at(directory).spec).spec  # a missing or invalid spec says so first
    if state_path(Path(directory)).exists():  # the nodes are lab machines
        require_lab_profile(spec, Path(directory), "up")
    report = report if report is not None else UpReport({})
    with cluster_lock(directory, "up"):
        p = prepare(Path(directory), progress, reissue=reissue)

        async def body(s: Session) -> None:
            report.plans = s.plans
            await _up(s, report)

        asyncio.run(_run_with_session(p, opts, progress, body))
    report.seconds = round(time.monotonic() - start, 2)
    progress(("done: " if report.changed else "done, nothing changed: ") + summary(report.plans.values())
             + f" ({report.seconds:.1f} s)")
    return report


__all__ = ["Options", "UpReport", "describe", "diff", "prepare", "up"]
