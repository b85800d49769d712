"""`up` never replaces a file it does not own: a host file absent from the node's manifest and
different from the bundle is *foreign*; `up` refuses it, or with --adopt keeps the original
under /var/lib/hardway/backup/<path> (in the push script, before the rename) and records it."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from dataclasses import replace

import pytest

from hardway.deploy.desired import BACKUP_DIR, CLAIMS, MANIFEST, desired_for, manifest_file
from hardway.deploy.facts import facts_script, parse_facts
from hardway.deploy.plan import FOREIGN, Facts, FileFact, describe, foreign, plan_for, plan_host
from hardway.deploy.push import push_script, tar_stream
from hardway.deploy.up import _refuse_foreign
from hardway.errors import OperationError
from hardway.render import render_cluster
from tests.fake_material import fake_material
from tests.specs import make_spec

CONTAINERD = "/etc/containerd/config.toml"
THEIRS = b"# a containerd config someone else wrote\n"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def worker(tmp_path):
    spec = make_spec("basic")
    b = render_cluster(spec, fake_material(spec)).nodes["worker-0"]
    binaries = {}
    for x in b.binaries:
        p = tmp_path / "cache" / x.name
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(f"#!/bin/sh\necho {x.name}\n".encode())
        binaries[x] = p
    return desired_for(b, binaries, {})


def host_with(path: str, data: bytes, mode: int = 0o644, **kw) -> Facts:
    return Facts("worker-0", files={path: FileFact(sha(data), mode, "root:root")}, **kw)


# ---------------------------------------------------------------------------------------------
# the classification (pure)


def test_an_unowned_file_that_differs_is_foreign_and_diff_says_so(tmp_path):
    d = worker(tmp_path)
    facts = host_with(CONTAINERD, THEIRS)
    assert foreign(d.items, facts) == [CONTAINERD]
    plan = plan_host(d.bundle, facts, d.items, d.images)
    assert plan.foreign == [CONTAINERD] and plan.adopt == {}
    assert f"write {CONTAINERD} ({FOREIGN})" in describe(plan)
    assert FOREIGN == "foreign: would refuse (or adopt with --adopt)"


def test_identical_owned_claimed_and_own_state_files_are_not_foreign(tmp_path):
    d = worker(tmp_path)
    ours = d.items[CONTAINERD].content
    # identical content: simply taken over (a different mode is an ordinary change)
    same = host_with(CONTAINERD, ours, mode=0o600)
    assert foreign(d.items, same) == []
    assert [(f.path, c.reason) for f, c in plan_host(d.bundle, same, d.items).writes
            if f.path == CONTAINERD] == [(CONTAINERD, "mode 0600 -> 0644")]
    # listed in the node's manifest (or claimed by an interrupted push): hardway's to change
    assert foreign(d.items, host_with(CONTAINERD, THEIRS, owned=frozenset({CONTAINERD}))) == []
    # hardway's own state directory is never someone else's
    assert foreign(d.items, host_with(MANIFEST, b"{}")) == []


def test_adopting_plans_the_backup_and_records_it_in_the_manifest(tmp_path):
    d = worker(tmp_path)
    plan = plan_for(d, host_with(CONTAINERD, THEIRS), adopt=True)
    backup = f"{BACKUP_DIR}{CONTAINERD}"
    assert plan.adopt == {CONTAINERD: backup}
    assert dict((f.path, c.reason) for f, c in plan.writes)[CONTAINERD] == f"adopt: original kept in {backup}"
    manifest = json.loads(d.items[MANIFEST].content)
    assert manifest["adopted"] == {CONTAINERD: backup} and CONTAINERD in manifest["files"]


def test_earlier_adoptions_stay_recorded_and_no_adoption_leaves_the_manifest_as_it_was(tmp_path):
    d = worker(tmp_path)
    plain = manifest_file(d)
    plan_for(d, Facts("worker-0"))  # nothing foreign, nothing adopted before
    assert d.items[MANIFEST] == plain  # existing nodes see no change from this feature
    earlier = {"/usr/local/bin/runc": f"{BACKUP_DIR}/usr/local/bin/runc"}
    plan_for(d, Facts("worker-0", adopted=earlier))  # a later `up`, without --adopt
    assert json.loads(d.items[MANIFEST].content)["adopted"] == earlier


def test_facts_read_ownership_from_the_manifest_and_claims(tmp_path):
    d = worker(tmp_path)
    d.items[MANIFEST] = manifest_file(d, {CONTAINERD: BACKUP_DIR + CONTAINERD})
    state = tmp_path / "state"
    state.mkdir()
    (state / "manifest.json").write_bytes(d.items[MANIFEST].content)
    (state / "claims").write_text("/etc/extra.conf\n")
    script = facts_script([], [], [], []).replace("/var/lib/hardway", str(state))
    f = parse_facts("worker-0", subprocess.run(["sh", "-c", script], capture_output=True, text=True,
                                               check=True).stdout)
    assert CONTAINERD in f.owned and "/etc/extra.conf" in f.owned
    assert f.adopted == {CONTAINERD: BACKUP_DIR + CONTAINERD}
    with pytest.raises(OperationError) as e:
        parse_facts("worker-0", 'J {"files": {"/a": \nJ')
    assert "worker-0" in str(e.value) and MANIFEST in str(e.value) and "damaged" in str(e.value)


def test_a_package_default_is_taken_over_keeping_the_original(tmp_path):
    """Debian's haproxy ships /etc/haproxy/haproxy.cfg: installing the package hardway asks for
    must not make `up` refuse. Unmodified (dpkg's md5), it is adopted without --adopt; edited,
    it is someone's file again and foreign."""
    d = worker(tmp_path)
    shipped = host_with(CONTAINERD, THEIRS, pristine=frozenset({CONTAINERD}))
    plan = plan_for(d, shipped)
    backup = f"{BACKUP_DIR}{CONTAINERD}"
    assert plan.foreign == [] and plan.adopt == {CONTAINERD: backup}
    assert f"write {CONTAINERD} (package default: original kept in {backup})" in describe(plan)
    assert json.loads(d.items[MANIFEST].content)["adopted"] == {CONTAINERD: backup}
    _refuse_foreign({"worker-0": plan})  # nothing to refuse
    # Once adopted, it is hardway's: a later change is an ordinary write.
    later = replace(shipped, owned=frozenset({CONTAINERD}), adopted={CONTAINERD: backup})
    assert plan_for(d, later).adopt == {} and json.loads(d.items[MANIFEST].content)["adopted"] == {CONTAINERD: backup}


def test_facts_tell_package_configuration_files_as_shipped(tmp_path):
    """The facts script against a stand-in dpkg-query listing two conffiles with their shipped
    md5: the untouched one is reported, the edited one (and a missing one) not."""
    shipped, edited = tmp_path / "shipped.cfg", tmp_path / "edited.cfg"
    shipped.write_text("as shipped\n")
    edited.write_text("changed by someone\n")
    md5 = hashlib.md5(b"as shipped\n").hexdigest()  # noqa: S324 (dpkg's own choice)
    fake = tmp_path / "bin" / "dpkg-query"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\ncase \"$2\" in *Conffiles*) [ \"$3\" = haproxy ] && printf ' %s %s\\n' "
                    f"{shipped} {md5} {edited} {md5} {tmp_path}/gone.cfg {md5} {tmp_path}/x.cfg {md5}obsolete;; esac\n")
    fake.chmod(0o755)
    script = facts_script([], [], [], [], ["haproxy"]).replace("/var/lib/hardway", str(tmp_path / "state"))
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True,
                         env={**os.environ, "PATH": f"{fake.parent}:{os.environ['PATH']}"}).stdout
    assert parse_facts("n", out).pristine == {str(shipped)}


