"""deploy/ pieces that need no host: facts parsing, the push tar and script, verify's verdict."""

from __future__ import annotations

import io
import subprocess
import tarfile

from hardway.deploy.desired import MANIFEST, PENDING, Blob, desired_for, file_sha256
from hardway.deploy.facts import facts_script, parse_facts
from hardway.deploy.plan import Facts, FileFact, describe, plan_host, summary
from hardway.deploy.push import SUFFIX, push_script, tar_stream
from hardway.render import render_cluster
from hardway.verify.health import Check, Status, classify
from tests.fake_material import fake_material
from tests.specs import make_spec


def test_facts_parse_every_tag():
    text = "\n".join([
        "A x86_64", "K 6.1.0", "O Debian GNU/Linux 12 (bookworm)", "W 0", "Y systemd",
        "S 600 etcd:etcd 241 12 1795435992.25 /etc/etcd/pki/server.key",
        "H " + "a" * 64 + "  /etc/etcd/pki/server.key",
        "S 644 root:root 10 13 1795435992.25 /etc/only-stat",
        "U etcd.service active", "U kubelet.service activating",
        "P kubelet.service", "P kubelet.service",
        "I registry.k8s.io/pause:3.2",
        "C net.ipv4.ip_forward 1", "M overlay 1", "M br_netfilter 0", "D haproxy",
    ])
    f = parse_facts("n", text)
    assert f.arch == "x86_64" and f.systemd and not f.swap_on
    # Stat and hash joined per path; a path with a stat but no hash (/etc/only-stat) is not a file fact.
    assert f.files == {"/etc/etcd/pki/server.key": FileFact("a" * 64, 0o600, "etcd:etcd")}
    assert f.active_units == {"etcd.service"}
    assert f.pending_restarts == ("kubelet.service",)
    assert f.images == {"registry.k8s.io/pause:3.2"}
    assert f.packages == {"haproxy"}
    assert f.sysctls == {"net.ipv4.ip_forward": "1"} and f.modules == {"overlay": True, "br_netfilter": False}


def test_facts_script_runs_under_dash_and_hashes_each_file_once(tmp_path, monkeypatch):
    """The script itself, run by /bin/sh on this machine against real files (state dir redirected)."""
    a = tmp_path / "a.conf"
    a.write_text("hello\n")
    state = tmp_path / "state"
    script = facts_script([str(a), str(tmp_path / "absent")], [], [], ["overlay"])
    script = script.replace("/var/lib/hardway", str(state))
    first = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True).stdout
    f = parse_facts("n", first)
    assert set(f.files) == {str(a)}
    assert f.files[str(a)].sha256 == file_sha256(a)
    assert str(a) in (state / "sums").read_text()
    # Second run: served from the sums cache, same answer.
    (state / "sums").write_text((state / "sums").read_text().replace(f.files[str(a)].sha256, "f" * 64))
    again = parse_facts("n", subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True).stdout)
    assert again.files[str(a)].sha256 == "f" * 64  # proves the cache was used, not a re-hash
    a.write_text("changed\n")  # new ctime and size: hashed again
    third = parse_facts("n", subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True).stdout)
    assert third.files[str(a)].sha256 == file_sha256(a)


def _desired(tmp_path):
    spec = make_spec("basic")
    b = render_cluster(spec, fake_material(spec)).nodes["worker-0"]
    binaries = {}
    for i, x in enumerate(b.binaries):
        p = tmp_path / f"{x.name}"
        p.write_bytes(bytes([i]) * (1000 + i))
        binaries[x] = p
    return desired_for(b, binaries, {})


def test_tar_stream_is_a_valid_tar_of_suffixed_private_files(tmp_path):
    d = _desired(tmp_path)
    items = list(d.items.values())
    data = b"".join(tar_stream(items))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert set(members) == {it.path.lstrip("/") + SUFFIX for it in items}
        assert all(m.mode == 0o600 for m in members.values())
        for it in items:
            got = tar.extractfile(members[it.path.lstrip("/") + SUFFIX]).read()
            assert got == (it.source.read_bytes() if isinstance(it, Blob) else it.content)


