"""etcd snapshot and restore pieces that need no host: the restore command per member, the
checksum rules, the cluster token (derived, recorded, rendered), the node scripts' syntax and
answers, what `up` may change during a restore, and the snapshot's copy to this machine
(streamed, checked, 0600, nothing left on a mismatch)."""

from __future__ import annotations

import asyncio
import hashlib
import io
import shlex
import stat
import subprocess
from dataclasses import replace

import pytest

from hardway.artifacts.layout import etcd as etcd_download
from hardway.clusterdir import ClusterDir
from hardway.deploy import etcd_backup as eb
from hardway.deploy.desired import MANIFEST
from hardway.deploy.plan import Change, HostPlan
from hardway.deploy.transport import LocalTransport, Result
from hardway.errors import OperationError, UsageError
from hardway.fsio import new_file
from hardway.material import ETCD_TOKEN, load_material
from hardway.render import render_cluster
from hardway.render.etcd import INITIAL_CLUSTER_ENV, default_token
from tests.fake_material import fake_material
from tests.specs import make_spec


def with_etcd(version: str):
    def edit(data):
        data.setdefault("artifacts", {}).setdefault("versions", {})["etcd"] = version
    return edit


def etcd_words(spec, material, node: str) -> set[str]:
    """The words of the member's rendered etcd.service (each flag one word), with the settings
    of its initial-cluster file as the flags etcd reads them as (ETCD_INITIAL_CLUSTER_TOKEN:
    --initial-cluster-token)."""
    files = render_cluster(spec, material).nodes[node].files
    unit = files["/etc/systemd/system/etcd.service"].content.decode()
    env = [ln.split("=", 1) for ln in files[INITIAL_CLUSTER_ENV].content.decode().splitlines()
           if ln.startswith("ETCD_")]
    return set(unit.replace("\\\n", " ").split()) | {
        f"--{k[5:].lower().replace('_', '-')}={v.strip(chr(34))}" for k, v in env}


# ---- the restore command, per member


def test_restore_argv_gives_each_member_its_name_and_peer_url_and_all_the_same_cluster():
    spec = make_spec("ha")
    argvs = {m.name: eb.restore_argv(spec, m, "lab-etcd-T", "/s.db", "/d") for m in spec.etcd_members}
    assert len(argvs) == 3
    initial = ",".join(f"{m.name}=https://{m.address}:2380" for m in spec.etcd_members)
    for m in spec.etcd_members:
        argv = argvs[m.name]
        assert argv[:6] == ["env", "ETCDCTL_API=3", "/usr/local/bin/etcdctl", "snapshot", "restore", "/s.db"]
        assert argv[6:] == [f"--name={m.name}", f"--initial-cluster={initial}", "--initial-cluster-token=lab-etcd-T",
                            f"--initial-advertise-peer-urls=https://{m.address}:2380", "--data-dir=/d"]
        # The same cluster as the unit the member then runs with (rendered with that token).
        words = etcd_words(spec, replace(fake_material(spec), etcd_token="lab-etcd-T"), m.name)
        assert set(argv[6:10]) <= words, set(argv[6:10]) - words


@pytest.mark.parametrize("version,tool,bump", [("3.4.23", ["env", "ETCDCTL_API=3", "/usr/local/bin/etcdctl"], False),
                                                ("3.5.9", ["/usr/local/bin/etcdutl"], False),
                                                ("3.5.10", ["/usr/local/bin/etcdutl"], True),
                                                ("3.6.6", ["/usr/local/bin/etcdutl"], True)])
def test_restore_tool_and_revision_bump_follow_the_etcd_version(version, tool, bump):
    spec = make_spec("basic", edit=with_etcd(version))
    argv = eb.restore_argv(spec, spec.etcd_members[0], "t", "/s.db", "/d")
    assert argv[:len(tool)] == tool
    assert ("--bump-revision=1000000000" in argv and "--mark-compacted" in argv) is bump
    # etcdutl is on every member (and in the release tarball hardway unpacks) exactly when it is used.
    node = render_cluster(spec, fake_material(spec)).nodes[spec.etcd_members[0].name]
    has_etcdutl = "etcdutl" in {b.name for b in node.binaries}
    assert has_etcdutl is (tool[0].endswith("etcdutl"))
    assert ("etcdutl" in etcd_download(version).members) is has_etcdutl


