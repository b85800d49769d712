"""Push: only the changed files, in one streamed tar per host, each file made atomic.

Every file travels as `<path>.hardway-new`, gets its owner and mode, and only then is renamed
over `<path>`: a reader sees the old file or the new one, never half of one, and a private
key is never readable by others, not even for a moment. Before the first rename the node
records the units this push obliges to restart (desired.PENDING): a run cut off between push
and restart still restarts them next time. It also records the paths it is about to write
(desired.CLAIMS) until the manifest, renamed last, lists them; it copies each adopted
file's original (`up --adopt`) to its backup, never over an existing one; and first of all it
records what the host had before (found.py), for `hardway reset`. When the pod routes unit is
rewritten or removed, the routes it no longer adds are deleted (render/host.py `stale_routes_script`).
"""

from __future__ import annotations

import shlex
import tarfile
import time
from collections.abc import Iterator
from pathlib import PurePosixPath

from ..render.bundle import File
from ..render.host import ROUTES_UNIT, stale_routes_script
from .desired import CLAIMS, MANIFEST, PENDING, SUMS, Blob
from .found import record_script
from .plan import UNIT_DIR, HostPlan
from .transport import Transport, check

SUFFIX = ".hardway-new"
CHUNK = 1 << 20


def _entry(item: File | Blob, mtime: int) -> Iterator[bytes]:
    info = tarfile.TarInfo(item.path.lstrip("/") + SUFFIX)
    info.mode = 0o600  # the real mode is set after chown, before the rename
    info.mtime = mtime
    if isinstance(item, Blob):
        info.size = item.size
        yield info.tobuf(format=tarfile.PAX_FORMAT)
        sent = 0
        with item.source.open("rb") as f:
            while chunk := f.read(CHUNK):
                sent += len(chunk)
                yield chunk
        if sent != item.size:
            raise OSError(f"{item.source} changed size while being sent ({item.size} -> {sent} bytes)")
    else:
        info.size = len(item.content)
        yield info.tobuf(format=tarfile.PAX_FORMAT)
        yield item.content
    if info.size % 512:
        yield b"\0" * (512 - info.size % 512)


def tar_stream(items: list[File | Blob]) -> Iterator[bytes]:
    mtime = int(time.time())
    for it in items:
        yield from _entry(it, mtime)
    yield b"\0" * 1024


def push_script(plan: HostPlan, root: str = "") -> str:
    """The node-side half: pending restarts, directories, extract, users, owners, modes, renames.
    `root` prefixes every node path (tests run the script into a scratch directory)."""
    items = [it for it, _ in plan.writes]
    # The manifest goes last: it claims files only once they are in place.
    items.sort(key=lambda it: it.path == MANIFEST)

    def q(path: str) -> str:
        return shlex.quote(root + path)

    dirs = sorted({str(PurePosixPath(it.path).parent) for it in items} | {str(PurePosixPath(PENDING).parent)})
    # What the host has before this push changes it, for `hardway reset` (found.py).
    lines = ["set -eu", "umask 022", record_script(plan.probe, root).rstrip("\n"),
             "mkdir -p " + " ".join(q(d) for d in dirs)]
    if plan.restarts or plan.reloads:  # a reload cut off is made up for by a restart next time
        lines.append(f"printf '%s\\n' {shlex.join(plan.restarts + plan.reloads)} >> {q(PENDING)}")
    for path, backup in sorted(plan.adopt.items()):
        lines.append(_keep_original(q(path), q(backup), q(str(PurePosixPath(backup).parent))))
    manifest_written = any(it.path == MANIFEST for it in items)
    if manifest_written:
        lines.append(f"printf '%s\\n' {shlex.join(it.path for it in items)} >> {q(CLAIMS)}")
    lines.append(f"umask 077; tar -x -C {shlex.quote(root or '/')} -f - --no-same-owner")
    for conf, tool in (("/etc/sysusers.d/", "systemd-sysusers"), ("/etc/tmpfiles.d/", "systemd-tmpfiles --create")):
        for it in items:
            if it.path.startswith(conf):
                lines.append(f"{tool} {q(it.path + SUFFIX)}")
    # Files no longer rendered go before the manifest that stops claiming them is renamed: a
    # push cut off here leaves them claimed, and the next run removes them again. A unit whose
    # file goes is stopped and disabled first (not in a scratch root: no systemd to ask).
    # Pod routes the new (or no) routes unit no longer adds are deleted: a removed worker's
    # (render/host.py). Not in a scratch root: `ip` would change this machine's routes.
    routes = UNIT_DIR + ROUTES_UNIT
    if not root and (routes in plan.removes or any(it.path == routes for it in items)):
        lines.append(stale_routes_script(routes, None if routes in plan.removes else routes + SUFFIX).rstrip("\n"))
    if plan.stops and not root:
        lines.append(f"systemctl disable --now {shlex.join(plan.stops)} || true")
    if plan.removes:
        lines.append("rm -f " + " ".join(q(p) for p in plan.removes))
    for it in items:
        new, path = q(it.path + SUFFIX), q(it.path)
        lines += [f"chown {shlex.quote(it.owner)} {new}", f"chmod {it.mode:04o} {new}", f"mv -f {new} {path}",
                  # Recorded in SUMS so the next facts run need not hash it again (facts.py).
                  f"printf '%s %s %s\\n' \"$(stat -c '%s %i %.9Z' {path})\" {it.sha256} {shlex.quote(it.path)} >> {q(SUMS)}"]
    if manifest_written:
        lines.append(f"rm -f {q(CLAIMS)}")  # the manifest, renamed last, now lists them
    return "\n".join(lines) + "\n"


def _keep_original(path: str, backup: str, backup_dir: str) -> str:
    """Shell: copy `path` (mode, owner, times, a symlink as a symlink) to `backup`, atomically.
    An existing backup is never overwritten: the same content is fine, another stops the push
    before any rename, as the file now there would otherwise be lost."""
    return (f"if [ -e {backup} ] || [ -L {backup} ]; then "
            f"[ \"$(sha256sum < {backup})\" = \"$(sha256sum < {path})\" ] || "
            "{ printf 'hardway: %s (the original kept by an earlier adoption) differs from %s: move the "
            f"backup away, then run up --adopt again\\n' {backup} {path} >&2; exit 1; }}; "
            f"else mkdir -p {backup_dir} && cp -a {path} {backup}{SUFFIX} && mv -f {backup}{SUFFIX} {backup}; fi")


async def push(t: Transport, plan: HostPlan, timeout: float = 900) -> None:
    items = [it for it, _ in plan.writes]
    if not items:
        return
    await check(t, push_script(plan), f"pushing {len(items)} file(s)", tar_stream(items), timeout)
