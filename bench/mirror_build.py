"""Time the offline mirror: `mirror build --from-debian` into a new directory, the same build
re-run in place (nothing to write), and `artifacts fetch` of a 1.20 cluster's artifacts from
it over HTTP on 127.0.0.1, cold (empty cache) and warm (nothing to download).

    python bench/mirror_build.py            # uses the existing cache ($HARDWAY_CACHE or ~/.cache/hardway)
    python bench/mirror_build.py --cold     # a fresh cache: includes the Kubernetes build (~6.5 min on 2 cores)

Writes bench/results/mirror_build[-cold].json and prints a table. A benchmark, not a test.
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cold", action="store_true", help="build with an empty cache (Kubernetes from source)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="hardway-bench-") as tmp_s:
        tmp = Path(tmp_s)
        if args.cold:
            os.environ["HARDWAY_CACHE"] = str(tmp / "cache")
        # imported after HARDWAY_CACHE is settled
        from hardway.artifacts.fetch import Store, fetch_for_spec
        from hardway.artifacts.mirror import PAUSE_IMAGE_NAME, WEB_IMAGE_NAME, build_mirror
        from hardway.artifacts.serve import serving
        from tests.specs import make_spec

        def progress(msg: str) -> None:
            print(f"  {msg}", flush=True)

        results: dict[str, float | int | bool] = {}
        t = time.perf_counter()
        r = build_mirror(tmp / "mirror", progress)
        results["build_new_dir_s"] = time.perf_counter() - t
        results["kubernetes_cached"] = bool(r.kubernetes and r.kubernetes.cached)
        results["files"] = len(r.written)
        results["mirror_bytes"] = sum(p.stat().st_size for p in (tmp / "mirror").rglob("*") if p.is_file())
        t = time.perf_counter()
        again = build_mirror(tmp / "mirror", progress)
        results["rebuild_in_place_s"] = time.perf_counter() - t
        results["rebuild_written"] = len(again.written)

        def edit(d: dict) -> None:
            d["kubernetes"]["version"] = "1.20.2"
            d.setdefault("artifacts", {})["images"] = [PAUSE_IMAGE_NAME, WEB_IMAGE_NAME]

        spec = make_spec(edit=edit)
        store = Store(tmp / "fetch-cache")
        with serving(tmp / "mirror") as url:
            t = time.perf_counter()
            f = fetch_for_spec(spec, tmp, store=store, mirror=url)
            results["fetch_cold_s"] = time.perf_counter() - t
            results["fetch_cold_downloaded"] = len(f.downloaded)
            t = time.perf_counter()
            f = fetch_for_spec(spec, tmp, store=store, mirror=url)
            results["fetch_warm_s"] = time.perf_counter() - t
            results["fetch_warm_downloaded"] = len(f.downloaded)

    path = write_report(f"mirror_build{'-cold' if args.cold else ''}", results, cold_cache=args.cold)
    print_flat(results)
    print(f"-> {path}")


if __name__ == "__main__":
    main()
