"""A real 3-member etcd cluster, started from hardway's rendered etcd.service units.

The members live on loopback addresses 127.0.2.10-12 (all of 127.0.0.0/8 reaches `lo` on
Linux), so one machine runs the whole cluster with the rendered listen addresses. Only file
locations and ports are rewritten: /etc/etcd/pki becomes the node's bundle directory,
--data-dir a per-member temporary directory, and 2379/2380 two ports found free here (an
etcd of the host's own, or a second run of this test, keeps its ports). The members are
stopped by PID, never by name. Then etcdctl checks health, membership and a key round trip,
and that the separate etcd CA keeps every other certificate out.

Needs `etcd` and `etcdctl` on PATH (Debian: apt-get install etcd-server etcd-client); skipped
without them unless HARDWAY_E2E_REQUIRED=1.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pytest

from hardway.clusterdir import ClusterDir
from hardway.export import write_bundles
from hardway.material import ensure_material, load_material
from hardway.pki.issue import build_certificate, cert_pem, generate_key, key_pem
from hardway.pki.profiles import CertProfile, Usage
from hardway.render import render_cluster
from hardway.render.common import ETCD_DATA, ETCD_PKI
from hardway.spec.load import parse_spec
from tests.helpers import require

pytestmark = pytest.mark.integration

SPEC_YAML = """\
name: looptest
kubernetes: {version: "1.20.2"}
nodes:
  - {name: controller-0, address: 127.0.2.10, roles: [controller]}
  - {name: controller-1, address: 127.0.2.11, roles: [controller]}
  - {name: controller-2, address: 127.0.2.12, roles: [controller]}
  - {name: worker-0, address: 127.0.2.20, roles: [worker]}
network: {nodeSubnet: 127.0.2.0/24, podCIDR: 10.200.0.0/16, serviceCIDR: 10.32.0.0/24}
"""
MEMBERS = {"controller-0": "127.0.2.10", "controller-1": "127.0.2.11", "controller-2": "127.0.2.12"}
CLIENT_PORT, PEER_PORT = 2379, 2380  # as rendered; the test's members listen on free ports instead
STARTUP_TIMEOUT = 30.0  # seconds until the cluster must report healthy
UNIT = "etc/systemd/system/etcd.service"  # inside a node's bundle
HEALTHY = re.compile(r"^(https://\S+) is healthy\b", re.MULTILINE)
# etcd (>= 3.2) checks an incoming peer's remote IP against its certificate's IP SANs. On one
# host every peer connection comes from 127.0.0.1, so the peer certificates must name it.
PEER_SAN_REJECTED = re.compile(r'"rejected connection".*does not match any of DNSNames|certificate is valid for')


# ---- reading the rendered unit ----


def exec_start(unit_text: str) -> list[str]:
    """ExecStart='s command line, its ` \\` continuation lines joined, split like systemd does."""
    lines = unit_text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("ExecStart=")]
    assert len(starts) == 1, f"expected one ExecStart= line, found {len(starts)}"
    i = starts[0]
    current = lines[i][len("ExecStart="):]
    parts = []
    while current.rstrip().endswith("\\"):
        parts.append(current.rstrip()[:-1])
        i += 1
        current = lines[i]
    parts.append(current)
    argv = shlex.split(" ".join(parts))
    assert argv and argv[0].startswith("/"), f"unexpected ExecStart= command: {argv[:1]}"
    return argv


def localize(argv: list[str], etcd_bin: str, pki_dir: Path, data_dir: Path, ports: dict[int, int]) -> list[str]:
    """The rendered command with its file locations moved to this test's directories and its
    ports (`ports`: rendered -> here) in every URL changed; a port not in `ports` fails."""
    out = [etcd_bin]
    data_dirs = 0
    for arg in argv[1:]:
        if arg.startswith("--data-dir="):
            assert arg == f"--data-dir={ETCD_DATA}", arg
            arg = f"--data-dir={data_dir}"
            data_dirs += 1
        else:
            arg = arg.replace(f"{ETCD_PKI}/", f"{pki_dir}/")
            arg = re.sub(r"(https?://[0-9.]+):(\d+)", lambda m: f"{m.group(1)}:{ports[int(m.group(2))]}", arg)
        out.append(arg)
    assert data_dirs == 1, "the rendered unit must set --data-dir exactly once"
    assert not any(a.startswith("--initial-cluster") for a in out), "bootstrap settings belong in the env file"
    # Every path the unit names must now exist: a new file flag in the renderer that this
    # test does not rewrite fails here instead of as a confusing etcd start-up error.
    for arg in out[1:]:
        value = arg.partition("=")[2]
        if value.startswith("/"):
            assert Path(value).exists(), f"{arg}: no such file after rewriting the unit"
    return out


