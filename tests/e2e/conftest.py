"""Two lab clusters shared by the day-2 modules, to keep the suite inside its hour on 2 cores:
`day2_basic` (controller + 2 workers) and `day2_ha` (lb + 3 controllers + 2 workers), each
brought up once. The modules using one run back to back, in the order of SHARED below (each
leaves the cluster healthy: its last test checks that a following `up` changes nothing), and
the lab is destroyed right after its last test, so it never idles under other tests.

A failure in an early module can fail later ones on the same lab; each module's own tests
say what they found, so read the first failure first.
"""

from __future__ import annotations

import time
from contextlib import ExitStack

import pytest

from hardway.spec.load import load_spec
from tests.e2e.cluster_fixture import DAY2_BASIC, DAY2_HA, hw, lab_cluster, log
from tests.e2e.hoststate import capture
from tests.mirror_fixture import mirror  # noqa: F401 (fixture)

# fixture -> the modules using it, in the order they run
SHARED = {
    "day2_basic": ("test_certs", "test_etcd_backup", "test_nodes"),
    "day2_ha": ("test_rolling", "test_secrets_rotate", "test_etcd_backup", "test_controllers"),
}
_open: dict[str, ExitStack] = {}


def _group(item) -> tuple[int, int]:
    for rank, (fixture, modules) in enumerate(SHARED.items(), 1):
        if fixture in item.fixturenames:
            name = item.module.__name__.rsplit(".", 1)[-1]
            return rank, modules.index(name) if name in modules else len(modules)
    return 0, 0


def pytest_collection_modifyitems(config, items):
    # A stable sort: the other tests keep their order and come first, then each shared lab's
    # modules in SHARED's order (a test's own module order kept within).
    items.sort(key=_group)


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item, nextitem):
    for fixture in list(_open):
        if fixture in item.fixturenames and (nextitem is None or fixture not in nextitem.fixturenames):
            log(f"{fixture}: its last test ran, destroying its lab")
            _open.pop(fixture).close()


def _shared(tmp_path_factory, mirror, fixture: str, preset: str, lab, capture_last_worker: bool = False):  # noqa: F811
    """`capture_last_worker`: that worker's state before the first `up` in `c.before`
    (test_nodes removes it and compares)."""
    stack = ExitStack()
    _open[fixture] = stack
    try:
        c = stack.enter_context(lab_cluster(tmp_path_factory.mktemp(fixture) / "cluster", preset,
                                            lab.name, lab.octet, mirror))
        c.spec = load_spec(c.dir / "cluster.yaml").spec  # as `lab up` left it (the lab's SSH key)
        if capture_last_worker:
            c.before = capture(c, c.spec.workers[-1].name)
        t = time.monotonic()
        r = hw(c.dir, "up", timeout=1200)
        log(f"{fixture}: up {time.monotonic() - t:.1f} s")
        assert r.returncode == 0, r.stderr[-3000:]
        yield c
    finally:
        _open.pop(fixture, None)
        stack.close()


@pytest.fixture(scope="session")
def day2_basic(tmp_path_factory, mirror):  # noqa: F811
    yield from _shared(tmp_path_factory, mirror, "day2_basic", "basic", DAY2_BASIC, capture_last_worker=True)


@pytest.fixture(scope="session")
def day2_ha(tmp_path_factory, mirror):  # noqa: F811
    yield from _shared(tmp_path_factory, mirror, "day2_ha", "ha", DAY2_HA)
