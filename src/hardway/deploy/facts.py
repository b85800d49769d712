"""Facts: one round trip per host, a POSIX shell script (nodes need no Python), parsed here.

The script reports, one tagged line each: arch, kernel, OS, swap, cgroup version, stat +
sha256 of every managed path, each unit's state, units whose restart is still owed from an
interrupted run, hardway's manifest and claims (which files it owns), which of the needed
packages' configuration files are as shipped, the images containerd holds, the current value of each sysctl and whether each kernel module is present (built in
or loaded).
"""

from __future__ import annotations

import json
import shlex

from .desired import BACKUP_DIR, CLAIMS, HARDWAY_STATE, MANIFEST, PENDING, SUMS, Desired
from ..errors import OperationError
from .plan import Facts, FileFact
from .push import SUFFIX
from .transport import Transport, check


# A built-in module has no /sys/module entry unless it takes parameters, and a kernel without
# loadable modules has no modules.builtin either: look for what the module provides.
MODULE_EVIDENCE = {
    "overlay": "grep -qw overlay /proc/filesystems",
    "br_netfilter": "[ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]",
    "ip_vs": "[ -e /proc/net/ip_vs ]",
    "nf_conntrack": "[ -e /proc/sys/net/netfilter/nf_conntrack_max ]",
}


def module_present(m: str) -> str:
    """A shell condition true when kernel module `m` is built in or loaded."""
    test = f"[ -d {shlex.quote('/sys/module/' + m)} ]"
    return f"{{ {test} || {MODULE_EVIDENCE[m]}; }}" if m in MODULE_EVIDENCE else test


def _module_checks(modules: list[str]) -> str:
    return "".join(f"if {module_present(m)}; then echo {shlex.quote(f'M {m} 1')}; else echo {shlex.quote(f'M {m} 0')}; fi\n"
                   for m in modules)


# sha256sum runs at ~150 MB/s on a node: hashing 300 MB of binaries on every run would cost
# seconds. The node keeps SUMS: "size inode ctime sha256 path" per file hashed before; a file
# whose size, inode and ctime (which no user can set back) still match is not re-hashed.
HASH_SCRIPT = f"""\
mkdir -p {HARDWAY_STATE}; rm -f {SUMS}.tmp
ST=$(for p; do [ -f "$p" ] && printf '%s\\n' "$p"; done | xargs -r -d '\\n' stat -c 'S %a %U:%G %s %i %.9Z %n' 2>/dev/null)
[ -n "$ST" ] && printf '%s\\n' "$ST"
printf '%s\\n' "$ST" | awk -v sums={SUMS} -v keep={SUMS}.tmp '
  BEGIN {{ while ((getline l < sums) > 0) {{ split(l, a, " "); c[a[1] " " a[2] " " a[3] " " a[5]] = a[4] }} }}
  NF >= 7 {{ k = $4 " " $5 " " $6 " " $7
           if (k in c) {{ print "H " c[k] "  " $7; print $4, $5, $6, c[k], $7 > keep }}
           else print "N " $4, $5, $6, $7 }}' > {SUMS}.out
grep '^H ' {SUMS}.out
grep '^N ' {SUMS}.out | while read -r _ size ino ct path; do
  h=$(sha256sum < "$path" | cut -c1-64)
  echo "H $h  $path"; echo "$size $ino $ct $h $path" >> {SUMS}.tmp
done
[ -f {SUMS}.tmp ] && mv -f {SUMS}.tmp {SUMS}; rm -f {SUMS}.out
"""


def facts_script(paths: list[str], units: list[str], sysctls: list[str], modules: list[str],
                 packages: list[str] = ()) -> str:
    q = shlex.join
    return f"""
set -u
echo "A $(uname -m)"
echo "K $(uname -r)"
echo "O $(. /etc/os-release 2>/dev/null; echo "${{PRETTY_NAME:-unknown}}")"
echo "W $(tail -n +2 /proc/swaps 2>/dev/null | wc -l)"
command -v systemctl >/dev/null && echo "Y systemd" || echo "Y none"
echo "G $(stat -fc %T /sys/fs/cgroup 2>/dev/null)"
set -- {q(paths)}
{HASH_SCRIPT}
for u in {q(units) if units else ''}; do echo "U $u $(systemctl is-active "$u" 2>/dev/null)"; done
[ -f {PENDING} ] && sed 's/^/P /' {PENDING}
[ -f {MANIFEST} ] && sed 's/^/J /' {MANIFEST}
[ -f {CLAIMS} ] && sed 's/^/L /' {CLAIMS}
[ -d {BACKUP_DIR} ] && find {BACKUP_DIR} \\( -type f -o -type l \\) ! -name '*{SUFFIX}' | sed 's/^/B /'
if [ -S /run/containerd/containerd.sock ] && command -v ctr >/dev/null; then
  ctr -n k8s.io images ls -q 2>/dev/null | sed 's/^/I /'
fi
for k in {q(sysctls) if sysctls else ''}; do echo "C $k $(cat "/proc/sys/$(echo "$k" | tr . /)" 2>/dev/null)"; done
{_module_checks(modules)}
for p in {q(packages) if packages else ''}; do dpkg-query -W -f='D ${{Package}} ${{Status}}\\n' "$p" 2>/dev/null | grep ' installed$' | cut -d' ' -f1-2; done
# The packages' configuration files still as shipped (dpkg's md5): a package default, not a user's file.
for p in {q(packages) if packages else ''}; do dpkg-query -W -f='${{Conffiles}}\\n' "$p" 2>/dev/null; done |
  while read -r f md5 _; do [ -f "$f" ] && [ "$(md5sum < "$f" | cut -c1-32)" = "$md5" ] && echo "F $f"; done
true
"""


