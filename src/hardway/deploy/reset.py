"""`hardway reset [NODE...]`: undo `hardway up` on hosts, leaving each as it was before.

Per host, two round trips: read hardway's records there (the node manifest: files, units,
images, adopted originals; the claims of an interrupted push; found.py's record of what the host
had before; the pod routes unit), then run one script built from them (pure: `reset_script`):

 1. stop the units, workloads first (reverse phase order), containerd last: with it still
    running, every container task is killed through it (its shim unmounts the container's root
    file system) and the images hardway imported are removed; leftover pod processes are killed
 2. unmount whatever is mounted under the directories the components filled (pod volumes,
    sandboxes' shm, pods' network namespaces)
 3. the CNI bridge and its veths, kube-proxy's ipvs dummy link, the pod routes
 4. the iptables chains the kubelet, kube-proxy and the CNI plugins made (KUBE-*, CNI-*, and the
    rules jumping to them; nothing else), then tables that are empty now and absent before
 5. kernel settings back to the values found, the files hardway wrote removed, each adopted
    file's original put back, the directories the components filled removed, the accounts and
    directories hardway created removed (a directory only when empty), systemd reloaded, units
    that ran before hardway started again with their own configuration
 6. /var/lib/hardway itself, last, and only when nothing above went wrong: a second reset can
    then pick up where this one stopped.

The script reports each thing it did (`A`), each thing it left and why (`N`) and each failure
(`P`). Kernel modules hardway loaded stay loaded: the kernel is shared (by every lab machine,
and by whatever else on a host uses overlay or br_netfilter), and a loaded module changes no file,
link, route or rule.
"""

from __future__ import annotations

import asyncio
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..clusterdir import ClusterDir
from ..errors import OperationError, UsageError
from ..lock import cluster_lock
from ..render.host import ROUTES_UNIT, installed_routes
from ..render.worker import CNI_BRIDGE
from ..spec.load import load_spec
from ..spec.model import ClusterSpec, Role
from .desired import BACKUP_DIR, CLAIMS, HARDWAY_STATE, MANIFEST
from .facts import read_manifest
from .found import FOUND, IPTABLES, Found, parse_found
from .hosts import Options, connect_all, each_host
from .plan import UNIT_DIR
from .push import SUFFIX
from .transport import Transport

Progress = Callable[[str], None]
CONTAINERD = "containerd.service"
KUBE_PROXY = "kube-proxy.service"
IPVS_LINK = "kube-ipvs0"  # kube-proxy's dummy interface in ipvs mode


def _quiet(_msg: str) -> None:
    pass


@dataclass
class NodeRecords:
    """What hardway's records on one node say (read_script, parse_records)."""

    node: str
    exists: bool = False  # /var/lib/hardway is there
    files: list[str] = field(default_factory=list)  # owned: the manifest's and an interrupted push's
    units: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)  # refs imported into containerd
    adopted: dict[str, str] = field(default_factory=dict)  # path -> backup of the original
    found: Found | None = None  # None: set up by a hardway that kept no record
    routes: list[tuple[str, str]] = field(default_factory=list)  # (pod CIDR, via)

    def before(self, unit: str) -> tuple[bool, bool]:
        """(enabled, active) before hardway. Without a record: a unit whose file hardway wrote
        was neither; any other (a package's, like haproxy) was both, as its package left it."""
        if self.found is not None:
            return self.found.was_enabled(unit), self.found.was_active(unit)
        theirs = UNIT_DIR + unit not in self.files
        return theirs, theirs


def read_script() -> str:
    return f"""
[ -d {HARDWAY_STATE} ] && echo E
[ -f {MANIFEST} ] && sed 's/^/J /' {MANIFEST}
[ -f {CLAIMS} ] && sed 's/^/L /' {CLAIMS}
[ -f {FOUND} ] && sed 's/^/R /' {FOUND}
[ -d {BACKUP_DIR} ] && find {BACKUP_DIR} \\( -type f -o -type l \\) ! -name '*{SUFFIX}' | sed 's/^/B /'
[ -f {UNIT_DIR}{ROUTES_UNIT} ] && sed 's/^/T /' {UNIT_DIR}{ROUTES_UNIT}
true
"""


