"""Programs hardway runs on the operator's machine: a short one whose output it needs (`run`),
and a long one whose output goes to a log while the user is told it is still going
(`run_logged`: the Kubernetes build, Kubernetes' e2e suite)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from .errors import OperationError
from .hostcheck import need

Progress = Callable[[str], None]


def run(cmd: Sequence[str | Path], what: str, cwd: Path | None = None,
        env: dict[str, str] | None = None, timeout: float | None = None) -> str:
    """Its stdout; an OperationError naming `what`, the command and the end of its output when
    it fails, or the Debian package to install when the program is missing."""
    try:
        p = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True,
                           timeout=timeout)
    except FileNotFoundError:
        need(str(cmd[0]))
        raise
    except subprocess.TimeoutExpired:
        raise OperationError(f"{what} did not finish within {timeout:.0f} s: {' '.join(map(str, cmd))}") from None
    if p.returncode != 0:
        tail = "\n".join((p.stderr or p.stdout).strip().splitlines()[-15:])
        raise OperationError(f"{what} failed (exit {p.returncode}): {' '.join(map(str, cmd))}\n{tail}")
    return p.stdout


def run_logged(argv: Sequence[str | Path], log: Path, what: str, progress: Progress,
               cwd: Path | None = None, env: dict[str, str] | None = None, every: float = 60,
               status: Callable[[], str] | None = None, timeout: float | None = None,
               append: bool = False) -> int:
    """Run a long program with its output (stdout and stderr) in `log`; every `every` seconds
    tell `progress` that it is still going (with `status()`, when given). On a timeout, Ctrl-C
    or any error, its whole process group is stopped (TERM, then KILL). Returns its exit status."""
    started = time.monotonic()
    with open(log, "ab" if append else "wb") as out:
        try:
            proc = subprocess.Popen([str(a) for a in argv], cwd=cwd, env=env, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        except FileNotFoundError:
            need(str(argv[0]))
            raise
        try:
            last = started
            while proc.poll() is None:
                time.sleep(min(2.0, every))
                now = time.monotonic()
                if timeout is not None and now - started > timeout:
                    raise OperationError(f"{what} took longer than {timeout:.0f} s and was stopped; "
                                         f"its output so far: {log}")
                if now - last >= every:
                    last = now
                    progress(f"  still {what} ({now - started:.0f} s)" + (f": {status()}" if status else "") + "...")
        finally:
            if proc.poll() is None:
                _stop_group(proc)
    return proc.returncode


def _stop_group(proc: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


__all__ = ["run", "run_logged"]
