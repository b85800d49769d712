"""`hardway verify --conformance`: Kubernetes' own e2e suite against the cluster, as Sonobuoy
runs it: e2e.test of the cluster's version (through ginkgo, in parallel), the [Conformance]
tests that are neither [Serial] nor [Disruptive] by default, a JUnit report, and one line per
failure with its reason.

The test binaries come from the `kubernetes-test` tarball of the cluster's artifacts source
(upstream, or a mirror built with `--conformance`); with a mirror, the test images it holds
(artifacts/testimages.py) are preloaded into containerd on every worker first, because no node
can pull them. The suite runs on the operator's machine with the admin kubeconfig; its traffic
goes to the API and to the cluster's nodes only.

Failures that this environment cannot avoid (cluster DNS without a CoreDNS image) are named
as such, never hidden: see KNOWN_LIMITS.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..artifacts import layout
from ..artifacts.fetch import FetchFailed, extract_member, fetch_for_cluster
from ..artifacts.oci import image_digests
from ..artifacts.testimages import CONFORMANCE_IMAGES, conformance_downloads
from ..clusterdir import ClusterDir
from ..deploy.activate import unit_states
from ..deploy.hosts import Options, connect_all, each_host
from ..kubectl import kubectl_argv
from ..deploy.transport import Transport, check
from ..errors import OperationError, UsageError
from ..proc import run_logged
from ..material import load_material
from ..render import render_cluster
from ..spec.load import load_spec
from ..spec.model import ClusterSpec
from .smoke import PULL_FAILURES, Kube, _pod_state

Progress = Callable[[str], None]

CONFORMANCE = r"\[Conformance\]"
DEFAULT_SKIP = r"\[Serial\]|\[Disruptive\]"
SERIAL_FOCUS = r"\[Serial\].*\[Conformance\]|\[Conformance\].*\[Serial\]"
CHUNK = 1 << 20


@dataclass(frozen=True)
class Limit:
    """A failure this environment explains: when `applies`, a failed test whose name or failure
    text matches `pattern` is reported with `reason` (still as failed)."""

    key: str
    pattern: str
    reason: str


# Patterns: test names of the DNS tests, and of the kubectl Guestbook test (its frontend,
# agnhost's guestbook.go, calls the Services agnhost-primary and agnhost-replica by name); what a
# failed name lookup prints (busybox nslookup/wget, netcat-openbsd, curl, dig, Go); and the e2e
# framework's own messages when a Service is reached by its name (service.go: the name is tried
# before the ClusterIP, so "endpoint <name>:<port>", a name where an IP would be, is a lookup
# that never answered).
KNOWN_LIMITS = (
    Limit("dns", r"\[sig-network\] DNS |DNS should|DNS configMap|Guestbook application|getaddrinfo|bad address|"
          r"Name or service not known|Temporary failure in name resolution|Could not resolve host|"
          r"no such host|can't resolve|connection timed out; no servers could be reached|"
          r"server can't find|must resolve to IP|on endpoint [a-z][-a-z0-9.]*:\d+ over",
          "needs cluster DNS: CoreDNS is not running here ({why}); a limit of this environment, "
          "not of the cluster's configuration"),
)


@dataclass(frozen=True)
class CaseResult:
    name: str
    outcome: str  # passed | failed | skipped
    seconds: float
    reason: str = ""  # the failure message (first lines), or why it was skipped
    limit: str = ""  # a KNOWN_LIMITS explanation of the failure


@dataclass
class ConformanceReport:
    cases: list[CaseResult] = field(default_factory=list)
    seconds: float = 0.0
    junit_dir: Path | None = None
    log: Path | None = None
    restarts: dict[str, int] = field(default_factory=dict)  # "host: unit" -> restarts during the run
    notes: list[str] = field(default_factory=list)
    exit_status: int | None = None  # ginkgo's

    def of(self, outcome: str) -> list[CaseResult]:
        return [c for c in self.cases if c.outcome == outcome]

    @property
    def unexplained(self) -> list[CaseResult]:
        return [c for c in self.of("failed") if not c.limit]

    @property
    def exit_code(self) -> int:
        """0 all passed; 3 every failure is a known limit of this environment; 1 otherwise."""
        if self.unexplained or not self.cases:
            return 1
        return 3 if self.of("failed") else 0


@dataclass
class ConformanceOptions:
    focus: str | None = None  # default: [Conformance]
    skip: str | None = None  # default: [Serial]|[Disruptive]
    parallel: int = 4  # ginkgo nodes
    junit_dir: Path | None = None  # default: DIR/conformance/<time>
    serial: bool = False  # the [Serial] conformance tests instead, one at a time
    timeout: float = 3 * 3600  # the whole run

    def selection(self) -> tuple[str, str, int]:
        if self.serial:
            return self.focus or SERIAL_FOCUS, self.skip or r"\[Disruptive\]", 1
        return self.focus or CONFORMANCE, self.skip if self.skip is not None else DEFAULT_SKIP, self.parallel


# ---------------------------------------------------------------------------------------------
# test binaries and images


def fetch_conformance(spec: ClusterSpec, base_dir: Path,
                      progress: Progress) -> tuple[dict[str, Path], dict[str, tuple[Path, str]]]:
    """e2e.test and ginkgo of the cluster's version (extracted), and ref -> (cached tarball,
    mirror name) of the test images a mirror has for its minor ({} without a mirror: the nodes
    pull upstream's images themselves); fetched, verified and locked like every artifact."""
    if spec.artifacts.mirror and spec.minor not in CONFORMANCE_IMAGES:
        progress(f"hardway makes no test images for Kubernetes {spec.minor}: the nodes must pull "
                 "them from their registries")
    try:
        got = fetch_for_cluster(spec, conformance_downloads(spec), base_dir, progress)
    except OperationError as e:
        absent = isinstance(e, FetchFailed) and e.absent
        hint = (f"\nThe mirror lacks {', '.join(e.absent)}: a mirror built without --conformance has no test "
                f"binaries or images; rebuild it with `hardway artifacts mirror build DIR --from-debian "
                f"--conformance` (spec.artifacts.mirror is {spec.artifacts.mirror})."
                if absent and spec.artifacts.mirror else "")
        raise OperationError(f"cannot get what Kubernetes' conformance tests need: {e}{hint}") from None
    d = layout.kubernetes_test(spec.kubernetes.version)
    binaries = {b: extract_member(got.store, got.files[d.key], d.member(b), b) for b in layout.TEST_BINARIES}
    images = {img.ref: (got.files[f"image/{img.name}"], img.name)
              for img in CONFORMANCE_IMAGES.get(spec.minor, ()) if f"image/{img.name}" in got.files}
    return binaries, images


def _chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            yield chunk


def parse_ctr_images(text: str) -> dict[str, str]:
    """`ctr images ls` (REF TYPE DIGEST ...) -> image name -> digest."""
    out = {}
    for line in text.splitlines()[1:]:
        cols = line.split()
        if len(cols) >= 3 and cols[2].startswith("sha256:"):
            out[cols[0]] = cols[2]
    return out


async def _preload(t: Transport, images: dict[str, tuple[Path, str]], progress: Progress) -> list[str]:
    """Import into this node's containerd every image it lacks, or holds with other content (a
    rebuilt stand-in keeps its name); returns the names of the tarballs imported."""
    have = parse_ctr_images((await check(t, "ctr -n k8s.io images ls", "listing containerd's images",
                                         timeout=60)).out)
    missing = {p: name for ref, (p, name) in images.items() if have.get(ref) != image_digests(p).get(ref)}
    done = []
    for path, name in missing.items():
        # Through a file: `ctr images import` needs a seekable archive.
        script = ('set -e; f=$(mktemp /var/tmp/hardway-image.XXXXXX); trap \'rm -f "$f"\' EXIT; '
                  'cat > "$f"; ctr -n k8s.io images import "$f" >/dev/null')
        await check(t, script, f"importing test image {name}", input=_chunks(path), timeout=600)
        done.append(name)
    if done:
        progress(f"  {t.node}: imported {', '.join(done)}")
    return done


# ---------------------------------------------------------------------------------------------
# the run


def _dns_state(k: Kube) -> tuple[bool, str]:
    """Whether cluster DNS answers (a CoreDNS pod is Ready), and if not, why."""
    try:
        pods = k.json("-n", "kube-system", "get", "pods", "-l", "k8s-app=kube-dns")["items"]
    except OperationError as e:
        return False, f"cannot list the CoreDNS pods: {e}"
    if not pods:
        return False, "no CoreDNS pod exists"
    ready = [p for p in pods if any(c.get("type") == "Ready" and c.get("status") == "True"
                                    for c in p.get("status", {}).get("conditions", []))]
    if ready:
        return True, f"{len(ready)} CoreDNS pod(s) Ready"
    return False, "; ".join(sorted({_pod_state(p) for p in pods}))


def _unready_system_pods(k: Kube) -> list[str]:
    """kube-system pods that cannot start because their image cannot be pulled."""
    pods = k.json("-n", "kube-system", "get", "pods")["items"]
    out = []
    for p in pods:
        reasons = {(c.get("state", {}).get("waiting") or {}).get("reason")
                   for c in (p.get("status", {}).get("containerStatuses") or [])}
        if reasons & PULL_FAILURES:
            out.append(p["metadata"]["name"])
    return out


def e2e_argv(binaries: dict[str, Path], cd: ClusterDir, focus: str, skip: str, nodes: int,
             report_dir: Path, tolerate_pods: int) -> list[str]:
    """ginkgo running e2e.test: `nodes` in parallel, the selection, JUnit into report_dir. Every
    path is absolute: ginkgo runs the suite from the test binary's directory."""
    argv = [str(binaries["ginkgo"].absolute()), f"-nodes={nodes}", f"-focus={focus}", "-noColor", "-succinct"]
    if skip:
        argv.append(f"-skip={skip}")
    argv += [str(binaries["e2e.test"].absolute()), "--",
             f"--kubeconfig={cd.kubeconfig('admin').absolute()}", "--provider=skeleton",
             f"--kubectl-path={cd.kubectl.absolute()}", f"--report-dir={report_dir.absolute()}",
             "--container-runtime=remote", "--disable-log-dump"]
    if tolerate_pods:
        # The suite waits (10 min by default) for every kube-system pod to be Ready; pods whose
        # image no node can pull never will. Tolerate exactly those, after a short wait.
        argv += [f"--allowed-not-ready-nodes={tolerate_pods}", "--system-pods-startup-timeout=30s"]
    return argv


def _count_progress(text: str) -> tuple[int, int]:
    """(specs finished, failures) from ginkgo's succinct output so far."""
    done = text.count("•")
    failed = len(re.findall(r"• Failure", text))
    return done, failed


def run_suite(argv: list[str], log: Path, timeout: float, progress: Progress) -> int:
    """Run ginkgo, its output into `log`, how far it got every 30 s; returns its exit status."""
    def status() -> str:
        done, failed = _count_progress(log.read_text(errors="replace"))
        return f"{done} spec(s) finished, {failed} failed"
    return run_logged(argv, log, "running the conformance tests", progress, every=30, status=status,
                      timeout=timeout)


def parse_junit(report_dir: Path, focus: str, skip: str) -> list[CaseResult]:
    """The selected specs' results from every junit_*.xml ginkgo's nodes wrote. Specs outside
    the selection (ginkgo lists them as skipped) are left out."""
    focus_re, skip_re = re.compile(focus), re.compile(skip) if skip else None
    cases: dict[str, CaseResult] = {}
    for path in sorted(report_dir.glob("junit_*.xml")):
        try:
            root = ET.parse(path).getroot()
        except ET.ParseError as e:
            raise OperationError(f"{path}: not a readable JUnit report ({e})") from None
        for tc in root.iter("testcase"):
            name = tc.get("name", "")
            if not focus_re.search(name) or (skip_re and skip_re.search(name)):
                continue
            seconds = float(tc.get("time") or 0)
            failure = tc.find("failure")
            if failure is None:
                failure = tc.find("error")
            skipped = tc.find("skipped")
            if failure is not None:
                text = (failure.get("message") or "") + "\n" + (failure.text or "")
                cases[name] = CaseResult(name, "failed", seconds, _first_lines(text))
            elif skipped is not None:
                cases[name] = CaseResult(name, "skipped", seconds, _first_lines(skipped.get("message") or ""))
            elif name not in cases:
                cases[name] = CaseResult(name, "passed", seconds)
    return sorted(cases.values(), key=lambda c: c.name)


_LOCATION = re.compile(r"^\S+\.go:\d+$")  # ginkgo's "where": the test's source file and line
_STAMP = re.compile(r"^[A-Z][a-z]{2} +\d+ [\d:.]+: ")  # the e2e framework's log time stamp


def _first_lines(text: str, lines: int = 4, limit: int = 500) -> str:
    """A failure message's gist: its lines without source locations and time stamps."""
    kept = []
    for ln in text.strip().splitlines():
        ln = _STAMP.sub("", ln.strip())
        if ln and not _LOCATION.match(ln) and ln not in ("{", "}"):
            kept.append(ln)
    return " ".join(kept[:lines])[:limit]


def explain(cases: list[CaseResult], limits: dict[str, str]) -> list[CaseResult]:
    """Attach the reason of every applying KNOWN_LIMITS entry (key -> why it applies) to the
    failures it explains."""
    out = []
    for c in cases:
        if c.outcome == "failed":
            for lim in KNOWN_LIMITS:
                if lim.key in limits and re.search(lim.pattern, c.name + "\n" + c.reason):
                    c = CaseResult(c.name, c.outcome, c.seconds, c.reason, lim.reason.format(why=limits[lim.key]))
                    break
        out.append(c)
    return out


async def _restarts(spec: ClusterSpec, cd: ClusterDir, units: dict[str, list[str]], opts: Options,
                    progress: Progress) -> dict[str, int]:
    """"host: unit" -> NRestarts (systemd's automatic restarts) of every hardway unit."""
    ts = await connect_all(spec, cd, list(units), opts, progress)
    try:
        out: dict[str, int] = {}

        async def one(name: str) -> None:
            for unit, (_state, n) in (await unit_states(ts[name], units[name])).items():
                out[f"{name}: {unit}"] = n
        await each_host(list(units), one, opts.parallel)
        return out
    finally:
        await asyncio.gather(*(t.close() for t in ts.values()), return_exceptions=True)


def conformance(directory: str | Path = ".", progress: Progress = lambda _m: None,
                copts: ConformanceOptions | None = None, opts: Options | None = None) -> ConformanceReport:
    copts = copts or ConformanceOptions()
    opts = opts or Options()
    if copts.parallel < 1:
        raise UsageError("--parallel must be at least 1")
    focus, skip, nodes = copts.selection()
    for what, rx in (("--focus", focus), ("--skip", skip)):
        try:
            re.compile(rx)
        except re.error as e:
            raise UsageError(f"{what} {rx!r} is not a regular expression: {e}") from None
    cd = ClusterDir.at(directory)
    spec = load_spec(cd.spec).spec
    kubectl_argv(cd)  # fails early, saying to run `hardway up`, when kubectl is not there yet
    cluster = render_cluster(spec, load_material(cd, spec))
    units = {name: [u.name for u in b.units] for name, b in cluster.nodes.items()}
    report = ConformanceReport()
    k = Kube(cd)

    binaries, images = fetch_conformance(spec, cd.root, progress)
    if images:
        progress(f"preloading {len(set(n for _, n in images.values()))} test image(s) on "
                 f"{len(spec.workers)} worker(s)")

        async def preload() -> None:
            ts = await connect_all(spec, cd, [w.name for w in spec.workers], opts, progress)
            try:
                await each_host(list(ts), lambda n: _preload(ts[n], images, progress), opts.parallel)
            finally:
                await asyncio.gather(*(t.close() for t in ts.values()), return_exceptions=True)
        asyncio.run(preload())
    elif not spec.artifacts.mirror:
        report.notes.append("no mirror: the nodes pull the test images from their upstream registries")

    dns_ok, dns_why = _dns_state(k)
    limits = {} if dns_ok else {"dns": dns_why}
    if not dns_ok:
        report.notes.append(f"cluster DNS is not running ({dns_why}): tests that resolve names will "
                            "fail, and are named as a limit of this environment")
    stuck = _unready_system_pods(k)
    if stuck:
        report.notes.append(f"kube-system pods whose image cannot be pulled ({', '.join(stuck)}) are "
                            f"tolerated by the suite's start-up check (--allowed-not-ready-nodes={len(stuck)})")

    stamp = time.strftime("%Y%m%d-%H%M%S")
    report_dir = Path(copts.junit_dir) if copts.junit_dir else cd.root / "conformance" / stamp
    report_dir.mkdir(parents=True, exist_ok=True)
    for old in report_dir.glob("junit_*.xml"):
        old.unlink()  # a report dir reused from an earlier run: only this run's results count
    report.junit_dir, report.log = report_dir, report_dir / "e2e.log"
    before = asyncio.run(_restarts(spec, cd, units, opts, progress))
    progress(f"running Kubernetes {spec.kubernetes.version} e2e: focus {focus!r}, skip {skip!r}, "
             f"{nodes} in parallel; output: {report.log}")
    for n in report.notes:
        progress(f"note: {n}")
    argv = e2e_argv(binaries, cd, focus, skip, nodes, report_dir, len(stuck))
    (report_dir / "command.json").write_text(json.dumps(argv, indent=1) + "\n")
    started = time.monotonic()
    report.exit_status = run_suite(argv, report.log, copts.timeout, progress)
    report.seconds = round(time.monotonic() - started, 1)
    after = asyncio.run(_restarts(spec, cd, units, opts, progress))
    report.restarts = {u: after[u] - before.get(u, 0) for u in after if after[u] - before.get(u, 0)}
    report.cases = explain(parse_junit(report_dir, focus, skip), limits)
    if not report.cases:
        tail = "\n".join(report.log.read_text(errors="replace").strip().splitlines()[-25:])
        raise OperationError(f"the e2e suite ran no test (ginkgo exit {report.exit_status}); "
                             f"its output ({report.log}) ends with:\n{tail}")
    return report


__all__ = ["ConformanceOptions", "ConformanceReport", "KNOWN_LIMITS", "conformance", "parse_junit"]