# The filesystem at /sys/fs/cgroup, as the kubelet tells (libcontainer's IsCgroup2UnifiedMode):
# cgroup2fs is v2; tmpfs holds v1 hierarchies (a hybrid host counts as v1).
CGROUP_FS = {"cgroup2fs": 2, "tmpfs": 1}


def parse_facts(node: str, text: str) -> Facts:
    stat: dict[str, tuple[int, str]] = {}
    sha: dict[str, str] = {}
    units: set[str] = set()
    info: dict[str, str] = {}
    pending: list[str] = []
    images: set[str] = set()
    sysctls: dict[str, str] = {}
    modules: dict[str, bool] = {}
    packages: set[str] = set()
    manifest: list[str] = []
    claims: set[str] = set()
    pristine: set[str] = set()
    kept: dict[str, str] = {}
    for line in text.splitlines():
        tag, _, rest = line.partition(" ")
        if tag == "J":
            manifest.append(rest)
        elif tag == "L" and rest.strip():
            claims.add(rest.strip())
        elif tag == "F":
            pristine.add(rest.strip())
        elif tag == "B" and rest.startswith(BACKUP_DIR + "/"):
            # A backup is itself the record of an adoption, should the push that made it have
            # stopped before its manifest landed.
            kept[rest.removeprefix(BACKUP_DIR)] = rest
        elif tag == "S":
            mode, owner, _size, _ino, _ctime, path = rest.split(" ", 5)
            stat[path] = (int(mode, 8), owner)
        elif tag == "H":
            digest, path = rest.split("  ", 1)
            sha[path] = digest
        elif tag == "U":
            name, _, state = rest.partition(" ")
            if state.strip() == "active":
                units.add(name)
        elif tag == "P" and rest.strip():
            pending.append(rest.strip())
        elif tag == "I":
            images.add(rest.strip())
        elif tag == "C":
            k, _, v = rest.partition(" ")
            sysctls[k] = v.strip()
        elif tag == "M":
            k, _, v = rest.partition(" ")
            modules[k] = v.strip() == "1"
        elif tag == "D":
            packages.add(rest.strip())
        elif tag in ("A", "K", "O", "W", "Y", "G"):
            info[tag] = rest.strip()
    files: dict[str, FileFact | None] = {
        p: FileFact(sha[p], *stat[p]) for p in stat if p in sha
    }
    owned, adopted = ownership(node, "\n".join(manifest))
    return Facts(
        node=node, arch=info.get("A", ""), kernel=info.get("K", ""), os_release=info.get("O", ""),
        swap_on=info.get("W", "0") not in ("", "0"), systemd=info.get("Y") == "systemd",
        cgroup_version=CGROUP_FS.get(info.get("G", ""), 0),
        files=files, active_units=frozenset(units), pending_restarts=tuple(dict.fromkeys(pending)),
        images=frozenset(images), sysctls=sysctls, modules=modules, packages=frozenset(packages),
        owned=frozenset(owned | claims), adopted={**kept, **adopted}, pristine=frozenset(pristine),
    )


def read_manifest(node: str, manifest: str, without: str) -> dict:
    """The node's manifest as a document ({} when there is none), its keys checked. `without`:
    what removing a damaged one would mean, for the error."""
    if not manifest:
        return {}
    try:
        doc = json.loads(manifest)
        if not (isinstance(doc, dict) and isinstance(doc.get("files", {}), dict)
                and isinstance(doc.get("adopted", {}), dict) and isinstance(doc.get("units", []), list)
                and isinstance(doc.get("images", {}), dict)):
            raise ValueError("not a hardway manifest")
        return doc
    except ValueError as e:
        # Guessing would either replace files we do not own or back up our own as "originals".
        raise OperationError(f"{node}: {MANIFEST} is damaged ({e}), so hardway cannot tell which files "
                             f"it owns there: restore it, or remove it ({without})") from None


def ownership(node: str, manifest: str) -> tuple[set[str], dict[str, str]]:
    """The paths the node's manifest lists, and the adopted ones' backups (none: no manifest)."""
    doc = read_manifest(node, manifest, "then every file that differs from the bundle counts as foreign, "
                                        "see `hardway up --adopt`")
    return set(doc.get("files", {})), dict(doc.get("adopted", {}))


async def gather(t: Transport, d: Desired) -> Facts:
    script = facts_script(sorted(d.items), d.unit_names, sorted(d.bundle.sysctls), d.bundle.modules,
                          d.bundle.packages)
    r = await check(t, script, "gathering facts", timeout=120)
    return parse_facts(d.node, r.out)
