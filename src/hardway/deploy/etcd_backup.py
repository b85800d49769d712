"""`hardway etcd snapshot` and `hardway etcd restore`.

Snapshot: etcdctl on a member whose /health is ok saves the snapshot on that member, the
offline tool (render/etcd.py offline_tool) reads its revision, keys and size there, and the
file is streamed over SSH to the operator's machine (0600, never over an existing file) with
its sha256 checked end to end and written beside it (`FILE.sha256`, sha256sum's format).

Restore, in steps that each say what state a failure leaves:
  1. the checksum, before anything else; `up`'s plan for every host (rendered with the new
     cluster token) may change nothing but etcd.service and the manifest;
  2. every member gets the snapshot (checked again there) and restores it with the new token
     and its own --name/--initial-advertise-peer-urls into a staging directory: the cluster
     still runs untouched;
  3. every API client (kubelet, kube-proxy, scheduler, controller manager), every apiserver,
     then every etcd member stops;
  4. on every member the old data directory is moved aside (kept, named in the output) and
     the staged one takes its place; then the token is recorded in the cluster directory;
  5. `up`'s own phases push the unit with the new token and start everything, each phase
     waiting for its health (every member, every apiserver /readyz, the load balancer, nodes);
  6. the staged snapshot copies are removed; the caller runs verify.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import re
import shlex
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..clusterdir import ClusterDir
from ..errors import OperationError, UsageError
from ..fsio import new_file, write_atomic
from ..lab.state import state_path
from ..lock import cluster_lock
from ..render.common import ETCD_DATA
from ..membership import FOUNDERS
from ..render.etcd import INITIAL_CLUSTER_ENV, etcdctl, initial_cluster, members_list, offline_tool, peer_url
from ..spec.load import load_spec
from ..spec.model import ClusterSpec, Node
from ..spec.presets import require_lab_profile
from ..spec.versions import etcd_has
from .desired import HARDWAY_STATE, MANIFEST
from .health import etcd_health, identity
from .hosts import Options, connect_all, each_host
from .plan import HostPlan
from .transport import check
from .up import Session, UpReport, _up, prepare

Progress = Callable[[str], None]

SNAPSHOT_MODE = 0o600  # it holds every Secret (encrypted at rest or not) and every token
SIDECAR = ".sha256"
CHUNK = 1 << 20
SNAPSHOT_TIMEOUT = 900  # seconds: save on the member, then the copy to this machine
NODE_DIR = f"{HARDWAY_STATE}/etcd-snapshot"  # mktemp -d prefix on the member (0700)
RESTORE_DIR = f"{HARDWAY_STATE}/etcd-restore"  # the snapshot's copy on each member during a restore
STAGING = f"{ETCD_DATA}.hardway-restore"  # restored data, before it replaces ETCD_DATA (same file system)
ETCD_UNIT = "etcd.service"
# Everything that talks to the API, then the apiservers: stopped before etcd, so nothing
# writes while members go down, and started again by `up` afterwards, so that no component
# keeps a cache of objects the restore took away (Kubernetes' advice for an etcd restore).
API_SIDE = ("kubelet.service", "kube-proxy.service", "kube-scheduler.service",
            "kube-controller-manager.service", "kube-apiserver.service")
# etcd >= 3.5.10: the restored revision jumps by this much and the older ones read as compacted,
# so a watcher that saw revisions after the snapshot relists instead of missing events (the
# amount Kubernetes' documentation uses).
REVISION_BUMP = 1_000_000_000


def utc_stamp(now: dt.datetime | None = None) -> str:
    return (now or dt.datetime.now(dt.timezone.utc)).strftime("%Y%m%dT%H%M%SZ")


def new_token(spec: ClusterSpec, stamp: str) -> str:
    """A token no earlier incarnation of this cluster had: members of a restored cluster must
    not take peers made from another snapshot (or the old data) for their own."""
    return f"{spec.name}-etcd-{stamp}"


@dataclass(frozen=True)
class SnapshotStatus:
    revision: int
    keys: int
    size: int
    hash: int

    @classmethod
    def parse(cls, text: str, where: str) -> "SnapshotStatus":
        """`snapshot status -w json` (etcdctl 3.4, etcdutl): hash, revision, totalKey, totalSize."""
        try:
            d = json.loads(text)
            return cls(int(d["revision"]), int(d["totalKey"]), int(d["totalSize"]), int(d["hash"]))
        except (ValueError, KeyError, TypeError):
            raise OperationError(f"{where}: `snapshot status` did not answer as expected: {text.strip()[:300]!r}") from None

    def __str__(self) -> str:
        return f"revision {self.revision}, {self.keys} keys, {self.size} bytes"


# ---------------------------------------------------------------------------------------------
# checksums


def sidecar(path: Path) -> Path:
    return path.with_name(path.name + SIDECAR)


def sidecar_text(path: Path, digest: str) -> bytes:
    """sha256sum's format, so `sha256sum -c FILE.sha256` checks it too."""
    return f"{digest}  {path.name}\n".encode()


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