def test_an_adoption_cut_off_before_the_manifest_is_still_recorded(tmp_path):
    """The backup is made before any rename and the manifest lands last: should the push stop
    in between, the next run (even without --adopt) finds the backup and records it."""
    d = worker(tmp_path)
    root = tmp_path / "root"
    theirs = root / CONTAINERD.lstrip("/")
    theirs.parent.mkdir(parents=True)
    theirs.write_bytes(THEIRS)
    plan = plan_for(d, host_with(CONTAINERD, THEIRS), adopt=True)
    i = [f.path for f, _ in plan.writes].index(MANIFEST) - 1
    late, change = plan.writes[i]
    plan.writes[i] = (replace(late, owner="no-such-user:root"), change)
    assert _push(plan, root).returncode != 0 and not (root / MANIFEST.lstrip("/")).exists()
    state = root / "var/lib/hardway"
    script = facts_script([], [], [], []).replace("/var/lib/hardway", str(state))
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True).stdout
    assert f"B {state}/backup{CONTAINERD}" in out.splitlines()  # what the node reports
    facts = parse_facts("worker-0", out.replace(str(state), "/var/lib/hardway"))
    assert facts.adopted == {CONTAINERD: BACKUP_DIR + CONTAINERD} and CONTAINERD in facts.owned
    plan_for(d, replace(facts, files={CONTAINERD: FileFact(d.items[CONTAINERD].sha256, 0o644, "root:root")}))
    assert json.loads(d.items[MANIFEST].content)["adopted"] == {CONTAINERD: BACKUP_DIR + CONTAINERD}


