"""`hardway node remove WORKER`: a worker out of the running cluster, its host as before hardway.

Each step runs only once the one before it succeeded:

 1. refusals first, pure (`check_worker_removal`, exit 2): an unknown name, a node that is not
    only a worker, the last worker (its pods would have nowhere to go), options that do not
    apply; cluster.yaml without its entry must still be valid. Then its host is reached: an
    unreachable worker is refused (exit 1, nothing changed) unless `--force`.
 2. cordoned and drained (`kubectl drain --ignore-daemonsets --delete-emptydir-data`, within
    the drain timeout): its pods go to the other workers while it still runs them. A drain that
    fails is undone (uncordoned, unless it was cordoned before) and the removal stops there:
    nothing else changed (exit 1).
 3. its host reset, as `hardway reset NAME` does it (reset.py: units stopped and disabled, files
    removed, containers, mounts, links, routes and chains gone). A reset with problems stops the
    removal: cluster.yaml still lists the worker, so `hardway reset NAME` or this command again
    (the drain then has nothing left to move) finishes it.
 4. its Node object deleted, after its kubelet stopped (so nothing registers it again); its
    DaemonSet pods go with it (the pod garbage collector).
 5. its entry out of cluster.yaml by lines, comments kept (spec/edit.py), then `up`: every other
    node's routes unit loses its pod route, and the push deletes the route itself
    (render/host.py `stale_routes_script`); the unit is a oneshot, so nothing long-running
    restarts anywhere.

`--force` is for a worker that cannot be reached (a dead machine): steps 2 and 3 are skipped,
its Node is deleted (the pod garbage collector then deletes the pods bound to it, and their
controllers make them again on the other workers), then step 5. The machine keeps everything
(LEFT_BY_FORCE); if it comes back, its kubelet would register it again.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..clusterdir import ClusterDir
from ..errors import HardwayError, OperationError, UsageError
from ..fsio import write_atomic
from ..kubectl import kubectl
from ..lock import cluster_lock
from ..spec.edit import without_node
from ..spec.load import load_spec, parse_spec
from ..spec.model import ClusterSpec, Role
from .hosts import Options, connect_all
from .reset import HostReset, reset_host

Progress = Callable[[str], None]

DRAIN_TIMEOUT_S = 300
LEFT_BY_FORCE = ("its hardway units (kubelet, kube-proxy, containerd) still enabled, and running if it runs; "
                 "/var/lib/hardway and every file hardway wrote (its kubelet certificate and key among them); "
                 "its containers, pod routes, the cni0 bridge and the KUBE-*/CNI-* iptables chains. If the "
                 "machine comes back, its kubelet registers the Node again: run `systemctl disable --now "
                 "kubelet kube-proxy containerd` there first, or wipe it")


def _quiet(_msg: str) -> None:
    pass


def check_worker_removal(spec: ClusterSpec, name: str, reissue: tuple[str, ...] = ()) -> None:
    """What makes removing worker `name` a bad request (UsageError, exit 2). Pure."""
    names = [n.name for n in spec.nodes]
    if name not in names:
        raise UsageError(f"no node named {name!r} in cluster.yaml; nodes: {', '.join(names)}")
    node = spec.node(name)
    if node.roles != [Role.worker]:
        raise UsageError(f"{name} has the roles {', '.join(r.value for r in node.roles)}: `hardway node remove` "
                         "removes a controller or a worker; a node with both roles, or a load balancer, cannot "
                         "be removed yet (edit cluster.yaml and the machine by hand)")
    if not [w for w in spec.workers if w.name != name]:
        raise UsageError(f"{name} is the only worker: its pods (CoreDNS among them) would have nowhere to go. "
                         "Add its successor to cluster.yaml and run `hardway up` first, then remove it")
    if reissue:
        raise UsageError(f"--reissue {' '.join(reissue)}: removing a worker makes no certificate stale (only its "
                         "own name it, and they go with it); leave --reissue out")


@dataclass
class WorkerRemoval:
    name: str
    forced: bool = False  # unreachable, removed without drain and reset
    drained: bool = False
    node_deleted: bool = False
    reset: HostReset | None = None
    up: object = None  # deploy.up.UpReport of the closing `up`
    left: str = ""  # what stays on the machine (--force)
    steps: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _kubectl(cd: ClusterDir, *args: str, timeout: float = 60) -> tuple[int, str, str]:
    r = kubectl(cd, *args, timeout=timeout)
    return r.returncode, r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")


def _node_object(cd: ClusterDir, name: str) -> dict | None:
    """The Node `name` from the API; None when there is none (it never registered)."""
    rc, out, err = _kubectl(cd, "get", "node", name, "--ignore-not-found", "-o", "json")
    if rc != 0:
        raise OperationError(f"`kubectl get node {name}` failed (exit {rc}): {err.strip()[-600:]}. Nothing was "
                             "changed; is the API reachable? (`hardway verify`)")
    try:
        return json.loads(out) if out.strip() else None
    except ValueError:
        raise OperationError(f"`kubectl get node {name} -o json`: the answer is not JSON: {out[:300]!r}") from None


def _drain(cd: ClusterDir, name: str, was_cordoned: bool, drain_timeout: float, progress: Progress) -> None:
    progress(f"{name}: cordoning and draining (kubectl drain --ignore-daemonsets --delete-emptydir-data, "
             f"at most {drain_timeout:.0f} s)")
    rc, out, err = _kubectl(cd, "drain", name, "--ignore-daemonsets", "--delete-emptydir-data",
                            f"--timeout={drain_timeout:.0f}s", timeout=drain_timeout + 60)
    if rc == 0:
        evicted = [ln for ln in out.splitlines() if ln.endswith(" evicted")]
        progress(f"{name}: drained ({len(evicted)} pod(s) evicted)")
        return
    undo = ""
    if not was_cordoned:
        urc, _, uerr = _kubectl(cd, "uncordon", name)
        undo = " It is uncordoned again." if urc == 0 else f" Uncordoning it failed too: {uerr.strip()[-300:]}."
    raise OperationError(
        f"{name} could not be drained (`kubectl drain`, at most {drain_timeout:.0f} s): {err.strip()[-800:]}.{undo} "
        "Nothing else was "
        f"changed: its host, its Node and cluster.yaml are as they were. Pods that no controller manages, or "
        f"that a PodDisruptionBudget protects, block a drain: delete or move them (or give --drain-timeout more "
        f"time), then run `hardway node remove {name}` again")


async def _drain_and_reset(spec: ClusterSpec, cd: ClusterDir, name: str, opts: Options, force: bool,
                           drain_timeout: float, progress: Progress, rm: WorkerRemoval) -> None:
    try:
        t = (await connect_all(spec, cd, [name], opts, progress))[name]
    except OperationError as e:
        if not force:
            raise OperationError(
                f"{name} cannot be reached ({e}). Nothing was changed. It must be reached to be drained and reset; "
                f"if the machine is gone for good, `hardway node remove {name} --force` deletes its Node (its pods "
                "are made again on the other workers) and its cluster.yaml entry without touching the machine, "
                "which then keeps " + LEFT_BY_FORCE) from None
        rm.forced, rm.left = True, LEFT_BY_FORCE
        progress(f"{name}: cannot be reached ({e}); --force: it is neither drained nor reset")
        return
    try:
        obj = await asyncio.to_thread(_node_object, cd, name)
        if obj is None:
            progress(f"{name}: no Node object (it never registered): nothing to drain")
        else:
            await asyncio.to_thread(_drain, cd, name, bool(obj.get("spec", {}).get("unschedulable")),
                                    drain_timeout, progress)
            rm.drained = True
        progress(f"{name}: resetting its host (as `hardway reset {name}`)")
        rm.reset = await reset_host(t, progress)
    finally:
        await t.close()
    h = rm.reset
    if h.error or h.problems:
        raise OperationError(
            f"{name}: drained, but its host was not completely reset: {h.error or '; '.join(h.problems)}"
            + (f" (left: {'; '.join(h.notes)})" if h.notes else "")
            + f". Its Node and its cluster.yaml entry stay. Fix that, then run `hardway node remove {name}` again "
              "(it picks up where this stopped)")
    for note in h.notes:
        progress(f"  {name}: {note}")


def _delete_node(cd: ClusterDir, name: str, progress: Progress) -> bool:
    rc, out, err = _kubectl(cd, "delete", "node", name, "--ignore-not-found", "--wait=true", timeout=120)
    if rc != 0:
        raise OperationError(f"`kubectl delete node {name}` failed (exit {rc}): {err.strip()[-600:]}. cluster.yaml "
                             f"still lists {name}; run `hardway node remove {name}` again")
    deleted = bool(out.strip())
    progress(f"{name}: Node object deleted" if deleted else f"{name}: no Node object to delete")
    return deleted


def remove_worker(directory: str | Path, name: str, progress: Progress = _quiet, opts: Options | None = None,
                  force: bool = False, drain_timeout: float = DRAIN_TIMEOUT_S,
                  reissue: tuple[str, ...] = ()) -> WorkerRemoval:
    """Steps 1-5 of the module's docstring. The refusals change nothing; a failure names what
    was done and what to run next."""
    from .up import up as _up  # up.py imports much; only a removal needs it

    start = time.monotonic()
    opts = opts or Options()
    cd = ClusterDir.at(directory)
    spec = load_spec(cd.spec).spec
    check_worker_removal(spec, name, reissue)
    if drain_timeout <= 0:
        raise UsageError(f"--drain-timeout {drain_timeout:g}: must be more than 0 seconds")
    old = cd.spec.read_text()
    new = without_node(old, name, str(cd.spec))
    parse_spec(new, f"{cd.spec} without {name}")
    rm = WorkerRemoval(name)
    with cluster_lock(directory, f"node remove {name}"):
        asyncio.run(_drain_and_reset(spec, cd, name, opts, force, drain_timeout, progress, rm))
        rm.node_deleted = _delete_node(cd, name, progress)
        write_atomic(cd.spec, new.encode(), cd.spec.stat().st_mode & 0o7777)
        progress(f"{cd.spec}: {name}'s entry removed (the rest of the file as it was)")
        progress("up: the other nodes lose their pod route to it")
        try:
            rm.up = _up(directory, progress, opts)
        except HardwayError:
            progress(f"{name} is out of the cluster (its Node deleted, cluster.yaml no longer lists it), but the "
                     "other nodes may still route its pod CIDR: once the problem below is fixed, `hardway up` "
                     "finishes the removal")
            raise
    rm.seconds = round(time.monotonic() - start, 2)
    return rm


__all__ = ["DRAIN_TIMEOUT_S", "LEFT_BY_FORCE", "WorkerRemoval", "check_worker_removal", "remove_worker"]