HEX64 = re.compile(r"[0-9a-f]{64}")


def expected_digest(path: Path, given: str | None) -> str:
    """The sha256 the snapshot must have: `given` (--sha256), or the one in FILE.sha256; both
    must agree when both exist. Refuses (exit 2) without either."""
    side = sidecar(path)
    recorded = None
    if side.exists():
        words = side.read_text(errors="replace").split()
        if not words or not HEX64.fullmatch(words[0].lower()):
            raise UsageError(f"{side} does not start with a sha256 (64 hex digits)")
        recorded = words[0].lower()
    if given is not None:
        given = given.lower().removeprefix("sha256:")
        if not HEX64.fullmatch(given):
            raise UsageError(f"--sha256 {given!r}: not a sha256 (64 hex digits)")
        if recorded and recorded != given:
            raise UsageError(f"--sha256 {given} differs from the digest in {side} ({recorded}): which one is right?")
        return given
    if recorded is None:
        raise UsageError(f"{side} is missing, so nothing says what {path.name} must hold: pass --sha256 HEX (the "
                         "digest `hardway etcd snapshot` printed), or restore the .sha256 file beside it")
    return recorded


def check_snapshot_file(path: Path, given: str | None) -> str:
    """The snapshot's verified sha256; a missing file or one that differs from its checksum
    is refused (exit 2) before anything is touched."""
    if not path.is_file():
        raise UsageError(f"{path}: no such file (the snapshot to restore)")
    want = expected_digest(path, given)
    got = file_digest(path)
    if got != want:
        raise UsageError(f"{path} does not match its checksum: its sha256 is {got}, expected {want}. The file "
                         "is damaged or not that snapshot; nothing was changed")
    return got


# ---------------------------------------------------------------------------------------------
# node-side scripts (pure)


def save_script(spec: ClusterSpec, member: Node) -> str:
    """On `member`: save a snapshot from it into a fresh private directory, read its status with
    the offline tool, print `dir`, `sha256` and `status` lines. A failure leaves nothing behind."""
    save = shlex.join([*etcdctl(member), "--command-timeout=600s", "snapshot", "save"])
    status = shlex.join([*offline_tool(spec.artifacts.versions.etcd), "snapshot", "status"])
    return "\n".join([
        "set -eu",
        "umask 077",
        f"mkdir -p {HARDWAY_STATE}",
        f"d=$(mktemp -d {NODE_DIR}.XXXXXX)",
        "trap 'rm -rf \"$d\"' EXIT",
        f"{save} \"$d/snapshot.db\" >&2",
        f"status=$({status} \"$d/snapshot.db\" -w json)",
        "sum=$(sha256sum < \"$d/snapshot.db\" | cut -d' ' -f1)",
        "trap - EXIT",
        "printf 'dir %s\\nsha256 %s\\nstatus %s\\n' \"$d\" \"$sum\" \"$status\"",
    ]) + "\n"