def parse_records(node: str, text: str) -> NodeRecords:
    r = NodeRecords(node)
    manifest, found, routes = [], [], []
    claims: list[str] = []
    for line in text.splitlines():
        tag, _, rest = line.partition(" ")
        if tag == "E":
            r.exists = True
        elif tag == "J":
            manifest.append(rest)
        elif tag == "L" and rest.strip():
            claims.append(rest.strip())
        elif tag == "R":
            found.append(rest)
            r.found = r.found or Found()
        elif tag == "B" and rest.startswith(BACKUP_DIR + "/"):
            r.adopted[rest.removeprefix(BACKUP_DIR)] = rest  # as facts.py: a backup records its adoption
        elif tag == "T":
            routes.append(rest)
    doc = read_manifest(node, "\n".join(manifest), "and remove hardway's files from the host by hand")
    r.adopted.update(doc.get("adopted", {}))
    owned = dict.fromkeys([*doc.get("files", {}), *claims])
    r.files = sorted(p for p in owned if not p.startswith(HARDWAY_STATE + "/"))
    units = [str(u) for u in doc.get("units", [])]
    # An interrupted first push left unit files but no manifest naming their units.
    units += [p.removeprefix(UNIT_DIR) for p in r.files
              if p.startswith(UNIT_DIR) and p.endswith(".service") and p.removeprefix(UNIT_DIR) not in units]
    r.units = units
    r.images = list(dict.fromkeys(ref for refs in doc.get("images", {}).values() for ref in refs))
    if r.found is not None:
        r.found = parse_found("\n".join(found))
    r.routes = installed_routes("\n".join(routes))
    return r


# ---------------------------------------------------------------------------------------------
# the script (pure)

_HEAD = """\
set -uf
IFS='
'
problems=0
A() { printf 'A %s\\n' "$1"; }
N() { printf 'N %s\\n' "$1"; }
P() { printf 'P %s\\n' "$1"; problems=$((problems + 1)); }
"""

# iptables-save in, iptables-restore --noflush input out: per table, delete each rule of another
# chain that jumps (-j) or goes (-g) to a KUBE-* or CNI-* chain (the kubelet's, kube-proxy's,
# the CNI plugins'), then flush and delete those chains.
_CHAINS_AWK = r"""
function ours(c) { return c ~ /^(KUBE|CNI)-/ }
/^\*/ { table = substr($0, 2); nc = 0; nd = 0; next }
/^:/ { c = substr($1, 2); if (ours(c)) chain[++nc] = c; next }
/^-A / { if (!ours($2)) for (i = 3; i < NF; i++) if (($i == "-j" || $i == "-g") && ours($(i + 1))) { del[++nd] = "-D " substr($0, 4); break }; next }
/^COMMIT/ { if (nc || nd) { print "*" table; for (i = 1; i <= nd; i++) print del[i];
            for (i = 1; i <= nc; i++) print "-F " chain[i]; for (i = 1; i <= nc; i++) print "-X " chain[i]; print "COMMIT" } }
"""

# iptables-save in, the tables that hold nothing out: no rule, no chain of their own, every
# built-in chain accepting. iptables-nft cannot delete a table, but restoring it empty does.
_EMPTY_TABLES_AWK = r"""
/^\*/ { table = substr($0, 2); used = 0; next }
/^:/ { if ($2 != "ACCEPT") used = 1; next }
/^-A / { used = 1; next }
/^COMMIT/ { if (!used) print table }
"""


def _w(s: str) -> str:
    return shlex.quote(s)


def _stop(r: NodeRecords, unit: str) -> list[str]:
    enabled, _ = r.before(unit)
    u = _w(unit)
    # Not only active: a crash-looping unit is "activating", waiting for its next restart.
    lines = [f"case \"$(systemctl is-active {u} 2>/dev/null)\" in inactive|unknown|'') ;; *) systemctl stop {u} && "
             f"A {_w('stopped ' + unit)} || P {_w(unit + ': systemctl stop failed')} ;; esac"]
    if not enabled:
        lines.append(f"if systemctl is-enabled -q {u} 2>/dev/null; then systemctl disable -q {u} 2>/dev/null && "
                     f"A {_w('disabled ' + unit)} || P {_w(unit + ': systemctl disable failed')}; fi")
    return lines