def unit_environment(unit_text: str, bundle: Path, ports: dict[int, int]) -> dict[str, str]:
    """The variables of the unit's EnvironmentFile= (read from the node's bundle), ports in
    their URLs changed like the flags' (etcd reads ETCD_* variables as its flags)."""
    files = [ln.split("=", 1)[1] for ln in unit_text.splitlines() if ln.startswith("EnvironmentFile=")]
    assert files, "etcd.service names no EnvironmentFile= (its --initial-cluster* settings)"
    env = {}
    for f in files:
        for line in (bundle / f.lstrip("/")).read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                key, value = line.split("=", 1)
                assert '"' not in value, f"{line}: this test reads bare values only"
                env[key] = re.sub(r"(https?://[0-9.]+):(\d+)", lambda m: f"{m.group(1)}:{ports[int(m.group(2))]}", value)
    return env


def port_free(address: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # Like Go's listeners: TIME_WAIT leftovers from a previous run do not count as busy.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((address, port))
        except OSError:
            return False
    return True


def free_ports(addresses: list[str], count: int) -> list[int]:
    """`count` distinct ports free on every one of `addresses` (the kernel picks them)."""
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((addresses[0], 0))
            port = s.getsockname()[1]
        if port not in ports and all(port_free(a, port) for a in addresses):
            ports.append(port)
    return ports


def clean_env() -> dict[str, str]:
    """The environment without ETCD_*/ETCDCTL_* settings, which would add to the rendered flags."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ETCD_", "ETCDCTL_"))}
    env["ETCDCTL_API"] = "3"
    return env


def tail(path: Path, lines: int = 12) -> str:
    """A member log's last warnings and errors (raft's info chatter buries them), else its end."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    all_lines = text.splitlines()
    notable = [line for line in all_lines if '"level":"info"' not in line and '"level":"debug"' not in line]
    return "\n".join((notable or all_lines)[-lines:])


# ---- the cluster ----


@dataclass
class EtcdCluster:
    root: Path
    cluster_dir: ClusterDir
    etcd_bin: str
    etcdctl_bin: str
    client_port: int
    peer_port: int
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)
    log_files: list[IO[bytes]] = field(default_factory=list)
    logs_shown: bool = False  # a start-up failure's message already carries the log tails

    @property
    def endpoints(self) -> list[str]:
        return [f"https://{addr}:{self.client_port}" for addr in MEMBERS.values()]

    def node_pki(self, node: str = "controller-0") -> Path:
        return self.root / "bundles" / node / ETCD_PKI.lstrip("/")

    def etcdctl(
        self,
        *args: str,
        cert: Path | None = None,
        key: Path | None = None,
        endpoints: list[str] | None = None,
        command_timeout: str = "4s",
    ) -> subprocess.CompletedProcess[str]:
        """etcdctl with controller-0's rendered CA and, by default, its rendered etcdctl identity."""
        pki = self.node_pki()
        cmd = [
            self.etcdctl_bin,
            f"--endpoints={','.join(endpoints or self.endpoints)}",
            f"--cacert={pki / 'ca.crt'}",
            f"--cert={cert or pki / 'etcdctl.crt'}",
            f"--key={key or pki / 'etcdctl.key'}",
            "--dial-timeout=2s",
            f"--command-timeout={command_timeout}",
            *args,
        ]
        return subprocess.run(cmd, capture_output=True, text=True, env=clean_env(), timeout=20)

    def log_sizes(self) -> dict[str, int]:
        return {name: path.stat().st_size for name, path in self.logs.items()}

    def logged_since(self, sizes: dict[str, int]) -> str:
        """What the members logged after `log_sizes()` returned `sizes`."""
        out = []
        for name, path in self.logs.items():
            with open(path, "rb") as f:
                f.seek(sizes[name])
                out.append(f.read().decode(errors="replace"))
        return "".join(out)

    def log_tails(self) -> str:
        self.logs_shown = True
        return "\n".join(f"---- {name} ({path}) ----\n{tail(path)}" for name, path in self.logs.items())

    def dead(self) -> dict[str, int]:
        return {n: p.returncode for n, p in self.procs.items() if p.poll() is not None}

    def stop(self) -> None:
        # By PID (the Popen objects), never by name. SIGKILL: the data is thrown away, and a
        # SIGTERMed leader would spend seconds trying to hand leadership to members that are
        # stopping too.
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()
        for p in self.procs.values():
            p.wait(timeout=10)
        for f in self.log_files:
            f.close()


