"""Time `hardway pki init` (certificates, SA key, encryption key, kubeconfigs) for the ha
preset and a 100-worker spec, cold (empty directory) and warm (nothing to do).

    python bench/pki_init.py [--repeat N] [--key-type ecdsa-p256]

Writes bench/results/pki_init.json and prints a table. A benchmark, not a test: nothing here
asserts a time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import write_report  # noqa: E402

from hardway.clusterdir import ClusterDir  # noqa: E402
from hardway.material import ensure_material  # noqa: E402
from tests.specs import hundred_node_data, parse_data, preset_data  # noqa: E402


def measure(data: dict, repeat: int) -> dict:
    spec = parse_data(data).spec
    cold, warm, files = [], [], 0
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as tmp:
            cd = ClusterDir(Path(tmp))
            t = time.perf_counter()
            report = ensure_material(cd, spec)
            cold.append(time.perf_counter() - t)
            files = len(report.all_written)
            t = time.perf_counter()
            assert ensure_material(cd, spec).all_written == []
            warm.append(time.perf_counter() - t)
    return {
        "nodes": len(spec.nodes),
        "files_written": files,
        "cold_s": {"median": statistics.median(cold), "min": min(cold), "max": max(cold)},
        "warm_s": {"median": statistics.median(warm), "min": min(warm), "max": max(warm)},
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--key-type", default="ecdsa-p256")
    args = ap.parse_args()
    cases = {"ha": preset_data("ha"), "100-workers": hundred_node_data()}
    results = {}
    for name, data in cases.items():
        data["pki"]["keyType"] = args.key_type
        results[name] = measure(data, args.repeat)
    path = write_report(f"pki_init-{args.key_type}", results, key_type=args.key_type, repeat=args.repeat)
    for name, r in results.items():
        print(f"{name:<12} {r['nodes']:>4} nodes {r['files_written']:>4} files  "
              f"cold {r['cold_s']['median']:.3f}s (min {r['cold_s']['min']:.3f})  "
              f"warm {r['warm_s']['median']:.3f}s")
    print(f"-> {path}")


if __name__ == "__main__":
    main()
