"""Kubernetes' own conformance tests against a `basic` lab cluster built from the offline mirror:
CRDs churned without a single component restart (the reflect2 fix of the offline build), and
`hardway verify --conformance` over a subset that finishes in minutes (CRDs, admission and
conversion webhooks, services, pods, secrets/configmaps, kubectl). The whole non-serial set
runs from bench/conformance.py.
"""

from __future__ import annotations

import json
import re
import time

import pytest

from hardway.clusterdir import ClusterDir
from hardway.kubectl import kubectl
from hardway.material import load_material
from hardway.render import render_cluster
from hardway.verify.conformance import parse_junit
from tests.e2e.cluster_fixture import hw, lab_cluster, log
from tests.helpers import E2E_TIMEOUT
from tests.mirror_fixture import mirror  # noqa: F401 (fixture)

# The first test may build the mirror (the Kubernetes build and its test stage, ~12 min on a fresh
# machine) and brings the cluster up.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(E2E_TIMEOUT)]

# [Conformance] tests of 1.20 that CI runs (about 90, a few minutes): CRDs and their OpenAPI,
# admission and conversion webhooks and the aggregator (the control plane reaching pods), and
# services, pods, secrets, configmaps and kubectl. Left out, besides [Serial]/[Disruptive]: the
# tests that reach a Service by name, which need cluster DNS the offline lab cannot run (each
# waits minutes to fail; `verify --conformance` names them as that limit, see bench/).
CI_SUBSET = (r"(CustomResourceDefinition|CustomResourcePublishOpenAPI|CustomResourceConversionWebhook|"
             r"AdmissionWebhook|Aggregator|\[sig-network\] Services|\] Pods |Secrets|ConfigMap|"
             r"\[sig-cli\] Kubectl client).*\[Conformance\]")
CI_SKIP = r"\[Serial\]|\[Disruptive\]|Guestbook|ExternalName|session affinity|functioning NodePort"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, mirror):  # noqa: F811
    with lab_cluster(tmp_path_factory.mktemp("conformance") / "cluster", "basic", "hwcf", 80, mirror) as c:
        t = time.monotonic()
        r = hw(c.dir, "up")
        assert r.returncode == 0, r.stderr[-3000:]
        log(f"up in {time.monotonic() - t:.1f} s")
        yield c


def restarts(c) -> dict[str, int]:
    """"node: unit" -> NRestarts (systemd's automatic restarts) of every unit hardway runs."""
    cd = ClusterDir(c.dir)
    cluster = render_cluster(c.spec, load_material(cd, c.spec))
    out = {}
    for name, b in cluster.nodes.items():
        text = c.ok(name, "systemctl show -p Id -p NRestarts -p ActiveState " + " ".join(u.name for u in b.units))
        for block in text.strip().split("\n\n"):
            props = dict(ln.split("=", 1) for ln in block.splitlines() if "=" in ln)
            assert props["ActiveState"] == "active", f"{name}: {props}"
            out[f"{name}: {props['Id']}"] = int(props["NRestarts"])
    return out


def crd(i: int) -> dict:
    # A structural schema with nested objects, a map (additionalProperties), arrays and enums:
    # what made the apiserver's OpenAPI aggregation iterate maps through reflect2.
    return {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets{i}.churn.hardway.test"},
        "spec": {
            "group": "churn.hardway.test", "scope": "Namespaced",
            "names": {"plural": f"widgets{i}", "singular": f"widget{i}", "kind": f"Widget{i}"},
            "versions": [{
                "name": "v1", "served": True, "storage": True,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": {
                    "type": "object", "description": "what a widget wants",
                    "properties": {
                        "size": {"type": "integer", "minimum": 1},
                        "color": {"type": "string", "enum": ["red", "green", "blue"]},
                        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                        "parts": {"type": "array", "items": {"type": "object", "properties": {
                            "name": {"type": "string"}, "weights": {"type": "object",
                                                                    "additionalProperties": {"type": "number"}}}}},
                    }}}}},
            }],
        },
    }


def k(c, *args: str, input: bytes | None = None, timeout: float = 60) -> str:
    r = kubectl(ClusterDir(c.dir), *args, input=input, timeout=timeout)
    assert r.returncode == 0, f"kubectl {' '.join(args)}: {r.stderr.decode(errors='replace')[-800:]}"
    return r.stdout.decode(errors="replace")