def output(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"


def wait_healthy(cluster: EtcdCluster) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        if dead := cluster.dead():
            pytest.fail(f"etcd exited during start-up (exit codes {dead})\n{cluster.log_tails()}", pytrace=False)
        result = cluster.etcdctl("endpoint", "health", "--cluster")
        if result.returncode == 0 and len(HEALTHY.findall(result.stdout + result.stderr)) == len(MEMBERS):
            return
        if any(PEER_SAN_REJECTED.search(p.read_text(errors="replace")) for p in cluster.logs.values()):
            pytest.fail(
                "etcd members reject each other: etcd checks a peer's source address against its "
                "peer certificate's IP SANs, and on one host that address is 127.0.0.1, which the "
                f"rendered peer certificates do not name.\n{cluster.log_tails()}",
                pytrace=False,
            )
        if time.monotonic() > deadline:
            pytest.fail(
                f"etcd cluster not healthy after {STARTUP_TIMEOUT:.0f}s; last etcdctl:\n{output(result)}\n"
                f"{cluster.log_tails()}",
                pytrace=False,
            )
        time.sleep(0.3)


def etcd_programs() -> tuple[str, str]:
    require(sys.platform.startswith("linux"), f"needs Linux (127.0.0.0/8 on lo), not {sys.platform}")
    etcd_bin, etcdctl_bin = shutil.which("etcd"), shutil.which("etcdctl")
    require(etcd_bin is not None, "etcd is not on PATH (Debian: apt-get install etcd-server)")
    require(etcdctl_bin is not None, "etcdctl is not on PATH (Debian: apt-get install etcd-client)")
    assert etcd_bin and etcdctl_bin
    return etcd_bin, etcdctl_bin


def start_member(c: EtcdCluster, name: str, bundle: Path) -> None:
    """One member from its rendered bundle: the unit's command and environment file, localized."""
    ports = {CLIENT_PORT: c.client_port, PEER_PORT: c.peer_port}
    unit = (bundle / UNIT).read_text()
    data_dir = c.root / "data" / name
    data_dir.mkdir(parents=True)
    data_dir.chmod(0o700)
    cmd = localize(exec_start(unit), c.etcd_bin, bundle / ETCD_PKI.lstrip("/"), data_dir, ports)
    c.logs[name] = c.root / f"{name}.log"
    log = open(c.logs[name], "wb")
    c.log_files.append(log)
    c.procs[name] = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        env={**clean_env(), **unit_environment(unit, bundle, ports)}, cwd=c.root, start_new_session=True,
    )


def start_cluster(root: Path, on_stop: Callable[[Callable[[], None]], None]) -> EtcdCluster:
    """Render the looptest cluster into `root` and start its members on free ports; `on_stop`
    registers the stop before the first member starts, so members never outlive the caller."""
    etcd_bin, etcdctl_bin = etcd_programs()
    client_port, peer_port = free_ports(list(MEMBERS.values()), 2)
    spec = parse_spec(SPEC_YAML).spec
    cd = ClusterDir(root / "cluster")
    ensure_material(cd, spec)
    write_bundles(render_cluster(spec, load_material(cd, spec)), root / "bundles")
    c = EtcdCluster(root, cd, etcd_bin, etcdctl_bin, client_port, peer_port)
    on_stop(c.stop)
    for name in MEMBERS:
        start_member(c, name, root / "bundles" / name)
    wait_healthy(c)
    return c


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> EtcdCluster:
    failed_before = request.session.testsfailed
    started: list[EtcdCluster] = []

    def finish(stop: Callable[[], None]) -> None:
        stop()
        if request.session.testsfailed > failed_before and started and not started[0].logs_shown:
            print(f"etcd member logs (last lines):\n{started[0].log_tails()}")

    c = start_cluster(tmp_path_factory.mktemp("etcd-cluster"),
                      lambda stop: request.addfinalizer(lambda: finish(stop)))
    started.append(c)
    return c


# ---- the tests ----


def test_all_members_healthy(cluster: EtcdCluster) -> None:
    result = cluster.etcdctl("endpoint", "health", "--cluster")
    assert result.returncode == 0, output(result)
    healthy = sorted(HEALTHY.findall(result.stdout + result.stderr))
    assert healthy == sorted(cluster.endpoints), output(result)


def test_member_list(cluster: EtcdCluster) -> None:
    result = cluster.etcdctl("member", "list", "--write-out=json")
    assert result.returncode == 0, output(result)
    members = json.loads(result.stdout)["members"]
    got = {m.get("name"): (m.get("peerURLs"), m.get("clientURLs")) for m in members}
    assert got == {
        name: ([f"https://{addr}:{cluster.peer_port}"], [f"https://{addr}:{cluster.client_port}"])
        for name, addr in MEMBERS.items()
    }


