"""Building specs for tests: a preset's YAML, edited as data, parsed like a user's file."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import yaml

from hardway.spec.load import LoadedSpec, parse_spec
from hardway.spec.model import ClusterSpec
from hardway.spec.presets import render_preset


def preset_data(preset: str = "basic", name: str = "lab") -> dict[str, Any]:
    return yaml.safe_load(render_preset(preset, name))


def parse_data(data: dict[str, Any]) -> LoadedSpec:
    return parse_spec(yaml.safe_dump(data, sort_keys=False))


def make_spec(
    preset: str = "basic",
    version: str | None = None,
    edit: Callable[[dict[str, Any]], None] | None = None,
) -> ClusterSpec:
    data = copy.deepcopy(preset_data(preset))
    if version:
        data["kubernetes"]["version"] = version
    if edit:
        edit(data)
    return parse_data(data).spec


def hundred_node_data() -> dict[str, Any]:
    data = preset_data("ha")
    data["nodes"] = [n for n in data["nodes"] if "worker" not in n["roles"]] + [
        {"name": f"worker-{i}", "address": f"10.240.0.{100 + i}", "roles": ["worker"]} for i in range(100)
    ]
    return data
