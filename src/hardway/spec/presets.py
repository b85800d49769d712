"""Presets for `hardway init`: a commented cluster.yaml per topology.

The text is written by hand (not dumped) so every section explains itself to the person who
will edit it. Tests parse each preset back through `parse_spec`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .. import __version__
from ..clusterdir import ClusterDir
from ..errors import UsageError
from ..quoting import yaml_scalar
from . import versions

DEFAULT_VERSION = "1.20.2"


@dataclass(frozen=True)
class Preset:
    name: str
    summary: str
    nodes: tuple[tuple[str, str, tuple[str, ...]], ...]
    lb_mode: str = "none"
    vip: str | None = None


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "single",
            "one machine runs everything: etcd, the control plane and a worker (seed 002)",
            (("node-0", "10.240.0.10", ("controller", "worker")),),
        ),
        Preset(
            "basic",
            "1 controller + 2 workers, as in Kubernetes The Hard Way",
            (
                ("controller-0", "10.240.0.10", ("controller",)),
                ("worker-0", "10.240.0.20", ("worker",)),
                ("worker-1", "10.240.0.21", ("worker",)),
            ),
        ),
        Preset(
            "ha",
            "3 controllers behind an HAProxy node (role lb) + 2 workers (seed 000)",
            (
                ("controller-0", "10.240.0.10", ("controller",)),
                ("controller-1", "10.240.0.11", ("controller",)),
                ("controller-2", "10.240.0.12", ("controller",)),
                ("lb-0", "10.240.0.30", ("lb",)),
                ("worker-0", "10.240.0.20", ("worker",)),
                ("worker-1", "10.240.0.21", ("worker",)),
            ),
            lb_mode="haproxy",
        ),
        Preset(
            "ha-vip",
            "3 controllers sharing a keepalived VIP, HAProxy on each + 2 workers (seed 003)",
            (
                ("controller-0", "10.240.0.10", ("controller",)),
                ("controller-1", "10.240.0.11", ("controller",)),
                ("controller-2", "10.240.0.12", ("controller",)),
                ("worker-0", "10.240.0.20", ("worker",)),
                ("worker-1", "10.240.0.21", ("worker",)),
            ),
            lb_mode="keepalived",
            vip="10.240.0.100",
        ),
    )
}


@dataclass(frozen=True)
class LabSetting:
    """One setting of the lab profile: cluster.yaml's key path, the value lab machines need, why."""

    path: str
    value: object
    why: str
    # Whether the setting matters for a spec (a ClusterSpec); checked by `lab up`/`up` only then.
    applies: Callable[[object], bool] = lambda spec: True


# What `init --lab` writes (nested_profile() and the keepalived interface in render_preset), as
# data: `lab up` and `up` on lab machines check a spec against it before anything starts.
LAB_PROFILE = (
    LabSetting("containerRuntime.restrictOOMScoreAdj", True,
               "no process in a lab machine may lower oom_score_adj, so runc must not try"),
    LabSetting("containerRuntime.cgroupDriver", "cgroupfs",
               "the kubelet manages plain cgroup directories in a lab machine (no systemd slices)"),
    LabSetting("kubeProxy.conntrackMaxPerCore", 0,
               "a lab machine's network namespace may not raise the global nf_conntrack_max"),
    LabSetting("kubelet.failCgroupV1", False,
               "lab machines share this host's cgroups (v1 here); Kubernetes 1.35's kubelet refuses v1 "
               "unless told (the field exists from 1.31; older kubelets always run on v1)",
               applies=lambda spec: versions.kubelet_field(spec.minor, "failCgroupV1")),
    LabSetting("loadBalancer.interface", "host0",
               "systemd-nspawn names a lab machine's link host0; keepalived refuses eth0 there",
               applies=lambda spec: spec.load_balancer.mode.value == "keepalived"),
)


def nested_profile() -> str:
    """cluster.yaml's lab section, written from LAB_PROFILE (the load balancer's row goes into
    the loadBalancer section, see render_preset)."""
    lines = ["# Nested-host profile (the hardway lab: nodes are systemd-nspawn machines sharing this",
             "# host's kernel; each has its own cgroup namespace). Real machines need none of this."]
    section = None
    for s in LAB_PROFILE:
        top, key = s.path.split(".", 1)
        if top == "loadBalancer":
            continue
        if top != section:
            lines += ([""] if section else []) + [f"{top}:"]
            section = top
        lines.append(f"  {key}: {_yaml(s.value)}".ljust(33) + f"# {s.why}")
    return "\n".join(lines) + "\n"


def _at(data: dict, path: str) -> object:
    for key in path.split("."):
        data = data.get(key) if isinstance(data, dict) else None
    return data


def _yaml(value: object) -> str:
    return "unset" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def lab_profile_missing(spec) -> list[str]:
    """The lab profile's settings that `spec` (a ClusterSpec) lacks, each as the line to set."""
    data = spec.model_dump(mode="json", by_alias=True)
    missing = []
    for s in LAB_PROFILE:
        if not s.applies(spec):
            continue
        now = _at(data, s.path)
        if now != s.value:
            missing.append(f"{s.path}: {_yaml(s.value)}   (now {_yaml(now)}; {s.why})")
    return missing


