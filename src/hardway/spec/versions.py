"""Questions about Kubernetes minors, answered from the data in `catalogue.py`.

Renderers never test version numbers themselves: they ask `has_flag`/`config_api`/... so a
flag that differs between minors is one entry in one table.
"""

from __future__ import annotations

from functools import cache

from . import catalogue


def parse_minor(minor: str) -> tuple[int, int]:
    major, _, rest = minor.partition(".")
    return int(major), int(rest.split(".")[0])


def minor_of(version: str) -> str:
    major, minor = parse_minor(version.lstrip("v"))
    return f"{major}.{minor}"


SUPPORTED_MINORS: tuple[str, ...] = tuple(catalogue.MINORS)


def is_supported(version: str) -> bool:
    return minor_of(version) in SUPPORTED_MINORS


def _within(minor: str, first: str, last: str | None) -> bool:
    m = parse_minor(minor)
    return parse_minor(first) <= m and (last is None or m <= parse_minor(last))


@cache
def known_flags(component: str, minor: str) -> frozenset[str]:
    """Every flag of `component` the catalogue knows to exist in `minor`."""
    table = catalogue.FLAGS[component]
    return frozenset(f for f, (first, last) in table.items() if _within(minor, first, last))


def has_flag(component: str, minor: str, flag: str) -> bool:
    return flag in known_flags(component, minor)


def config_api(minor: str, kind: str) -> str:
    return catalogue.CONFIG_API[minor][kind]


def kubelet_field(minor: str, field: str) -> bool:
    """Whether KubeletConfiguration has `field` in `minor` (fields older than 1.20: always)."""
    since = catalogue.KUBELET_CONFIG_FIELDS_SINCE.get(field)
    return since is None or parse_minor(minor) >= parse_minor(since)


def scheduler_field(minor: str, field: str) -> bool:
    """Whether the KubeSchedulerConfiguration hardway renders for `minor` has `field`."""
    return _within(minor, *catalogue.SCHEDULER_CONFIG_FIELDS[field])


def kubelet_default(minor: str, field: str) -> object | None:
    """KubeletConfiguration's default for `field` in `minor` (None: no such field there)."""
    value = None
    for since, v in catalogue.KUBELET_CONFIG_DEFAULTS[field]:
        if parse_minor(minor) >= parse_minor(since):
            value = v
    return value if kubelet_field(minor, field) else None


def default(minor: str, what: str) -> str:
    return catalogue.DEFAULTS[minor][what]


def etcd_has(version: str, feature: str) -> bool:
    """Whether etcd `version` (its release, tools included) has `feature` (catalogue.ETCD_SINCE)."""
    def triple(v: str) -> tuple[int, ...]:
        return tuple(int(p) for p in v.lstrip("v").split(".")[:3])
    return triple(version) >= triple(catalogue.ETCD_SINCE[feature])