def test_node_scripts_are_valid_shell_and_quote_what_they_are_given():
    spec = make_spec("ha")
    m = spec.etcd_members[1]
    scripts = [eb.save_script(spec, m), eb.stage_script(spec, m, "tok", "a" * 64),
               eb.swap_script("/var/lib/etcd.before-restore-X"), eb.stop_script(["a.service", "b.service"]),
               eb.CLEANUP_SCRIPT]
    for s in scripts:
        subprocess.run(["sh", "-n", "-c", s], check=True)
    stage = scripts[1]
    assert shlex.join(eb.restore_argv(spec, m, "tok", f"{eb.RESTORE_DIR}/snapshot.db", eb.STAGING)) in stage
    assert f"--endpoints=https://{m.address}:2379" in scripts[0]  # the member it runs on, nothing else


# ---- answers from the node


STATUS_34 = '{"hash":3247196914,"revision":1718,"totalKey":601,"totalSize":2572288}'


def test_snapshot_status_is_read_from_etcdctl_json():
    s = eb.SnapshotStatus.parse(STATUS_34, "n")
    assert (s.revision, s.keys, s.size, s.hash) == (1718, 601, 2572288, 3247196914)
    assert str(s) == "revision 1718, 601 keys, 2572288 bytes"
    with pytest.raises(OperationError, match="n: `snapshot status` did not answer"):
        eb.SnapshotStatus.parse("Error: snapshot file has no hash", "n")


def test_saved_output_names_only_a_directory_the_script_made():
    d = f"{eb.NODE_DIR}.Ab12Cd"
    got = eb.parse_saved(f"dir {d}\nsha256 {'b' * 64}\nstatus {STATUS_34}\n", "n")
    assert got[0] == d and got[1] == "b" * 64 and got[2].keys == 601
    for bad_dir in ("/", "/etc", f"{eb.NODE_DIR}.x/../../etc"):
        with pytest.raises(OperationError, match="answered unexpectedly"):
            eb.parse_saved(f"dir {bad_dir}\nsha256 {'b' * 64}\nstatus {STATUS_34}\n", "n")


# ---- checksums


def snapshot_file(tmp_path, data: bytes = b"snapshot bytes"):
    p = tmp_path / "etcd-x.db"
    p.write_bytes(data)
    return p, hashlib.sha256(data).hexdigest()


def test_the_sidecar_is_sha256sum_format_and_is_checked(tmp_path):
    p, digest = snapshot_file(tmp_path)
    eb.sidecar(p).write_bytes(eb.sidecar_text(p, digest))
    subprocess.run(["sha256sum", "-c", eb.sidecar(p).name], cwd=tmp_path, check=True, capture_output=True)
    assert eb.check_snapshot_file(p, None) == digest
    assert eb.check_snapshot_file(p, "SHA256:" + digest.upper()) == digest
    p.write_bytes(b"snapshot bytez")  # damaged
    with pytest.raises(UsageError, match="does not match its checksum.*nothing was changed"):
        eb.check_snapshot_file(p, None)


def test_without_a_checksum_or_with_two_that_disagree_nothing_is_restored(tmp_path):
    p, digest = snapshot_file(tmp_path)
    with pytest.raises(UsageError, match=r"etcd-x.db.sha256 is missing.*--sha256"):
        eb.check_snapshot_file(p, None)
    assert eb.check_snapshot_file(p, digest) == digest  # the digest the snapshot printed will do
    with pytest.raises(UsageError, match="not a sha256"):
        eb.check_snapshot_file(p, "abc")
    eb.sidecar(p).write_text(f"{'0' * 64}  etcd-x.db\n")
    with pytest.raises(UsageError, match="differs from the digest in"):
        eb.check_snapshot_file(p, digest)
    eb.sidecar(p).write_text("garbage\n")
    with pytest.raises(UsageError, match="does not start with a sha256"):
        eb.check_snapshot_file(p, None)
    with pytest.raises(UsageError, match="no such file"):
        eb.check_snapshot_file(tmp_path / "absent.db", digest)


# ---- the cluster token


