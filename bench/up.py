"""Time `hardway up` on lab machines: a fresh cluster to every node Ready (with the time of each
phase), then a no-op `up`, and the no-op `up` through the CLI (including Python start-up).
For ha and ha-vip also failover: seconds from `hardway lab stop` of a controller (for ha-vip
the VIP holder) to the first successful write (a ConfigMap) through the LB/VIP.

    python bench/up.py                    # basic preset (1 controller + 2 workers)
    python bench/up.py --preset single|ha|ha-vip
    python bench/up.py --repeat 3         # fresh machines each time; median reported

Warm caches: the offline mirror (tests/mirror_fixture.py builds it if missing, ~6 min once),
the fetched artifacts and the lab image. Root on Linux. Uses cluster `hwbench` on
10.240.76.0/24. Writes bench/results/up-<preset>.json. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import print_flat, write_report  # noqa: E402


def log(msg: str) -> None:
    print(f"  {msg}", file=sys.stderr, flush=True)


def one_run(preset: str, mirror: Path) -> dict[str, float]:
    from hardway import api
    from hardway import lab as hwlab
    from tests.e2e.cluster_fixture import LabCluster, write_spec

    with tempfile.TemporaryDirectory(prefix="hwbench-up-") as tmp:
        d = Path(tmp) / "cluster"
        c = LabCluster(d, write_spec(d, preset, "hwbench", 76, mirror))
        try:
            t = time.monotonic()
            hwlab.up(d)
            lab_s = time.monotonic() - t
            t = time.monotonic()
            report = api.up(d, log)
            first = time.monotonic() - t
            t = time.monotonic()
            noop = api.up(d)
            noop_s = time.monotonic() - t
            assert not noop.changed
            t = time.monotonic()
            subprocess.run([sys.executable, "-m", "hardway", "-C", str(d), "up"], check=True,
                           capture_output=True)
            noop_cli = time.monotonic() - t
            failover = _failover(c) if preset in ("ha", "ha-vip") else None
        finally:
            hwlab.destroy(d)
    out = {"lab_up_s": round(lab_s, 2), "up_to_ready_s": round(first, 2)}
    out.update({f"phase_{k}_s": v for k, v in report.phase_seconds.items()})
    out.update({"noop_up_s": round(noop_s, 2), "noop_up_cli_s": round(noop_cli, 2)})
    if failover is not None:
        out["failover_first_write_s"] = round(failover, 2)
    return out


def _failover(c) -> float:
    """`lab stop` of the VIP holder (ha-vip) or the first controller (ha), then seconds to the
    first write through the LB/VIP (the cluster's kubectl, 2 s request timeout, retried)."""
    from hardway import lab as hwlab
    from hardway.spec.load import load_spec

    c.spec = load_spec(c.dir / "cluster.yaml").spec  # with the lab's ssh settings
    vip = c.spec.load_balancer.vip
    victim = (c.vip_holders(str(vip)) if vip else [])[:1] or [c.spec.controllers[0].name]
    hwlab.stop(c.dir, victim[0])
    return c.write_until_ok("failover")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="basic", choices=["single", "basic", "ha", "ha-vip"])
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    from tests.mirror_fixture import built_mirror

    mirror = built_mirror()
    runs = []
    for i in range(args.repeat):
        print(f"run {i + 1}/{args.repeat}", file=sys.stderr)
        runs.append(one_run(args.preset, mirror))
    results = {k: round(statistics.median(r[k] for r in runs), 2) for k in runs[0]}
    path = write_report(f"up-{args.preset}", results, preset=args.preset, repeat=args.repeat, runs=runs)
    print_flat(results)
    print(f"written: {path}")


if __name__ == "__main__":
    main()
