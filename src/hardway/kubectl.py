"""The cluster's own kubectl (DIR/bin/kubectl, put there by `hardway up`), run as the cluster
admin: the one way hardway and its tests call kubectl."""

from __future__ import annotations

import subprocess

from .clusterdir import ClusterDir
from .errors import OperationError


def kubectl_argv(cd: ClusterDir, *args: str) -> list[str]:
    """The cluster's own kubectl as the cluster admin; `up` puts it in DIR/bin."""
    path = cd.kubectl
    if not path.exists():
        raise OperationError(f"{path} is missing: run `hardway -C {cd.root} up` first (it puts the "
                             "cluster's kubectl there)")
    return [str(path), "--kubeconfig", str(cd.kubeconfig("admin")), *args]


def kubectl(cd: ClusterDir, *args: str, input: bytes | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess:
    """The cluster's kubectl; its exit status is the caller's to judge. A kubectl that cannot
    run or does not finish in `timeout` is an OperationError naming the command."""
    argv = kubectl_argv(cd, *args)
    what = f"`kubectl {' '.join(args)}`"
    try:
        return subprocess.run(argv, input=input, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise OperationError(f"{what} did not finish within {timeout:.0f} s: is the API at "
                             f"{cd.kubeconfig('admin')}'s server reachable? (`hardway verify`)") from None
    except OSError as e:
        raise OperationError(f"{what}: cannot run {argv[0]}: {e.strerror}; run `hardway up` to put the "
                             "cluster's kubectl there again") from None


__all__ = ["kubectl", "kubectl_argv"]
