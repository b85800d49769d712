"""Encryption key rotation (`hardway secrets rotate`): the key file's format (an old one keeps
working unchanged), rendering of several keys in order, and the step machine run against a
simulated cluster: interrupted anywhere, it resumes and never loses a key or a Secret."""

from __future__ import annotations

import base64
import dataclasses
import json
import stat

import pytest
import yaml

from hardway import api, keyrotation
from hardway.cluster_secrets import EncryptionKey, format_keys, parse_keys
from hardway.clusterdir import ClusterDir
from hardway.errors import OperationError, UsageError
from hardway.keyrotation import STEPS, next_key_name
from hardway.render import render_cluster
from hardway.verify.etcd_data import UNENCRYPTED
from tests.fake_material import fake_material
from tests.specs import make_spec

A = base64.b64encode(b"a" * 32).decode()
B = base64.b64encode(b"b" * 32).decode()


# -- the key file ---------------------------------------------------------------------------

def test_a_bare_key_is_key1_and_is_written_back_byte_for_byte():
    text = f"{A}\n"  # every cluster directory's file before rotation existed
    keys, flaws = parse_keys(text)
    assert keys == (EncryptionKey("key1", A),) and keys[0].secret == A and not flaws
    assert format_keys(keys) == text.encode()


def test_named_keys_keep_their_order_and_round_trip():
    keys = (EncryptionKey("key2", B), EncryptionKey("key1", A))
    text = format_keys(keys).decode()
    assert text.startswith("#") and text.splitlines()[-2:] == [f"key2 {B}", f"key1 {A}"]
    parsed, flaws = parse_keys(text)
    assert [(k.name, k.secret) for k in parsed] == [("key2", B), ("key1", A)] and not flaws
    # one key that is not key1 keeps its name too
    assert parse_keys(format_keys(keys[:1]).decode())[0][0].name == "key2"
    # a bare line among named ones is key1 as well
    assert [k.name for k in parse_keys(f"key2 {B}\n{A}\n")[0]] == ["key2", "key1"]


@pytest.mark.parametrize("text,flaw", [
    ("", "holds no key"),
    ("# only a comment\n", "holds no key"),
    ("short\n", "is not base64"),
    (base64.b64encode(b"x" * 16).decode() + "\n", "holds 16 bytes, not 32"),
    (f"key2 {B}\nkey1 short\n", "line 2 (key key1): is not base64"),
    (f"key2 {B}\nkey2 {A}\n", "line 2: key key2 is named twice"),
    (f"key2 {B}\n{A}\nkey1 {A}\n", "line 3: key key1 is named twice"),
    (f"key:2 {B}\n", "line 1: key name 'key:2' is not"),
    (f"key2 {B} extra\n", "line 1: 3 words, not `NAME BASE64`"),
])
def test_flaws_are_named_with_their_line(text, flaw):
    assert flaw in "; ".join(parse_keys(text)[1])


def test_keys_are_rendered_in_order_write_key_first():
    spec = make_spec("ha")
    material = fake_material(spec)
    for keys in ((EncryptionKey("key1", A), EncryptionKey("key2", B)),
                 (EncryptionKey("key2", B), EncryptionKey("key1", A))):
        cluster = render_cluster(spec, dataclasses.replace(material, encryption_keys=keys))
        for node in ("controller-0", "controller-1", "controller-2"):
            f = cluster.nodes[node].files["/etc/kubernetes/encryption-config.yaml"]
            providers = yaml.safe_load(f.content.decode().split("---\n", 1)[1])["resources"][0]["providers"]
            assert providers == [{"aescbc": {"keys": [{"name": k.name, "secret": k.secret} for k in keys]}},
                                 {"identity": {}}]
            assert f.mode == 0o600


def test_next_key_name_is_never_one_in_use():
    assert next_key_name((EncryptionKey("key1", A),)) == "key2"
    assert next_key_name((EncryptionKey("key9", A), EncryptionKey("key10", B))) == "key11"
    assert next_key_name((EncryptionKey("prod", A),)) == "key2"


# -- the steps, against a simulated cluster --------------------------------------------------

class Cut(Exception):
    """Where the test cuts a run off (as Ctrl-C or a failed `up` would)."""


