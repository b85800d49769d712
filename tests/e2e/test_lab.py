"""`hardway lab` for real: three systemd-nspawn machines boot, answer SSH with the lab key,
reach each other and nothing else, stop and start one by one, run a container under
containerd, and leave nothing behind on the host after `lab down` (pods included).

Runs as root on Linux; the lab boots once for the module and is destroyed in teardown, also
when a test fails. The tests run in file order: the last one takes the lab down.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hardway import lab as hwlab
from hardway.lab import cgroups, host, machine
from hardway.lab.state import load_state
from hardway.spec.load import load_spec
from tests.e2e.lab_fixture import (
    CLUSTER, CONTAINERD_CONFIG, CONTAINERD_UNIT, CONTROLLER, NODES, WORKER0, WORKER1,
    containerd_files, running_lab,
)
from tests.helpers import E2E_TIMEOUT

# Generous: on a fresh 2-core machine the first test builds the lab image (debootstrap).
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(E2E_TIMEOUT)]

MACHINES = [n for n, _ in NODES.values()]
ADDRESSES = dict(NODES.values())


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with running_lab(tmp_path_factory.mktemp("lab") / "cluster") as handle:
        yield handle


def sh(lab, name: str, command: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return hwlab.run(lab.dir, name, command, timeout=timeout)


def ok(lab, name: str, command: str, timeout: float = 60) -> str:
    p = sh(lab, name, command, timeout)
    assert p.returncode == 0, f"{name}: {command!r} exited {p.returncode}\n{p.stdout}\n{p.stderr}"
    return p.stdout


def hw(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hardway", *args], capture_output=True, text=True,
                          timeout=timeout)


def procs(lab, name: str) -> set[tuple[int, int]]:
    """(PID, start time) of every process in a machine's cgroup: identities that survive PID reuse."""
    out = set()
    for pid in hwlab.machine_pids(lab.dir, name):
        got = machine.proc_start(pid)
        if got:
            out.add((pid, got[1]))
    return out


def alive_proc(pid: int, start: int) -> bool:
    got = machine.proc_start(pid)
    return bool(got) and got[1] == start and got[0] != "Z"


def ip_forward() -> str:
    return Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()


def test_machines_boot_and_answer_ssh_with_their_own_name_and_address(lab):
    print(f"lab up (3 machines, image {'cached' if lab.image_was_cached else 'built'}): "
          f"{lab.up_seconds:.1f} s", file=sys.stderr)
    assert sorted(lab.up_report.started) == sorted(MACHINES)
    for name in MACHINES:
        out = ok(lab, name, "hostname; ip -4 -o addr show dev host0; systemctl is-system-running --wait")
        lines = out.split("\n")
        assert lines[0] == name
        assert f"inet {ADDRESSES[name]}/24" in out
        assert "running" in out, out  # no failed unit at boot
    rows = {m.name: m for m in hwlab.status(lab.dir).machines}
    assert {n: (r.state, r.ssh) for n, r in rows.items()} == {n: ("running", True) for n in MACHINES}


