"""Concurrency: a failing host stops the others and every connection closes; --parallel is at
least 1 and bounds verify too; one changing command at a time per cluster directory."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from hardway.clusterdir import ClusterDir
from hardway.deploy import hosts
from hardway.deploy.hosts import Options, connect_all, each_host
from hardway.errors import OperationError, UsageError
from hardway.lock import LOCK_FILE, cluster_lock
from hardway.verify import health
from tests.specs import make_spec

ROOT = Path(__file__).resolve().parents[2]


def test_the_first_failure_cancels_the_other_hosts_before_it_is_raised():
    events: list[str] = []

    async def work(name: str) -> str:
        try:
            if name == "bad":
                await asyncio.sleep(0.05)
                raise OperationError("bad: broke")
            await asyncio.sleep(30)
            events.append(f"{name} finished")
            return name
        except asyncio.CancelledError:
            events.append(f"{name} cancelled")
            raise

    async def scenario() -> tuple[BaseException | None, list[str], float]:
        t = time.monotonic()
        try:
            await each_host(["a", "bad", "c"], work, parallel=3)
        except OperationError as e:
            return e, list(events), time.monotonic() - t  # what had happened when it was raised
        return None, list(events), time.monotonic() - t

    error, seen, seconds = asyncio.run(scenario())
    assert isinstance(error, OperationError) and "bad: broke" in str(error)
    assert sorted(seen) == ["a cancelled", "c cancelled"]
    assert seconds < 5


def test_each_host_returns_every_result_and_keeps_to_parallel():
    running, most = 0, 0

    async def work(name: str) -> str:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.02)
        running -= 1
        return name.upper()

    got = asyncio.run(each_host([f"h{i}" for i in range(7)], work, parallel=2))
    assert got == {f"h{i}": f"H{i}" for i in range(7)} and most == 2


class FakeTransport:
    def __init__(self, node: str, opened: dict[str, "FakeTransport"]) -> None:
        self.node, self.closed = node, False
        opened[node] = self

    async def close(self) -> None:
        self.closed = True


def test_a_failed_connection_closes_the_ones_already_open(monkeypatch, tmp_path):
    spec = make_spec("basic")
    opened: dict[str, FakeTransport] = {}

    async def fake_connect(node, *_args):
        if node == "worker-1":
            await asyncio.sleep(0.05)
            raise OperationError(f"{node}: cannot connect over SSH")
        t = FakeTransport(node, opened)
        if node == "worker-0":
            await asyncio.sleep(30)  # still connecting when worker-1 fails
        return t

    monkeypatch.setattr(hosts, "connect_ssh", fake_connect)
    with pytest.raises(OperationError, match="worker-1"):
        asyncio.run(connect_all(spec, ClusterDir(tmp_path), [n.name for n in spec.nodes], Options(), print))
    assert opened["controller-0"].closed


def test_parallel_0_is_refused(tmp_path):
    with pytest.raises(UsageError, match="at least 1"):
        Options(parallel=0)
    for cmd in (["up"], ["diff"], ["verify"]):
        r = subprocess.run([sys.executable, "-m", "hardway", *cmd, "-C", str(tmp_path), "--parallel", "0"],
                           capture_output=True, text=True, timeout=60, cwd=ROOT,
                           env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
        assert r.returncode == 2 and "--parallel" in r.stderr and "Traceback" not in r.stderr, (cmd, r.stderr)


def test_verify_keeps_to_parallel_and_closes_every_connection(monkeypatch, tmp_path):
    spec = make_spec("ha")
    opened: dict[str, FakeTransport] = {}
    open_now, most = 0, 0

    async def fake_connect_all(_spec, _cd, names, _opts, _progress=None):
        nonlocal open_now, most
        (name,) = names
        if name == "worker-1":
            raise OperationError("worker-1 (root@10.240.0.21:22): cannot connect over SSH: refused")
        open_now += 1
        most = max(most, open_now)
        t = FakeTransport(name, opened)
        real_close = t.close

        async def close() -> None:
            nonlocal open_now
            open_now -= 1
            await real_close()
        t.close = close
        return {name: t}

    async def fake_states(t, units):
        await asyncio.sleep(0.02)
        return {u: ("active", 0) for u in units}

    monkeypatch.setattr(health, "connect_all", fake_connect_all)
    monkeypatch.setattr(health, "unit_states", fake_states)
    checks: list[health.Check] = []
    units = {n.name: ["a.service"] for n in spec.nodes}
    asyncio.run(health.unit_checks(spec, ClusterDir(tmp_path), units, Options(parallel=2), checks.append))
    assert most == 2, most
    assert set(opened) == set(units) - {"worker-1"} and all(t.closed for t in opened.values())
    assert [c.name for c in checks if not c.ok] == ["worker-1: SSH"]


HOLD = """
import sys
from hardway.lock import cluster_lock
with cluster_lock(sys.argv[1], "up"):
    print("held", flush=True)
    sys.stdin.read()
"""


def test_a_second_command_is_refused_and_told_who_holds_the_lock(tmp_path):
    r = subprocess.run([sys.executable, "-m", "hardway", "init", str(tmp_path / "c"), "--preset", "single"],
                       capture_output=True, text=True, timeout=60, cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert r.returncode == 0, r.stderr
    d = tmp_path / "c"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(d)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(OperationError) as e, cluster_lock(d, "diff"):
            pass
        assert f"PID {holder.pid} runs `hardway up` (command line: " in str(e.value) and "started" in str(e.value)
        for cmd in (["diff"], ["up"], ["pki", "init"], ["render"]):
            r = subprocess.run([sys.executable, "-m", "hardway", "-C", str(d), *cmd], capture_output=True,
                               text=True, timeout=60, cwd=ROOT, env=env)
            assert r.returncode == 1 and f"PID {holder.pid}" in r.stderr, (cmd, r.stderr)
            assert "Traceback" not in r.stderr
        assert not (d / "pki").exists()  # refused before anything was written
    finally:
        holder.stdin.close()
        holder.wait(10)
    with cluster_lock(d, "diff"):  # released when its holder ended
        assert (d / LOCK_FILE).read_text().count('"command": "diff"') == 1


def test_the_lock_is_reentrant_in_a_thread_and_exclusive_across_threads(tmp_path):
    errors: list[BaseException] = []

    def other() -> None:
        try:
            with cluster_lock(tmp_path, "lab down"):
                pass
        except OperationError as e:
            errors.append(e)

    with cluster_lock(tmp_path, "lab destroy"), cluster_lock(tmp_path, "lab down"):
        t = threading.Thread(target=other)
        t.start()
        t.join()
    assert len(errors) == 1 and "lab destroy" in str(errors[0])
    with cluster_lock(tmp_path, "up"):
        pass  # released, even after the nested use
