"""verify --conformance without a cluster: JUnit parsing, the selection, the known-limit
explanations, ginkgo's command line; the offline build's vendor fix and the test-image table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hardway.artifacts import debian, layout
from hardway.artifacts.testimages import CONFORMANCE_IMAGES
from hardway.clusterdir import ClusterDir
from hardway.errors import OperationError
from hardway.verify.conformance import (
    CONFORMANCE, DEFAULT_SKIP, CaseResult, ConformanceOptions, ConformanceReport, _count_progress, e2e_argv,
    explain, parse_junit,
)

JUNIT = """<?xml version="1.0" encoding="UTF-8"?>
<testsuite name="Kubernetes e2e suite" tests="5" failures="1" errors="0" time="120">
  <testcase name="[sig-api-machinery] CustomResourceDefinition resources [Privileged:ClusterAdmin] creating/deleting custom resource definition objects works  [Conformance]" classname="Kubernetes e2e suite" time="1.5"></testcase>
  <testcase name="[sig-network] DNS should provide DNS for services  [Conformance]" classname="Kubernetes e2e suite" time="605.2">
    <failure type="Failure">/workspace/test/e2e/network/dns_common.go:464&#xA;Unexpected error:&#xA;    &lt;*errors.errorString&gt;: timed out waiting for the condition</failure>
  </testcase>
  <testcase name="[sig-apps] Daemon set [Serial] should run and stop simple daemon [Conformance]" classname="Kubernetes e2e suite" time="0">
    <skipped></skipped>
  </testcase>
  <testcase name="[sig-storage] Something not conformance" classname="Kubernetes e2e suite" time="0">
    <skipped></skipped>
  </testcase>
  <testcase name="[k8s.io] Pods should be submitted and removed [NodeConformance] [Conformance]" classname="Kubernetes e2e suite" time="0">
    <skipped message="skipped: not on this provider"></skipped>
  </testcase>
