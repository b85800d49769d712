"""`hardway etcd restore`'s command per member, run for real: the 3-member loopback cluster of
test_etcd_cluster.py (hardway's rendered units, real etcd and etcdctl 3.4) gets a key, a
snapshot is saved, the key changes and another appears; then every member is restored with
deploy/etcd_backup.py's `restore_argv` (its own --name and peer URL, a new token) into a fresh
data directory and started from its unit rendered with that token. The cluster is whole again
(3 members, the same names and URLs), holds exactly the snapshot's keys, and is a new cluster
(another cluster ID: members of the old data could not join it).

Needs `etcd` and `etcdctl` on PATH; skipped without them unless HARDWAY_E2E_REQUIRED=1.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import replace

import pytest

from hardway.deploy.etcd_backup import new_token, restore_argv, utc_stamp
from hardway.export import write_bundles
from hardway.material import load_material
from hardway.render import render_cluster
from hardway.render.common import ETCD_PKI
from hardway.spec.load import parse_spec
from tests.integration.test_etcd_cluster import (
    CLIENT_PORT, MEMBERS, PEER_PORT, SPEC_YAML, UNIT, EtcdCluster, clean_env, exec_start, localize, output,
    etcd_programs, start_cluster, unit_environment, wait_healthy)

pytestmark = pytest.mark.integration


def cluster_id(c: EtcdCluster) -> int:
    r = c.etcdctl("endpoint", "status", "-w", "json")
    assert r.returncode == 0, output(r)
    ids = {e["Status"]["header"]["cluster_id"] for e in json.loads(r.stdout)}
    assert len(ids) == 1, ids
    return ids.pop()


def test_every_member_restored_with_its_own_flags_makes_the_snapshot_cluster(tmp_path, request):
    old = start_cluster(tmp_path, request.addfinalizer)
    assert old.etcdctl("put", "/hardway/a", "1").returncode == 0
    assert old.etcdctl("put", "/hardway/b", "1").returncode == 0
    snap = tmp_path / "snap.db"
    r = old.etcdctl("snapshot", "save", str(snap), endpoints=old.endpoints[:1], command_timeout="20s")
    assert r.returncode == 0, output(r)
    assert old.etcdctl("del", "/hardway/a").returncode == 0
    assert old.etcdctl("put", "/hardway/c", "1").returncode == 0
    old_id = cluster_id(old)
    old.stop()

    spec = parse_spec(SPEC_YAML).spec
    token = new_token(spec, utc_stamp())
    material = replace(load_material(old.cluster_dir, spec), etcd_token=token)
    bundles = tmp_path / "bundles-restored"
    write_bundles(render_cluster(spec, material), bundles)
    ports = {CLIENT_PORT: old.client_port, PEER_PORT: old.peer_port}

    def here(arg: str) -> str:  # the test's ports instead of the rendered ones
        return re.sub(r"(https://[0-9.]+):(\d+)", lambda m: f"{m.group(1)}:{ports[int(m.group(2))]}", arg)

    new = EtcdCluster(tmp_path, old.cluster_dir, old.etcd_bin, old.etcdctl_bin, old.client_port, old.peer_port)
    request.addfinalizer(new.stop)
    for m in spec.etcd_members:
        data = tmp_path / "restored" / m.name
        argv = restore_argv(spec, m, token, str(snap), str(data))
        assert argv[:3] == ["env", "ETCDCTL_API=3", "/usr/local/bin/etcdctl"]  # etcd 3.4: etcdctl restores
        r = subprocess.run([old.etcdctl_bin, *map(here, argv[3:])], capture_output=True, text=True,
                           env=clean_env(), timeout=60)
        assert r.returncode == 0, f"{m.name}: {r.stderr}"
        unit_text = (bundles / m.name / UNIT).read_text()
        unit = exec_start(unit_text)
        env = unit_environment(unit_text, bundles / m.name, ports)
        assert env["ETCD_INITIAL_CLUSTER_TOKEN"] == token  # what the restore made it with
        cmd = localize(unit, etcd_programs()[0], bundles / m.name / ETCD_PKI.lstrip("/"), data, ports)
        new.logs[m.name] = tmp_path / f"{m.name}.restored.log"
        log = open(new.logs[m.name], "wb")
        new.log_files.append(log)
        new.procs[m.name] = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                             env={**clean_env(), **env}, cwd=tmp_path, start_new_session=True)
    wait_healthy(new)

    listed = json.loads(new.etcdctl("member", "list", "-w", "json").stdout)["members"]
    assert {m["name"]: m["peerURLs"] for m in listed} == {
        name: [f"https://{addr}:{old.peer_port}"] for name, addr in MEMBERS.items()}
    keys = new.etcdctl("get", "/hardway/", "--prefix", "--keys-only")
    assert keys.returncode == 0 and keys.stdout.split() == ["/hardway/a", "/hardway/b"], output(keys)
    assert cluster_id(new) != old_id, "the restored members kept the old cluster's identity"
    for name in MEMBERS:  # every member holds the restored data itself (a local, serializable read)
        one = new.etcdctl("get", "/hardway/", "--prefix", "--keys-only", "--consistency=s",
                          endpoints=[f"https://{MEMBERS[name]}:{old.client_port}"])
        assert one.returncode == 0 and one.stdout.split() == ["/hardway/a", "/hardway/b"], (name, output(one))