def test_up_refuses_foreign_files_naming_each_host_and_path(tmp_path):
    d = worker(tmp_path)
    a = plan_host(d.bundle, host_with(CONTAINERD, THEIRS), d.items)
    runc = "/usr/local/bin/runc"
    b = plan_host(d.bundle, Facts("worker-1", files={CONTAINERD: FileFact(sha(THEIRS), 0o644, "root:root"),
                                                     runc: FileFact(sha(b"their runc"), 0o755, "root:root")}),
                  d.items)
    with pytest.raises(OperationError) as e:
        _refuse_foreign({"worker-0": a, "worker-1": b})
    msg = str(e.value)
    assert e.value.exit_code == 1
    for line in (f"worker-0: {CONTAINERD}", f"worker-1: {CONTAINERD}", f"worker-1: {runc}"):
        assert f"  - {line}" in msg
    assert "3 file(s)" in msg and "hardway up --adopt" in msg and BACKUP_DIR in msg
    _refuse_foreign({"worker-0": plan_host(d.bundle, Facts("worker-0"), d.items)})  # nothing foreign


# ---------------------------------------------------------------------------------------------
# the push script, run by /bin/sh into a scratch root


def _push(plan, root):
    data = b"".join(tar_stream([it for it, _ in plan.writes]))
    return subprocess.run(["sh", "-c", push_script(plan, str(root))], input=data, capture_output=True)


def test_push_with_adopt_keeps_the_original_with_mode_owner_and_time(tmp_path):
    d = worker(tmp_path)
    root = tmp_path / "root"
    theirs = root / CONTAINERD.lstrip("/")
    theirs.parent.mkdir(parents=True)
    theirs.write_bytes(THEIRS)
    os.chmod(theirs, 0o640)
    os.chown(theirs, 65534, 65534)
    os.utime(theirs, (1_000_000_000, 1_000_000_000))
    plan = plan_for(d, host_with(CONTAINERD, THEIRS, mode=0o640), adopt=True)
    r = _push(plan, root)
    assert r.returncode == 0, r.stderr
    backup = root / (BACKUP_DIR + CONTAINERD).lstrip("/")
    st = backup.stat()
    assert backup.read_bytes() == THEIRS and st.st_mode & 0o7777 == 0o640
    assert (st.st_uid, st.st_gid) == (65534, 65534) and st.st_mtime == 1_000_000_000
    assert theirs.read_bytes() == d.items[CONTAINERD].content  # then replaced
    manifest = json.loads((root / MANIFEST.lstrip("/")).read_text())
    assert manifest["adopted"] == {CONTAINERD: BACKUP_DIR + CONTAINERD}
    assert not (root / CLAIMS.lstrip("/")).exists()  # the manifest lists everything now