def _workloads(r: NodeRecords) -> list[str]:
    """With containerd still running: every container task killed and removed (its shim
    unmounts the root file system), and the images hardway imported removed. Only the
    kubelet's namespace unless containerd's whole root is hardway's."""
    all_ns = r.found is not None and "/var/lib/containerd" in r.found.data
    namespaces = "$(ctr namespaces ls -q 2>/dev/null)" if all_ns else "k8s.io"
    tasks = 'for ns in $nss; do ctr -n "$ns" tasks ls -q 2>/dev/null | sed "s|^|$ns |"; done'
    lines = [
        f"if command -v ctr >/dev/null 2>&1 && systemctl is-active -q {CONTAINERD}; then",
        f"  nss={namespaces}",
        # SIGKILL to each, then (once none runs) delete those still there: containerd's CRI
        # plugin deletes a pod's task itself once it has exited.
        f"  killed=$({tasks})",
        '  for t in $killed; do ctr -n "${t%% *}" tasks kill -s SIGKILL "${t#* }" >/dev/null 2>&1; done',
        "  i=0",
        '  while [ "$i" -lt 10 ] && for ns in $nss; do ctr -n "$ns" tasks ls 2>/dev/null; done | grep -qw RUNNING; do',
        "    sleep 1; i=$((i + 1))",
        "  done",
        f"  for t in $({tasks}); do",
        '    ctr -n "${t%% *}" tasks rm -f "${t#* }" >/dev/null 2>&1 || ! ctr -n "${t%% *}" tasks ls -q 2>/dev/null | '
        'grep -qx "${t#* }" || N "container ${t#* }: containerd could not delete its task"',
        "  done",
        '  [ -z "$killed" ] || A "stopped $(echo "$killed" | wc -l) container(s)"',
    ]
    if r.images:
        lines += ["  n=0",
                  f"  for ref in {' '.join(_w(i) for i in r.images)}; do",
                  '    ctr -n k8s.io images rm "$ref" >/dev/null 2>&1 && n=$((n + 1))',
                  "  done",
                  '  [ "$n" -gt 0 ] && A "removed $n image(s) hardway imported into containerd"']
    lines.append("fi")
    return lines


def _leftover_pods(root: str) -> list[str]:
    """Pod processes containerd could not stop (it was down, say): killed by their cgroups, which
    then go (the systemd cgroup driver's slice through systemd). Only the kubelet's own cgroups
    at the top of each hierarchy (kubepods, kubepods.slice; the kubelet's default cgroupRoot):
    on a host that runs lab machines, theirs lie deeper and are not this host's to touch."""
    cg = _w(root + "/sys/fs/cgroup")
    return [
        "systemctl stop kubepods.slice >/dev/null 2>&1",
        f"tops=$(find {cg} -mindepth 1 -maxdepth 2 -type d -name 'kubepods*' 2>/dev/null)",
        'procs=$([ -z "$tops" ] || find $tops -name cgroup.procs 2>/dev/null)',
        'pids=$([ -z "$procs" ] || cat $procs 2>/dev/null | sort -u)',
        'if [ -n "$pids" ]; then kill -9 $pids 2>/dev/null; A "killed $(echo "$pids" | wc -l) leftover pod process(es)"; sleep 1; fi',
        '[ -z "$tops" ] || find $tops -depth -type d -exec rmdir {} + 2>/dev/null',
    ]


def _unmount(dirs: list[str], root: str) -> list[str]:
    """Everything mounted under `dirs`, deepest first (mountinfo escapes a space as \\040)."""
    if not dirs:
        return []
    pattern = "|".join(f"{_w(root + d)}|{_w(root + d)}/*" for d in dirs)
    return [
        "n=0",
        f"for m in $(awk '{{print $5}}' {_w(root + '/proc/self/mountinfo')} | sort -r); do",
        f'  case "$m" in {pattern}) m=$(printf \'%b\' "$m")',
        '    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || P "cannot unmount $m"; n=$((n + 1)) ;; esac',
        "done",
        '[ "$n" -gt 0 ] && A "unmounted $n file system(s) the pods and containers used"',
    ]


