"""A cluster.yaml that cannot be read as a spec (issue 11, item 5): exit 2 naming the file and
what is wrong, never a traceback, for every command that reads it."""

from __future__ import annotations

import pytest

from tests.unit.test_cli import hw, no_traceback

BAD = {
    "latin-1": (b"name: caf\xe9\nkubernetes: {version: 1.20.2}\n", "line 1: not UTF-8 text (byte 0xe9 at offset 9)"),
    "utf-16": ("name: lab\n".encode("utf-16"), "not UTF-8 text (byte 0xff at offset 0)"),
    "binary": (b"\x00\x01\x02\xff\xfe", "not UTF-8 text"),
    "not YAML": (b"name: [unclosed\n", "not valid YAML"),
    "a list": (b"- a\n- b\n", "the file must be a mapping"),
    "a scalar": (b"just words\n", "the file must be a mapping"),
    "empty": (b"", "the file is empty"),
    "NUL in text": (b"name: a\x00b\n", "not valid YAML"),
    "nested too deep": (b"a: " + b"[" * 5000 + b"]" * 5000 + b"\n", "nests too deeply"),
    "alias in its own anchor": (b"a: &x [*x]\n", "nests too deeply, or an alias"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_an_unreadable_spec_exits_2_with_the_file_and_the_reason(tmp_path, case):
    content, needle = BAD[case]
    (tmp_path / "cluster.yaml").write_bytes(content)
    r = hw("-C", str(tmp_path), "validate")
    no_traceback(r)
    assert r.returncode == 2, r.stderr
    assert str(tmp_path / "cluster.yaml") in r.stderr and needle in r.stderr, r.stderr


@pytest.mark.parametrize("command", [["pki", "init"], ["render"], ["diff"]])
def test_every_command_reading_the_spec_says_the_same(tmp_path, command):
    (tmp_path / "cluster.yaml").write_bytes(BAD["latin-1"][0])
    r = hw("-C", str(tmp_path), *command)
    no_traceback(r)
    assert r.returncode == 2 and "not UTF-8 text" in r.stderr, r.stderr
