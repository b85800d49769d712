"""`hardway up | diff | reset | verify | kubectl`: the cluster on its hosts."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import click

from .. import api
from ..errors import OperationError, UsageError
from ..pki.expiry import MAX_WINDOW_DAYS
from .main import DIR_OPTION, cli, err, out

LOCAL_OPTION = click.option(
    "--local", multiple=True, metavar="NODE",
    help="Reach this node by running commands on this machine instead of SSH (repeatable).")


def parallel_option(what: str):
    # At least 1: with 0 no host would ever start and the command would hang.
    return click.option("--parallel", default=16, show_default=True, type=click.IntRange(min=1),
                        help=f"Hosts {what} at once.")


def _progress():
    t0 = time.monotonic()

    def say(msg: str) -> None:
        err.print(f"[{time.monotonic() - t0:6.1f}s] {msg}", markup=False, highlight=False)
    return say


@cli.command()
@DIR_OPTION
@click.option("--timeout", default=300.0, show_default=True, help="Seconds each health wait may take.")
@parallel_option("worked on")
@LOCAL_OPTION
@click.option("--adopt", is_flag=True,
              help="Replace files hardway does not own (an existing haproxy.cfg, containerd config, runc), "
                   "keeping each original under /var/lib/hardway/backup/ on its node for a later reset.")
@click.option("--worker-batch", default=1, show_default=True, type=click.IntRange(min=1),
              help="Workers restarted at once when a change restarts their kubelet, containerd or "
                   "kube-proxy (each drained first where kubelet or containerd restarts).")
def up(directory: Path, timeout: float, parallel: int, local: tuple[str, ...], adopt: bool,
       worker_batch: int) -> None:
    """Bring the cluster up (or up to date) on its hosts, phase by phase. Idempotent.

    PKI and bundles are made as needed, artifacts fetched (or taken from the cache), only
    changed files pushed, only affected services restarted; each phase ends with a health
    wait. On failure: the host, the phase, the command and the unit's journal, exit 1.
    A file that hardway does not own and would change is refused (exit 1) unless --adopt.
    A change that restarts running units rolls: one controller at a time (its health awaited
    before the next), workers --worker-batch at a time.
    """
    report = api.up(directory, _progress(), timeout, parallel, local, adopt, worker_batch)
    phases = ", ".join(f"{k} {v:.1f}s" for k, v in report.phase_seconds.items())
    out.print(f"cluster up in {report.seconds:.1f}s ({phases}). "
              f"Try: hardway -C {directory} kubectl get nodes")


@cli.command()
@DIR_OPTION
@parallel_option("queried")
@LOCAL_OPTION
def diff(directory: Path, parallel: int, local: tuple[str, ...]) -> None:
    """Print, per host, what `hardway up` would change, without changing anything."""
    from ..deploy.plan import describe, summary
    plans = api.diff(directory, _progress(), parallel, local)
    for name, plan in plans.items():
        lines = describe(plan)
        out.print(f"{name}: " + ("up to date" if not lines else f"{len(lines)} change(s)"))
        for line in lines:
            out.print(f"  {line}")
    out.print(summary(plans.values()))


def _interactive() -> bool:
    """Whether someone can answer a question on stdin."""
    return sys.stdin.isatty()


@cli.command()
@DIR_OPTION
@click.argument("nodes", nargs=-1, metavar="[NODE]...")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation (needed without a terminal).")
@parallel_option("reset")
@LOCAL_OPTION
def reset(directory: Path, nodes: tuple[str, ...], yes: bool, parallel: int, local: tuple[str, ...]) -> None:
    """Undo `hardway up` on NODEs (default: every node, workers first), leaving each host as it was.

    Stops and disables hardway's units, removes every file of the node's manifest (putting back
    the originals `up --adopt` kept), the images it imported, the components' data and mounts,
    the CNI bridge and veths, pod routes, the KUBE-* and CNI-* iptables chains, and the
    directories, accounts and kernel settings hardway changed. The cluster directory on this
    machine is left as it is: `hardway up` builds the cluster again from it. A host that cannot
    be reached is named and the others are reset all the same (exit 1). Resetting a reset host
    does nothing.
    """
    names = api.reset_targets(directory, nodes)
    if not yes:
        if not _interactive():
            raise UsageError(f"reset would remove everything hardway put on {', '.join(names)}, and asks first; "
                             "stdin is not a terminal: pass --yes to reset without asking")
        if not click.confirm(f"Remove everything hardway put on {', '.join(names)} (the cluster there and its "
                             "data, etcd included)?", default=False, err=True):
            err.print("reset cancelled: nothing changed")
            sys.exit(1)
    report = api.reset(directory, nodes, _progress(), parallel, local)
    for name, h in report.hosts.items():
        if h.nothing:
            out.print(f"{name}: nothing to do", markup=False)
        elif h.ok:
            out.print(f"{name}: reset ({len(h.done)} step(s))", markup=False)
        else:
            out.print(f"{name}: NOT reset: {h.error or '; '.join(h.problems)}", markup=False)
        for note in h.notes:
            out.print(f"  note: {note}", markup=False)
    if report.failed:
        raise OperationError(f"reset failed on {', '.join(report.failed)} (see above); the other host(s) were "
                             "reset. Run `hardway reset` again once they are reachable (it is idempotent)")
    out.print("nothing to do: no host holds anything of hardway's" if report.nothing_to_do
              else f"reset {sum(not h.nothing for h in report.hosts.values())} host(s) in {report.seconds:.1f}s")


@cli.command()
@DIR_OPTION
@click.option("--smoke", is_flag=True, help="Also run the smoke tests (a workload, logs, exec, "
              "port-forward, services, encryption at rest).")
@click.option("--conformance", is_flag=True, help="Also run Kubernetes' conformance tests (e2e.test of the "
              "cluster's version): by default every [Conformance] test that is neither [Serial] nor "
              "[Disruptive]. Exit 0 all passed, 3 only failures this environment explains, 1 otherwise.")
@click.option("--focus", metavar="RE", help="With --conformance: run the tests matching RE (default \\[Conformance\\]).")
@click.option("--skip", metavar="RE", help="With --conformance: skip the tests matching RE "
              "(default \\[Serial\\]|\\[Disruptive\\]).")
@click.option("--serial", is_flag=True, help="With --conformance: the [Serial] conformance tests, one at a time.")
@click.option("--parallel", type=click.IntRange(min=1), default=None,
              help="Hosts connected to at once (default 16); with --conformance, also the e2e test "
                   "processes run at once (default 4).")
@click.option("--cert-days", default=30, show_default=True, type=click.IntRange(0, MAX_WINDOW_DAYS), metavar="N",
              help="A certificate deployed on a host that expires within N days makes the cluster degraded.")
@click.option("--junit", "junit", type=click.Path(file_okay=False, path_type=Path),
              help="With --conformance: where the JUnit reports go (default DIR/conformance/<time>).")
@LOCAL_OPTION
def verify(directory: Path, smoke: bool, conformance: bool, focus: str | None, skip: str | None,
           serial: bool, parallel: int | None, cert_days: int, junit: Path | None, local: tuple[str, ...]) -> None:
    """Check etcd, every apiserver, every unit, the certificates on every host, every node.
    Exit 0 healthy, 3 degraded, 1 broken."""
    if not conformance and (focus or skip is not None or serial or junit):
        raise UsageError("--focus, --skip, --serial and --junit go with --conformance")
    from ..verify.health import worst_exit
    report = api.verify(directory, _progress(), local, parallel or 16, cert_days)
    code = print_verify(report)
    if smoke:
        if report.status.value == "broken":
            out.print("smoke tests not run: the cluster is broken")
        else:
            s = api.smoke(directory, _progress(), local)
            for r in s.results:
                out.print(f"{r.outcome.upper():<4} {r.name}: {r.detail}")
            passed = sum(r.outcome == "pass" for r in s.results)
            skipped = sum(r.outcome == "skip" for r in s.results)
            out.print(f"smoke: {passed} passed, {len(s.results) - passed - skipped} failed, {skipped} not run")
            if not s.ok:
                code = worst_exit(code, 1)
    if conformance:
        if report.status.value == "broken":
            out.print("conformance tests not run: the cluster is broken")
        else:
            code = worst_exit(code, _conformance(directory, focus, skip, serial, parallel or 4, junit, local))
    sys.exit(code)


def print_verify(report) -> int:
    """Each check and the verdict; returns its exit code."""
    for c in report.checks:
        out.print(f"{'ok  ' if c.ok else 'FAIL'} {c.name}" + (f": {c.detail}" if c.detail else ""))
    out.print(f"cluster {report.status.value}" + (": " + "; ".join(report.reasons) if report.reasons else ""))
    return report.status.exit_code


def _conformance(directory: Path, focus: str | None, skip: str | None, serial: bool, parallel: int,
                 junit: Path | None, local: tuple[str, ...]) -> int:
    from ..verify.conformance import ConformanceOptions
    r = api.conformance(directory, _progress(), ConformanceOptions(focus, skip, parallel, junit, serial), local)
    for c in r.of("failed"):
        out.print(f"FAIL {c.name}", markup=False)
        out.print(f"     reason: {c.reason}", markup=False)
        if c.limit:
            out.print(f"     limit:  {c.limit}", markup=False)
    for c in r.of("skipped"):
        out.print(f"SKIP {c.name}: {c.reason or 'skipped by the test itself'}", markup=False)
    for n in r.notes:
        out.print(f"note: {n}", markup=False)
    restarts = ", ".join(f"{u} +{n}" for u, n in sorted(r.restarts.items())) or "none"
    failed, limited = len(r.of("failed")), len(r.of("failed")) - len(r.unexplained)
    out.print(f"conformance: {len(r.of('passed'))} passed, {failed} failed"
              + (f" ({limited} of them a limit of this environment)" if limited else "")
              + f", {len(r.of('skipped'))} skipped, of {len(r.cases)} selected; {r.seconds:.0f} s; "
              f"component restarts during the run: {restarts}", markup=False)
    out.print(f"JUnit reports: {r.junit_dir} (suite output: {r.log})", markup=False)
    return r.exit_code


@cli.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@DIR_OPTION
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def kubectl(directory: Path, args: tuple[str, ...]) -> None:
    """Run the cluster's kubectl (DIR/bin/kubectl) as the cluster admin: `hardway kubectl get nodes`."""
    from ..clusterdir import ClusterDir
    from ..kubectl import kubectl_argv
    argv = kubectl_argv(ClusterDir.at(directory), *args)
    sys.stdout.flush()
    os.execv(argv[0], argv)
