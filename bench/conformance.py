"""Kubernetes' conformance tests against fresh lab clusters: the whole non-serial [Conformance]
set (and with --serial the [Serial] ones after it), through `hardway verify --conformance`,
with passed/failed/skipped, each failure's reason (and whether it is a named limit of the
offline lab), the duration and the component restarts during the run.

    python bench/conformance.py                       # basic, then ha
    python bench/conformance.py --preset basic --serial
    python bench/conformance.py --focus 'Webhook.*\\[Conformance\\]'   # a subset

Needs the offline mirror with --conformance (tests/mirror_fixture.py builds it if missing,
~11 min once) and root. Uses cluster `hwcfb` on 10.240.73.0/24. Takes about an hour per preset
on 2 cores. Writes bench/results/conformance-<preset>.json. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import write_report  # noqa: E402


def log(msg: str) -> None:
    print(f"  {msg}", file=sys.stderr, flush=True)


def run(preset: str, mirror: Path, focus: str | None, serial: bool, parallel: int, keep: Path | None) -> dict:
    from hardway import api
    from hardway import lab as hwlab
    from hardway.verify.conformance import ConformanceOptions
    from tests.e2e.cluster_fixture import write_spec

    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="hwbench-cf-") as tmp:
        d = Path(tmp) / "cluster"
        write_spec(d, preset, "hwcfb", 73, mirror)
        try:
            hwlab.up(d, log)
            t = time.monotonic()
            api.up(d, log)
            results["up_s"] = round(time.monotonic() - t, 1)
            runs = [("non-serial", ConformanceOptions(focus, None, parallel, None, False))]
            if serial:
                runs.append(("serial", ConformanceOptions(None, None, 1, None, True)))
            for name, copts in runs:
                if keep:
                    copts.junit_dir = keep / f"{preset}-{name}"
                r = api.conformance(d, log, copts)
                failed = r.of("failed")
                results[name] = {
                    "selected": len(r.cases), "passed": len(r.of("passed")), "failed": len(failed),
                    "failed_as_known_limit": len(failed) - len(r.unexplained),
                    "skipped": len(r.of("skipped")), "seconds": r.seconds,
                    "restarts_during_run": r.restarts, "exit_code": r.exit_code,
                    "failures": [{"test": c.name, "reason": c.reason, "limit": c.limit} for c in failed],
                    "skips": [{"test": c.name, "reason": c.reason} for c in r.of("skipped")],
                    "notes": r.notes,
                }
                s = results[name]
                print(f"{preset} {name}: {s['passed']} passed, {s['failed']} failed "
                      f"({s['failed_as_known_limit']} a known limit), {s['skipped']} skipped of "
                      f"{s['selected']}; {s['seconds']:.0f} s; restarts {r.restarts or 'none'}")
                for f in failed:
                    print(f"  FAIL {f.name}\n       {f.reason[:300]}" + (f"\n       limit: {f.limit}" if f.limit else ""))
        finally:
            hwlab.destroy(d, log)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", action="append", choices=["single", "basic", "ha", "ha-vip"],
                    help="repeatable; default: basic and ha")
    ap.add_argument("--focus", help="a subset instead of every [Conformance] test")
    ap.add_argument("--serial", action="store_true", help="then the [Serial] conformance tests")
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--keep-junit", type=Path, help="keep the JUnit reports under this directory")
    args = ap.parse_args()
    from tests.mirror_fixture import built_mirror

    mirror = built_mirror()
    for preset in args.preset or ["basic", "ha"]:
        results = run(preset, mirror, args.focus, args.serial, args.parallel, args.keep_junit)
        path = write_report(f"conformance-{preset}", results, preset=preset, focus=args.focus or "[Conformance]")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
