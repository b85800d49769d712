"""Each format's quoter: a value, however hostile, reads back as exactly itself and one word."""

from __future__ import annotations

import shlex
import subprocess
import tomllib

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from hardway.quoting import (QuotingError, corefile_token, haproxy_word, keepalived_word, systemd_command,
                             systemd_word, toml_string, yaml_scalar)
from hardway.lab.sshkeys import set_ssh_settings
from hardway.spec.presets import render_preset
from tests.helpers import systemd_exec_argv

INJECTION = "cluster.local \\\n --authorization-mode=AlwaysAllow"
HOSTILE = [INJECTION, "", "a b", 'q"uote', "back\\slash", "%n", "$HOME", "${X}", "$(id)", "`id`", "a;b",
           "new\nline", "tab\tx", "it's", "\x01", "\x7f", "ünï", "#comment", "!bang", "{$VAR}", "x\\"]
# Text of any kind but NUL (no config format or argv can carry it).
any_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40)


@pytest.mark.parametrize("value", HOSTILE)
def test_systemd_word_is_one_argument_exactly(value):
    word = systemd_word(value)
    assert "\n" not in word
    assert systemd_exec_argv(f"/bin/x {word} --next") == ["/bin/x", value, "--next"]


def test_systemd_words_that_need_nothing_stay_bare():
    assert systemd_word("--service-account-issuer=https://kubernetes.default.svc.cluster.local") == \
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local"
    assert systemd_word("--tls-cipher-suites=A,B") == "--tls-cipher-suites=A,B"
    assert systemd_word("--flag=a b") == '"--flag=a b"'  # the quote opens the word
    assert systemd_word("100%") == '"100%%"' and systemd_word("$X") == '"$$X"'
    assert systemd_command(["/sbin/ip", "route", "replace", "10.200.1.0/24"]) == "/sbin/ip route replace 10.200.1.0/24"


@settings(max_examples=300)
@given(st.lists(any_text, min_size=1, max_size=5))
def test_systemd_command_reads_back_as_the_same_argv(argv):
    assert systemd_exec_argv(systemd_command(argv)) == argv


@pytest.mark.parametrize("value", HOSTILE + ['registry.k8s.io/pause:3.2"\nx = "y'])
def test_toml_string_reads_back_exactly(value):
    assert tomllib.loads(f"k = {toml_string(value)}\nafter = 1\n") == {"k": value, "after": 1}


@settings(max_examples=300)
@given(any_text)
def test_toml_string_round_trips_any_text(value):
    assert tomllib.loads(f"k = {toml_string(value)}")["k"] == value


@pytest.mark.parametrize("value", HOSTILE)
def test_shell_quoting_reaches_the_command_as_one_literal_word(value, tmp_path):
    """shlex.quote, the one shell quoter: run by /bin/sh, nothing is expanded or executed."""
    marker = tmp_path / "ran"
    script = f"cd {shlex.quote(str(tmp_path))}; printf '%s' {shlex.quote(value + '$(touch ran)')}"
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True).stdout
    assert out == value + "$(touch ran)" and not marker.exists()


def test_corefile_token():
    assert corefile_token("cluster.local") == "cluster.local"
    assert corefile_token("a b") == '"a b"'
    assert corefile_token('a"b') == '"a\\"b"'
    for bad in (INJECTION, "", "x\\", "{$HOME}", "a\nb"):
        with pytest.raises(QuotingError):
            corefile_token(bad)


def _haproxy_read(word: str) -> str:
    """HAProxy's reading of one argument made of single-quoted runs and backslash escapes."""
    out, i = [], 0
    while i < len(word):
        if word[i] == "'":
            j = word.index("'", i + 1)
            out.append(word[i + 1:j])
            i = j + 1
        elif word[i] == "\\":
            out.append(word[i + 1])
            i += 2
        else:
            assert word[i] not in ' \t#"$', word
            out.append(word[i])
            i += 1
    return "".join(out)


@pytest.mark.parametrize("value", ["*:6443", "10.0.0.1:6443", "a b", "it's", "#x", "$HOME", '"', "a\\b"])
def test_haproxy_word(value):
    assert _haproxy_read(haproxy_word(value)) == value
    assert haproxy_word("10.240.0.10:6443") == "10.240.0.10:6443"


def test_haproxy_and_keepalived_refuse_what_they_cannot_spell():
    for bad in ("", "a\nb", INJECTION):
        with pytest.raises(QuotingError):
            haproxy_word(bad)
    for bad in ("", "a\nb", 'a"b', "a\\b", INJECTION):
        with pytest.raises(QuotingError):
            keepalived_word(bad)
    assert keepalived_word("host0") == "host0"
    assert keepalived_word("a b#c") == '"a b#c"'


@settings(max_examples=300)
@given(any_text)
def test_yaml_scalar_is_one_line_that_reads_back_exactly(value):
    quoted = yaml_scalar(value)
    assert not any(c in quoted for c in "\n\r\x85\u2028\u2029")
    assert yaml.safe_load(f"k: {quoted}  # a comment\nafter: 1\n") == {"k": value, "after": 1}


def test_a_preset_keeps_a_mirror_and_a_name_yaml_would_misread(tmp_path):
    text = render_preset("basic", "123", mirror="/srv/mirror #2")
    data = yaml.safe_load(text)
    assert data["name"] == "123" and data["artifacts"]["mirror"] == "/srv/mirror #2"


def test_lab_up_writes_the_ssh_key_path_as_yaml_reads_it():
    for key in ("/root/lab #1/id_ed25519", "~", "/a: b/id", "/plain/id_ed25519"):
        text = set_ssh_settings("name: x\nssh:\n  user: root  # note\n", {"user": "root", "port": 22, "key": key})
        assert yaml.safe_load(text)["ssh"] == {"user": "root", "port": 22, "key": key}
