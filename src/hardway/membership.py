"""What rendering needs to know about the running etcd cluster beyond the spec, and its record.

A member's `--initial-cluster*` settings count only at its first start (once its data
directory exists etcd ignores them). The members that formed the cluster started as `new`;
a controller added later joined a running cluster: `existing`, with an initial cluster that
names exactly the members etcd had when it was added (etcd compares the two). Which members
joined is a fact of the cluster's history, not of the spec, so `hardway up` records it in
DIR/etcd-members.json when it adds one; rendering reads it, and stays a pure function of the
spec, the material and this record.

Losing the record is harmless once the members have started: their initial-cluster file
would be rewritten (no restart, see render/etcd.py), nothing else.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from .clusterdir import ClusterDir
from .errors import OperationError
from .fsio import write_atomic

RECORD_NOTE = ("controllers that joined the running etcd cluster (initial-cluster-state existing), "
               "written by `hardway up` when it added them; back it up with the rest of this directory")


@dataclass(frozen=True)
class Membership:
    # members that joined a running cluster (`existing`); every other member bootstrapped it
    joined: frozenset[str] = frozenset()
    # (name, peer URL) of members etcd still has that the spec no longer lists: the one
    # member joining in this run must name them too, since they are removed only after it
    # joined (up's order: add first, remove last)
    leaving: tuple[tuple[str, str], ...] = ()


# Every member formed the cluster: a new cluster's, and one whose controllers never changed.
FOUNDERS = Membership()


def load_membership(cd: ClusterDir) -> Membership:
    path = cd.etcd_members
    if not path.exists():
        return FOUNDERS
    try:
        data = json.loads(path.read_text())
        joined = data["joined"]
        if not isinstance(joined, list) or not all(isinstance(n, str) for n in joined):
            raise TypeError("`joined` is not a list of names")
    except (ValueError, KeyError, TypeError) as e:
        raise OperationError(f"{path}: not hardway's record of etcd members ({e}): restore it from your "
                             f"backup of {cd.root}, or delete it if every controller's etcd has started "
                             "once (the record only matters for a member's first start)") from None
    return Membership(frozenset(joined))


def save_membership(cd: ClusterDir, m: Membership) -> bool:
    """Write the record (only `joined`: `leaving` is one run's); True if it changed. A cluster
    nobody joined needs no record, and gets none."""
    if not m.joined and not cd.etcd_members.exists():
        return False
    text = json.dumps({"note": RECORD_NOTE, "joined": sorted(m.joined)}, indent=1) + "\n"
    return write_atomic(cd.etcd_members, text.encode(), 0o644)


__all__ = ["FOUNDERS", "Membership", "load_membership", "save_membership"]
