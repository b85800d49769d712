"""The lab's record of itself: DIR/lab/state.json, so every verb works from a fresh process.

The host keeps no registry of these machines (no machinectl: PID 1 is not systemd), so this
file is the only place that knows which processes, cgroups and links belong to the lab.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import OperationError
from ..fsio import write_atomic

STATE_VERSION = 1


@dataclass
class MachineState:
    name: str
    address: str  # "10.240.77.11/24"
    root: str  # the machine's root directory on the host
    image: str  # the image key the root was copied from
    cgroup: str  # "/hardway-lab/<cluster>/<node>", relative to every hierarchy's root
    pid: int | None = None  # the systemd-nspawn process while it runs
    pid_start: int | None = None  # its start time (clock ticks since boot): guards against PID reuse
    log: str | None = None  # nspawn's console output

    @classmethod
    def from_json(cls, d: dict) -> "MachineState":
        return cls(**{k: d.get(k) for k in cls.__dataclass_fields__})


@dataclass
class LabState:
    cluster: str
    bridge: str
    bridge_address: str  # "10.240.77.1/24"
    cgroup_tree: str  # "/hardway-lab/<cluster>"
    machines: dict[str, MachineState] = field(default_factory=dict)
    # The host's kernel settings before `up` set the kubelet's values; restored by `down`.
    saved_sysctls: dict[str, str] | None = None
    version: int = STATE_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "LabState":
        d = json.loads(text)
        machines = {k: MachineState.from_json(v) for k, v in (d.get("machines") or {}).items()}
        return cls(
            cluster=d["cluster"], bridge=d["bridge"], bridge_address=d["bridge_address"],
            cgroup_tree=d["cgroup_tree"], machines=machines, saved_sysctls=d.get("saved_sysctls"),
            version=d.get("version", STATE_VERSION),
        )


def lab_dir(directory: Path) -> Path:
    return Path(directory) / "lab"


def state_path(directory: Path) -> Path:
    return lab_dir(directory) / "state.json"


def load_state(directory: Path) -> LabState | None:
    path = state_path(directory)
    try:
        return LabState.from_json(path.read_text())
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as e:
        raise OperationError(f"{path} is damaged ({e}); remove it only after checking `ps` and "
                             "`ip link` for machines it may still describe") from None


def save_state(directory: Path, state: LabState) -> None:
    write_atomic(state_path(directory), state.to_json().encode(), 0o644)
