"""`lab destroy` deletes only what a lab made in DIR/lab; the layout is made by hand here, so no
machine boots (the machines themselves are the e2e tests' business)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hardway.lab import core
from hardway.lab.state import LabState, MachineState, save_state


@pytest.fixture(autouse=True)
def no_host(monkeypatch):
    """`down` (stopping machines, the bridge, the host's settings) is not under test here."""
    monkeypatch.setattr(core, "down", lambda directory, progress=None, timeout=0: core.DownReport(
        nothing_to_do=not (Path(directory) / "lab" / "state.json").exists()))


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _user_things(lab: Path, outside: Path) -> None:
    """What a user (or another tool) keeps in DIR/lab: never the lab's to delete."""
    (lab / "machines" / "mine" / "usr").mkdir(parents=True)
    (lab / "logs").mkdir(exist_ok=True)
    (lab / "logs" / "mine.log").write_text("user\n")
    (lab / "notes.txt").write_text("user\n")
    outside.mkdir()
    (outside / "data").write_text("user\n")


def test_without_a_state_file_nothing_is_deleted(tmp_path):
    lab = tmp_path / "lab"
    lab.mkdir()
    _user_things(lab, tmp_path / "outside")
    (lab / "id_ed25519").write_text("a key, but no lab records it\n")
    before = _files(tmp_path)
    r = core.destroy(tmp_path)
    assert _files(tmp_path) == before
    assert r.nothing_to_do and r.deleted == []


def test_only_what_the_state_records_is_deleted(tmp_path):
    lab = tmp_path / "lab"
    outside = tmp_path / "outside"
    _user_things(lab, outside)
    machines = {}
    for name in ("worker-0", "worker-1"):
        root = lab / "machines" / name
        (root / "usr").mkdir(parents=True)
        (root / "etc").mkdir()
        (lab / "logs" / f"{name}.log").write_text("console\n")
        machines[name] = MachineState(name=name, address="10.240.77.20/24", root=str(root.absolute()),
                                      image="k", cgroup=f"/hardway-lab/c/{name}",
                                      log=str((lab / "logs" / f"{name}.log").absolute()))
    (lab / "logs" / "worker-0.log.1").write_text("previous console\n")
    # A damaged or hostile state naming a directory outside DIR/lab as a machine's root.
    machines["evil"] = MachineState(name="evil", address="10.240.77.21/24", root=str(outside),
                                    image="k", cgroup="/hardway-lab/c/evil", log=str(outside / "data"))
    save_state(tmp_path, LabState(cluster="c", bridge="hw-c", bridge_address="10.240.77.1/24",
                                  cgroup_tree="/hardway-lab/c", machines=machines))
    for name in ("id_ed25519", "id_ed25519.pub", "known_hosts", ".gitignore", ".lock"):
        (lab / name).write_text("lab\n")

    r = core.destroy(tmp_path)

    assert _files(tmp_path) == {"lab", "lab/machines", "lab/machines/mine", "lab/machines/mine/usr",
                                "lab/logs", "lab/logs/mine.log", "lab/notes.txt",
                                "outside", "outside/data", ".hardway.lock"}
    assert {p.name for p in r.deleted} == {"worker-0", "worker-1", "worker-0.log", "worker-0.log.1",
                                           "worker-1.log", "id_ed25519", "id_ed25519.pub",
                                           "known_hosts", ".gitignore", "state.json"}
    assert sorted(p.name for p in r.left) == ["logs", "machines", "notes.txt"]


def test_a_lab_with_nothing_else_leaves_no_directory(tmp_path):
    lab = tmp_path / "lab"
    (lab / "machines" / "w" / "usr").mkdir(parents=True)
    save_state(tmp_path, LabState(cluster="c", bridge="hw-c", bridge_address="10.240.77.1/24",
                                  cgroup_tree="/hardway-lab/c", machines={"w": MachineState(
                                      name="w", address="10.240.77.20/24", root=str(lab / "machines" / "w"),
                                      image="k", cgroup="/hardway-lab/c/w")}))
    r = core.destroy(tmp_path)
    assert not lab.exists() and r.left == []
