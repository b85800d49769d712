"""Controllers joining and leaving: the membership decisions (deploy/members.py, pure), how a
joining member's etcd first starts (render/etcd.py, membership.py), cluster.yaml edited by
lines (spec/edit.py), and `hardway node remove` refusing with nothing changed."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from hardway import api
from hardway.clusterdir import ClusterDir
from hardway.deploy.members import (Changes, Member, Survey, Wanted, check_removal, parse_health, parse_members,
                                    reconcile, stop_script, wanted)
from hardway.errors import OperationError, UsageError
from hardway.membership import FOUNDERS, Membership, load_membership, save_membership
from hardway.quoting import QuotingError, systemd_env_value
from hardway.render import render_cluster
from hardway.render.etcd import INITIAL_CLUSTER_ENV, initial_cluster
from hardway.spec.edit import without_node
from hardway.spec.presets import render_preset
from tests.fake_material import fake_material
from tests.specs import make_spec


def url(i: int) -> str:
    return f"https://10.240.0.{10 + i}:2380"


def member(i: int, learner: bool = False, started: bool = True) -> Member:
    return Member(1000 + i, f"controller-{i}" if started else "", (url(i),),
                  (f"https://10.240.0.{10 + i}:2379",) if started else (), learner)


def want(*ids: int) -> list[Wanted]:
    return [Wanted(f"controller-{i}", url(i), f"10.240.0.{10 + i}") for i in ids]


def ids(*members: int) -> set[int]:
    return {1000 + i for i in members}


# ---- etcdctl's output


def test_member_list_json_is_read_with_ids_beyond_float_precision():
    text = json.dumps({"header": {"cluster_id": 1}, "members": [
        {"ID": 17237436991929493444, "name": "controller-0", "peerURLs": [url(0)],
         "clientURLs": ["https://10.240.0.10:2379"]},
        {"ID": 9372538179322589801, "peerURLs": [url(3)], "isLearner": True}]})
    a, b = parse_members(text)
    assert a.id == 17237436991929493444 and a.hex_id == "ef37ad9dc622a7c4" and a.started and not a.learner
    assert a.address == "10.240.0.10" and a.label == "controller-0 (10.240.0.10)"
    assert not b.started and b.learner and b.client_urls == () and b.label == "(not started) (10.240.0.13)"
    with pytest.raises(OperationError, match="unexpected output"):
        parse_members("Error: context deadline exceeded")


def test_endpoint_health_json_gives_the_healthy_client_urls():
    text = json.dumps([{"endpoint": "https://10.240.0.10:2379", "health": True, "took": "2ms"},
                       {"endpoint": "https://10.240.0.11:2379", "health": False, "error": "deadline"}])
    assert parse_health(text) == {"https://10.240.0.10:2379"}
    with pytest.raises(OperationError, match="unexpected output"):  # no verdicts: this endpoint is down
        parse_health("")


# ---- what to change


def test_the_spec_as_etcd_has_it_changes_nothing():
    live = [member(0), member(1), member(2)]
    assert reconcile(live, want(0, 1, 2), ids(0, 1, 2)).empty
    # a degraded cluster is no reason to refuse a run that changes no membership
    assert reconcile(live, want(0, 1, 2), ids(0)).empty


def test_a_new_controller_joins_as_one_learner():
    ch = reconcile([member(0), member(1), member(2)], want(0, 1, 2, 3), ids(0, 1, 2))
    assert ch.join == want(3)[0] and ch.add and not ch.remove and not ch.drop_early
    assert any("add controller-3" in line and "learner" in line for line in ch.describe())


def test_one_controller_joins_per_up():
    with pytest.raises(UsageError, match="one controller joins per `hardway up`.*all but controller-3"):
        reconcile([member(0), member(1), member(2)], want(0, 1, 2, 3, 4), ids(0, 1, 2))


def test_an_address_or_name_change_is_refused_not_remade():
    live = [member(0), member(1), member(2)]
    moved = want(0, 1) + [Wanted("controller-2", "https://10.240.0.99:2380", "10.240.0.99")]
    with pytest.raises(UsageError, match="controller-2: etcd knows this member at https://10.240.0.12:2380.*member update"):
        reconcile(live, moved, ids(0, 1, 2))
    renamed = want(0, 1) + [Wanted("ctl-2", url(2), "10.240.0.12")]
    with pytest.raises(UsageError, match="ctl-2: the etcd member at .* is named 'controller-2'"):
        reconcile(live, renamed, ids(0, 1, 2))


def test_adding_to_a_cluster_without_quorum_is_refused():
    with pytest.raises(OperationError, match="no quorum: 1 of 3 voting member.*controller-1 \\(10.240.0.11\\), "
                                             "controller-2"):
        reconcile([member(0), member(1), member(2)], want(0, 1, 2, 3), ids(0))


def test_a_removal_keeps_a_quorum_of_healthy_voters():
    live = [member(0), member(1), member(2), member(3)]
    ch = reconcile(live, want(0, 1, 3), ids(0, 1, 2, 3))
    assert [m.name for m in ch.remove] == ["controller-2"] and ch.join is None
    # 3 voters, controller-1 down: removing healthy controller-2 leaves 1 healthy of 2
    with pytest.raises(OperationError, match="removing controller-2 .* 1 healthy of 2 .* quorum needs 2; "
                                             "not healthy: controller-1"):
        reconcile([member(0), member(1), member(2)], want(0, 1), ids(0, 2))
    # ...but removing the dead one is what raises the cluster's tolerance
    assert [m.name for m in reconcile([member(0), member(1), member(2)], want(0, 2), ids(0, 2)).remove] == \
        ["controller-1"]


def test_dead_members_are_removed_first():
    live = [member(0), member(1), member(2), member(3), member(4)]
    ch = reconcile(live, want(0, 1, 2), ids(0, 1, 2, 4))
    assert [m.name for m in ch.remove] == ["controller-3", "controller-4"]


def test_the_last_voter_and_the_only_healthy_one_stay():
    only = member(0)
    with pytest.raises(UsageError, match="last voting member"):
        check_removal(only, ids(0), ids(0), {only.id: only})
    a, b = member(0), member(1)
    with pytest.raises(OperationError, match="controller-0 \\(10.240.0.10\\) \\(it is the only healthy one\\)"):
        check_removal(a, ids(0, 1), ids(0), {a.id: a, b.id: b})


def test_replacing_a_controller_in_one_edit_adds_before_it_removes():
    ch = reconcile([member(0), member(1), member(2)], want(0, 1, 3), ids(0, 1, 2))
    assert ch.join.name == "controller-3" and [m.name for m in ch.remove] == ["controller-2"]
    # one member of a single-member cluster replaced: the joiner, promoted, keeps the quorum
    ch = reconcile([member(0)], want(1), ids(0))
    assert ch.join.name == "controller-1" and [m.name for m in ch.remove] == ["controller-0"]


def test_leftovers_of_an_interrupted_run():
    # added by an earlier run, never started: no `member add` again; started as a learner: promote
    live = [member(0), member(1), member(2), member(3, learner=True, started=False)]
    ch = reconcile(live, want(0, 1, 2, 3), ids(0, 1, 2))
    assert ch.join.name == "controller-3" and not ch.add and ch.promote == [url(3)]
    live[3] = member(3, learner=True)
    ch = reconcile(live, want(0, 1, 2, 3), ids(0, 1, 2))
    assert ch.join is None and ch.promote == [url(3)]
    # a learner the spec no longer wants votes for nothing: out before anything starts
    live[3] = member(3, learner=True, started=False)
    ch = reconcile(live, want(0, 1, 2), ids(0, 1, 2))
    assert ch.drop_early == [live[3]] and not ch.remove


def test_the_record_and_the_joiners_initial_cluster():
    spec = make_spec("ha", edit=lambda d: d["nodes"].insert(3, {"name": "controller-3", "address": "10.240.0.13",
                                                                  "roles": ["controller"]}))
    ch = Changes(join=wanted(spec)[3], add=True)
    sv = Survey([member(0), member(1), member(2)], ids(0, 1, 2), ["controller-0"], ch)
    m = sv.membership(Membership(frozenset({"gone"})), spec)
    assert m == Membership(frozenset({"controller-3"}))  # names no longer in the spec are dropped
    state, members = initial_cluster(spec, spec.node("controller-3"), m)
    assert state == "existing" and [n for n, _ in members] == ["controller-0", "controller-1", "controller-2",
                                                                "controller-3"]
    assert initial_cluster(spec, spec.node("controller-0"), m)[0] == "new"
    # replaced in one edit: controller-2 is still a member when controller-3 starts
    spec2 = make_spec("ha", edit=lambda d: d["nodes"].__setitem__(2, {"name": "controller-3", "address": "10.240.0.13",
                                                                      "roles": ["controller"]}))
    sv2 = Survey([member(0), member(1), member(2)], ids(0, 1, 2), ["controller-0"],
                 Changes(join=wanted(spec2)[2], add=True, remove=[member(2)]))
    m2 = sv2.membership(FOUNDERS, spec2)
    assert m2.leaving == (("controller-2", url(2)),)
    assert sorted(n for n, _ in initial_cluster(spec2, spec2.node("controller-3"), m2)[1]) == \
        ["controller-0", "controller-1", "controller-2", "controller-3"]


def test_a_member_change_rewrites_no_unit_and_restarts_nothing():
    spec = make_spec("ha")
    material = fake_material(spec)
    before = render_cluster(spec, material).nodes["controller-0"]
    grown = make_spec("ha", edit=lambda d: d["nodes"].insert(3, {"name": "controller-3", "address": "10.240.0.13",
                                                                   "roles": ["controller"]}))
    after = render_cluster(grown, fake_material(grown), Membership(frozenset({"controller-3"}))).nodes
    unit = "/etc/systemd/system/etcd.service"
    assert before.files[unit] == after["controller-0"].files[unit]
    assert b"--initial-cluster" not in before.files[unit].content
    assert f"EnvironmentFile={INITIAL_CLUSTER_ENV}".encode() in before.files[unit].content
    env = after["controller-0"].files[INITIAL_CLUSTER_ENV].content.decode()
    assert "ETCD_INITIAL_CLUSTER_STATE=new" in env and "controller-3=https://10.240.0.13:2380" in env
    assert "ETCD_INITIAL_CLUSTER_STATE=existing" in after["controller-3"].files[INITIAL_CLUSTER_ENV].content.decode()
    etcd = next(u for u in before.units if u.name == "etcd.service")
    assert INITIAL_CLUSTER_ENV not in etcd.restart_on and INITIAL_CLUSTER_ENV not in etcd.reload_on
    # the run after the join renders the joiner's file as the join did: a no-op stays one
    again = render_cluster(grown, fake_material(grown), Membership(frozenset({"controller-3"}))).nodes
    assert again["controller-3"].files[INITIAL_CLUSTER_ENV] == after["controller-3"].files[INITIAL_CLUSTER_ENV]


def test_the_record_is_written_only_when_someone_joined(tmp_path):
    cd = ClusterDir(tmp_path)
    assert load_membership(cd) == FOUNDERS
    assert not save_membership(cd, FOUNDERS) and not cd.etcd_members.exists()
    assert save_membership(cd, Membership(frozenset({"controller-3"}), (("x", "y"),)))
    assert load_membership(cd) == Membership(frozenset({"controller-3"}))  # `leaving` is one run's
    assert not save_membership(cd, Membership(frozenset({"controller-3"})))
    cd.etcd_members.write_text("[1, 2]")
    with pytest.raises(OperationError, match="not hardway's record of etcd members"):
        load_membership(cd)


def test_env_values_are_one_line_each():
    assert systemd_env_value("a=https://10.0.0.1:2380,b=x") == "a=https://10.0.0.1:2380,b=x"
    assert systemd_env_value('a b"$`\\') == '"a b\\"\\$\\`\\\\"'
    with pytest.raises(QuotingError):
        systemd_env_value("a\nETCD_X=1")


def test_a_removed_controller_has_only_its_own_units_stopped(tmp_path):
    """The script run with a stand-in systemctl that knows kube-apiserver only: that unit is
    stopped, disabled and its failed state cleared; haproxy, which the host lacks, is left."""
    calls = tmp_path / "calls"
    fake = tmp_path / "systemctl"
    fake.write_text(f"""#!/bin/sh
