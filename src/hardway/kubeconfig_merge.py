"""Merge a kubeconfig into another (~/.kube/config) without touching unrelated entries."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .errors import OperationError
from .fsio import write_atomic


def merge_kubeconfig(source: bytes, target: Path) -> None:
    new = yaml.safe_load(source)
    try:
        current: dict[str, Any] = yaml.safe_load(target.read_text()) or {}
    except FileNotFoundError:
        current = {}
    except yaml.YAMLError as e:
        raise OperationError(f"{target} is not valid YAML ({e}); fix or move it, then retry") from None
    if not isinstance(current, dict):
        raise OperationError(f"{target} is not a kubeconfig (not a mapping)")
    current.setdefault("apiVersion", "v1")
    current.setdefault("kind", "Config")
    for section in ("clusters", "users", "contexts"):
        entries = [e for e in (current.get(section) or []) if isinstance(e, dict)]
        names = {e["name"] for e in new[section]}
        current[section] = [e for e in entries if e.get("name") not in names] + new[section]
    current["current-context"] = new["current-context"]
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(target, yaml.safe_dump(current, sort_keys=False).encode(), 0o600)