</testsuite>
"""


def _write(tmp_path: Path, text: str = JUNIT, n: int = 1) -> Path:
    (tmp_path / f"junit_{n:02d}.xml").write_text(text)
    return tmp_path


def test_parse_junit_keeps_the_selected_specs_with_outcome_and_reason(tmp_path):
    cases = {c.name: c for c in parse_junit(_write(tmp_path), CONFORMANCE, DEFAULT_SKIP)}
    assert len(cases) == 3  # not the [Serial] one, not the one outside the focus
    crd = next(c for n, c in cases.items() if "CustomResourceDefinition" in n)
    assert crd.outcome == "passed" and crd.seconds == 1.5
    dns = next(c for n, c in cases.items() if "DNS" in n)
    assert dns.outcome == "failed" and "timed out waiting for the condition" in dns.reason
    assert "dns_common.go" not in dns.reason and dns.reason.startswith("Unexpected error:")
    pods = next(c for n, c in cases.items() if "Pods" in n)
    assert pods.outcome == "skipped" and "not on this provider" in pods.reason


def test_parse_junit_merges_the_parallel_nodes_reports(tmp_path):
    _write(tmp_path, JUNIT, 1)
    _write(tmp_path, JUNIT.replace("creating/deleting", "listing"), 2)
    names = [c.name for c in parse_junit(tmp_path, CONFORMANCE, DEFAULT_SKIP)]
    assert len(names) == 4 and sum("listing" in n for n in names) == 1


def test_parse_junit_refuses_a_damaged_report(tmp_path):
    _write(tmp_path, "<testsuite><testcase")
    with pytest.raises(OperationError, match="not a readable JUnit report"):
        parse_junit(tmp_path, CONFORMANCE, DEFAULT_SKIP)


def test_known_limits_explain_dns_failures_only_when_dns_is_down():
    cases = [
        CaseResult("[sig-network] DNS should provide DNS for the cluster  [Conformance]", "failed", 600, "timed out"),
        CaseResult("[sig-network] Services should be able to change the type from ExternalName to ClusterIP "
                   "[Conformance]", "failed", 30, "nc: getaddrinfo for host \"externalname-service\" port 80: "
                   "Name or service not known"),
        CaseResult("[sig-api-machinery] AdmissionWebhook should mutate pod [Conformance]", "failed", 30,
                   "dial tcp 10.32.0.104:8443: connect: network is unreachable"),
        CaseResult("[sig-node] ConfigMap should be consumable [Conformance]", "passed", 3),
        # what 1.20's service.go says when the Service's name does not resolve
        CaseResult("[sig-network] Services should have session affinity work for NodePort service [Conformance]",
                   "failed", 135, "Unexpected error: service is not reachable within 2m0s timeout on endpoint "
                   "affinity-nodeport:80 over TCP protocol"),
        CaseResult("[sig-network] Services should be able to change the type from ClusterIP to ExternalName "
                   "[Conformance]", "failed", 21, 'ExternalName service "services-7089/execpod6zrcp" must resolve to IP'),
        # the same message with an IP is not a lookup: it stays unexplained
        CaseResult("[sig-network] Services should serve a basic endpoint from pods [Conformance]", "failed", 120,
                   "service is not reachable within 2m0s timeout on endpoint 10.32.0.44:80 over TCP protocol"),
        CaseResult("[sig-cli] Kubectl client Guestbook application should create and stop a working application "
                   "[Conformance]", "failed", 600, "Frontend service did not start serving content in 600 seconds."),
    ]
    down = explain(cases, {"dns": "ImagePullBackOff: registry.k8s.io/coredns:1.7.0"})
    assert [bool(c.limit) for c in down] == [True, True, False, False, True, True, False, True]
    assert "ImagePullBackOff" in down[0].limit
    assert all(c.outcome == d.outcome for c, d in zip(cases, down, strict=True))  # never hidden
    assert not any(c.limit for c in explain(cases, {}))  # DNS up: nothing is excused


def test_exit_code_separates_limits_from_real_failures():
    ok = CaseResult("a [Conformance]", "passed", 1)
    limited = CaseResult("b [Conformance]", "failed", 1, "x", "needs cluster DNS")
    real = CaseResult("c [Conformance]", "failed", 1, "y")
    assert ConformanceReport([ok]).exit_code == 0
    assert ConformanceReport([ok, limited]).exit_code == 3
    assert ConformanceReport([ok, limited, real]).exit_code == 1
    assert ConformanceReport([]).exit_code == 1  # nothing ran is not a pass


def test_selection_defaults_serial_and_overrides():
    assert ConformanceOptions().selection() == (CONFORMANCE, DEFAULT_SKIP, 4)
    focus, skip, nodes = ConformanceOptions(serial=True, parallel=8).selection()
    assert nodes == 1 and re.search(focus, "[sig-apps] Daemon set [Serial] should run [Conformance]")
    assert not re.search(focus, "[sig-node] Pods should run [Conformance]") and "Serial" not in skip
    assert ConformanceOptions(focus="Webhook", skip="", parallel=2).selection() == ("Webhook", "", 2)


def test_e2e_argv_runs_e2e_test_through_ginkgo_against_the_admin_kubeconfig(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path.parent)  # ginkgo runs e2e.test elsewhere: relative paths must not reach it
    cd = ClusterDir(Path(tmp_path.name))
    argv = e2e_argv({"ginkgo": Path("/c/ginkgo"), "e2e.test": Path("/c/e2e.test")}, cd, CONFORMANCE,
                    DEFAULT_SKIP, 3, tmp_path / "r", tolerate_pods=2)
    assert argv[:2] == ["/c/ginkgo", "-nodes=3"] and f"-skip={DEFAULT_SKIP}" in argv
    assert all(a.split("=", 1)[-1].startswith("/") for a in argv if a.startswith(("--kubeconfig", "--report-dir",
                                                                                    "--kubectl-path")))
    sep = argv.index("--")
    assert argv[sep - 1] == "/c/e2e.test"
    e2e = argv[sep + 1:]
    assert f"--kubeconfig={tmp_path / 'kubeconfigs' / 'admin.kubeconfig'}" in e2e
    assert f"--report-dir={tmp_path / 'r'}" in e2e and f"--kubectl-path={tmp_path / 'bin' / 'kubectl'}" in e2e
    assert "--allowed-not-ready-nodes=2" in e2e
    untolerant = e2e_argv({"ginkgo": Path("g"), "e2e.test": Path("e")}, cd, CONFORMANCE, "", 1, tmp_path, 0)
    assert not any(a.startswith(("--allowed-not-ready", "-skip")) for a in untolerant)


def test_progress_counts_ginkgo_succinct_markers():
    assert _count_progress("•••S\n• Failure [12.3 seconds]\nblah\n••") == (6, 1)


# ---------------------------------------------------------------------------------------------
# the offline build


def test_parse_depends_takes_the_first_alternative_and_a_virtual_packages_provider():
    text = """bind9-dnsutils
 |Depends: bind9-host
  Depends: <host>
    bind9-host
  Depends: libc6