def test_crds_with_schemas_churn_and_no_component_restarts(cluster):
    c = cluster
    before = restarts(c)
    log(f"restarts before: {before}")
    t = time.monotonic()
    rounds = 12
    for i in range(rounds):
        k(c, "apply", "-f", "-", input=json.dumps(crd(i)).encode())
        k(c, "wait", "--for=condition=Established", f"crd/widgets{i}.churn.hardway.test", "--timeout=60s", timeout=70)
        cr = {"apiVersion": "churn.hardway.test/v1", "kind": f"Widget{i}", "metadata": {"name": "w", "namespace": "default"},
              "spec": {"size": 3, "color": "red", "labels": {"a": "b", "c": "d"},
                       "parts": [{"name": "x", "weights": {"p": 1.5, "q": 2}}]}}
        for _attempt in range(30):  # the new resource is served a moment after Established
            r = kubectl(ClusterDir(c.dir), "apply", "-f", "-", input=json.dumps(cr).encode(), timeout=60)
            if r.returncode == 0:
                break
            time.sleep(1)
        assert r.returncode == 0, r.stderr.decode(errors="replace")
        got = json.loads(k(c, "get", f"widgets{i}.churn.hardway.test", "w", "-o", "json"))
        assert got["spec"]["labels"] == {"a": "b", "c": "d"}
        # The published OpenAPI (the apiserver's aggregated spec, iterated on every CRD change).
        for _attempt in range(60):
            r = kubectl(ClusterDir(c.dir), "explain", f"widgets{i}.spec.labels", timeout=60)
            if r.returncode == 0:
                break
            time.sleep(1)
        assert r.returncode == 0, f"CRD {i} schema never published: {r.stderr.decode(errors='replace')}"
        assert len(k(c, "get", "--raw", "/openapi/v2", timeout=120)) > 100_000
        k(c, "delete", f"widgets{i}.churn.hardway.test", "w", "--wait=true", timeout=90)
        k(c, "delete", "crd", f"widgets{i}.churn.hardway.test", "--wait=true", timeout=120)
    log(f"{rounds} CRD rounds in {time.monotonic() - t:.1f} s")
    after = restarts(c)
    changed = {u: (before.get(u), n) for u, n in after.items() if n != before.get(u)}
    assert not changed, f"components restarted while CRDs were served: {changed}"


def test_conformance_subset_passes_and_webhooks_reach_pods(cluster, tmp_path):
    c = cluster
    junit = tmp_path / "junit"
    t = time.monotonic()
    r = hw(c.dir, "verify", "--conformance", "--focus", CI_SUBSET, "--skip", CI_SKIP, "--parallel", "4",
           "--junit", str(junit), timeout=1500)
    seconds = time.monotonic() - t
    log(f"verify --conformance ({seconds:.0f} s), exit {r.returncode}:\n{r.stdout[-6000:]}\n{r.stderr[-2000:]}")
    cases = parse_junit(junit, CI_SUBSET, CI_SKIP)
    assert len(cases) >= 80, f"only {len(cases)} tests ran"
    summary = re.search(r"conformance: (\d+) passed, (\d+) failed.*", r.stdout)
    assert summary, r.stdout[-3000:]
    failed = [(x.name, x.reason) for x in cases if x.outcome == "failed"]
    assert not failed and r.returncode == 0, f"exit {r.returncode}: {failed}"
    webhooks = [x for x in cases if "Webhook" in x.name]
    assert len(webhooks) >= 18 and all(x.outcome == "passed" for x in webhooks)
    crds = [x for x in cases if "CustomResource" in x.name]
    assert len(crds) >= 15 and all(x.outcome == "passed" for x in crds)
    aggregator = [x for x in cases if "Aggregator" in x.name]  # sample-apiserver behind the aggregator
    assert len(aggregator) == 1 and aggregator[0].outcome == "passed"
    assert "component restarts during the run: none" in r.stdout, r.stdout[-1500:]
    assert list(junit.glob("junit_*.xml")) and (junit / "e2e.log").is_file()