def test_push_never_overwrites_an_existing_backup(tmp_path):
    d = worker(tmp_path)
    root = tmp_path / "root"
    now = root / CONTAINERD.lstrip("/")
    backup = root / (BACKUP_DIR + CONTAINERD).lstrip("/")
    for p in (now, backup):
        p.parent.mkdir(parents=True, exist_ok=True)
    backup.write_bytes(THEIRS)  # kept by an earlier adoption
    now.write_bytes(b"yet another config\n")
    plan = plan_for(d, host_with(CONTAINERD, b"yet another config\n"), adopt=True)
    r = _push(plan, root)
    assert r.returncode != 0 and b"differs from" in r.stderr and b"up --adopt" in r.stderr
    assert backup.read_bytes() == THEIRS and now.read_bytes() == b"yet another config\n"
    assert not (root / MANIFEST.lstrip("/")).exists()  # stopped before any rename
    # The same original already kept (a re-run after an interruption): the push goes on.
    now.write_bytes(THEIRS)
    r = _push(plan_for(d, host_with(CONTAINERD, THEIRS), adopt=True), root)
    assert r.returncode == 0, r.stderr
    assert backup.read_bytes() == THEIRS and now.read_bytes() == d.items[CONTAINERD].content


def test_an_interrupted_push_still_claims_what_it_wrote(tmp_path):
    """Claims are recorded before the first rename: the next run does not call hardway's own
    half-pushed files foreign (it would refuse them, or back them up as 'originals')."""
    d = worker(tmp_path)
    plan = plan_for(d, Facts("worker-0"))
    i = [f.path for f, _ in plan.writes].index(MANIFEST) - 1  # a late file fails
    first, change = plan.writes[i]
    plan.writes[i] = (replace(first, owner="no-such-user:root"), change)
    root = tmp_path / "root"
    root.mkdir()
    r = _push(plan, root)
    assert r.returncode != 0 and not (root / MANIFEST.lstrip("/")).exists()
    claims = (root / CLAIMS.lstrip("/")).read_text().split()
    written = [f.path for f, _ in plan.writes[:i] if (root / f.path.lstrip("/")).exists()]
    assert written and set(written) <= set(claims)
    # parsed back by facts, they are owned: changing them later is not refused
    facts = parse_facts("worker-0", "".join(f"L {p}\n" for p in claims))
    changed = {p: FileFact("0" * 64, 0o644, "root:root") for p in written}
    assert foreign(d.items, replace(facts, files=changed)) == []


# ---------------------------------------------------------------------------------------------
# the wiring: `hardway up --adopt` -> api.up -> Options -> _up


def test_up_refuses_before_pushing_anything_unless_adopting(tmp_path):
    import asyncio
    from types import SimpleNamespace

    from hardway.clusterdir import ClusterDir
    from hardway.deploy.hosts import Options
    from hardway.deploy.up import UpReport, _up
    from hardway.membership import FOUNDERS

    d = worker(tmp_path)
    plans = {"worker-0": plan_for(d, host_with(CONTAINERD, THEIRS))}
    pushed: list[str] = []

    class Transports(dict):  # the first thing _up does past the check is to push: record it
        def __missing__(self, name):
            pushed.append(name)
            raise LookupError(name)

    def session(adopt: bool):
        # No PKI in `cd`: the version-skew check finds no apiserver to ask (no running cluster).
        return SimpleNamespace(p=SimpleNamespace(spec=make_spec("basic"), cd=ClusterDir(tmp_path / "c"),
                                                 membership=FOUNDERS),
                               progress=lambda _m: None, members=None,
                               opts=Options(adopt=adopt), plans=plans, names=["worker-0"], t=Transports())

    with pytest.raises(OperationError, match=f"worker-0: {CONTAINERD}"):
        asyncio.run(_up(session(adopt=False), UpReport({})))
    assert pushed == []
    with pytest.raises(LookupError):
        asyncio.run(_up(session(adopt=True), UpReport({})))
    assert pushed == ["worker-0"]


def test_cli_up_adopt_reaches_the_options(monkeypatch, tmp_path):
    from click.testing import CliRunner

    import hardway.deploy.up as deploy_up
    from hardway.cli.main import cli

    seen = []

    def fake_up(directory, progress, opts):
        seen.append(opts.adopt)
        return deploy_up.UpReport({})

    monkeypatch.setattr(deploy_up, "up", fake_up)
    for args in (["up"], ["up", "--adopt"]):
        r = CliRunner().invoke(cli, ["-C", str(tmp_path), *args])
        assert r.exit_code == 0, r.output
    assert seen == [False, True]
