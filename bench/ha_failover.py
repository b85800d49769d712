"""HA failover, repeated: does losing a controller stay invisible to clients every time, not just
when the timing is kind? One lab cluster per preset, then N rounds of: stop a controller
machine (for ha-vip the VIP holder; for ha each controller in turn), write through the
LB/VIP until a write succeeds, wait for HAProxy to hold it DOWN, `verify` (must say degraded,
exit 3, with the API answering through the LB), start it again, wait until `verify` is
healthy. A round passes when every step did. The same checks as tests/e2e/test_ha.py, which
runs one round per preset in CI.

    python bench/ha_failover.py                       # ha and ha-vip, 10 rounds each
    python bench/ha_failover.py --preset ha --rounds 3

Uses clusters `hwfo`/`hwfov` on 10.240.89.0/24 and 10.240.90.0/24. Writes
bench/results/ha-failover.json. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import write_report  # noqa: E402


def log(msg: str) -> None:
    print(f"  {msg}", file=sys.stderr, flush=True)


def one_round(c, preset: str, i: int) -> dict:
    from tests.e2e.cluster_fixture import hw

    vip = str(c.spec.load_balancer.vip) if preset == "ha-vip" else None
    controllers = [n.name for n in c.spec.controllers]
    victim = c.vip_holders(vip)[0] if vip else controllers[i % len(controllers)]
    haproxies = [n.name for n in c.spec.nodes if n.name != victim
                 and (preset == "ha-vip" and n.name in controllers or preset == "ha" and n.name == c.spec.lb_node.name)]
    watcher = haproxies[0]
    out: dict = {"victim": victim}
    problems = []
    r = hw(c.dir, "lab", "stop", victim)
    if r.returncode:
        return {**out, "ok": False, "problems": [f"lab stop: {r.stderr[-300:]}"]}
    try:
        with ThreadPoolExecutor(1) as pool:
            down = pool.submit(c.until_haproxy_says, watcher, victim, f"{victim} DOWN: ", 60)
            out["first_write_s"] = round(c.write_until_ok(f"fo-{i}-1"), 2)
            out["haproxy_down_s"] = round(down.result(timeout=90), 2)
        r = hw(c.dir, "verify")
        out["verify_exit"] = r.returncode
        if r.returncode != 3:
            problems.append(f"verify exited {r.returncode}, not 3 (degraded):\n{r.stdout[-1500:]}")
        elif "ok   API through the load balancer" not in r.stdout:
            problems.append(f"verify did not reach the API through the LB:\n{r.stdout[-1500:]}")
    except (AssertionError, TimeoutError) as e:
        problems.append(f"{type(e).__name__}: {e}")
    finally:
        r = hw(c.dir, "lab", "start", victim)
        if r.returncode:
            problems.append(f"lab start: {r.stderr[-300:]}")
    t = time.monotonic()
    while True:
        r = hw(c.dir, "verify")
        if r.returncode == 0:
            out["rejoin_s"] = round(time.monotonic() - t, 1)
            break
        if time.monotonic() - t > 180:
            problems.append(f"{victim} did not rejoin within 180 s:\n{r.stdout[-1500:]}")
            break
        time.sleep(3)
    if vip:
        c.steady_vip_holders(vip)  # the rejoined holder preempts the VIP: let it settle first
    return {**out, "ok": not problems, "problems": problems}


def run(preset: str, mirror: Path, rounds: int) -> dict:
    from hardway import api
    from hardway import lab as hwlab
    from tests.e2e.cluster_fixture import LabCluster, write_spec

    name, octet = ("hwfo", 89) if preset == "ha" else ("hwfov", 90)
    with tempfile.TemporaryDirectory(prefix="hwbench-fo-") as tmp:
        d = Path(tmp) / "cluster"
        spec = write_spec(d, preset, name, octet, mirror)
        try:
            hwlab.up(d, log)
            api.up(d, log)
            c = LabCluster(d, spec)
            results = []
            for i in range(rounds):
                r = one_round(c, preset, i)
                results.append(r)
                print(f"{preset} round {i + 1}/{rounds}: {'pass' if r['ok'] else 'FAIL'} "
                      f"(victim {r['victim']}, first write {r.get('first_write_s')} s, HAProxy DOWN "
                      f"{r.get('haproxy_down_s')} s, verify exit {r.get('verify_exit')}, rejoin {r.get('rejoin_s')} s)",
                      flush=True)
                for p in r["problems"]:
                    print(f"    {p}", flush=True)
        finally:
            hwlab.destroy(d, log)
    passed = sum(r["ok"] for r in results)
    writes = [r["first_write_s"] for r in results if "first_write_s" in r]
    return {"rounds": rounds, "passed": passed, "first_write_s_max": max(writes, default=None),
            "first_write_s_median": statistics.median(writes) if writes else None, "round_details": results}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", action="append", choices=["ha", "ha-vip"], help="repeatable; default: both")
    ap.add_argument("--rounds", type=int, default=10)
    args = ap.parse_args()
    from tests.mirror_fixture import built_mirror

    mirror = built_mirror()
    results = {}
    for preset in args.preset or ["ha", "ha-vip"]:
        results[preset] = run(preset, mirror, args.rounds)
        print(f"{preset}: {results[preset]['passed']}/{args.rounds} rounds passed")
    print(f"wrote {write_report('ha-failover', results)}")


if __name__ == "__main__":
    main()
