"""A change of Kubernetes binaries on a running cluster: a new `kubernetes.version`, or the same
version rebuilt. Kubernetes' version-skew policy decides what may run together
(https://kubernetes.io/releases/version-skew-policy/); `up` checks it before it pushes
anything and then carries the change out in the order the policy asks for, which the phases
and roll.py give it:

1. etcd, one member at a time;
2. every kube-apiserver, one at a time (drained in HAProxy first), so that none is older than
   a controller manager or scheduler that may reach it;
3. kube-controller-manager and kube-scheduler, one controller at a time (roll.WAVES);
4. the load balancer (no Kubernetes binary);
5. the workers, drained one at a time (`up --worker-batch N`): kubelet and kube-proxy may be
   older than the apiservers, never newer.

Refused (exit 2, nothing changed): a downgrade of the minor (Kubernetes does not support it:
restore an etcd snapshot taken before the upgrade instead), skipping a minor (apiservers go
one minor at a time), and a target the kubelets already running are too old for.
"""

from __future__ import annotations

import asyncio
import http.client
import json
from dataclasses import dataclass

from ..errors import OperationError, UsageError
from ..spec.model import APISERVER_PORT, ClusterSpec
from ..spec.versions import parse_minor
from .health import Api, https_get, identity

# How many minors a kubelet may be older than the apiserver: 2 up to 1.27, 3 from 1.28 (KEP-3935).
KUBELET_SKEW = ((1, 28), 3), ((0, 0), 2)


def kubelet_skew(target_minor: tuple[int, int]) -> int:
    return next(n for since, n in KUBELET_SKEW if target_minor >= since)


def _minor(version: str) -> tuple[int, int]:
    return parse_minor(version.lstrip("v"))


def _show(m: tuple[int, int]) -> str:
    return f"{m[0]}.{m[1]}"


@dataclass(frozen=True)
class Running:
    apiservers: dict[str, str]  # controller -> gitVersion ("v1.20.2"); absent: not answering
    kubelets: dict[str, str]  # node -> kubeletVersion


def skew_problems(target: str, running: Running) -> list[str]:
    """Why the cluster may not go to Kubernetes `target` from what runs now (pure)."""
    want = _minor(target)
    problems = []
    api = {n: _minor(v) for n, v in running.apiservers.items()}
    if api:
        newest, oldest = max(api.values()), min(api.values())
        if want < newest:
            problems.append(
                f"kubernetes.version {target} is older than the running apiservers ({_show(newest)}): Kubernetes "
                "does not support downgrading a minor; to go back, restore an etcd snapshot taken before the "
                "upgrade (`hardway etcd restore`) with the old version")
        elif want[0] == oldest[0] and want[1] > oldest[1] + 1:
            behind = sorted(n for n, m in api.items() if m == oldest)
            problems.append(
                f"kubernetes.version {target} skips a minor: {', '.join(behind)} run(s) {_show(oldest)}, and "
                f"apiservers upgrade one minor at a time: set {_show((oldest[0], oldest[1] + 1))}.x first, run "
                "`hardway up`, then the next")
    allowed = kubelet_skew(want)
    old = sorted(n for n, v in running.kubelets.items()
                 if _minor(v)[0] == want[0] and want[1] - _minor(v)[1] > allowed)
    if old:
        problems.append(
            f"kubernetes.version {target}: the kubelets of {', '.join(old)} would be more than {allowed} minors "
            f"older than the apiservers ({' '.join(sorted({running.kubelets[n] for n in old}))}): upgrade the "
            "cluster one minor at a time, workers included")
    return problems


def changes_binaries(plans) -> bool:
    """Whether `up` is about to replace a Kubernetes binary on some host."""
    return any(getattr(item, "path", "").startswith("/usr/local/bin/kube")
               for p in plans for item, _ in p.writes)


def read_running(spec: ClusterSpec, cd) -> Running | None:
    """What runs now: each apiserver's /version, each node's kubelet version. None when no
    apiserver answers (a cluster not up yet has no skew to keep)."""
    admin = identity(cd, "ca", "admin")
    apiservers = {}
    for n in spec.controllers:
        try:
            status, body = https_get(str(n.address), APISERVER_PORT, "/version", admin, timeout=3)
        except (OSError, http.client.HTTPException):
            continue
        if status == 200:
            try:
                apiservers[n.name] = json.loads(body).get("gitVersion", "")
            except ValueError:
                continue
    if not apiservers:
        return None
    try:
        nodes = Api(spec, cd).get("/api/v1/nodes")
    except OperationError:
        nodes = {}
    kubelets = {i["metadata"]["name"]: i.get("status", {}).get("nodeInfo", {}).get("kubeletVersion", "")
                for i in nodes.get("items", [])}
    return Running({k: v for k, v in apiservers.items() if v}, {k: v for k, v in kubelets.items() if v})


async def check_skew(spec: ClusterSpec, cd, plans, progress) -> None:
    """Before anything is pushed: refuse a skew the policy forbids; say what the change does."""
    if not changes_binaries(plans):
        return
    running = await asyncio.to_thread(read_running, spec, cd)
    if running is None:
        return
    problems = skew_problems(spec.kubernetes.version, running)
    if problems:
        raise UsageError("refusing to change the Kubernetes binaries (nothing was changed):\n"
                         + "\n".join(f"  - {p}" for p in problems))
    now = sorted(set(running.apiservers.values()))
    progress(f"Kubernetes binaries change (apiservers run {', '.join(now)}; cluster.yaml says "
             f"v{spec.kubernetes.version.lstrip('v')}): etcd, then every apiserver one at a time, then controller "
             "managers and schedulers, then workers drained in turns")


__all__ = ["Running", "changes_binaries", "check_skew", "kubelet_skew", "read_running", "skew_problems"]