mawk-user
  Depends: <awk>
    mawk
    gawk
  PreDepends: libc6:amd64
"""
    assert debian.parse_depends(text) == {"bind9-dnsutils": ["bind9-host", "libc6"], "mawk-user": ["mawk", "libc6"]}


def _fake_tree(tmp_path: Path, version: str) -> tuple[Path, dict]:
    src = tmp_path / "src"
    (src / "vendor/github.com/modern-go/reflect2").mkdir(parents=True)
    (src / "vendor/github.com/modern-go/reflect2/unsafe_link.go").write_text("old")
    (src / "vendor/modules.txt").write_text(
        f"# github.com/modern-go/reflect2 {version} => github.com/modern-go/reflect2 {version}\n"
        f"github.com/modern-go/reflect2\n# github.com/modern-go/reflect2 => github.com/modern-go/reflect2 {version}\n")
    (src / "go.mod").write_text(f"replace (\n\tgithub.com/modern-go/reflect2 => github.com/modern-go/reflect2 {version}\n)\n")
    pkg = tmp_path / "pkg"
    new = pkg / "usr/share/gocode/src/github.com/modern-go/reflect2"
    new.mkdir(parents=True)
    (new / "go_above_118.go").write_text("new")
    (new / "go.mod").write_text("module github.com/modern-go/reflect2\n")
    return src, {"golang-github-modern-go-reflect2-dev": (pkg, "1.0.2-2")}


def test_vendor_fix_replaces_reflect2_and_says_so_in_the_module_metadata(tmp_path):
    src, fixes = _fake_tree(tmp_path, "v1.0.1")
    done = debian.apply_vendor_fixes(src, fixes)
    assert done == {"github.com/modern-go/reflect2": "v1.0.1 -> v1.0.2 (Debian golang-github-modern-go-reflect2-dev 1.0.2-2)"}
    vendored = src / "vendor/github.com/modern-go/reflect2"
    assert sorted(p.name for p in vendored.iterdir()) == ["go_above_118.go"]  # old files gone, no go.mod
    assert "v1.0.1" not in (src / "vendor/modules.txt").read_text() + (src / "go.mod").read_text()
    assert debian.apply_vendor_fixes(src, fixes) == done  # idempotent (an interrupted build resumes)


def test_vendor_fix_refuses_a_source_that_vendors_another_version(tmp_path):
    src, fixes = _fake_tree(tmp_path, "v0.9.0")
    with pytest.raises(OperationError, match="neither v1.0.1 nor v1.0.2"):
        debian.apply_vendor_fixes(src, fixes)


def test_build_key_changes_with_every_input():
    base = debian.build_key("1.20.5+really1.20.2-1.1", {"golang-github-modern-go-reflect2-dev": "1.0.2-2"})
    assert base.startswith("1.20.5+really1.20.2-1.1--")
    assert base != debian.build_key("1.20.5+really1.20.2-1.2", {"golang-github-modern-go-reflect2-dev": "1.0.2-2"})
    assert base != debian.build_key("1.20.5+really1.20.2-1.1", {"golang-github-modern-go-reflect2-dev": "1.0.2-3"})


def test_conformance_images_of_1_20_are_the_frameworks_names():
    # test/utils/image/manifest.go of 1.20: registry/name:tag exactly
    refs = {i.ref for i in CONFORMANCE_IMAGES["1.20"]}
    assert {"k8s.gcr.io/e2e-test-images/agnhost:2.21", "docker.io/library/busybox:1.29", "k8s.gcr.io/pause:3.2",
            "docker.io/library/httpd:2.4.38-alpine", "docker.io/library/nginx:1.14-alpine",
            "gcr.io/kubernetes-e2e-test-images/sample-apiserver:1.17", "k8s.gcr.io/etcd:3.4.13-0"} <= refs
    names = [i.name for i in CONFORMANCE_IMAGES["1.20"]]
    assert len(names) == len(set(names)) and all(re.fullmatch(r"e2e-[a-z0-9.-]+", n) for n in names)
    assert all(layout.image(n).path == f"images/{n}.tar" for n in names)


def test_readme_lists_every_test_image_with_what_it_lacks():
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    for img in CONFORMANCE_IMAGES["1.20"]:
        row = f"| `{img.ref}` | {img.lacks or 'faithful: the same recipe as upstream'} |"
        assert row in readme, f"README's conformance table lacks (or misstates) {img.ref}"


def test_verdicts_combine_to_the_most_severe_exit_code():
    from hardway.verify.health import worst_exit
    assert worst_exit(0) == 0 and worst_exit() == 0
    assert worst_exit(0, 3) == 3 and worst_exit(3, 0) == 3
    assert worst_exit(1, 3) == 1 and worst_exit(3, 1) == 1  # a smoke failure is not "degraded"
    assert worst_exit(3, 3, 0) == 3 and worst_exit(0, 1) == 1


def test_a_new_build_stage_never_writes_into_the_cached_entry(tmp_path):
    out = tmp_path / "entry"
    (out / "bin").mkdir(parents=True)
    (out / "bin" / "kubelet").write_text("server stage")
    (out / "files").mkdir()
    (out / "files" / "pause.c").write_text("old pause")
    (out / "build.json").write_text("old")
    keep = {p: p.stat().st_ino for p in (out / "bin" / "kubelet", out / "files" / "pause.c")}
    old_inode = (out / "build.json").stat().st_ino
    reader = open(out / "files" / "pause.c")  # a reader of the old entry, mid-build
    new_src = tmp_path / "src"
    new_src.mkdir()
    (new_src / "e2e.test").write_text("test stage")
    (new_src / "pause.c").write_text("new pause")
    debian.replace_entry(out, {"bin/e2e.test": (new_src / "e2e.test", 0o755),
                               "files/pause.c": (new_src / "pause.c", 0o644)}, {"build.json": b"new"})
    assert reader.read() == "old pause", "the old entry was written through a hard link"
    assert (out / "bin" / "kubelet").read_text() == "server stage"
    assert (out / "bin" / "kubelet").stat().st_ino == keep[next(iter(keep))]  # linked, not copied
    assert (out / "bin" / "e2e.test").read_text() == "test stage" and (out / "bin" / "e2e.test").stat().st_mode & 0o111
    assert (out / "files" / "pause.c").read_text() == "new pause"
    assert (out / "build.json").read_text() == "new" and (out / "build.json").stat().st_ino != old_inode
    assert not (tmp_path / "entry.tmp").exists() and not (tmp_path / "entry.old").exists()


def test_busybox_never_shadows_a_real_program_on_path(tmp_path):
    from hardway.artifacts.oci import ImageFile, symlink
    from hardway.artifacts.testimages import with_busybox

    busybox = tmp_path / "busybox"
    busybox.write_bytes(b"\x7fELF")
    files = {"bin/nc.openbsd": ImageFile(b"nc", 0o755), "bin/nc": symlink("nc.openbsd"),
             "bin/ip": ImageFile(b"ip", 0o755), "usr/share/doc/sh": ImageFile(b"not a program", 0o644)}
    out = with_busybox(files, busybox, ["usr/bin/nc", "sbin/ip", "bin/sh", "usr/bin/wget"])
    assert "usr/bin/nc" not in out and "sbin/ip" not in out  # they would come first on PATH
    assert out["bin/sh"].symlink == "/bin/busybox" and out["usr/bin/wget"].symlink == "/bin/busybox"
    assert out["bin/nc"].symlink == "nc.openbsd"


def test_ctr_images_listing_gives_each_names_digest():
    from hardway.verify.conformance import parse_ctr_images
    text = """REF                                     TYPE                                       DIGEST                                                                  SIZE     PLATFORMS   LABELS
k8s.gcr.io/e2e-test-images/agnhost:2.21 application/vnd.oci.image.manifest.v1+json sha256:1111111111111111111111111111111111111111111111111111111111111111 44.6 MiB linux/amd64 io.cri-containerd.image=managed
registry.k8s.io/pause:3.2               application/vnd.oci.image.manifest.v1+json sha256:2222222222222222222222222222222222222222222222222222222222222222 300.3 KiB linux/amd64 -
"""
    assert parse_ctr_images(text) == {"k8s.gcr.io/e2e-test-images/agnhost:2.21": "sha256:" + "1" * 64,
                                      "registry.k8s.io/pause:3.2": "sha256:" + "2" * 64}
