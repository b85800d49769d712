"""The local transport (the operator's own machine) and the known-hosts record, without SSH."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

from hardway.deploy.hostkeys import KnownHosts
from hardway.deploy.transport import LocalTransport
from hardway.errors import OperationError


def test_local_transport_streams_input_and_reports_exit_status():
    t = LocalTransport("me")
    chunks = (bytes([i]) * 100_000 for i in range(20))  # 2 MB, streamed
    r = asyncio.run(t.run("wc -c; echo oops >&2; exit 7", chunks, timeout=30))
    assert (r.rc, r.out.strip(), r.err.strip()) == (7, "2000000", "oops")
    r = asyncio.run(t.run("cat", b"bytes in one piece", timeout=30))
    assert r.rc == 0 and r.stdout == b"bytes in one piece"


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (FileNotFoundError, IndexError):
        return False


def test_local_transport_times_out_and_kills_the_command(tmp_path):
    """The whole process group goes on a timeout: a child the script started in the background
    as well, not only the shell (which would leave `run` blocked on the child's pipes)."""
    t = LocalTransport("me")
    pidfile = tmp_path / "child.pid"
    outcome: list[BaseException | None] = []

    async def run() -> None:
        try:
            await t.run(f"sleep 60 & echo $! > {pidfile}; wait", timeout=1.0)
            outcome.append(None)
        except OperationError as e:  # a timeout is an error the user can act on, no traceback
            outcome.append(e)

    async def scenario() -> int:
        task = asyncio.ensure_future(run())
        # Generous: the kill follows the 1 s timeout at once; a surviving child lives 60 s.
        await asyncio.wait([task], timeout=10)
        child = int(pidfile.read_text())
        # SIGKILL is delivered at once, but a loaded machine may take a moment to show it.
        for _ in range(30):
            if not _running(child):
                break
            await asyncio.sleep(0.1)
        alive = _running(child)
        if alive:  # clean up after a broken transport before failing
            os.kill(child, signal.SIGKILL)
        await task
        return child if alive else 0

    survivor = asyncio.run(scenario())
    assert outcome and isinstance(outcome[0], OperationError), outcome
    assert str(outcome[0]) == "me (local): command timed out after 1.0 s"
    assert survivor == 0, f"the script's background child {survivor} survived the timeout"


def test_known_hosts_records_first_use_and_matches_by_address_and_port(tmp_path):
    (tmp_path / "lab").mkdir()
    (tmp_path / "lab" / "known_hosts").write_text("node-a,10.0.0.1 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA0000000000000000000000000000000000000000000\n")
    k = KnownHosts(tmp_path)
    assert k.trusted("10.0.0.1", 22) is not None
    assert k.trusted("10.0.0.2", 22) is None
    k.record("10.0.0.2", 2222, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB111111111111111111111111111111111111111111 comment")
    text = (tmp_path / "known_hosts").read_text()
    assert "[10.0.0.2]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB111" in text and "comment" not in text
    assert k.trusted("10.0.0.2", 2222) is not None and k.trusted("10.0.0.2", 22) is None
    assert k.describe("10.0.0.1") == str(tmp_path / "lab" / "known_hosts")