def test_the_token_is_derived_until_a_restore_records_one(tmp_path):
    from hardway.material import ensure_material
    spec = make_spec("ha")
    cd = ClusterDir(tmp_path)
    ensure_material(cd, spec)
    m = load_material(cd, spec)
    assert m.etcd_token == ""
    assert "--initial-cluster-token=lab-etcd" in etcd_words(spec, m, "controller-0")
    token = eb.new_token(spec, eb.utc_stamp())
    assert ETCD_TOKEN.fullmatch(token) and token != default_token(spec) and token.startswith("lab-etcd-")
    cd.etcd_token.write_text(token + "\n")
    m = load_material(cd, spec)
    assert m.etcd_token == token
    for node in ("controller-0", "controller-1", "controller-2"):
        words = etcd_words(spec, m, node)
        assert f"--initial-cluster-token={token}" in words and "--initial-cluster-token=lab-etcd" not in words
    cd.etcd_token.write_text("two words\n")
    with pytest.raises(OperationError, match="etcd-cluster-token does not hold an etcd cluster token"):
        load_material(cd, spec)


def test_tokens_of_two_restores_differ():
    spec = make_spec("basic")
    import datetime as dt
    t = dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    assert eb.new_token(spec, eb.utc_stamp(t)) == "lab-etcd-20250102T030405Z"
    assert eb.new_token(spec, eb.utc_stamp(t + dt.timedelta(seconds=1))) != eb.new_token(spec, eb.utc_stamp(t))


# ---- what `up` may do as part of a restore


def plan(node: str, writes=(), restarts=(), starts=(), **kw) -> HostPlan:
    return HostPlan(node, writes=[(None, Change(p, "content")) for p in writes], restarts=list(restarts),
                    starts=list(starts), **kw)


def test_only_the_token_and_what_the_restore_stops_may_change():
    fine = {"c0": plan("c0", [INITIAL_CLUSTER_ENV, MANIFEST], ["etcd.service"], daemon_reload=True),
            "w0": plan("w0", starts=["kubelet.service", "kube-proxy.service"]),
            "c1": plan("c1", [INITIAL_CLUSTER_ENV, MANIFEST], starts=["etcd.service", "kube-apiserver.service"])}
    assert eb.unexpected_changes(fine) == []
    worse = {"c0": plan("c0", [INITIAL_CLUSTER_ENV, "/etc/kubernetes/pki/apiserver.crt"],
                        ["etcd.service", "kube-apiserver.service"]),
             "w0": plan("w0", starts=["containerd.service"], sysctls={"net.x": ("0", "1")})}
    assert eb.unexpected_changes(worse) == [
        "c0: write /etc/kubernetes/pki/apiserver.crt (content)", "c0: restart kube-apiserver.service",
        "w0: start containerd.service", "w0: sysctl net.x"]


# ---- the snapshot's way to this machine


def test_local_transport_streams_stdout_into_a_file():
    buf = io.BytesIO()
    r = asyncio.run(LocalTransport("n").run("head -c 3000000 /dev/zero; echo done >&2", output=buf))
    assert r.rc == 0 and r.stdout == b"" and r.err == "done\n" and len(buf.getvalue()) == 3000000


def test_new_file_is_private_complete_and_never_replaces_one(tmp_path):
    p = tmp_path / "b" / "x.db"
    with new_file(p, 0o600) as f:
        f.write(b"abc")
    assert p.read_bytes() == b"abc" and stat.S_IMODE(p.stat().st_mode) == 0o600
    with pytest.raises(FileExistsError), new_file(p, 0o600) as f:
        f.write(b"other")
    with pytest.raises(RuntimeError), new_file(tmp_path / "y.db", 0o600) as f:
        f.write(b"half")
        raise RuntimeError
    assert p.read_bytes() == b"abc" and sorted(x.name for x in tmp_path.rglob("*")) == ["b", "x.db"]


