"""The suite itself: every test has a timeout (longer for the e2e modules), and a hang fails."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest


def test_every_test_has_a_timeout(request):
    assert request.config.pluginmanager.hasplugin("timeout"), \
        "pytest-timeout is missing: pip install -e '.[test]' (it is in the test extra)"
    assert float(request.config.getini("timeout")) == 900


def test_a_hanging_test_fails(tmp_path):
    (tmp_path / "test_hang.py").write_text(
        "import time, pytest\n\n@pytest.mark.timeout(1)\ndef test_hangs():\n    time.sleep(60)\n")
    t = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                       capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 1 and "Timeout" in r.stdout, r.stdout[-2000:]
    assert time.monotonic() - t < 30


@pytest.mark.parametrize("module", ["test_ha", "test_up", "test_up_single", "test_mirror", "test_lab"])
def test_long_e2e_modules_have_a_longer_timeout(module):
    import importlib

    from tests.helpers import E2E_TIMEOUT
    marks = importlib.import_module(f"tests.e2e.{module}").pytestmark
    assert [m.args for m in marks if m.name == "timeout"] == [(E2E_TIMEOUT,)]
    assert E2E_TIMEOUT > 900


ROOT = Path(__file__).resolve().parents[2]


def test_no_script_stops_processes_by_name():
    """`pkill -x etcd` as root ended every etcd on the host, those in running labs included:
    the suite's scripts stop only what they started, by PID."""
    for path in [*(ROOT / ".ci").iterdir(), *(ROOT / "scripts").iterdir()]:
        words = re.findall(r"\b(pkill|killall|killall5)\b", path.read_text(errors="replace"))
        assert not words, f"{path} stops processes by name ({', '.join(words)})"


@pytest.mark.parametrize(("args", "code"), [(["etcd", "start"], 101), (["--quiet", "etcd", "start"], 101),
                                            (["etcd", "restart"], 0), (["ssh", "stop"], 0)])
def test_the_install_policy_starts_no_service(args, code):
    """scripts/policy-rc.d, which scripts/prereqs puts in place while it installs packages."""
    r = subprocess.run(["sh", str(ROOT / "scripts" / "policy-rc.d"), *args], timeout=30)
    assert r.returncode == code