def test_push_script_records_restarts_first_and_renames_the_manifest_last(tmp_path):
    d = _desired(tmp_path)
    facts = Facts("worker-0", active_units=frozenset(d.unit_names))
    plan = plan_host(d.bundle, facts, d.items, d.images)
    assert plan.restarts  # every unit runs but its files are new
    script = push_script(plan)
    lines = script.splitlines()
    pending = next(i for i, ln in enumerate(lines) if PENDING in ln)
    first_mv = next(i for i, ln in enumerate(lines) if "mv -f" in ln)
    assert pending < first_mv
    assert MANIFEST in [ln for ln in lines if "mv -f" in ln][-1]
    key = [i for i, ln in enumerate(lines) if "/var/lib/kubelet/pki/kubelet.key" + SUFFIX in ln]
    assert lines[key[1]] == f"chmod 0600 /var/lib/kubelet/pki/kubelet.key{SUFFIX}"
    assert lines[key[2]].startswith("mv -f") and key[1] < key[2]
    subprocess.run(["sh", "-n", "-c", script], check=True)  # parses as POSIX sh


def test_push_applies_modes_owners_atomically_into_a_root(tmp_path):
    """The push script run for real by /bin/sh into a scratch root, the tar piped in."""
    (tmp_path / "src").mkdir()
    d = _desired(tmp_path / "src")
    plan = plan_host(d.bundle, Facts("worker-0"), d.items, d.images)
    root = tmp_path / "root"
    root.mkdir()
    data = b"".join(tar_stream([it for it, _ in plan.writes]))
    subprocess.run(["sh", "-c", push_script(plan, str(root))], input=data, check=True)
    for it, _ in plan.writes:
        p = root / it.path.lstrip("/")
        assert p.stat().st_mode & 0o7777 == it.mode, it.path
        assert file_sha256(p) == it.sha256
        assert not (root / (it.path.lstrip("/") + SUFFIX)).exists()
    # One SUMS line per file written: "size inode ctime sha256 path", as the file now is.
    sums = [ln.split(" ", 4) for ln in (root / "var/lib/hardway/sums").read_text().splitlines()]
    assert sorted((path, digest) for _size, _ino, _ctime, digest, path in sums) == \
        sorted((it.path, it.sha256) for it, _ in plan.writes)
    for size, ino, _ctime, _digest, path in sums:
        st = (root / path.lstrip("/")).stat()
        assert (int(size), int(ino)) == (st.st_size, st.st_ino), path


def test_push_stops_at_the_first_failing_file(tmp_path):
    """An owner that does not exist fails the push before any later file is renamed."""
    (tmp_path / "src").mkdir()
    d = _desired(tmp_path / "src")
    plan = plan_host(d.bundle, Facts("worker-0"), d.items, d.images)
    first, change = plan.writes[0]
    plan.writes[0] = (type(first)(**{**first.__dict__, "owner": "no-such-user:root"}), change)
    root = tmp_path / "root"
    root.mkdir()
    data = b"".join(tar_stream([it for it, _ in plan.writes]))
    r = subprocess.run(["sh", "-c", push_script(plan, str(root))], input=data, capture_output=True)
    assert r.returncode != 0 and b"no-such-user" in r.stderr
    assert not any((root / it.path.lstrip("/")).exists() for it, _ in plan.writes)


def test_describe_and_summary_speak_plainly(tmp_path):
    d = _desired(tmp_path)
    plan = plan_host(d.bundle, Facts("worker-0"), d.items, d.images)
    lines = describe(plan)
    assert "write /etc/containerd/config.toml (new)" in lines and "start kubelet.service" in lines
    files, units = len(d.items), len(d.unit_names)
    assert summary([plan]) == f"1 of 1 host(s) change: {files} file(s) to write, {units} unit(s) to start, 0 to restart"
    assert summary([plan_host(d.bundle, Facts("worker-0"), {}, {})]) == \
        f"1 of 1 host(s) change: 0 file(s) to write, {units} unit(s) to start, 0 to restart"
    # ...and a converged host does say it (the wording `up` and `diff` print for a no-op).
    converged = Facts("worker-0", files={p: FileFact(it.sha256, it.mode, it.owner) for p, it in d.items.items()},
                      active_units=frozenset(d.unit_names), sysctls=dict(d.bundle.sysctls),
                      modules={m: True for m in d.bundle.modules})
    done = plan_host(d.bundle, converged, d.items, d.images)
    assert done.empty and describe(done) == [] and summary([done]) == "no changes on any of 1 host(s)"


def test_verify_verdicts():
    assert classify(3, 3, True, 2, 2, []) == (Status.healthy, [])
    status, why = classify(2, 3, True, 2, 2, [Check("etcd member c1", False, "connection refused")])
    assert status is Status.degraded and why == ["etcd member c1: connection refused"]
    assert classify(1, 3, True, 2, 2, [])[0] is Status.broken
    assert classify(1, 1, False, 0, 2, [])[0] is Status.broken
    assert classify(1, 1, True, 0, 2, [])[0] is Status.broken
    assert (Status.healthy.exit_code, Status.degraded.exit_code, Status.broken.exit_code) == (0, 3, 1)