def test_put_get_round_trip(cluster: EtcdCluster) -> None:
    first, *_, last = cluster.endpoints
    put = cluster.etcdctl("put", "/hardway/looptest", "replicated", endpoints=[first])
    assert put.returncode == 0 and put.stdout.strip() == "OK", output(put)
    # Read from another member: the write went through raft, not just one member's store.
    get = cluster.etcdctl("get", "/hardway/looptest", "--print-value-only", endpoints=[last])
    assert get.returncode == 0 and get.stdout.strip() == "replicated", output(get)


def test_apiserver_etcd_client_cert_accepted(cluster: EtcdCluster) -> None:
    cd = cluster.cluster_dir
    cert, key = cd.cert("apiserver-etcd-client"), cd.key("apiserver-etcd-client")
    health = cluster.etcdctl("endpoint", "health", cert=cert, key=key)
    assert health.returncode == 0, output(health)
    assert len(HEALTHY.findall(health.stdout + health.stderr)) == len(MEMBERS), output(health)
    put = cluster.etcdctl("put", "/registry/hardway-test", "from-apiserver", cert=cert, key=key)
    assert put.returncode == 0, output(put)


def foreign_client(tmp: Path) -> tuple[Path, Path]:
    """A client certificate for etcd-admin's very name, from a CA that etcd has never seen."""
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = generate_key("ecdsa-p256")
    ca = build_certificate(CertProfile("foreign-ca", None, "etcd-ca", Usage.ca, "test"), ca_key, None, 1, now)
    key = generate_key("ecdsa-p256")
    profile = CertProfile("foreign-client", "foreign-ca", "etcd-admin", Usage.client, "test")
    cert = build_certificate(profile, key, (ca, ca_key), 1, now)
    (tmp / "foreign.crt").write_bytes(cert_pem(cert))
    (tmp / "foreign.key").write_bytes(key_pem(key))
    (tmp / "foreign.key").chmod(0o600)
    return tmp / "foreign.crt", tmp / "foreign.key"


@pytest.mark.parametrize("issuer", ["foreign-ca", "kubernetes-ca"])
def test_client_cert_from_other_ca_refused(cluster: EtcdCluster, tmp_path: Path, issuer: str) -> None:
    if issuer == "foreign-ca":
        cert, key = foreign_client(tmp_path)
    else:
        # admin: system:masters in Kubernetes, signed by the cluster CA, but nothing to etcd.
        cert, key = cluster.cluster_dir.cert("admin"), cluster.cluster_dir.key("admin")
    before = cluster.log_sizes()
    # A short timeout keeps this quick; the log check below makes sure that the refusal is the
    # members rejecting the certificate and not merely the timeout.
    result = cluster.etcdctl("endpoint", "health", cert=cert, key=key, command_timeout="2s")
    assert result.returncode != 0, output(result)
    assert not HEALTHY.findall(result.stdout + result.stderr), output(result)
    logged = cluster.logged_since(before)
    rejections = re.findall(r'"rejected connection".*certificate signed by unknown authority', logged)
    assert rejections, f"no member logged rejecting the certificate\n{output(result)}\n{logged}"


def _comm(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None


def test_a_foreign_etcd_survives_and_keeps_its_ports(tmp_path: Path) -> None:
    """Another etcd on this host (a harmless stand-in: `sleep` named etcd) holding the default
    ports, as Debian's own or a lab's would: the test's members start beside it on ports of
    their own and stop by PID, and it lives on."""
    etcd_programs()
    decoy_bin = tmp_path / "etcd"
    shutil.copy(shutil.which("sleep") or "/bin/sleep", decoy_bin)
    decoy = subprocess.Popen([str(decoy_bin), "300"], start_new_session=True)
    held = []
    for port in (CLIENT_PORT, PEER_PORT):  # the default ports, busy as with a running etcd
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind((MEMBERS["controller-0"], port))
            s.listen()
        except OSError:
            pass  # already busy: just as good
        held.append(s)
    stops: list[Callable[[], None]] = []
    try:
        deadline = time.monotonic() + 10
        while _comm(decoy.pid) != "etcd" and time.monotonic() < deadline:  # until its exec is done
            time.sleep(0.05)
        assert _comm(decoy.pid) == "etcd"
        c = start_cluster(tmp_path / "run", stops.append)
        assert {c.client_port, c.peer_port}.isdisjoint({CLIENT_PORT, PEER_PORT})
        c.stop()
        assert all(p.poll() is not None for p in c.procs.values()), "a member outlived stop()"
        assert decoy.poll() is None and _comm(decoy.pid) == "etcd", "the foreign etcd was killed"
    finally:
        for stop in stops:
            stop()
        for s in held:
            s.close()
        decoy.kill()
        decoy.wait(10)