def require_lab_profile(spec, directory: Path, command: str) -> None:
    """Refuse, before anything starts, to run `command` for lab machines with a spec made
    without `--lab`: it would fail late (keepalived exits on eth0, runc on oom_score_adj)."""
    missing = lab_profile_missing(spec)
    if missing:
        path = ClusterDir(Path(directory)).spec
        made = re.search(r"`hardway init --preset ([a-z-]+)", path.read_text(errors="replace")[:300])
        raise UsageError(
            f"{path} lacks the lab profile that lab machines need (what `hardway init --lab` writes). "
            f"Set in {path}:\n" + "\n".join(f"  {m}" for m in missing) + "\n"
            f"then run `hardway -C {directory} {command}` again. (Or write it anew with "
            f"`hardway init {directory} --preset {made.group(1) if made else 'PRESET'} --lab --force`, which "
            "replaces your edits.)")


STANDARD_PROFILE = """\
containerRuntime:
  restrictOOMScoreAdj: false     # true on nested hosts (containers, the hardway lab)
  cgroupDriver: systemd          # systemd | cgroupfs
"""


def render_preset(preset: str, name: str, mirror: str | None = None, lab: bool = False) -> str:
    p = PRESETS[preset]
    node_lines = "\n".join(
        f"  - {{name: {n}, address: {a}, roles: [{', '.join(r)}]}}" for n, a, r in p.nodes
    )
    if p.lb_mode == "keepalived":
        lb = (
            f"loadBalancer:\n"
            f"  mode: keepalived        # VRRP moves the VIP between controllers\n"
            f"  vip: {p.vip}       # must be a free address in network.nodeSubnet\n"
            f"  # port: 8443            # HAProxy's port on the VIP; the apiservers keep 6443\n"
            + ("  interface: host0        # the lab machines' link (systemd-nspawn names it host0)\n" if lab else
               "  # interface: eth0       # the controllers' interface on nodeSubnet\n")
        )
    elif p.lb_mode == "haproxy":
        lb = (
            "loadBalancer:\n"
            "  mode: haproxy           # HAProxy (TCP) on the node with role lb\n"
            "  # port: 6443\n"
        )
    else:
        lb = "loadBalancer:\n  mode: none              # none | haproxy | keepalived\n"
    # A hardway mirror carries the pause image (every pod needs it, and nodes without a
    # registry cannot pull it) and the smoke tests' web image: preload both from it.
    images_line = (
        "  images: [pause-3.2, web-1.0]   # from the mirror's images/; or paths to OCI tarballs\n"
        if mirror
        else "  # images: [/path/to/image.tar]   # OCI tarballs preloaded into containerd on every node\n"
    )
    mirror_line = (
        f"  mirror: {yaml_scalar(mirror)}\n"
        if mirror
        else "  # mirror: http://127.0.0.1:8080   # or /path/to/dir: a copy of the release sites\n"
    )
    return f"""\
# cluster.yaml: generated by `hardway init --preset {preset}{' --lab' if lab else ''}` (hardway {__version__}).
# Preset {preset}: {p.summary}.
# Edit freely, then run `hardway validate`. Key names are stable; unknown keys are errors.
name: {yaml_scalar(name)}

kubernetes:
  version: "{DEFAULT_VERSION}"   # `hardway validate` lists the supported minors

# roles: controller (etcd + control plane), worker (containerd, kubelet, kube-proxy), lb.
# A worker's pod CIDR is derived from its address (10.240.0.21 -> 10.200.21.0/24) unless
# the node sets podCIDR explicitly.
nodes:
{node_lines}

network:
  nodeSubnet: 10.240.0.0/24     # where node addresses (and a VIP) live
  podCIDR: 10.200.0.0/16        # split into one /nodePodCIDRMaskSize per worker
  serviceCIDR: 10.32.0.0/24     # ClusterIP services; the first address is `kubernetes`
  clusterDomain: cluster.local
  # clusterDNS: 10.32.0.10      # default: the 10th address of serviceCIDR
  # nodePodCIDRMaskSize: 24

{lb}
# SSH used by `hardway up`; any node may override it with its own `ssh:` block.
ssh:
  user: root
  port: 22
  # key: ~/.ssh/id_ed25519

pki:
  keyType: ecdsa-p256            # ecdsa-p256 | rsa-2048 | rsa-4096 | ed25519
  serviceAccountKeyType: rsa-2048  # rsa-2048 | rsa-4096 | ecdsa-p256 (never ed25519)
  caValidityDays: 3650
  certValidityDays: 365
  layout: flat                   # flat: three CAs | root: a root CA over three intermediates

encryption:
  provider: aescbc               # aescbc | secretbox | aesgcm: Secrets are encrypted in etcd

{nested_profile() if lab else STANDARD_PROFILE}
artifacts:
{mirror_line}  versions: {{etcd: 3.4.23, containerd: 1.6.20, runc: 1.1.5, cniPlugins: 1.1.1}}
{images_line}
"""
