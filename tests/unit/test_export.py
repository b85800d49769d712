"""`hardway render --out`: it removes only what an earlier render wrote, inside the tree."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from hardway.export import BUNDLE_MANIFEST, write_bundles
from hardway.render import render_cluster
from tests.fake_material import fake_material
from tests.specs import make_spec

KEY = "var/lib/kubelet/pki/kubelet.key"


def _render(out, edit=None):
    spec = make_spec("basic", edit=edit)
    return write_bundles(render_cluster(spec, fake_material(spec)), out)


def digest(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _without_worker_1(data):
    data["nodes"] = [n for n in data["nodes"] if n["name"] != "worker-1"]


def test_a_hostile_record_cannot_delete_outside_the_tree(tmp_path):
    out = tmp_path / "out"
    _render(out)
    victim = tmp_path / "victim.txt"
    victim.write_text("not hardway's\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "secret").write_text("mine\n")
    (out / "worker-0" / "escape").symlink_to(elsewhere)
    own = out / "worker-0" / "notes.txt"  # the user's file inside the tree, never recorded
    own.write_text("mine too\n")
    manifest = out / "worker-0" / BUNDLE_MANIFEST
    data = json.loads(manifest.read_text())
    # Recorded with the right digests, so only the location can protect them.
    data["files"]["/../../victim.txt"] = {"sha256": digest(victim)}
    data["files"]["/escape/secret"] = {"sha256": digest(elsewhere / "secret")}
    data["files"]["/etc/../../../victim.txt"] = {"sha256": digest(victim)}
    manifest.write_text(json.dumps(data))
    report = _render(out)
    assert victim.read_text() == "not hardway's\n"
    assert (elsewhere / "secret").read_text() == "mine\n"
    assert own.exists()
    assert not any(tmp_path / "victim.txt" == p.resolve() for p in report.removed)


def test_a_changed_file_is_kept_and_an_unchanged_one_removed(tmp_path):
    out = tmp_path / "out"
    _render(out)
    manifest = out / "worker-0" / BUNDLE_MANIFEST
    data = json.loads(manifest.read_text())
    # Two files "from an earlier render" that this render no longer has: one as written,
    # one edited by the user since.
    for name, content in (("old.conf", b"as written\n"), ("edited.conf", b"as written\n")):
        p = out / "worker-0" / "etc" / name
        p.write_bytes(content)
        data["files"][f"/etc/{name}"] = {"sha256": hashlib.sha256(content).hexdigest()}
    manifest.write_text(json.dumps(data))
    (out / "worker-0" / "etc" / "edited.conf").write_bytes(b"edited by the user\n")
    report = _render(out)
    assert not (out / "worker-0/etc/old.conf").exists()
    assert (out / "worker-0/etc/edited.conf").read_bytes() == b"edited by the user\n"
    assert report.kept == [out / "worker-0/etc/edited.conf"]


def test_a_removed_node_loses_its_bundle_keys_included(tmp_path):
    out = tmp_path / "out"
    _render(out)
    assert (out / "worker-1" / KEY).exists()
    (out / "worker-1" / "mine.txt").write_text("user file\n")
    report = _render(out, _without_worker_1)
    assert not (out / "worker-1" / KEY).exists()
    assert not (out / "worker-1" / BUNDLE_MANIFEST).exists()
    assert not (out / "worker-1" / "var").exists()  # emptied directories go too
    assert (out / "worker-1" / "mine.txt").read_text() == "user file\n"  # never recorded: kept
    assert out / "worker-1" / KEY in report.removed
    assert (out / "worker-0" / KEY).exists() and (out / "controller-0").is_dir()


def test_a_removed_node_without_user_files_leaves_no_directory(tmp_path):
    out = tmp_path / "out"
    _render(out)
    _render(out, _without_worker_1)
    assert not (out / "worker-1").exists()
    assert sorted(p.name for p in out.iterdir()) == ["_cluster", "controller-0", "worker-0"]


def test_a_malformed_record_removes_nothing(tmp_path):
    out = tmp_path / "out"
    _render(out)
    for text in ("[1, 2]", '{"files": ["/etc/x"]}', '{"files": {"/etc/hosts": "x"}}', "\xff"):
        (out / "worker-1" / BUNDLE_MANIFEST).write_text(text)
        _render(out)  # no exception, and the tree is rewritten
        assert (out / "worker-1" / KEY).exists()