def parse_saved(out: str, where: str) -> tuple[str, str, SnapshotStatus]:
    fields = dict(line.split(" ", 1) for line in out.splitlines() if " " in line)
    d, digest = fields.get("dir", ""), fields.get("sha256", "")
    if not d.startswith(NODE_DIR + ".") or "/" in d[len(NODE_DIR):] or not HEX64.fullmatch(digest):
        raise OperationError(f"{where}: the snapshot script answered unexpectedly: {out.strip()[:300]!r}")
    return d, digest, SnapshotStatus.parse(fields.get("status", ""), where)


def restore_argv(spec: ClusterSpec, member: Node, token: str, snapshot: str, data_dir: str) -> list[str]:
    """The offline tool making `member`'s data directory from the snapshot, for a new cluster
    of every member of the spec with `token`."""
    version = spec.artifacts.versions.etcd
    argv = [*offline_tool(version), "snapshot", "restore", snapshot,
            f"--name={member.name}",
            f"--initial-cluster={members_list(initial_cluster(spec, member, FOUNDERS)[1])}",
            f"--initial-cluster-token={token}",
            f"--initial-advertise-peer-urls={peer_url(member)}",
            f"--data-dir={data_dir}"]
    if etcd_has(version, "restore-bump-revision"):
        argv += [f"--bump-revision={REVISION_BUMP}", "--mark-compacted"]
    return argv


def stage_script(spec: ClusterSpec, member: Node, token: str, digest: str) -> str:
    """On `member`, the snapshot on stdin: keep it (checked against `digest`), restore it into
    STAGING owned by etcd, print its status. The running member is not touched."""
    snap = f"{RESTORE_DIR}/snapshot.db"
    q = shlex.quote
    status = shlex.join([*offline_tool(spec.artifacts.versions.etcd), "snapshot", "status", snap, "-w", "json"])
    return "\n".join([
        "set -eu",
        "umask 077",
        f"mkdir -p {RESTORE_DIR}",
        f"cat > {snap}.part",
        f"[ \"$(sha256sum < {snap}.part | cut -d' ' -f1)\" = {q(digest)} ] || "
        "{ echo 'the snapshot arrived damaged (its sha256 differs from the one sent)' >&2; exit 1; }",
        f"mv -f {snap}.part {snap}",
        # A mount point cannot be renamed: the swap below would fail with the members stopped.
        f"if mountpoint -q {ETCD_DATA} 2>/dev/null; then echo '{ETCD_DATA} is a mount point: hardway restores "
        f"by renaming the data directory (old one kept beside it), which a mount point does not allow' >&2; exit 1; fi",
        f"rm -rf {STAGING}",
        shlex.join(restore_argv(spec, member, token, snap, STAGING)) + " >&2",
        f"chown -R etcd:etcd {STAGING}",
        f"chmod 0700 {STAGING}",
        status,
    ]) + "\n"


def swap_script(keep: str) -> str:
    """On a stopped member: move the data directory aside to `keep`, the staged one in."""
    return "\n".join([
        "set -eu",
        f"[ -d {STAGING}/member ] || {{ echo 'no restored data in {STAGING}' >&2; exit 1; }}",
        f"if [ -e {ETCD_DATA} ]; then mv {ETCD_DATA} {shlex.quote(keep)}; fi",
        f"mv {STAGING} {ETCD_DATA}",
    ]) + "\n"


def stop_script(units: list[str]) -> str:
    return f"systemctl stop {shlex.join(units)}\n"


CLEANUP_SCRIPT = f"rm -rf {RESTORE_DIR} {STAGING}\n"


# ---------------------------------------------------------------------------------------------
# snapshot


@dataclass
class SnapshotReport:
    path: Path
    sha256: str
    member: str
    status: SnapshotStatus
    seconds: float = 0.0