def _links(r: NodeRecords) -> list[str]:
    lines = []
    if CONTAINERD in r.units:
        b = _w(CNI_BRIDGE)
        lines += [
            f"if ip link show {b} >/dev/null 2>&1; then",
            f"  for l in $(ip -o link show master {b} 2>/dev/null | awk -F': ' '{{print $2}}' | cut -d@ -f1); do"
            ' ip link del "$l" 2>/dev/null; done',
            f"  ip link del {b} && A {_w(f'removed the CNI bridge {CNI_BRIDGE} and its veths')} || "
            f"P {_w(f'cannot remove the link {CNI_BRIDGE}')}",
            "fi",
        ]
    if KUBE_PROXY in r.units:
        lines.append(f"ip link show {IPVS_LINK} >/dev/null 2>&1 && {{ ip link del {IPVS_LINK} && "
                     f"A {_w('removed the link ' + IPVS_LINK)} || P {_w('cannot remove the link ' + IPVS_LINK)}; }}")
    if r.routes:
        lines.append("n=0")
        lines += [f"ip route del {_w(cidr)} via {_w(via)} 2>/dev/null && n=$((n + 1))" for cidr, via in r.routes]
        lines.append('[ "$n" -gt 0 ] && A "removed $n pod route(s)"')
    return lines


def _iptables(r: NodeRecords) -> list[str]:
    lines = [f"chains_awk={_w(_CHAINS_AWK)}", f"empty_awk={_w(_EMPTY_TABLES_AWK)}"]
    for cmd in IPTABLES:
        lines += [
            f"if command -v {cmd}-save >/dev/null 2>&1; then",
            f'  rules=$({cmd}-save 2>/dev/null | awk "$chains_awk")',
            '  if [ -n "$rules" ]; then',
            f'    printf \'%s\\n\' "$rules" | {cmd}-restore --noflush && '
            f'A "removed $(printf \'%s\\n\' "$rules" | grep -c \'^-X \') chain(s) KUBE-*, CNI-* ({cmd})" || '
            f'P "{cmd}-restore could not remove the KUBE-* and CNI-* chains"',
            "  fi",
        ]
        before = None if r.found is None else r.found.tables.get(cmd)
        if before is not None:  # tables made since the first push that hold nothing now
            keep = " ".join(sorted(before))
            lines += [
                f'  for t in $({cmd}-save 2>/dev/null | awk "$empty_awk"); do',
                f'    case {_w(" " + keep + " ")} in *" $t "*) ;; *) printf \'*%s\\nCOMMIT\\n\' "$t" | {cmd}-restore && '
                f'A "removed the empty {cmd} table $t (made after hardway\'s first push)" ;; esac',
                "  done",
            ]
        lines.append("fi")
    return lines


def _sysctls(r: NodeRecords, root: str) -> list[str]:
    lines = []
    for key, value in sorted((r.found.sysctls if r.found else {}).items()):
        if not value:
            continue  # the key did not exist then (its module was not loaded): nothing to put back
        proc = _w(root + "/proc/sys/" + key.replace(".", "/"))
        lines.append(f"[ \"$(cat {proc} 2>/dev/null)\" = {_w(value)} ] || {{ sysctl -q -w {_w(f'{key}={value}')} "
                     f">/dev/null 2>&1 && A {_w(f'{key} back to {value}')} || "
                     f"N {_w(f'{key}: cannot set it back to {value}; left as it is')}; }}")
    return lines


def _files(r: NodeRecords, root: str) -> list[str]:
    q = lambda p: _w(root + p)  # noqa: E731
    plain = [p for p in r.files if p not in r.adopted]
    lines = []
    if plain:
        lines += ["n=0",
                  f"for p in {' '.join(q(p) for p in plain)}; do",
                  '  if [ -e "$p" ] || [ -L "$p" ]; then rm -f "$p" && n=$((n + 1)) || P "cannot remove $p"; fi',
                  f'  rm -f "$p{SUFFIX}"',
                  "done",
                  '[ "$n" -gt 0 ] && A "removed $n file(s) hardway wrote"']
    for path, backup in sorted(r.adopted.items()):
        p, b = q(path), q(backup)
        lines.append(f"if [ -e {b} ] || [ -L {b} ]; then mv -f {b} {p} && A {_w(f'put back the original {path}')} "
                     f"|| P {_w(f'cannot put back {path} from {backup}')}; "
                     f"elif [ -e {p} ]; then P {_w(f'{path}: its original is gone from {backup}; left as hardway wrote it')}; fi")
    return lines


