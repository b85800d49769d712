"""Every rendered unit passes systemd's own parser (`systemd-analyze verify`), which runs
without a running systemd: unknown keys, bad values and missing executables are reported."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from hardway.export import write_bundles
from hardway.quoting import systemd_word
from hardway.render import render_cluster
from hardway.spec.presets import PRESETS
from tests.fake_material import fake_material
from tests.helpers import require, systemd_exec_argv
from tests.specs import make_spec

pytestmark = pytest.mark.integration
SYSTEM_UNITS = Path("/lib/systemd/system")


def make_root(tmp: Path, node_tree: Path) -> Path:
    """A root with the node's files, the distribution's units, and stubs for executables."""
    root = tmp / "root"
    shutil.copytree(node_tree, root)
    (root / "lib/systemd").mkdir(parents=True, exist_ok=True)
    shutil.copytree(SYSTEM_UNITS, root / "lib/systemd/system", symlinks=True)
    for unit in (root / "etc/systemd/system").glob("*.service"):
        for exe in re.findall(r"^Exec\w*=-?(/\S+)", unit.read_text(), re.M):
            stub = root / exe.lstrip("/")
            stub.parent.mkdir(parents=True, exist_ok=True)
            stub.write_text("#!/bin/sh\n")
            stub.chmod(0o755)
    return root


def verify(root: Path, unit: str) -> list[str]:
    r = subprocess.run(["systemd-analyze", "verify", f"--root={root}", f"/etc/systemd/system/{unit}"],
                       capture_output=True, text=True, timeout=60)
    text = r.stdout + r.stderr
    bad = [l for l in text.splitlines() if re.search(r"Unknown|Failed|ignoring|not executable|Invalid|Missing", l)]
    if r.returncode != 0 and not bad:
        bad = [f"exit {r.returncode}: {text}"]
    return bad


@pytest.fixture(scope="module")
def analyzer():
    require(shutil.which("systemd-analyze") is not None and SYSTEM_UNITS.is_dir(),
            "systemd-analyze is not installed (Debian package: systemd)")


@pytest.mark.parametrize("preset", list(PRESETS))
def test_rendered_units_pass_systemd_analyze(analyzer, tmp_path, preset):
    spec = make_spec(preset)
    cb = render_cluster(spec, fake_material(spec))
    write_bundles(cb, tmp_path / "out")
    checked = 0
    for name, bundle in cb.nodes.items():
        root = make_root(tmp_path / name, tmp_path / "out" / name)
        for unit in bundle.units:
            if not (root / "etc/systemd/system" / unit.name).exists():
                continue  # packaged units (haproxy, keepalived) are not ours
            assert verify(root, unit.name) == [], f"{name}: {unit.name}"
            checked += 1
    assert checked >= 4


def test_the_check_catches_a_broken_unit(analyzer, tmp_path):
    node = tmp_path / "node/etc/systemd/system"
    node.mkdir(parents=True)
    (node / "bad.service").write_text("[Service]\nExecStart=/usr/local/bin/x\nBogusKey=1\nRestart=sometimes\n")
    root = make_root(tmp_path / "r", tmp_path / "node")
    problems = verify(root, "bad.service")
    assert any("BogusKey" in p for p in problems) and any("sometimes" in p for p in problems)


HOSTILE_WORDS = ["plain", "a b", 'q"uote', "back\\slash", "pct%d", "dollar$HOME", "semi;colon", "new\nline",
                 "tab\tx", "it's", "\x01ctl", "ünï", "--flag=a b", "cluster.local \\\n --authorization-mode=AlwaysAllow"]


@pytest.mark.parametrize("value", HOSTILE_WORDS)
def test_systemd_reads_a_quoted_word_as_the_value(analyzer, tmp_path, value):
    """systemd itself as the oracle for hardway.quoting.systemd_word and for the tests' reader
    (tests/helpers.systemd_exec_argv). systemd-analyze prints the executable it parsed, so the
    value sits in argv[0]; `$$` is undone only when the command runs, hence doubled here."""
    path = "/opt/" + value
    unit = tmp_path / "etc/systemd/system/t.service"
    unit.parent.mkdir(parents=True)
    unit.write_text(f"[Service]\nExecStart={systemd_word(path)} --next\n")
    r = subprocess.run(["systemd-analyze", "verify", f"--root={tmp_path}", "/etc/systemd/system/t.service"],
                       capture_output=True, text=True, timeout=60)
    m = re.search(r"Command (.*) is not executable|special characters: (.*?)\nt\.service: Unit configuration",
                  r.stderr, re.S)
    assert m, r.stderr
    assert (m[1] if m[1] is not None else m[2]) == path.replace("$", "$$")
    assert systemd_exec_argv(f"{systemd_word(path)} --next") == [path, "--next"]