def test_cluster_yaml_points_at_the_lab_key_and_keeps_its_comments(lab):
    path = lab.dir / "cluster.yaml"
    text = path.read_text()
    spec = load_spec(path).spec
    key = lab.dir / "lab" / "id_ed25519"
    assert spec.ssh.key == str(key.absolute()) and spec.ssh.user == "root" and spec.ssh.port == 22
    assert "# roles: controller (etcd + control plane)" in text and "# SSH used by `hardway up`" in text
    known = (lab.dir / "lab" / "known_hosts").read_text().splitlines()
    assert sorted(line.split()[0] for line in known) == sorted(f"{n},{a}" for n, a in NODES.values())
    # The recorded host key is the one the machine presents: strict checking succeeds (ok above),
    # and a plain ssh with only these two files works too.
    p = subprocess.run(["ssh", "-F", "none", "-i", str(key), "-o", "BatchMode=yes",
                        "-o", f"UserKnownHostsFile={lab.dir / 'lab' / 'known_hosts'}",
                        "-o", "StrictHostKeyChecking=yes", f"root@{ADDRESSES[WORKER0]}", "hostname"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0 and p.stdout.strip() == WORKER0, p.stderr


def test_machines_reach_each_other_by_name_and_address(lab):
    for src in MACHINES:
        for dst in MACHINES:
            if src == dst:
                continue
            for target in (dst, ADDRESSES[dst]):
                ok(lab, src, f"ping -c1 -W2 {target} >/dev/null && timeout 3 bash -c '</dev/tcp/{target}/22'")
    assert ok(lab, WORKER0, "getent hosts hwe2e-c0").split()[0] == ADDRESSES[CONTROLLER]


def test_no_route_off_the_lab(lab):
    for name in MACHINES:
        routes = ok(lab, name, "ip -4 route show")
        assert "default" not in routes, routes
        assert [r.strip() for r in routes.strip().splitlines()] == \
            [f"10.240.77.0/24 dev host0 proto kernel scope link src {ADDRESSES[name]}"], routes
        p = sh(lab, name, "ip route get 1.1.1.1")  # a route lookup: sends nothing
        assert p.returncode != 0 and "unreachable" in p.stderr.lower(), p.stdout + p.stderr
    assert ip_forward() == "0"


def test_host_kernel_settings_for_the_kubelet_are_set_and_recorded(lab):
    for k, v in host.KUBELET_SYSCTLS.items():
        assert host.read_sysctl(k) == v, k
    state = json.loads((lab.dir / "lab" / "state.json").read_text())
    assert state["saved_sysctls"] == lab.host_sysctls_before
    # the machines cannot change them: /proc/sys is read-only inside (LAB.md 3, 15)
    p = sh(lab, WORKER0, "echo 2 > /proc/sys/vm/overcommit_memory")
    assert p.returncode != 0 and host.read_sysctl("vm.overcommit_memory") == "1"


def test_up_twice_is_harmless(lab):
    before = {n: m.pid for n, m in load_state(lab.dir).machines.items()}
    spec_before = (lab.dir / "cluster.yaml").read_text()
    r = hw("lab", "up", "-C", str(lab.dir))
    assert r.returncode == 0, r.stderr
    assert "already running" in r.stdout
    assert {n: m.pid for n, m in load_state(lab.dir).machines.items()} == before
    assert (lab.dir / "cluster.yaml").read_text() == spec_before
    assert all(m.ssh for m in hwlab.status(lab.dir).machines)


def test_status_cli_shows_every_machine(lab):
    r = hw("lab", "status", "-C", str(lab.dir))
    assert r.returncode == 0, r.stderr
    for name in MACHINES:
        line = next(line for line in r.stdout.splitlines() if name in line)
        assert ADDRESSES[name] in line and "running" in line and "yes" in line
    assert f"bridge hw-{CLUSTER}: up" in r.stdout


def test_lab_ssh_cli_runs_a_command_and_returns_its_exit_code(lab):
    r = hw("lab", "ssh", "-C", str(lab.dir), WORKER1, "hostname")
    assert r.returncode == 0 and r.stdout.strip() == WORKER1, r.stderr
    assert hw("lab", "ssh", "-C", str(lab.dir), WORKER1, "exit 7").returncode == 7
    r = hw("lab", "ssh", "-C", str(lab.dir), WORKER1, "printf", "%s|", "a b", "c;d")
    assert r.stdout == "a b|c;d|"
    r = hw("lab", "ssh", "-C", str(lab.dir), WORKER1, "--", "ls", "-d", "/etc")
    assert r.returncode == 0 and r.stdout == "/etc\n", r.stderr
    r = hw("lab", "ssh", "-C", str(lab.dir), "no-such-machine", "true")
    assert r.returncode == 2 and "no machine named" in r.stderr and "Traceback" not in r.stderr


def test_idle_machine_memory(lab):
    time.sleep(2)
    rss = {m.name: m.rss_bytes for m in hwlab.status(lab.dir).machines}
    print("idle RSS per machine (MiB): " + ", ".join(f"{n} {b / 2**20:.0f}" for n, b in rss.items()),
          file=sys.stderr)
    assert all(20 * 2**20 < b < 400 * 2**20 for b in rss.values()), rss


def test_stop_and_start_one_machine(lab):
    state = load_state(lab.dir)
    m = state.machines[WORKER1]
    old = procs(lab, WORKER1)
    assert m.pid in {p for p, _ in old}
    r = hw("lab", "stop", "-C", str(lab.dir), WORKER1)
    assert r.returncode == 0, r.stderr
    rows = {r.name: r for r in hwlab.status(lab.dir).machines}
    assert rows[WORKER1].state == "stopped" and rows[CONTROLLER].state == rows[WORKER0].state == "running"
    assert not any(alive_proc(p, start) for p, start in old)
    assert not cgroups.exists(m.cgroup)
    assert hw("lab", "stop", "-C", str(lab.dir), WORKER1).returncode == 0  # again: harmless
    r = hw("lab", "ssh", "-C", str(lab.dir), WORKER1, "true")
    assert r.returncode == 1 and "not running" in r.stderr
    r = hw("lab", "start", "-C", str(lab.dir), WORKER1)
    assert r.returncode == 0, r.stderr
    assert ok(lab, WORKER1, "hostname").strip() == WORKER1
    ok(lab, WORKER0, f"ping -c1 -W2 {WORKER1} >/dev/null")


def test_a_machine_whose_nspawn_was_killed_is_cleaned_up_by_up(lab):
    # Kill -9 of nspawn leaves the machine's processes running on the host (LAB.md 11).
    ok(lab, WORKER1, "setsid -f unshare -fp --mount-proc sleep 100004 </dev/null >/dev/null 2>&1")
    m = load_state(lab.dir).machines[WORKER1]
    os.kill(m.pid, signal.SIGKILL)
    for _ in range(50):
        if not machine.alive(m):
            break
        time.sleep(0.1)
    report = hwlab.status(lab.dir)
    row = next(r for r in report.machines if r.name == WORKER1)
    assert row.state == "stopped" and row.leftover > 0
    assert any("hardway lab stop" in w for w in report.warnings)
    left = procs(lab, WORKER1)
    r = hw("lab", "up", "-C", str(lab.dir))
    assert r.returncode == 0, r.stderr
    assert "left from its previous run" in r.stderr
    assert not left & procs(lab, WORKER1)
    assert not any(alive_proc(p, start) for p, start in left)
    assert ok(lab, WORKER1, "hostname").strip() == WORKER1


def test_containerd_in_a_machine_runs_a_container_from_an_imported_image(lab):
    from hardway.artifacts.oci import ImageFile, image_tar

    files = containerd_files()
    root = Path(load_state(lab.dir).machines[WORKER0].root)
    for name in ("containerd", "containerd-shim-runc-v2", "ctr", "runc"):
        machine.put(root, f"usr/local/bin/{name}", files[name].read_bytes(), 0o755)
    machine.put(root, "etc/containerd/config.toml", CONTAINERD_CONFIG)
    machine.put(root, "etc/systemd/system/containerd.service", CONTAINERD_UNIT)
    ref = "hardway.test/busybox:1"
    machine.put(root, "root/busybox.tar",
                image_tar(ref, {"/bin/busybox": ImageFile(files["busybox"].read_bytes())}, entrypoint=["/bin/busybox"]))
    ok(lab, WORKER0, "systemctl daemon-reload && systemctl start containerd && "
                     "for i in $(seq 50); do ctr version >/dev/null 2>&1 && break; sleep 0.1; done")
    # the lab's cgroup unit ran before containerd (LAB.md 4): the controllers are writable
    ok(lab, WORKER0, "systemctl is-active hardway-lab-cgroups && ! grep -E ' /sys/fs/cgroup/memory .*[ ,]ro[ ,]' /proc/mounts")
    ok(lab, WORKER0, "ctr -n k8s.io images import /root/busybox.tar")
    out = ok(lab, WORKER0, f"ctr -n k8s.io run --rm {ref} t1 /bin/busybox echo hello", timeout=120)
    assert out.strip() == "hello"
    # A long-running container for the last test: its PID 1 (sleep) ignores SIGTERM, like a pod's.
    ok(lab, WORKER0, f"ctr -n k8s.io run -d {ref} pod1 /bin/busybox sleep 100003")
    tasks = ok(lab, WORKER0, "ctr -n k8s.io task ls")
    assert "pod1" in tasks and "RUNNING" in tasks


def test_down_leaves_nothing_of_the_lab_on_the_host(lab):
    # Processes that try to outlive their machine: a transient unit, a detached session, and a
    # nested PID namespace whose PID 1 ignores SIGTERM (what a pod's pause process does).
    ok(lab, CONTROLLER, "systemd-run --unit=hw-sleeper sleep 100000 && "
                        "setsid -f sleep 100001 </dev/null >/dev/null 2>&1 && "
                        "setsid -f unshare -fp --mount-proc sleep 100002 </dev/null >/dev/null 2>&1")
    time.sleep(0.5)
    state = load_state(lab.dir)
    ran = dict(p for name in MACHINES for p in procs(lab, name))
    comms = {Path(f"/proc/{p}/comm").read_text().strip() for p in ran if Path(f"/proc/{p}/comm").exists()}
    assert {"systemd-nspawn", "systemd", "sshd", "sleep", "unshare"} <= comms, comms
    if "containerd" not in comms:
        pytest.fail("the containerd test did not leave its container running (it must run first)")

    t = time.monotonic()
    r = hw("lab", "down", "-C", str(lab.dir))
    took = time.monotonic() - t
    print(f"lab down (3 machines, with stragglers): {took:.1f} s", file=sys.stderr)
    assert r.returncode == 0, r.stderr

    still = [p for p, start in ran.items() if alive_proc(p, start)]
    assert not still, f"processes that ran in a machine survived `lab down`: {still}"
    assert not cgroups.exists(f"/{cgroups.LAB_ROOT}/{CLUSTER}")
    for h in cgroups.hierarchies():
        assert not (h / cgroups.LAB_ROOT / CLUSTER).exists(), h
    assert not host.link_exists(state.bridge)
    links = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout
    assert "vb-hwe2e" not in links and f"hw-{CLUSTER}" not in links, links
    for m in state.machines.values():  # nothing of nspawn's own runtime state either
        st = os.stat(m.root)
        assert not Path(f"/run/systemd/nspawn/locks/inode-{st.st_dev}:{st.st_ino}").exists()
        assert not Path("/run/systemd/nspawn/propagate", m.name).exists()
    if host.recorded_originals() is None:  # the last lab went down: the originals are back
        for k, v in lab.host_sysctls_before.items():
            assert host.read_sysctl(k) == v, k
    else:  # another lab on this host still runs and needs them
        for k, v in host.KUBELET_SYSCTLS.items():
            assert host.read_sysctl(k) == v, k
    assert ip_forward() == "0"
    rows = hwlab.status(lab.dir).machines
    assert all(m.state == "stopped" for m in rows)
    # down again: nothing to do, no error
    r = hw("lab", "down", "-C", str(lab.dir))
    assert r.returncode == 0, r.stderr