def _data(r: NodeRecords, root: str) -> list[str]:
    lines = []
    for d in sorted(r.found.data if r.found else ()):
        w = _w(root + d)
        lines.append(f"if [ -e {w} ]; then rm -rf --one-file-system {w} && A {_w('removed ' + d)} || "
                     f"P {_w(d + ': not removed completely (a file system still mounted there?)')}; fi")
    return lines


def _accounts(r: NodeRecords) -> list[str]:
    lines = []
    for user in r.found.users if r.found else ():
        w = _w(user)
        lines.append(f"if getent passwd {w} >/dev/null; then userdel {w} && A {_w('removed user ' + user)} || "
                     f"P {_w('cannot remove user ' + user)}; fi")
    for group in r.found.groups if r.found else ():
        w = _w(group)
        lines.append(f"if getent group {w} >/dev/null; then groupdel {w} && A {_w('removed group ' + group)} || "
                     f"P {_w('cannot remove group ' + group)}; fi")
    return lines


def _dirs(r: NodeRecords, root: str) -> list[str]:
    """The directories hardway's pushes created, deepest first, each only if empty now."""
    if r.found is None:
        return []
    made = sorted(r.found.dirs - r.found.data, key=lambda d: (-d.count("/"), d))
    if not made:
        return []
    return ["n=0",
            f"for d in {' '.join(_w(root + d) for d in made)}; do",
            '  [ -d "$d" ] || continue',
            '  rmdir "$d" 2>/dev/null && n=$((n + 1)) || '
            'N "left $d: it holds what hardway did not put there: $(ls -A "$d" | head -3 | tr \'\\n\' \' \')"',
            "done",
            '[ "$n" -gt 0 ] && A "removed $n empty director(y/ies) hardway created"']


def _systemd(r: NodeRecords) -> list[str]:
    lines = ["systemctl daemon-reload",
             f"systemctl reset-failed {' '.join(_w(u) for u in r.units)} >/dev/null 2>&1"]
    for unit in r.units:
        if r.before(unit)[1]:
            u = _w(unit)
            lines.append(f"systemctl restart {u} && A {_w(f'started {unit} again (it ran before hardway)')} || "
                         f"P {_w(f'{unit} ran before hardway, and does not start again')}")
    return lines


def reset_script(r: NodeRecords, root: str = "") -> str:
    """The node-side reset, in the order of the module's docstring. `root` prefixes every path it
    reads or changes, /proc and /sys included (tests run it on a scratch directory, with
    stand-ins for systemctl, ctr, ip, iptables and the account tools on PATH)."""
    workloads = CONTAINERD in r.units
    stop_first = [u for u in reversed(r.units) if u != CONTAINERD]
    data = sorted(r.found.data) if r.found else []
    lines = [_HEAD.rstrip("\n")]
    for u in stop_first:
        lines += _stop(r, u)
    if workloads:
        lines += _workloads(r)
        lines += _stop(r, CONTAINERD)
        lines += _leftover_pods(root)
    lines += _unmount(data, root)
    lines += _links(r)
    lines += _iptables(r)
    lines += _sysctls(r, root)
    lines += _files(r, root)
    lines += _data(r, root)
    lines += _accounts(r)
    lines += _dirs(r, root)
    if r.units:
        lines += _systemd(r)
    if r.found is None and r.files:
        lines.append(f"N {_w('set up by a hardway that kept no record of the host before it: directories, accounts and kernel settings hardway made are left')}")
    state = _w(root + HARDWAY_STATE)
    lines += ['if [ "$problems" -eq 0 ]; then',
              f"  rm -rf {state} && A {_w('removed ' + HARDWAY_STATE)}",
              "else",
              f"  N {_w(f'kept {HARDWAY_STATE}: it records what is left to undo; fix the problems above and run reset again')}",
              "fi",
              "exit 0"]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# hosts


