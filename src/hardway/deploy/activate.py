"""Activation on one host: the node-side commands of each phase. Scripts are built here (pure)
and run through a transport; the cluster-wide order and health waits live in up.py.
"""

from __future__ import annotations

import shlex

from ..render.bundle import Phase, Unit
from .desired import PENDING, Desired
from .facts import module_present
from .plan import HostPlan
from .transport import CommandFailed, Transport, check

# Long-running units are started without waiting: etcd's start only returns once a quorum
# exists, which needs its peers to start too. The phase's health wait follows instead.
# containerd is waited for: images are imported into it next.
WAIT_FOR_START = {"containerd.service"}


def units_in(d: Desired, phase: Phase) -> list[Unit]:
    return [u for u in d.bundle.units if u.phase == phase]


def host_settings_script(plan: HostPlan) -> str:
    lines = ["set -u", "rc=0"]
    for m in plan.modules:
        say = shlex.quote(f"kernel module {m} is neither built in nor loadable")
        lines.append(f"{module_present(m)} || modprobe {shlex.quote(m)} || {{ echo {say} >&2; rc=1; }}")
    for key, (_, want) in plan.sysctls.items():
        say = shlex.quote(f"cannot set {key}={want} (is /proc/sys read-only here?)")
        lines.append(f"sysctl -q -w {shlex.quote(f'{key}={want}')} || {{ echo {say} >&2; rc=1; }}")
    lines.append("exit $rc")
    return "\n".join(lines) + "\n"


def units_script(units: list[Unit], plan: HostPlan) -> str:
    restart = [u for u in units if u.name in plan.restarts]
    start = [u for u in units if u.name in plan.starts]
    reload = [u for u in units if u.name in plan.reloads]
    if not (restart or start or reload):
        return ""
    lines = ["set -e"]
    if restart or start:
        lines.append(f"systemctl enable -q {shlex.join(u.name for u in restart + start)}")
    for verb, group in (("restart", restart), ("start", start), ("reload", reload)):
        for u in group:
            # a reload is waited for: it checks the new configuration first and fails if it is bad
            block = u.oneshot or u.name in WAIT_FOR_START or verb == "reload"
            lines.append(f"systemctl {verb}{'' if block else ' --no-block'} {shlex.quote(u.name)}")
    return "\n".join(lines) + "\n"


def import_script(paths: list[str]) -> str:
    return "set -e\n" + "".join(f"ctr -n k8s.io images import {shlex.quote(p)} >/dev/null\n" for p in paths)


async def daemon_reload(t: Transport) -> None:
    await check(t, "systemctl daemon-reload", "systemctl daemon-reload", timeout=60)


async def activate(t: Transport, d: Desired, plan: HostPlan, phase: Phase,
                   only: frozenset[str] | None = None) -> list[str]:
    """Carry out `phase` on this host, or of its units just `only` (a wave of a rolling
    restart); returns what was done (for progress output)."""
    done: list[str] = []
    if phase is Phase.host and (plan.modules or plan.sysctls):
        await check(t, host_settings_script(plan), "kernel settings (modules, sysctls)", timeout=60)
        done += [f"sysctl {k}" for k in plan.sysctls] + [f"module {m}" for m in plan.modules]
    units = [u for u in units_in(d, phase) if only is None or u.name in only]
    before_import = [u for u in units if u.name == "containerd.service"]
    after_import = [u for u in units if u.name != "containerd.service"]
    for group in (before_import, after_import):
        script = units_script(group, plan)
        if script:
            names = [u.name for u in group if u.name in plan.restarts or u.name in plan.starts
                     or u.name in plan.reloads]
            try:
                await check(t, script, f"starting {', '.join(names)}", timeout=180)
            except CommandFailed as e:
                raise CommandFailed(e.node, e.what + "\n" + await journal_tail(t, names), e.result) from e
            done += [("restart " if n in plan.restarts else "reload " if n in plan.reloads else "start ") + n
                     for n in names]
        if group is before_import and plan.imports and phase is Phase.worker:
            await check(t, import_script(plan.imports), f"importing {len(plan.imports)} image(s) into containerd",
                        timeout=300)
            done += [f"import {p.rsplit('/', 1)[-1]}" for p in plan.imports]
    return done


async def clear_pending(t: Transport) -> None:
    await check(t, f"rm -f {PENDING}", "clearing the pending-restarts record", timeout=30)


async def journal_tail(t: Transport, units: list[str], lines: int = 20) -> str:
    """Each unit's state and the last lines of its journal: what a failure report shows."""
    if not units:
        return ""
    script = "".join(
        f"printf -- '--- %s: %s (journalctl -u %s -n {lines})\\n' {q} \"$(systemctl is-active {q} 2>/dev/null)\" {q}\n"
        f"journalctl -u {q} -n {lines} --no-pager -o cat 2>&1 | cut -c1-300\n" for q in map(shlex.quote, units))
    r = await t.run(script, timeout=30)
    return r.out.rstrip()


def unit_states_script(units: list[str]) -> str:
    return f"systemctl show -p Id -p ActiveState -p NRestarts {shlex.join(units)}"


def parse_unit_states(text: str) -> dict[str, tuple[str, int]]:
    """unit -> (ActiveState, NRestarts: automatic restarts since the last manual start)."""
    out = {}
    for block in text.strip().split("\n\n"):
        props = dict(ln.split("=", 1) for ln in block.splitlines() if "=" in ln)
        if "Id" in props:
            out[props["Id"]] = (props.get("ActiveState", ""), int(props.get("NRestarts") or 0))
    return out


def unsettled(states: dict[str, tuple[str, int]], touched: set[str],
              before: dict[str, tuple[str, int]] | None = None) -> dict[str, str]:
    """unit -> what is wrong: not running; or, among those started now, restarted by systemd
    (a crash) and not yet seen running steadily: a second look (`before`) with the same count
    clears it, so a component that crashed once while its dependency came up is not mistaken
    for a broken one."""
    bad = {}
    for unit, (state, restarts) in states.items():
        if state != "active":
            bad[unit] = f"{unit} is {state}" + (f" (restarted {restarts} time(s))" if restarts else "")
        elif unit in touched and restarts and (before or {}).get(unit) != (state, restarts):
            bad[unit] = f"{unit} crashed and was restarted {restarts} time(s)"
    return bad


# systemd restarts our units every 5 s for ever (the default start limit never trips at that
# pace), so a broken one is never "failed": a unit restarted this often during one health wait,
# and not running now, will not come good by itself.
CRASH_LOOP_RESTARTS = 3


def given_up(states: dict[str, tuple[str, int]], baseline: dict[str, tuple[str, int]]) -> dict[str, str]:
    """unit -> why a health wait need not wait for it: failed, or crash-looping since the wait
    began."""
    bad = {}
    for unit, (state, restarts) in states.items():
        more = restarts - baseline.get(unit, (state, restarts))[1]
        if state == "failed":
            bad[unit] = f"{unit} has failed"
        elif state != "active" and more >= CRASH_LOOP_RESTARTS:
            bad[unit] = f"{unit} keeps crashing (restarted {more} times while waiting)"
    return bad


async def unit_states(t: Transport, units: list[str]) -> dict[str, tuple[str, int]]:
    r = await check(t, unit_states_script(units), "reading unit states", timeout=30)
    return parse_unit_states(r.out)
