"""The hosts of a cluster, reached in parallel: the options every command that touches hosts
shares (`up`, `diff`, `verify`, smoke, conformance), one connection per host with its host key
checked, and a bounded fan-out whose first failure cancels the rest."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ..clusterdir import ClusterDir
from ..errors import UsageError
from ..spec.model import ClusterSpec
from .hostkeys import KnownHosts
from .transport import LocalTransport, Transport, connect_ssh

Progress = Callable[[str], None]


@dataclass
class Options:
    timeout: float = 300  # per health wait
    parallel: int = 16  # hosts worked on at once
    local: tuple[str, ...] = ()  # nodes reached without SSH (this machine)
    adopt: bool = False  # replace foreign files, keeping their originals (plan.foreign)
    worker_batch: int = 1  # workers restarted at once in a rolling restart (roll.py)

    def __post_init__(self) -> None:
        if self.parallel < 1:  # 0 would never start a host: the run would hang
            raise UsageError(f"--parallel {self.parallel}: must be at least 1 (hosts worked on at once)")
        if self.worker_batch < 1:
            raise UsageError(f"--worker-batch {self.worker_batch}: must be at least 1 (workers restarted at once)")


async def connect_all(spec: ClusterSpec, cd: ClusterDir, names: list[str], opts: Options,
                      progress: Progress) -> dict[str, Transport]:
    """A transport per node, opened in parallel; host keys checked (hostkeys.py), a key trusted
    on first use told to `progress` with its fingerprint."""
    known = KnownHosts(cd.root, progress)
    by_name = {n.name: n for n in spec.nodes}

    async def one(name: str) -> Transport:
        if name in opts.local:
            return LocalTransport(name)
        ssh = spec.ssh_for(by_name[name])
        return await connect_ssh(name, str(by_name[name].address), ssh.user or "root", ssh.port or 22,
                                 ssh.key, known)

    opened: dict[str, Transport] = {}

    async def keep(name: str) -> None:
        opened[name] = await one(name)

    try:
        await each_host(names, keep, opts.parallel)
    except BaseException:
        await asyncio.gather(*(t.close() for t in opened.values()), return_exceptions=True)
        raise
    return opened


async def each_host(names: list[str], fn: Callable[[str], Awaitable], parallel: int) -> dict:
    """Run fn per host, at most `parallel` at once. The first failure cancels the others and
    waits until they have stopped before it is raised: no host goes on being changed after
    another failed, and no task outlives the run (its connection is about to be closed)."""
    sem = asyncio.Semaphore(parallel)

    async def one(name: str):
        async with sem:
            return await fn(name)

    tasks = {name: asyncio.ensure_future(one(name)) for name in names}
    try:
        if tasks:
            await asyncio.wait(tasks.values(), return_when=asyncio.FIRST_EXCEPTION)
    finally:  # also when this run itself is cancelled (Ctrl-C)
        pending = [t for t in tasks.values() if not t.done()]
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    for t in tasks.values():  # the first failure in host order; the others were cancelled
        if not t.cancelled() and t.exception() is not None:
            raise t.exception()
    return {name: t.result() for name, t in tasks.items()}


__all__ = ["Options", "connect_all", "each_host"]