@dataclass
class HostReset:
    node: str
    done: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    nothing: bool = False  # no trace of hardway on the host
    error: str = ""  # unreachable, or the reset itself failed

    @property
    def ok(self) -> bool:
        return not (self.error or self.problems)


@dataclass
class ResetReport:
    hosts: dict[str, HostReset]
    seconds: float = 0.0

    @property
    def failed(self) -> list[str]:
        return [n for n, h in self.hosts.items() if not h.ok]

    @property
    def nothing_to_do(self) -> bool:
        return all(h.nothing for h in self.hosts.values())


def targets(spec: ClusterSpec, nodes: tuple[str, ...] | list[str] = ()) -> list[str]:
    """The nodes to reset, workers first (their pods stop while the control plane still runs),
    then the others; every node of the spec when none is named."""
    known = [n.name for n in spec.nodes]
    unknown = [n for n in nodes if n not in known]
    if unknown:
        raise UsageError(f"no node {', '.join(map(repr, unknown))} in cluster.yaml; its nodes: {', '.join(known)}")
    chosen = [n for n in spec.nodes if not nodes or n.name in nodes]
    return [n.name for n in chosen if n.has(Role.worker)] + [n.name for n in chosen if not n.has(Role.worker)]


def parse_output(h: HostReset, text: str) -> None:
    for line in text.splitlines():
        tag, _, rest = line.partition(" ")
        {"A": h.done, "N": h.notes, "P": h.problems}.get(tag, []).append(rest)


async def reset_host(t: Transport, progress: Progress) -> HostReset:
    h = HostReset(t.node)
    r = await t.run(read_script(), timeout=60)
    if r.rc != 0:
        raise OperationError(f"{t.node}: reading hardway's records failed (exit {r.rc}): {r.err.strip()[-500:]}")
    records = parse_records(t.node, r.out)
    if not records.exists:
        h.nothing = True
        progress(f"{t.node}: nothing to do (no {HARDWAY_STATE})")
        return h
    progress(f"{t.node}: resetting ({len(records.files)} file(s), {len(records.units)} unit(s))")
    r = await t.run(reset_script(records), timeout=600)
    parse_output(h, r.out)
    if r.rc != 0:
        h.error = f"the reset script failed (exit {r.rc}): {(r.err or r.out).strip()[-800:]}"
    for line in h.done:
        progress(f"  {t.node}: {line}")
    return h


async def _reset_all(spec: ClusterSpec, cd: ClusterDir, names: list[str], opts: Options,
                     progress: Progress) -> dict[str, HostReset]:
    out: dict[str, HostReset] = {}

    async def one(name: str) -> None:
        t = None
        try:
            t = (await connect_all(spec, cd, [name], opts, progress))[name]
            out[name] = await reset_host(t, progress)
        except OperationError as e:  # unreachable, or a command timed out: the others go on
            out[name] = HostReset(name, error=str(e))
            progress(f"{name}: {e}")
        finally:
            if t is not None:
                await t.close()

    workers = set(n.name for n in spec.workers)
    for group in ([n for n in names if n in workers], [n for n in names if n not in workers]):
        await each_host(group, one, opts.parallel)
    return {n: out[n] for n in names}


def reset(directory: str | Path = ".", nodes: tuple[str, ...] = (), progress: Progress = _quiet,
          opts: Options | None = None) -> ResetReport:
    """Reset `nodes` (default: every node; workers first). A host that cannot be reached or
    reset is reported in the result (`failed`); the others are reset all the same."""
    start = time.monotonic()
    cd = ClusterDir.at(directory)
    spec = load_spec(cd.spec).spec
    names = targets(spec, nodes)
    with cluster_lock(directory, "reset"):
        hosts = asyncio.run(_reset_all(spec, cd, names, opts or Options(), progress))
    return ResetReport(hosts, round(time.monotonic() - start, 2))


__all__ = ["HostReset", "NodeRecords", "ResetReport", "parse_records", "read_script", "reset", "reset_script",
           "targets"]