def default_snapshot_path(cd: ClusterDir, spec: ClusterSpec, stamp: str) -> Path:
    return cd.backups / f"etcd-{spec.name}-{stamp}.db"


def healthy_member(spec: ClusterSpec, cd: ClusterDir, progress: Progress) -> Node:
    """The first member whose /health is ok (it answers only with a leader and a quorum: a
    member cut off from the others would give a stale snapshot)."""
    ident = identity(cd, "etcd-ca", "etcd-admin")
    seen = []
    for m in spec.etcd_members:
        ok, detail = etcd_health(str(m.address), ident)
        if ok:
            progress(f"etcd member {m.name} is healthy: snapshot from it")
            return m
        seen.append(f"{m.name}: {detail}")
    raise OperationError("no etcd member is healthy, so none can give a snapshot of the committed data: "
                         + "; ".join(seen))


class _Hashing:
    """A file object's write that also hashes and counts what passes."""

    def __init__(self, f) -> None:
        self.f, self.h, self.size = f, hashlib.sha256(), 0

    def write(self, b: bytes) -> int:
        self.h.update(b)
        self.size += len(b)
        return self.f.write(b)


def snapshot(directory: str | Path = ".", out: str | Path | None = None, progress: Progress = lambda _m: None,
             opts: Options | None = None) -> SnapshotReport:
    start = time.monotonic()
    opts = opts or Options()
    cd = ClusterDir.at(directory)
    spec = load_spec(cd.spec).spec
    path = Path(out) if out else default_snapshot_path(cd, spec, utc_stamp())
    for p in (path, sidecar(path)):
        if p.exists():
            raise UsageError(f"{p} exists: a snapshot is never written over another file; choose another --out")
    with cluster_lock(directory, "etcd snapshot"):
        member = healthy_member(spec, cd, progress)
        if not out:
            cd.backups.mkdir(mode=0o700, exist_ok=True)
        report = asyncio.run(_snapshot(spec, cd, member, path, opts, progress))
    report.seconds = round(time.monotonic() - start, 2)
    return report


async def _snapshot(spec: ClusterSpec, cd: ClusterDir, member: Node, path: Path, opts: Options,
                    progress: Progress) -> SnapshotReport:
    t = (await connect_all(spec, cd, [member.name], opts, progress))[member.name]
    try:
        r = await check(t, save_script(spec, member), "etcdctl snapshot save", timeout=SNAPSHOT_TIMEOUT)
        node_dir, digest, status = parse_saved(r.out, member.name)
        progress(f"{member.name}: saved {status} (sha256 {digest})")
        try:
            with new_file(path, SNAPSHOT_MODE) as f:
                sink = _Hashing(f)
                await check(t, f"cat {shlex.quote(node_dir)}/snapshot.db", "copying the snapshot",
                            timeout=SNAPSHOT_TIMEOUT, output=sink)
                if sink.h.hexdigest() != digest:
                    raise OperationError(f"{member.name}: the snapshot arrived damaged: sha256 {sink.h.hexdigest()} "
                                         f"({sink.size} bytes) on this machine, {digest} on the member; nothing was kept")
        except FileExistsError:
            raise UsageError(f"{path} appeared while the snapshot was copied; it was left as it is") from None
        finally:
            await t.run(f"rm -rf {shlex.quote(node_dir)}", timeout=60)
        write_atomic(sidecar(path), sidecar_text(path, digest), SNAPSHOT_MODE)
        progress(f"wrote {path} ({sink.size} bytes, mode 0600) and {sidecar(path).name}")
    finally:
        await t.close()
    return SnapshotReport(path, digest, member.name, status)


# ---------------------------------------------------------------------------------------------
# restore


@dataclass
class RestoreReport:
    snapshot: Path
    sha256: str
    token: str
    kept: dict[str, str] = field(default_factory=dict)  # member -> where its old data directory is
    status: SnapshotStatus | None = None
    up: UpReport | None = None
    step_seconds: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


