"""Day-2 figures (issue 12): the day-2 e2e modules on their two shared labs (`day2_basic`,
`day2_ha`, see tests/e2e/conftest.py), with every figure they measure collected: for each
rolling operation on `ha` under a writer at ~6 writes/s through the load balancer (a change
everywhere, rebuilt binaries, renewal of every leaf certificate, encryption key rotation, a
controller joining, a controller removed) its time, writes and failed writes, and the hosts,
files and units it touched; the time to add a worker until it is Ready; snapshot and restore
times with 1 and 3 members. The checks are the tests' own, so a figure is only reported with
the checks around it.

    python bench/day2.py            # about 30 minutes on 2 cores

Writes bench/results/day2.json. A benchmark, not a test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import write_report  # noqa: E402
from tests.e2e.cluster_fixture import FIGURES_ENV  # noqa: E402
from tests.e2e.conftest import SHARED  # noqa: E402

MODULES = sorted({m for modules in SHARED.values() for m in modules})


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="hardway-day2-") as tmp:
        figures = Path(tmp) / "figures.json"
        t = time.monotonic()
        r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "e2e",
                            *(f"tests/e2e/{m}.py" for m in MODULES)],
                           cwd=ROOT, env={**os.environ, FIGURES_ENV: str(figures)})
        took = time.monotonic() - t
        results = json.loads(figures.read_text()) if figures.exists() else {}
    path = write_report("day2", results, tests_exit=r.returncode, seconds=round(took, 1))
    print(json.dumps(results, indent=2))
    print(f"tests exit {r.returncode} in {took:.0f} s; written to {path}", file=sys.stderr)
    return r.returncode


if __name__ == "__main__":
    sys.exit(main())
