"""Shared by the bench scripts: write results as JSON under bench/results/ and print them."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any


def write_report(name: str, results: dict[str, Any], **meta: Any) -> Path:
    out = {"benchmark": name, **meta, "python": platform.python_version(),
           "machine": platform.machine(), "cpus": os.cpu_count(), "results": results}
    path = Path(__file__).parent / "results" / f"{name}.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    return path


def print_flat(results: dict[str, Any]) -> None:
    width = max(map(len, results), default=0) + 2
    for k, v in results.items():
        print(f"{k:<{width}} {v:.2f}" if isinstance(v, float) else f"{k:<{width}} {v}")