def unexpected_changes(plans: dict[str, HostPlan]) -> list[str]:
    """What `up` would do on each host besides the restore's own work (the new token in the
    members' initial-cluster file and the manifest listing it; starting what the restore
    stops): those belong to an `up` of their own, before the restore."""
    ours = {*TOKEN_FILES, MANIFEST}
    restartable = {ETCD_UNIT, *API_SIDE}
    found = []
    for name, p in plans.items():
        found += [f"{name}: write {c.path} ({c.reason})" for _, c in p.writes if c.path not in ours]
        found += [f"{name}: restart {u}" for u in p.restarts if u != ETCD_UNIT]
        found += [f"{name}: start {u}" for u in p.starts if u not in restartable]
        found += [f"{name}: sysctl {k}" for k in p.sysctls] + [f"{name}: load module {m}" for m in p.modules]
        found += [f"{name}: import {i}" for i in p.imports] + [f"{name}: remove {r}" for r in p.removes]
    return found


def _file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            yield chunk


# The files a new cluster token changes (render/etcd.py: a member's bootstrap settings).
TOKEN_FILES = frozenset({INITIAL_CLUSTER_ENV})


class StepFailed(OperationError):
    pass


def restore(directory: str | Path, file: str | Path, progress: Progress = lambda _m: None,
            opts: Options | None = None, sha256: str | None = None) -> RestoreReport:
    """Replace the data of every etcd member with the snapshot in `file` (see the module doc)."""
    start = time.monotonic()
    opts = opts or Options()
    cd = ClusterDir.at(directory)
    spec = load_spec(cd.spec).spec
    if state_path(Path(directory)).exists():
        require_lab_profile(spec, Path(directory), "etcd restore")
    path = Path(file)
    progress(f"checking {path} against its sha256")
    digest = check_snapshot_file(path, sha256)
    stamp = utc_stamp()
    report = RestoreReport(path, digest, new_token(spec, stamp))
    with cluster_lock(directory, "etcd restore"):
        p = prepare(Path(directory), progress, "etcd restore", etcd_token=report.token)
        asyncio.run(_restore(p, opts, progress, report, stamp))
    report.seconds = round(time.monotonic() - start, 2)
    return report


async def _restore(p, opts: Options, progress: Progress, report: RestoreReport, stamp: str) -> None:
    s = Session(p, opts, progress)
    try:
        await s.open()
        await _restore_steps(s, report, stamp)
    finally:
        await s.close()