def test_unit_states_parse_and_settle():
    from hardway.deploy.activate import parse_unit_states, unsettled

    text = ("Id=kubelet.service\nActiveState=active\nNRestarts=0\n\n"
            "Id=kube-proxy.service\nActiveState=activating\nNRestarts=3\n\n"
            "Id=containerd.service\nActiveState=active\nNRestarts=1\n")
    states = parse_unit_states(text)
    assert states == {"kubelet.service": ("active", 0), "kube-proxy.service": ("activating", 3),
                      "containerd.service": ("active", 1)}
    touched = {"kubelet.service", "kube-proxy.service", "containerd.service"}
    bad = unsettled(states, touched)
    assert list(bad.values()) == ["kube-proxy.service is activating (restarted 3 time(s))",
                                  "containerd.service crashed and was restarted 1 time(s)"]
    assert list(bad) == ["kube-proxy.service", "containerd.service"]  # whose journals to show
    # Seen running twice with the same count: it crashed once while starting, and is fine now.
    assert unsettled({"containerd.service": ("active", 1)}, touched, {"containerd.service": ("active", 1)}) == {}
    # Restarts of a unit this run did not touch are history, not news.
    assert unsettled({"containerd.service": ("active", 4)}, set()) == {}


def test_a_wait_gives_up_on_failed_or_crash_looping_units_only():
    from hardway.deploy.activate import CRASH_LOOP_RESTARTS, given_up

    base = {"kube-apiserver.service": ("activating", 7), "etcd.service": ("active", 0)}
    # restarts from before the wait began are not counted; a unit coming up is waited for
    assert given_up(base, base) == {}
    assert given_up({"kube-apiserver.service": ("activating", 7 + CRASH_LOOP_RESTARTS - 1)}, base) == {}
    # as many more restarts as the limit, and not running now: hopeless
    assert given_up({"kube-apiserver.service": ("activating", 7 + CRASH_LOOP_RESTARTS)}, base) == {
        "kube-apiserver.service":
            f"kube-apiserver.service keeps crashing (restarted {CRASH_LOOP_RESTARTS} times while waiting)"}
    # it crashed a few times but runs now: the wait goes on
    assert given_up({"kube-apiserver.service": ("active", 7 + CRASH_LOOP_RESTARTS)}, base) == {}
    # systemd gave up on it (start limit, or no Restart=): at once
    assert given_up({"etcd.service": ("failed", 0)}, base) == {"etcd.service": "etcd.service has failed"}


def test_files_no_longer_rendered_are_removed_and_their_units_stopped(tmp_path):
    """A file the node's manifest lists that the bundle no longer has is removed (an old CNI
    config would still be used); a unit file's unit is stopped and disabled first."""
    (tmp_path / "src").mkdir()
    d = _desired(tmp_path / "src")
    old = {"/etc/cni/net.d/05-old.conf", "/etc/systemd/system/old.service"}
    facts = Facts("worker-0", owned=frozenset(set(d.items) | old | {MANIFEST, "/var/lib/hardway/sums"}),
                  adopted={"/etc/haproxy/haproxy.cfg": "/var/lib/hardway/backup/etc/haproxy/haproxy.cfg"})
    facts = Facts(**{**facts.__dict__, "owned": facts.owned | {"/etc/haproxy/haproxy.cfg"}})
    plan = plan_host(d.bundle, facts, d.items, d.images)
    assert plan.removes == sorted(old)  # not hardway's state, not an adopted file
    assert plan.stops == ["old.service"] and plan.daemon_reload
    assert "remove /etc/cni/net.d/05-old.conf (no longer rendered)" in describe(plan)
    root = tmp_path / "root"
    for p in old:
        (root / p.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        (root / p.lstrip("/")).write_text("obsolete")
    data = b"".join(tar_stream([it for it, _ in plan.writes]))
    script = push_script(plan, str(root))
    subprocess.run(["sh", "-c", script], input=data, check=True)
    assert not any((root / p.lstrip("/")).exists() for p in old)
    lines = script.splitlines()
    removal = next(i for i, ln in enumerate(lines) if ln.startswith("rm -f") and "05-old.conf" in ln)
    manifest_mv = next(i for i, ln in enumerate(lines) if ln.startswith("mv -f") and MANIFEST in ln)
    assert removal < manifest_mv  # removed while the old manifest still claims them
    assert "systemctl disable --now old.service" in push_script(plan)  # on a real node
