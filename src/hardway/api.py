"""hardway as a library: every CLI command is one call here.

    import hardway.api as hw
    hw.init("mylab", preset="basic")
    hw.pki_init("mylab")
    hw.render("mylab")
"""

from __future__ import annotations

import re
from pathlib import Path

from .clusterdir import ClusterDir
from .errors import OperationError, UsageError
from .export import ExportReport, write_bundles
from .fsio import write_atomic
from .kubeconfig_merge import merge_kubeconfig
from .lock import cluster_lock
from .material import MaterialReport, current_material, ensure_material
from .membership import load_membership
from .pki import inspect
from .render import ClusterBundle, render_cluster
from .spec.load import LoadedSpec, load_spec, parse_spec
from .spec.presets import PRESETS, render_preset


def init(directory: str | Path, preset: str = "basic", mirror: str | None = None,
         name: str | None = None, force: bool = False, lab: bool = False) -> Path:
    """Create DIR/cluster.yaml from a preset. Refuses to overwrite unless `force`."""
    if preset not in PRESETS:
        raise UsageError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    cd = ClusterDir.at(directory)
    if cd.spec.exists() and not force:
        raise UsageError(f"{cd.spec} already exists; edit it, or pass --force to replace it")
    if name is None:
        name = re.sub(r"[^a-z0-9-]+", "-", cd.root.resolve().name.lower()).strip("-")[:63] or "lab"
    text = render_preset(preset, name, mirror, lab)
    parse_spec(text, str(cd.spec))  # a preset that does not validate is a bug; fail loudly
    write_atomic(cd.spec, text.encode(), 0o644)
    return cd.spec


def validate(directory: str | Path = ".") -> LoadedSpec:
    return load_spec(ClusterDir.at(directory).spec)


def pki_init(directory: str | Path = ".", reissue: tuple[str, ...] = ()) -> MaterialReport:
    cd = ClusterDir.at(directory)
    spec = validate(directory).spec
    with cluster_lock(directory, "pki init"):
        return ensure_material(cd, spec, reissue)


def pki_renew(directory: str | Path = ".", names: tuple[str, ...] = (), every: bool = False,
              new_key: bool = False, validity_days: int | None = None):
    """Reissue leaf certificates `names` (or with `every` all of them) for their keys (a new key
    with `new_key`), valid `validity_days` (default: the spec's); the kubeconfigs embedding them
    are rewritten; the next `up` rolls them out (renewal.RenewReport says where and what it
    restarts). A CA is refused (exit 2): `pki_rotate_ca` replaces one."""
    from .renewal import renew
    cd = ClusterDir.at(directory)
    spec = validate(directory).spec
    with cluster_lock(directory, "pki renew"):
        return renew(cd, spec, tuple(names), every, new_key, validity_days)


def pki_show(directory: str | Path = ".") -> list[inspect.CertRow]:
    cd = ClusterDir.at(directory)
    return inspect.show(cd, validate(directory).spec)


def pki_check(directory: str | Path = ".", days: int = 30) -> list[str]:
    cd = ClusterDir.at(directory)
    return inspect.check(cd, validate(directory).spec, days)


def admin_kubeconfig_path(directory: str | Path = ".") -> Path:
    cd = ClusterDir.at(directory)
    validate(directory)
    path = cd.kubeconfig("admin")
    if not path.exists():
        raise OperationError(f"{path} does not exist yet; run `hardway pki init` first")
    return path


def merge_admin_kubeconfig(directory: str | Path = ".", target: Path | None = None) -> Path:
    target = target or Path.home() / ".kube" / "config"
    merge_kubeconfig(admin_kubeconfig_path(directory).read_bytes(), target)
    return target


def render(directory: str | Path = ".", out: str | Path | None = None) -> tuple[ClusterBundle, ExportReport, MaterialReport]:
    """Ensure the material exists (idempotent), render every bundle and write them. Refuses
    (StalePki, exit 2) while the PKI does not match the spec."""
    cd = ClusterDir.at(directory)
    spec = validate(directory).spec
    with cluster_lock(directory, "render"):
        material_report, material = current_material(cd, spec, "render")
        bundles = render_cluster(spec, material, load_membership(cd))
        report = write_bundles(bundles, Path(out) if out else cd.bundles)
    return bundles, report, material_report


def up(directory: str | Path = ".", progress=lambda _m: None, timeout: float = 300,
       parallel: int = 16, local: tuple[str, ...] = (), adopt: bool = False, worker_batch: int = 1):
    """Bring the cluster up, or up to date: idempotent (deploy/up.py). A file on a host that
    hardway does not own and would change is refused, unless `adopt` (its original is kept).
    Running units restart one host at a time, workers `worker_batch` at a time (roll.py)."""
    from .deploy.hosts import Options
    from .deploy.up import up as _up
    return _up(directory, progress, Options(timeout, parallel, local, adopt, worker_batch))