class SnapshotHost:
    """A member answering the save script with `digest`, and `cat` with `data`."""

    def __init__(self, node: str, data: bytes, digest: str) -> None:
        self.node, self.target, self.data, self.digest = node, "fake", data, digest
        self.scripts: list[str] = []

    async def run(self, script, input=None, timeout=None, output=None) -> Result:
        self.scripts.append(script)
        if script.startswith("set -eu"):
            out = f"dir {eb.NODE_DIR}.abc\nsha256 {self.digest}\nstatus {STATUS_34}\n"
            return Result(0, out.encode(), b"")
        if script.startswith("cat "):
            output.write(self.data[:3])
            output.write(self.data[3:])
        return Result(0, b"", b"")

    async def close(self) -> None:
        pass


def fake_snapshot(monkeypatch, tmp_path, data: bytes, digest: str):
    spec = make_spec("ha")
    host = SnapshotHost(spec.etcd_members[0].name, data, digest)

    async def connect(_spec, _cd, names, _opts, _progress):
        return {names[0]: host}
    monkeypatch.setattr(eb, "connect_all", connect)
    cd = ClusterDir(tmp_path)
    return spec, cd, host


def test_the_snapshot_lands_checked_and_private_and_the_member_is_cleaned(monkeypatch, tmp_path):
    data = b"etcd snapshot" * 1000
    spec, cd, host = fake_snapshot(monkeypatch, tmp_path, data, hashlib.sha256(data).hexdigest())
    out = tmp_path / "backups" / "s.db"
    said = []
    r = asyncio.run(eb._snapshot(spec, cd, spec.etcd_members[0], out, eb.Options(), said.append))
    assert out.read_bytes() == data and stat.S_IMODE(out.stat().st_mode) == 0o600
    assert eb.sidecar(out).read_text() == f"{r.sha256}  s.db\n" and r.status.revision == 1718
    assert host.scripts[-1] == f"rm -rf {eb.NODE_DIR}.abc"


def test_a_snapshot_damaged_on_the_way_is_not_kept(monkeypatch, tmp_path):
    data = b"etcd snapshot" * 1000
    spec, cd, host = fake_snapshot(monkeypatch, tmp_path, data, "c" * 64)
    out = tmp_path / "s.db"
    with pytest.raises(OperationError, match="arrived damaged.*nothing was kept"):
        asyncio.run(eb._snapshot(spec, cd, spec.etcd_members[0], out, eb.Options(), lambda _m: None))
    assert list(tmp_path.iterdir()) == []
    assert host.scripts[-1] == f"rm -rf {eb.NODE_DIR}.abc"  # the member's copy goes too


def test_snapshot_refuses_to_overwrite(tmp_path):
    from hardway import api
    api.init(tmp_path, "basic")
    (tmp_path / "old.db").write_bytes(b"x")
    with pytest.raises(UsageError, match="old.db exists: a snapshot is never written over another file"):
        api.etcd_snapshot(tmp_path, tmp_path / "old.db")


def test_restore_without_yes_on_a_pipe_refuses(tmp_path):
    import sys
    p, _ = snapshot_file(tmp_path)
    r = subprocess.run([sys.executable, "-m", "hardway", "-C", str(tmp_path), "etcd", "restore", str(p)],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True)
    assert r.returncode == 2 and "pass --yes" in r.stderr


def test_restore_of_a_damaged_snapshot_stops_before_the_lock_or_any_host(tmp_path):
    import sys
    from hardway import api
    api.init(tmp_path, "basic")
    p, digest = snapshot_file(tmp_path)
    eb.sidecar(p).write_bytes(eb.sidecar_text(p, digest))
    p.write_bytes(b"snapshot byteZ")
    r = subprocess.run([sys.executable, "-m", "hardway", "-C", str(tmp_path), "etcd", "restore", str(p), "--yes"],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "does not match its checksum" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / ".hardway.lock").exists() and not (tmp_path / "etcd-cluster-token").exists()


def test_a_new_token_changes_only_the_files_a_restore_expects():
    """A restore refuses what `up` would change besides the token: the files the token is
    rendered into must be exactly the ones it lets through (else every restore is refused)."""
    for preset in ("basic", "ha"):
        spec = make_spec(preset)
        material = fake_material(spec)
        a = render_cluster(spec, replace(material, etcd_token="t-a")).nodes
        b = render_cluster(spec, replace(material, etcd_token="t-b")).nodes
        changed = {path for n in a for path, f in a[n].files.items() if b[n].files[path].content != f.content}
        assert changed == set(eb.TOKEN_FILES), changed