class FakeCluster:
    """Apiservers that run the key file of the last `up`, and an etcd of Secrets by key name.
    Every Secret must stay readable by the apiservers at every moment."""

    def __init__(self, cd: ClusterDir, monkeypatch) -> None:
        self.cd = cd
        self.running = parse_keys(cd.encryption_key.read_text())[0]  # as the last `up` left it
        self.etcd = {f"ns{i}/s{i}": self.running[0].name for i in range(4)} | {"default/plain": UNENCRYPTED}
        self.rolls: list[tuple[str, ...]] = []
        self.rewrites = 0
        self.cut_at: str | None = None  # "roll:N", "rewrite:N", "scan:N", "save:N"
        self.counts: dict[str, int] = {}
        self.skip_rewrite = False
        monkeypatch.setattr(keyrotation, "roll", self.roll)
        monkeypatch.setattr(keyrotation, "rewrite_secrets", self.rewrite)
        monkeypatch.setattr(keyrotation, "stored_keys", self.stored)
        real_save = keyrotation.save_rotation
        monkeypatch.setattr(keyrotation, "save_rotation", lambda cd, r: (real_save(cd, r), self.tick("save")))

    def tick(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1
        if self.cut_at == f"{what}:{self.counts[what]}":
            self.cut_at = None
            raise Cut(what)

    def readable(self) -> None:
        names = {k.name for k in self.running} | {UNENCRYPTED}
        lost = {p: k for p, k in self.etcd.items() if k not in names}
        assert not lost, f"Secrets the apiservers cannot read: {lost}"

    def roll(self, directory, progress, opts) -> None:
        keys = parse_keys(self.cd.encryption_key.read_text())[0]
        # An apiserver restarted with a key set must read every Secret: check before and after.
        self.readable()
        self.running = keys
        self.rolls.append(tuple(k.name for k in keys))
        self.readable()
        self.tick("roll")

    def rewrite(self, cd, progress, only=None) -> tuple[int, int]:
        self.tick("rewrite")
        if self.skip_rewrite:
            return 0, 0
        paths = [p for p in self.etcd if only is None or p in only]
        for p in paths:
            self.etcd[p] = self.running[0].name
        self.rewrites += 1
        return len(paths), 0

    def stored(self, spec, cd, opts, progress) -> dict[str, list[str]]:
        self.tick("scan")
        out: dict[str, list[str]] = {}
        for p, k in sorted(self.etcd.items()):
            out.setdefault(k, []).append(p)
        return out


@pytest.fixture
def cluster(tmp_path, monkeypatch):
    api.init(tmp_path, preset="ha")
    cd = ClusterDir(tmp_path)
    cd.secrets.mkdir()
    cd.encryption_key.write_text(f"{A}\n")
    cd.encryption_key.chmod(0o600)
    return FakeCluster(cd, monkeypatch)


def finished(c: FakeCluster) -> None:
    keys = parse_keys(c.cd.encryption_key.read_text())[0]
    assert [k.name for k in keys] == ["key2"] and keys[0].secret != A
    assert set(c.etcd.values()) == {"key2"}
    assert not c.cd.encryption_rotation.exists()
    assert stat.S_IMODE(c.cd.encryption_key.stat().st_mode) == 0o600


def test_a_rotation_goes_through_every_step_in_order(cluster):
    said: list[str] = []
    report = api.secrets_rotate(cluster.cd.root, said.append)
    assert cluster.rolls == [("key1", "key2"), ("key2", "key1"), ("key2",)]
    assert cluster.rewrites == 1 and report.rewritten == 5 and report.secrets == 5
    assert (report.old, report.new, list(report.steps)) == ("key1", "key2", [s.name for s in STEPS])
    assert [m.split(":")[0] for m in said if m.startswith("== step")] == [
        f"== step {i}/4 {s.name}" for i, s in enumerate(STEPS, 1)]
    finished(cluster)
    # the next rotation starts from key2
    assert api.secrets_rotate(cluster.cd.root).new == "key3"
    assert [k.name for k in parse_keys(cluster.cd.encryption_key.read_text())[0]] == ["key3"]


CUTS = ["roll:1", "save:2", "roll:2", "save:3", "rewrite:1", "scan:1", "save:4", "roll:3", "save:5", "scan:2"]


@pytest.mark.parametrize("cut", CUTS)
def test_a_run_cut_off_anywhere_resumes_and_loses_nothing(cluster, cut):
    # save:1 is the record of the start; save:N+1 the one after step N
    cluster.cut_at = cut
    with pytest.raises(Cut):
        api.secrets_rotate(cluster.cd.root)
    record = json.loads(cluster.cd.encryption_rotation.read_text()) if cluster.cd.encryption_rotation.exists() else None
    if record:
        assert stat.S_IMODE(cluster.cd.encryption_rotation.stat().st_mode) == 0o600
        assert (record["old"], record["new"]) == ("key1", "key2")
    new_secret = {k.name: k.secret for k in parse_keys(cluster.cd.encryption_key.read_text())[0]}.get("key2")
    said: list[str] = []
    report = api.secrets_rotate(cluster.cd.root, said.append)
    assert any(m.startswith("resuming the rotation key1 -> key2") for m in said), said
    assert report.new == "key2"
    finished(cluster)
    if new_secret:  # once written, the new key is the one kept
        assert parse_keys(cluster.cd.encryption_key.read_text())[0][0].secret == new_secret
    # each roll once, the cut one twice at most, in order
    distinct = [r for i, r in enumerate(cluster.rolls) if not i or cluster.rolls[i - 1] != r]
    assert distinct == [("key1", "key2"), ("key2", "key1"), ("key2",)]


def test_a_missing_key_is_refused_and_nothing_is_changed(cluster):
    cluster.cut_at = "save:3"  # after step 2 (switch): Secrets may carry key2 now
    with pytest.raises(Cut):
        api.secrets_rotate(cluster.cd.root)
    cluster.cd.encryption_key.write_text(f"{A}\n")  # an old backup of the key file put back
    rolls = list(cluster.rolls)
    with pytest.raises(OperationError, match=r"key2 is missing, and Secrets in etcd may be encrypted with it: "
                                             r"restore the file from your backup"):
        api.secrets_rotate(cluster.cd.root)
    assert cluster.rolls == rolls and cluster.cd.encryption_key.read_text() == f"{A}\n"
    assert json.loads(cluster.cd.encryption_rotation.read_text())["done"] == ["add", "switch"]


def test_keys_out_of_order_are_refused(cluster):
    cluster.cut_at = "save:2"  # after step 1 (add): the file is key1, key2
    with pytest.raises(Cut):
        api.secrets_rotate(cluster.cd.root)
    keys = parse_keys(cluster.cd.encryption_key.read_text())[0]
    cluster.cd.encryption_key.write_bytes(format_keys((keys[0], EncryptionKey("key7", B))))
    with pytest.raises(OperationError, match="key2 is missing"):
        api.secrets_rotate(cluster.cd.root)


def test_the_old_key_stays_while_a_secret_in_etcd_carries_it(cluster):
    cluster.skip_rewrite = True
    with pytest.raises(OperationError, match="still not encrypted with key2") as e:
        api.secrets_rotate(cluster.cd.root)
    assert "key1: 4 (ns0/s0, " in str(e.value) and "(not encrypted): 1 (default/plain)" in str(e.value)
    assert cluster.rolls == [("key1", "key2"), ("key2", "key1")], "the old key was dropped"
    assert [k.name for k in parse_keys(cluster.cd.encryption_key.read_text())[0]] == ["key2", "key1"]
    cluster.skip_rewrite = False
    api.secrets_rotate(cluster.cd.root)
    finished(cluster)


def test_several_keys_without_a_record_are_refused(cluster):
    cluster.cd.encryption_key.write_bytes(format_keys((EncryptionKey("key2", B), EncryptionKey("key1", A))))
    with pytest.raises(UsageError, match="holds 2 keys .* but no rotation is recorded"):
        api.secrets_rotate(cluster.cd.root)
    assert not cluster.rolls and not cluster.cd.encryption_rotation.exists()


def test_a_dry_run_changes_nothing(cluster):
    said: list[str] = []
    report = api.secrets_rotate(cluster.cd.root, said.append, dry_run=True)
    assert (report.old, report.new, report.dry_run) == ("key1", "key2", True)
    assert len([m for m in said if m.startswith("== step")]) == len(STEPS)
    assert cluster.cd.encryption_key.read_text() == f"{A}\n" and not cluster.cd.encryption_rotation.exists()
    assert not cluster.rolls and not cluster.counts


def test_a_damaged_record_is_refused(cluster):
    cluster.cd.encryption_rotation.write_text('{"old": "key1", "new": "key2", "done": ["switch"]}')
    with pytest.raises(OperationError, match="is damaged"):
        api.secrets_rotate(cluster.cd.root)
    cluster.cd.encryption_rotation.write_text("{")
    with pytest.raises(OperationError, match="is damaged"):
        api.secrets_rotate(cluster.cd.root)
    assert not cluster.rolls


def test_a_lost_key_file_is_never_replaced_during_a_rotation(tmp_path):
    from hardway.material import ensure_material
    api.init(tmp_path, preset="basic")
    cd = ClusterDir(tmp_path)
    spec = api.validate(tmp_path).spec
    ensure_material(cd, spec)
    cd.encryption_key.write_bytes(format_keys((EncryptionKey("key2", B), EncryptionKey("key1", A))))
    cd.kubectl.parent.mkdir(parents=True)
    cd.kubectl.write_text("#!/bin/sh\n")  # the cluster ran
    assert api.pki_check(tmp_path, days=0) == []  # two keys are a good key file
    cd.encryption_key.unlink()
    with pytest.raises(UsageError, match="restore it from your backup"):
        ensure_material(cd, spec)
    assert not cd.encryption_key.exists()
    with pytest.raises(OperationError, match="encryption-key is missing: restore it from your backup"):
        api.secrets_rotate(tmp_path)