def secrets_rotate(directory: str | Path = ".", progress=lambda _m: None, timeout: float = 300,
                   parallel: int = 16, local: tuple[str, ...] = (), worker_batch: int = 1,
                   dry_run: bool = False):
    """Rotate the key Secrets are encrypted with at rest, or finish a rotation cut off before
    (keyrotation.py): new key as a read key, `up`; as the write key, `up`; every Secret
    rewritten; old key dropped, `up`. Each `up` rolls the apiservers one at a time."""
    from .deploy.hosts import Options
    from .keyrotation import rotate
    return rotate(directory, progress, Options(timeout, parallel, local, False, worker_batch), dry_run)


def pki_rotate_ca(directory: str | Path = ".", ca: str = "ca", progress=lambda _m: None, timeout: float = 300,
                  parallel: int = 16, local: tuple[str, ...] = (), worker_batch: int = 1):
    """Rotate CA `ca` (ca, etcd-ca or front-proxy-ca), or finish its rotation cut off before
    (carotation.py): trust old and new, `up`; every leaf reissued by the new one, `up`; the
    controller manager signs with it, `up`, kubelets renew their client certificates; the old
    one dropped, `up`. Flat layout only (exit 2 for `pki.layout: root`)."""
    from .carotation import rotate_ca
    from .deploy.hosts import Options
    return rotate_ca(directory, ca, progress, Options(timeout, parallel, local, False, worker_batch))


def diff(directory: str | Path = ".", progress=lambda _m: None, parallel: int = 16,
         local: tuple[str, ...] = ()):
    """Per host, what `up` would change (deploy.plan.HostPlan); changes nothing."""
    from .deploy.hosts import Options
    from .deploy.up import diff as _diff
    return _diff(directory, progress, Options(parallel=parallel, local=local))


def reset_targets(directory: str | Path = ".", nodes: tuple[str, ...] = ()) -> list[str]:
    """The nodes `reset` would reset, in its order (workers first); an unknown name is refused."""
    from .deploy.reset import targets
    return targets(validate(directory).spec, nodes)


def reset(directory: str | Path = ".", nodes: tuple[str, ...] = (), progress=lambda _m: None,
          parallel: int = 16, local: tuple[str, ...] = ()):
    """Undo `up` on `nodes` (default: every node, workers first): hardway's units stopped and
    disabled, its files removed, adopted originals put back, the components' data, mounts,
    links, routes, iptables chains and accounts removed (deploy/reset.py). Changes nothing on
    this machine. Returns a deploy.reset.ResetReport: a host that could not be reached or reset
    is in its `failed`, and the others are reset all the same."""
    from .deploy.hosts import Options
    from .deploy.reset import reset as _reset
    return _reset(directory, tuple(nodes), progress, Options(parallel=parallel, local=local))