echo "$*" >> {calls}
case "$1 $2" in "cat kube-apiserver.service") exit 0;; "cat "*) exit 1;; esac
""")
    fake.chmod(0o755)
    script = stop_script(("kube-apiserver.service", "haproxy.service"))
    r = subprocess.run(["sh", "-c", script], capture_output=True, text=True,
                       env={**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"})
    assert r.returncode == 0 and r.stdout.split() == ["kube-apiserver.service"], r
    assert calls.read_text().splitlines() == [
        "cat kube-apiserver.service", "disable -q --now kube-apiserver.service",
        "reset-failed kube-apiserver.service", "cat haproxy.service"]


# ---- cluster.yaml edited by lines


def test_a_node_leaves_cluster_yaml_and_every_comment_stays():
    text = render_preset("ha", "lab")
    out = without_node(text, "controller-2")
    assert text.splitlines().count("  - {name: controller-2, address: 10.240.0.12, roles: [controller]}") == 1
    assert [ln for ln in text.splitlines() if "controller-2" not in ln] == out.splitlines()
    block = ("name: x\nnodes:\n  - name: a\n    roles:\n      - controller\n  # b: the spare\n"
             "  - name: b   # here\n    roles: [worker]\n\n# networks\nnetwork: {}\n")
    assert without_node(block, "a") == ("name: x\nnodes:\n  # b: the spare\n  - name: b   # here\n"
                                        "    roles: [worker]\n\n# networks\nnetwork: {}\n")
    assert without_node(block, "b") == "name: x\nnodes:\n  - name: a\n    roles:\n      - controller\n  # b: the spare\n\n# networks\nnetwork: {}\n"
    with pytest.raises(UsageError, match="no node named 'c'"):
        without_node(block, "c")
    with pytest.raises(UsageError, match="not a block list.*yourself"):
        without_node("nodes: [{name: a}, {name: b}]\n", "a")


# ---- `hardway node remove`: refused before anything changes


def test_node_remove_refusals_change_nothing(tmp_path):
    d = tmp_path / "c"
    api.init(d, "ha", name="t")
    api.pki_init(d)
    spec_text = (d / "cluster.yaml").read_text()
    with pytest.raises(UsageError, match="no node named 'controller-9'"):
        api.node_remove(d, "controller-9")
    with pytest.raises(UsageError, match="lb-0 has the roles lb.*cannot be removed yet"):
        api.node_remove(d, "lb-0")
    # the removal makes the apiserver certificate stale: refused with the command that does it
    with pytest.raises(UsageError, match="removing controller-2 makes certificate\\(s\\) apiserver stale.*"
                                         "Nothing was changed.*node remove controller-2 --reissue apiserver"):
        api.node_remove(d, "controller-2")
    assert (d / "cluster.yaml").read_text() == spec_text
    one = tmp_path / "one"
    api.init(one, "basic", name="o")
    with pytest.raises(Exception, match="no node has the role controller"):
        api.node_remove(one, "controller-0")
