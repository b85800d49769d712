"""`hardway verify --smoke`: Kubernetes The Hard Way's smoke tests, run against the cluster.

Each test prints pass/fail with its reason. Everything runs in a namespace of its own
(`hardway-smoke`), deleted at the end; traffic goes only to node and pod addresses of this
cluster and to 127.0.0.1 (port-forward).
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.request

import yaml
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..clusterdir import ClusterDir
from ..cluster_secrets import read_keys
from ..deploy.hosts import Options
from ..kubectl import kubectl, kubectl_argv
from ..errors import OperationError
from ..render.manifests import coredns_image
from ..spec.load import load_spec
from ..spec.model import ClusterSpec
from .etcd_data import SECRETS, describe_keys, etcdctl_get, secrets_by_key, stored_key

NS = "hardway-smoke"
WEB_IMAGE = "hardway.local/web:1.0"
WEB_PORT = 8080
MARKER = "hardway-smoke-web-started"


@dataclass(frozen=True)
class Result:
    name: str
    outcome: str  # pass | fail | skip (a plain statement of why it could not run)
    detail: str = ""


@dataclass
class SmokeReport:
    results: list[Result] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(r.outcome != "fail" for r in self.results)


class Kube:
    def __init__(self, cd: ClusterDir) -> None:
        self.cd = cd

    def run(self, *args: str, input: bytes | None = None, timeout: float = 120) -> str:
        r = kubectl(self.cd, *args, input=input, timeout=timeout)
        if r.returncode != 0:
            raise OperationError(f"kubectl {' '.join(args)}: {r.stderr.decode(errors='replace').strip()[-600:]}")
        return r.stdout.decode(errors="replace")

    def json(self, *args: str) -> dict:
        out = self.run(*args, "-o", "json")
        try:
            return json.loads(out)
        except ValueError as e:
            raise OperationError(f"kubectl {' '.join(args)} -o json printed no JSON ({e}): {out[:200]!r}") from None


class CheckFailed(OperationError):
    """A smoke test saw something other than what it expects."""


def expect(ok: object, why: str) -> None:
    """Not `assert`: under `python -O` an assert is not even evaluated, and the test would pass."""
    if not ok:
        raise CheckFailed(why)


def check_encrypted(raw: bytes, provider: str, plaintext: bytes, key: str) -> str:
    """The verdict on a new Secret's value as etcd stores it: encrypted by `provider` with the
    write key `key`, no plaintext."""
    prefix = f"k8s:enc:{provider}:v1:".encode()
    expect(raw.startswith(prefix), f"the value stored in etcd starts with {raw[:40]!r}, not {prefix!r}: "
           "secrets are NOT encrypted at rest")
    used = stored_key(raw, provider)
    expect(used == key, f"the value stored in etcd is encrypted with key {used!r}, not with {key!r}, the "
           "first in the cluster directory's encryption-key: the apiservers do not run its encryption "
           "config (run `hardway up`)")
    expect(plaintext not in raw, "the plaintext value appears in etcd")
    return f"etcd holds {raw[:len(prefix) + len(key) + 1].decode()}… ({len(raw)} bytes, no plaintext)"


def check_secrets_at_rest(by_key: dict[str, list[str]], key: str, rotating: bool) -> str:
    """The verdict on every Secret in etcd (secrets_by_key): each stored with the write key."""
    others = {k: v for k, v in by_key.items() if k != key}
    expect(not others, f"Secrets in etcd not encrypted with key {key}: {describe_keys(others)}; "
           + ("a key rotation is under way: `hardway secrets rotate` finishes it" if rotating else
              "`hardway secrets rotate` rewrites every Secret with a new key"))
    return f"{len(by_key.get(key, []))} Secret(s) in etcd, every one encrypted with key {key}"


def web_manifest(image: str, workers: int) -> bytes:
    # One pod per worker: a required anti-affinity on the node name.
    doc = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": NS},
        "spec": {
            "replicas": workers,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                        {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}]}},
                    "containers": [{
                        "name": "web", "image": image, "imagePullPolicy": "IfNotPresent",
                        "command": ["/bin/sh", "-c", f"echo {MARKER}; exec httpd -f -v -p {WEB_PORT} -h /www"],
                        "ports": [{"containerPort": WEB_PORT}],
                    }],
                },
            },
        },
    }
    svc = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": NS},
        "spec": {"type": "NodePort", "selector": {"app": "web"},
                 "ports": [{"port": WEB_PORT, "targetPort": WEB_PORT}]},
    }
    return yaml.safe_dump_all([doc, svc], sort_keys=False).encode()


def http_get(url: str, timeout: float = 5) -> str:
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(url, timeout=timeout) as r:
        return r.read().decode(errors="replace")


def _retry(fn: Callable[[], str], seconds: float = 30) -> str:
    deadline = time.monotonic() + seconds
    while True:
        try:
            return fn()
        except (OSError, OperationError):
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def smoke(directory: str | Path = ".", progress: Callable[[str], None] = lambda _m: None,
          opts: Options | None = None, timeout: float = 180) -> SmokeReport:
    cd = ClusterDir.at(directory)
    spec = load_spec(cd.spec).spec
    opts = opts or Options()
    kubectl_argv(cd)  # fails early, saying to run `hardway up`, when kubectl is not there yet
    k = Kube(cd)
    report = SmokeReport()

    def record(name: str, fn: Callable[[], str]) -> bool:
        try:
            detail = fn()
            report.results.append(Result(name, "pass", detail))
            progress(f"PASS {name}: {detail}")
            return True
        # OperationError: kubectl failed or a check saw the wrong thing; the others: an answer
        # not shaped as expected (a missing field), a connection that failed.
        except (OperationError, OSError, ValueError, KeyError, IndexError, TypeError) as e:
            msg = str(e).strip() or type(e).__name__
            report.results.append(Result(name, "fail", msg))
            progress(f"FAIL {name}: {msg}")
            return False

    k.run("delete", "namespace", NS, "--ignore-not-found", "--wait=true", timeout=180)
    k.run("create", "namespace", NS)
    try:
        provider = spec.encryption.provider
        secret = "smoke-secret"

        def encryption() -> str:
            k.run("-n", NS, "create", "secret", "generic", secret, "--from-literal=mykey=mydata")
            path = f"{SECRETS}{NS}/{secret}"
            raw = etcdctl_get(spec, cd, path, opts, progress).get(path)
            expect(raw is not None, f"etcd holds no {path}")
            return check_encrypted(raw, provider, b"mydata", read_keys(cd)[0].name)

        def at_rest() -> str:
            by_key = secrets_by_key(etcdctl_get(spec, cd, SECRETS, opts, progress, prefix=True), provider)
            return check_secrets_at_rest(by_key, read_keys(cd)[0].name, cd.encryption_rotation.exists())

        record("secret encrypted at rest", encryption)
        record("every Secret in etcd encrypted with the write key", at_rest)

        workers = spec.workers
        pods: list[dict] = []  # the web pods, once the deployment is available

        def deployment() -> str:
            k.run("apply", "-f", "-", input=web_manifest(WEB_IMAGE, len(workers)))
            try:
                k.run("-n", NS, "rollout", "status", "deployment/web", f"--timeout={int(timeout)}s",
                      timeout=timeout + 10)
            except OperationError:
                listing = k.json("-n", NS, "get", "pods")
                states = [f"{p['metadata']['name']} on {p['spec'].get('nodeName')}: "
                          f"{_pod_state(p)}" for p in listing["items"]]
                raise OperationError(f"deployment web not available within {timeout:.0f} s: "
                                     + "; ".join(states)) from None
            pods[:] = k.json("-n", NS, "get", "pods", "-l", "app=web")["items"]
            nodes = sorted(p["spec"]["nodeName"] for p in pods)
            expect(nodes == sorted(w.name for w in workers), f"pods on {nodes}, wanted one on each worker")
            return f"{len(pods)} pods Running, one on each of {', '.join(nodes)}"

        if not record(f"deployment of {WEB_IMAGE} across {len(workers)} worker(s)", deployment):
            return report
        a, b = pods[0], pods[-1]
        a_name = a["metadata"]["name"]

        def logs() -> str:
            out = _retry(lambda: k.run("-n", NS, "logs", a_name))
            expect(MARKER in out, f"log of {a_name} lacks {MARKER!r}: {out[:200]!r}")
            return f"kubectl logs {a_name} shows the container's output"

        record("kubectl logs", logs)

        def exec_() -> str:
            out = k.run("-n", NS, "exec", a_name, "--", "hostname").strip()
            expect(out == a_name, f"`hostname` in the pod said {out!r}")
            return f"kubectl exec ran `hostname` in {a_name}"

        record("kubectl exec", exec_)

        def port_forward() -> str:
            proc = subprocess.Popen(
                kubectl_argv(cd, "-n", NS, "port-forward", "--address", "127.0.0.1", f"pod/{a_name}", f":{WEB_PORT}"),
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                line = proc.stdout.readline() if proc.stdout else ""
                m = re.search(r"127\.0\.0\.1:(\d+)", line)
                if not m:
                    raise CheckFailed(f"port-forward printed {line!r} "
                                      f"({proc.stderr.read() if proc.poll() is not None and proc.stderr else ''})")
                body = _retry(lambda: http_get(f"http://127.0.0.1:{m.group(1)}/"), 15)
                expect("hardway web" in body, f"unexpected body {body[:100]!r}")
                return f"127.0.0.1:{m.group(1)} -> {a_name}:{WEB_PORT} answered"
            finally:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

        record("kubectl port-forward", port_forward)

        def service() -> dict:
            return k.json("-n", NS, "get", "service", "web")["spec"]

        def nodeport() -> str:
            node_port = service()["ports"][0]["nodePort"]
            got = []
            for w in workers:
                url = f"http://{w.address}:{node_port}/"
                body = _retry(lambda url=url: http_get(url), 30)
                expect("hardway web" in body, f"{w.address}:{node_port}: unexpected body {body[:100]!r}")
                got.append(f"{w.address}:{node_port}")
            return "answered from the host at " + ", ".join(got)

        record("NodePort service", nodeport)

        def pod_to_pod() -> str:
            ip = b["status"]["podIP"]
            out = _retry(lambda: k.run("-n", NS, "exec", a_name, "--", "wget", "-q", "-O-",
                                       f"http://{ip}:{WEB_PORT}/", timeout=20), 40)
            expect("hardway web" in out, f"unexpected body {out[:100]!r}")
            return f"{a_name} ({a['spec']['nodeName']}) reached {ip} on {b['spec']['nodeName']}"

        # On a single worker both ends share a node: still pod to pod, honestly named.
        record("pod to pod across nodes" if len(workers) > 1 else "pod to pod (one worker)", pod_to_pod)

        def cluster_ip_() -> str:
            # kube-proxy picks an endpoint at random; several requests reach the calling pod
            # itself too (hairpin) as well as the others.
            cluster_ip = service()["clusterIP"]
            url = f"http://{cluster_ip}:{WEB_PORT}/"
            _retry(lambda: k.run("-n", NS, "exec", a_name, "--", "wget", "-q", "-O-", url, timeout=20), 40)
            for _ in range(5):
                out = k.run("-n", NS, "exec", a_name, "--", "wget", "-q", "-O-", url, timeout=20)
                expect("hardway web" in out, f"unexpected body {out[:100]!r}")
            return f"{cluster_ip}:{WEB_PORT} answered 6 of 6 requests from {a_name} through kube-proxy"

        record("ClusterIP service", cluster_ip_)
        report.results.append(coredns_result(k, spec))
        r = report.results[-1]
        progress(f"{r.outcome.upper()} {r.name}: {r.detail}")
    finally:
        try:
            k.run("delete", "namespace", NS, "--wait=false")
        except OperationError as e:
            progress(f"note: could not delete namespace {NS}: {e}")
    return report


def _pod_state(p: dict) -> str:
    for c in p.get("status", {}).get("containerStatuses", []) or []:
        waiting = c.get("state", {}).get("waiting")
        if waiting:
            return f"{waiting.get('reason')}: {waiting.get('message', '')}"[:200]
    return p.get("status", {}).get("phase", "?")


PULL_FAILURES = {"ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull"}


def coredns_result(k: Kube, spec: ClusterSpec, wait: float = 60) -> Result:
    """CoreDNS: the manifests must have been accepted; it runs only where its image exists."""
    name = "CoreDNS"
    try:
        dep = k.json("-n", "kube-system", "get", "deployment", "coredns")
    except OperationError as e:
        return Result(name, "fail", f"the CoreDNS deployment is missing: {e}")
    image = coredns_image(spec)
    deadline = time.monotonic() + wait
    try:
        while True:
            if dep.get("status", {}).get("readyReplicas"):
                return Result(name, "pass", f"{dep['status']['readyReplicas']} replica(s) Ready")
            pods = k.json("-n", "kube-system", "get", "pods", "-l", "k8s-app=kube-dns")["items"]
            reasons = {(c.get("state", {}).get("waiting") or {}).get("reason")
                       for p in pods for c in (p.get("status", {}).get("containerStatuses") or [])}
            if reasons & PULL_FAILURES:
                return Result(name, "skip",
                              f"manifests applied and accepted, but the image {image} is not available to "
                              "the nodes (no registry reachable, not preloaded): DNS was not tested")
            if time.monotonic() > deadline:
                return Result(name, "fail", f"no CoreDNS replica Ready within {wait:.0f} s: "
                              + "; ".join(_pod_state(p) for p in pods))
            time.sleep(2)
            dep = k.json("-n", "kube-system", "get", "deployment", "coredns")
    except OperationError as e:  # kubectl failed meanwhile: a verdict, not a traceback
        return Result(name, "fail", str(e))