def node_remove(directory: str | Path = ".", name: str = "", progress=lambda _m: None, reissue: tuple[str, ...] = (),
                timeout: float = 300, parallel: int = 16, local: tuple[str, ...] = (), force: bool = False,
                drain_timeout: float = 300):
    """Remove node `name` from the running cluster.

    A controller: its entry out of cluster.yaml (the rest of the file as it was), then `up`,
    which removes its etcd member with the quorum held, the load balancers and apiservers stop
    using it, and its units are stopped (deploy/members.py). `reissue`: certificates the removal
    makes stale (the apiserver's names every controller), reissued on the way. Refused, with
    nothing changed, when that is needed and not given.

    A worker (deploy/retire.py): cordoned and drained (within `drain_timeout` seconds; a failed
    drain changes nothing), its host reset, its Node deleted, its entry out of cluster.yaml, then
    `up`, which deletes the other nodes' pod routes to it. Returns a retire.WorkerRemoval. An
    unreachable worker is refused unless `force` (Node and entry removed, the machine untouched)."""
    from .deploy.hosts import Options
    from .deploy.up import UpReport
    from .deploy.up import up as _up
    from .errors import HardwayError
    from .pki.ensure import StalePki
    from .spec.edit import without_node
    from .spec.model import Role

    cd = ClusterDir.at(directory)
    spec = validate(directory).spec
    names = [n.name for n in spec.nodes]
    if name not in names:
        raise UsageError(f"no node named {name!r} in {cd.spec}; nodes: {', '.join(names)}")
    node = spec.node(name)
    if node.roles != [Role.controller]:
        from .deploy.retire import remove_worker
        return remove_worker(directory, name, progress, Options(timeout, parallel, local), force, drain_timeout,
                             tuple(reissue))
    if force:
        raise UsageError(f"--force: {name} is a controller; its removal goes ahead when its machine cannot be "
                         "reached (and names what to stop there), so leave --force out")
    old = cd.spec.read_text()
    new = without_node(old, name, str(cd.spec))
    parse_spec(new, f"{cd.spec} without {name}")  # e.g. its last controller: refused here
    with cluster_lock(directory, f"node remove {name}"):
        mode = cd.spec.stat().st_mode & 0o7777
        # What --reissue replaces, kept until a host has changed: a refusal before that (the
        # quorum, say) puts the directory back as it was, certificates included.
        kept = {f: (f.read_bytes(), f.stat().st_mode & 0o7777) for n in reissue
                for f in (cd.cert(n), cd.key(n)) if f.exists()}

        def put_back() -> None:
            write_atomic(cd.spec, old.encode(), mode)
            for f, (data, m) in kept.items():
                write_atomic(f, data, m)

        write_atomic(cd.spec, new.encode(), mode)
        progress(f"{cd.spec}: {name}'s entry removed (the rest of the file as it was)")
        report = UpReport({})
        try:
            return _up(directory, progress, Options(timeout, parallel, local), reissue, report)
        except StalePki as e:
            put_back()
            fixable = [s.name for s in e.stale.values() if s.reissue]
            if len(fixable) < len(e.stale):
                raise
            again = " ".join(["hardway", "-C", str(cd.root), "node", "remove", name,
                              *(a for n in fixable for a in ("--reissue", n))])
            raise UsageError(f"removing {name} makes certificate(s) {', '.join(fixable)} stale (they name it): "
                             f"{'; '.join(r for s in e.stale.values() for r in s.reasons)}. Nothing was changed "
                             f"({cd.spec} is as it was). To reissue them as part of the removal: `{again}`") from None
        except HardwayError:
            if not report.hosts_touched:
                put_back()
                progress(f"{cd.spec}" + (" and the certificates to reissue" if kept else "")
                         + " put back as they were (no host was changed)")
            else:
                progress(f"{cd.spec} no longer lists {name}; once the problem above is fixed, `hardway up` "
                         "finishes the removal")
            raise


def verify(directory: str | Path = ".", progress=lambda _m: None, local: tuple[str, ...] = (),
           parallel: int = 16, cert_days: int = 30):
    """`cert_days`: certificates deployed on the hosts that expire within this many days make
    the cluster degraded."""
    from .deploy.hosts import Options
    from .verify.health import verify as _verify
    return _verify(directory, progress, Options(parallel=parallel, local=local), cert_days)


def smoke(directory: str | Path = ".", progress=lambda _m: None, local: tuple[str, ...] = ()):
    from .deploy.hosts import Options
    from .verify.smoke import smoke as _smoke
    return _smoke(directory, progress, Options(local=local))


def conformance(directory: str | Path = ".", progress=lambda _m: None, copts=None, local: tuple[str, ...] = ()):
    """Kubernetes' conformance tests against the cluster (verify/conformance.py)."""
    from .deploy.hosts import Options
    from .verify.conformance import conformance as _conformance
    return _conformance(directory, progress, copts, Options(local=local))


def etcd_snapshot(directory: str | Path = ".", out: str | Path | None = None, progress=lambda _m: None,
                  parallel: int = 16):
    """A snapshot of etcd from a healthy member, on this machine (default
    DIR/backups/etcd-<cluster>-<UTC time>.db), mode 0600, its sha256 checked and written beside
    it (FILE.sha256); its revision, keys and size read by etcd's own tool
    (deploy.etcd_backup.SnapshotReport)."""
    from .deploy.etcd_backup import snapshot
    from .deploy.hosts import Options
    return snapshot(directory, out, progress, Options(parallel=parallel))


def etcd_restore(directory: str | Path, file: str | Path, progress=lambda _m: None, sha256: str | None = None,
                 timeout: float = 300, parallel: int = 16):
    """Replace every etcd member's data with the snapshot in `file` (checked against FILE.sha256
    or `sha256` first), with a new cluster token; the API side is stopped meanwhile and started
    again as `up` does. The old data directories are kept (RestoreReport.kept). Run `verify`
    afterwards."""
    from .deploy.etcd_backup import restore
    from .deploy.hosts import Options
    return restore(directory, file, progress, Options(timeout, parallel), sha256)
