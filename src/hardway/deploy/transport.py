"""How commands and bytes reach a node: SSH (asyncssh) or the operator's own machine.

Everything deploy/ does on a node is `run(script, input)`: one shell script per step, fed its
payload on stdin, so one step is one round trip. Host keys (hostkeys.py) are checked before
any byte is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from ..errors import OperationError
from .hostkeys import KnownHosts

# AES-GCM runs on AES-NI in `cryptography`; about 30% faster than chacha20 here for binaries.
CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com",
           "aes128-ctr", "aes256-ctr")
CONNECT_TIMEOUT = 10


Input = bytes | Iterable[bytes] | None
OUT_CHUNK = 1 << 20


def _chunks(input: Input) -> Iterable[bytes]:
    if input is None:
        return ()
    return (input,) if isinstance(input, bytes) else input


@dataclass(frozen=True)
class Result:
    rc: int
    stdout: bytes
    stderr: bytes

    @property
    def out(self) -> str:
        return self.stdout.decode(errors="replace")

    @property
    def err(self) -> str:
        return self.stderr.decode(errors="replace")


class CommandFailed(OperationError):
    def __init__(self, node: str, what: str, result: Result) -> None:
        self.node, self.what, self.result = node, what, result
        tail = "\n".join((result.err or result.out).strip().splitlines()[-15:])
        super().__init__(f"{node}: {what} failed (exit {result.rc})" + (f":\n{tail}" if tail else ""))


class Transport(Protocol):
    node: str
    target: str  # for messages: "root@10.240.0.10:22" or "local"

    async def run(self, script: str, input: Input = None, timeout: float | None = None,
                  output: BinaryIO | None = None) -> Result:
        """`output`: stdout goes there as it arrives (a large file fetched from the node: memory
        stays at one chunk) and Result.stdout is empty."""
        ...

    async def close(self) -> None: ...


async def check(t: Transport, script: str, what: str, input: Input = None,
                timeout: float | None = None, output: BinaryIO | None = None) -> Result:
    r = await (t.run(script, input, timeout) if output is None else t.run(script, input, timeout, output))
    if r.rc != 0:
        raise CommandFailed(t.node, what, r)
    return r


async def _drain(stream, output: BinaryIO | None) -> bytes:
    """All of `stream`; or, with `output`, each chunk written there as it comes (b"" returned)."""
    if output is None:
        return await stream.read()
    while chunk := await stream.read(OUT_CHUNK):
        output.write(chunk)
    return b""


def _wrap(script: str, user: str) -> str:
    # Non-root users need passwordless sudo; -n turns a password prompt into an error.
    cmd = "sh -c " + shlex.quote(script)
    return cmd if user == "root" else "sudo -n " + cmd


def _timed_out(t: Transport, timeout: float | None) -> OperationError:
    return OperationError(f"{t.node} ({t.target}): command timed out after {timeout} s")


class LocalTransport:
    """The operator's own machine (the `single` preset on one host): plain subprocesses."""

    def __init__(self, node: str) -> None:
        self.node = node
        self.target = "local"
        self.user = "root" if os.geteuid() == 0 else os.environ.get("USER", "user")

    async def run(self, script: str, input: Input = None, timeout: float | None = None,
                  output: BinaryIO | None = None) -> Result:
        proc = await asyncio.create_subprocess_shell(
            _wrap(script, self.user),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            start_new_session=True)  # its own process group: a timeout kills the children too
        try:
            async def feed() -> None:
                assert proc.stdin is not None
                for chunk in _chunks(input):
                    proc.stdin.write(chunk)
                    await proc.stdin.drain()
                proc.stdin.close()

            async def collect() -> tuple[bytes, bytes]:
                assert proc.stdout is not None and proc.stderr is not None
                out, err = await asyncio.gather(_drain(proc.stdout, output), proc.stderr.read())
                await proc.wait()
                return out, err

            _, (out, err) = await asyncio.wait_for(asyncio.gather(feed(), collect()), timeout)
        except BaseException as e:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            if isinstance(e, asyncio.TimeoutError):
                raise _timed_out(self, timeout) from e
            if isinstance(e, OSError):  # its stdin closed early, say
                raise OperationError(f"{self.node} (local): the command failed: {e}") from e
            raise
        return Result(proc.returncode or 0, out, err)

    async def close(self) -> None:
        return None