async def _restore_steps(s: Session, report: RestoreReport, stamp: str) -> None:
    spec, cd, progress = s.p.spec, s.p.cd, s.progress
    members = spec.etcd_members
    names = [m.name for m in members]
    keep = f"{ETCD_DATA}.before-restore-{stamp}"
    swapped: list[str] = []

    def timed(label: str, what: str):
        t0 = time.monotonic()
        progress(f"== restore {label}: {what}")
        return lambda: report.step_seconds.__setitem__(label, round(time.monotonic() - t0, 2))

    async def cleanup() -> None:
        await asyncio.gather(*(s.t[n].run(CLEANUP_SCRIPT, timeout=120) for n in names), return_exceptions=True)

    untouched = "nothing was changed: the cluster runs as before"

    # 1. what `up` would change besides the token
    done = timed("check", "what `up` would change besides the token")
    await s.gather_and_plan()
    extra = unexpected_changes(s.plans)
    if extra:
        raise StepFailed("etcd restore: the hosts differ from cluster.yaml in more than etcd's cluster token; "
                         "run `hardway up` first (a restore changes only etcd's data and token):\n"
                         + "\n".join(f"  - {e}" for e in extra) + f"\n{untouched}")
    done()

    # 2. every member stages the restored data; the cluster keeps running
    done = timed("stage", f"restoring the snapshot on {len(members)} member(s) beside their data, "
                 f"new token {report.token}")
    by_name = {m.name: m for m in members}

    async def stage(name: str) -> None:
        r = await check(s.t[name], stage_script(spec, by_name[name], report.token, report.sha256),
                        "restoring the snapshot into a staging directory", _file_chunks(report.snapshot), timeout=900)
        status = SnapshotStatus.parse(r.out, name)
        report.status = report.status or status
        progress(f"  {name}: {status} restored into {STAGING}")

    try:
        await each_host(names, stage, s.opts.parallel)
    except OperationError as e:
        await cleanup()
        raise StepFailed(f"etcd restore, staging: {e}\n{untouched} (staged files removed)") from None
    done()

    # 3. stop the API side, then etcd
    done = timed("stop", "stopping the API clients, the apiservers, then etcd")
    stops = {n: [u for u in API_SIDE if u in s.p.desired[n].unit_names] for n in s.names}
    stopped_state = ("some components may be stopped; the data is untouched (staged files removed). `hardway up` "
                     "starts them again with the old data, or run the restore again")
    try:
        await each_host([n for n in s.names if stops[n]],
                        lambda n: check(s.t[n], stop_script(stops[n]), f"stopping {', '.join(stops[n])}", timeout=120),
                        s.opts.parallel)
        await each_host(names, lambda n: check(s.t[n], stop_script([ETCD_UNIT]), "stopping etcd", timeout=120),
                        s.opts.parallel)
    except OperationError as e:
        await cleanup()
        raise StepFailed(f"etcd restore, stopping: {e}\n{stopped_state}") from None
    progress(f"  stopped on {len(s.names)} host(s): " + "; ".join(
        f"{n}: {', '.join(stops[n] + ([ETCD_UNIT] if n in names else []))}" for n in s.names
        if stops[n] or n in names))
    done()

    # 4. the restored data takes the place of the old, which is kept
    done = timed("swap", "replacing each member's data directory, keeping the old one")

    async def swap(name: str) -> None:
        await check(s.t[name], swap_script(keep), f"moving {ETCD_DATA} to {keep} and {STAGING} to {ETCD_DATA}",
                    timeout=120)
        swapped.append(name)
        report.kept[name] = keep
        progress(f"  {name}: old data kept in {keep}")

    try:
        await each_host(names, swap, s.opts.parallel)
    except OperationError as e:
        left = [n for n in names if n not in swapped]
        raise StepFailed(
            f"etcd restore, replacing the data: {e}\netcd and the apiservers are stopped. Members with the "
            f"snapshot's data: {', '.join(swapped) or 'none'} (their old data in {keep}); still with their "
            f"own: {', '.join(left)}. Run the restore again (it starts over), or on each of the first move "
            f"{keep} back to {ETCD_DATA} and run `hardway up`") from None
    write_atomic(cd.etcd_token, (report.token + "\n").encode(), 0o644)
    progress(f"  recorded the new cluster token in {cd.etcd_token}")
    done()

    # 5. `up`'s phases start everything, each waiting for its health
    done = timed("start", "starting etcd, the apiservers and their clients, as `up` does")
    started = ("every member holds the snapshot's data (old data in "
               f"{keep}) and its new token is recorded; fix what is named above, then `hardway up` finishes the start")
    try:
        await s.gather_and_plan()
        extra = unexpected_changes(s.plans)
        if extra:  # nothing changed them meanwhile but someone else's hand: do not roll it out here
            raise OperationError("the hosts changed during the restore:\n" + "\n".join(extra))
        report.up = UpReport(s.plans)
        await _up(s, report.up)
    except OperationError as e:
        raise StepFailed(f"etcd restore, starting: {e}\n{started}") from None
    done()

    # 6. the snapshot's copies on the members go; the old data directories stay
    await cleanup()


__all__ = ["RestoreReport", "SnapshotReport", "SnapshotStatus", "check_snapshot_file", "restore",
           "restore_argv", "snapshot"]
