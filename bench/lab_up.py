"""Time `hardway lab`: up of N fresh machines, up again (nothing to do), stop and start of one
machine, down, up again on the existing roots, destroy; and each idle machine's memory (RSS
of every process in its cgroup).

    python bench/lab_up.py                # the image from the cache ($HARDWAY_CACHE or ~/.cache/hardway)
    python bench/lab_up.py --cold         # a fresh cache: includes debootstrap of the image (~50-80 s)
    python bench/lab_up.py --machines 5

Root on Linux only. Uses cluster `hwbench` on 10.240.78.0/24 (bridge hw-hwbench). Writes
bench/results/lab_up[-cold].json and prints a table. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import print_flat, write_report  # noqa: E402

SUBNET = "10.240.78"


def spec_text(n: int) -> str:
    nodes = "\n".join(
        f"  - {{name: hwbench-{i}, address: {SUBNET}.{10 + i}, roles: [{'controller' if i == 0 else 'worker'}]}}"
        for i in range(n))
    return f"""\
# bench/lab_up.py
name: hwbench
kubernetes: {{version: "1.20.2"}}
nodes:
{nodes}
network:
  nodeSubnet: {SUBNET}.0/24
ssh:
  user: root
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cold", action="store_true", help="build the image in an empty cache (debootstrap)")
    ap.add_argument("--machines", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="hardway-bench-lab-") as tmp_s:
        tmp = Path(tmp_s)
        if args.cold:
            os.environ["HARDWAY_CACHE"] = str(tmp / "cache")
        from hardway import lab  # imported after HARDWAY_CACHE is settled

        d = tmp / "cluster"
        d.mkdir()
        (d / "cluster.yaml").write_text(spec_text(args.machines))

        t0 = time.perf_counter()

        def progress(msg: str) -> None:
            print(f"  [{time.perf_counter() - t0:6.1f}s] {msg}", flush=True)

        results: dict[str, float | int | bool | dict] = {"machines": args.machines}
        names = [f"hwbench-{i}" for i in range(args.machines)]
        try:
            t = time.perf_counter()
            r = lab.up(d, progress)
            results["up_new_machines_s"] = time.perf_counter() - t
            results["image_built"] = r.image_built
            time.sleep(10)  # let the machines settle before measuring memory
            rss = {m.name: m.rss_bytes for m in lab.status(d).machines}
            results["idle_rss_mib"] = {k: round(v / 2**20, 1) for k, v in rss.items()}
            results["idle_rss_mib_mean"] = round(sum(rss.values()) / len(rss) / 2**20, 1)
            t = time.perf_counter()
            lab.up(d, progress)
            results["up_again_s"] = time.perf_counter() - t
            t = time.perf_counter()
            lab.stop(d, names[-1], progress)
            results["stop_one_s"] = time.perf_counter() - t
            t = time.perf_counter()
            lab.start(d, names[-1], progress)
            results["start_one_s"] = time.perf_counter() - t
            t = time.perf_counter()
            lab.down(d, progress)
            results["down_s"] = time.perf_counter() - t
            t = time.perf_counter()
            lab.up(d, progress)
            results["up_existing_roots_s"] = time.perf_counter() - t
        finally:
            t = time.perf_counter()
            lab.destroy(d, progress)
            results["destroy_s"] = time.perf_counter() - t

    path = write_report(f"lab_up{'-cold' if args.cold else ''}", results, cold_cache=args.cold)
    print_flat(results)
    print(f"-> {path}")


if __name__ == "__main__":
    main()