class SSHTransport:
    def __init__(self, node: str, conn, user: str, target: str) -> None:
        self.node, self._conn, self.user, self.target = node, conn, user, target

    async def run(self, script: str, input: Input = None, timeout: float | None = None,
                  output: BinaryIO | None = None) -> Result:
        import asyncssh

        try:
            if output is None and (input is None or isinstance(input, bytes)):
                r = await self._conn.run(_wrap(script, self.user), input=input or b"", encoding=None,
                                         timeout=timeout, check=False)
                rc, out, err = r.exit_status, r.stdout, r.stderr
            else:
                rc, out, err = await asyncio.wait_for(self._stream(script, input, output), timeout)
        except (asyncssh.TimeoutError, asyncio.TimeoutError) as e:
            raise _timed_out(self, timeout) from e
        except (asyncssh.Error, OSError) as e:
            raise OperationError(f"{self.node} ({self.target}): SSH connection lost: {e}") from e
        return Result(rc if rc is not None else 255, out or b"", err or b"")

    async def _stream(self, script: str, input: Input, output: BinaryIO | None) -> tuple[int | None, bytes, bytes]:
        # Large payloads (binaries, snapshots) are streamed: memory stays at one chunk per host.
        async with self._conn.create_process(_wrap(script, self.user), encoding=None) as proc:
            async def feed() -> None:
                for chunk in _chunks(input):
                    proc.stdin.write(chunk)
                    await proc.stdin.drain()
                proc.stdin.write_eof()

            async def collect() -> tuple[bytes, bytes]:
                return await asyncio.gather(_drain(proc.stdout, output), proc.stderr.read())

            _, (out, err) = await asyncio.gather(feed(), collect())
            await proc.wait()
            return proc.exit_status, out, err

    async def close(self) -> None:
        self._conn.close()
        await self._conn.wait_closed()


async def connect_ssh(node: str, address: str, user: str, port: int, key: str | None,
                      known: KnownHosts) -> SSHTransport:
    import asyncssh

    target = f"{user}@{address}:{port}"
    keys = None
    if key:
        path = Path(key).expanduser()
        if not path.is_file():
            raise OperationError(f"{node}: SSH key {path} does not exist (spec ssh.key)")
        keys = [str(path)]
    trusted = known.trusted(address, port)
    try:
        conn = await asyncio.wait_for(asyncssh.connect(
            address, port=port, username=user, client_keys=keys,
            known_hosts=trusted if trusted is not None else None,
            encryption_algs=list(CIPHERS), compression_algs=None,
            # No agent forwarding, no user ssh config: only what the spec names.
            agent_forwarding=False, config=None,
            login_timeout=CONNECT_TIMEOUT), CONNECT_TIMEOUT + 5)
    except asyncssh.HostKeyNotVerifiable as e:
        raise OperationError(
            f"{node} ({target}): its SSH host key does NOT match the one recorded in {known.describe(address)}. "
            "If the machine was reinstalled, remove its line from that file and run again; otherwise "
            f"someone may be intercepting the connection. ({e.reason})") from e
    except asyncssh.PermissionDenied as e:
        raise OperationError(f"{node} ({target}): SSH login refused; check ssh.user and ssh.key "
                             f"in cluster.yaml ({e.reason})") from e
    except (asyncio.TimeoutError, OSError, asyncssh.Error) as e:
        raise OperationError(f"{node} ({target}): cannot connect over SSH: {str(e) or type(e).__name__}. "
                             "Is the machine up and sshd running? (`hardway lab status` for a lab)") from e
    if trusted is None:
        key_obj = conn.get_server_host_key()
        known.record(address, port, key_obj.export_public_key().decode().strip(), node)
    return SSHTransport(node, conn, user, target)
