"""Small helpers shared by the test suites."""

from __future__ import annotations

import os

import pytest

E2E_REQUIRED_ENV = "HARDWAY_E2E_REQUIRED"
E2E_TIMEOUT = 2400  # seconds per e2e test that may build the mirror or bring clusters up


def require(condition: bool, reason: str) -> None:
    """Skip the test unless `condition` holds; with HARDWAY_E2E_REQUIRED=1, fail instead.

    Integration tests need real programs (etcd, openssl) that a developer's machine may lack;
    CI sets HARDWAY_E2E_REQUIRED=1 so that a missing prerequisite cannot pass as a skip.
    """
    if condition:
        return
    if os.environ.get(E2E_REQUIRED_ENV) == "1":
        pytest.fail(f"{reason} (required: {E2E_REQUIRED_ENV}=1)", pytrace=False)
    pytest.skip(reason)


_C_UNESCAPE = {"\\": "\\", '"': '"', "'": "'", "n": "\n", "t": "\t", "r": "\r", "a": "\a", "b": "\b",
               "f": "\f", "v": "\v", "s": " "}


def systemd_exec_argv(rvalue: str) -> list[str]:
    """The argv systemd runs for `ExecStart=<rvalue>` (continuations already joined): `%%`
    resolved on the whole line, words split on whitespace, a word opening with a quote read
    to its closing quote with C escapes, then `$$` -> `$` in each word (systemd.service(5)).
    A reader independent of hardway.quoting; tests/integration/test_systemd_units.py checks
    it against systemd itself."""
    if "%" in rvalue.replace("%%", ""):
        raise ValueError(f"unexpanded specifier in {rvalue!r}")
    line = rvalue.replace("%%", "%")
    words, i = [], 0
    while i < len(line):
        if line[i] in " \t":
            i += 1
            continue
        if line[i] in "\"'":
            quote, i, word = line[i], i + 1, []
            while line[i] != quote:
                if line[i] == "\\":
                    c = line[i + 1]
                    if c == "x":
                        word.append(chr(int(line[i + 2:i + 4], 16)))
                        i += 4
                        continue
                    word.append(_C_UNESCAPE[c])
                    i += 2
                    continue
                word.append(line[i])
                i += 1
            i += 1
            if i < len(line) and line[i] not in " \t":
                raise ValueError(f"a quoted word must end at whitespace: {rvalue!r}")
            words.append("".join(word))
            continue
        j = i
        while j < len(line) and line[j] not in " \t":
            if line[j] in "\"'\\":
                raise ValueError(f"a quote or backslash inside a bare word: {rvalue!r}")
            j += 1
        words.append(line[i:j])
        i = j
    if any("$" in w.replace("$$", "") for w in words):
        raise ValueError(f"an unescaped $ would expand a variable: {rvalue!r}")
    return [w.replace("$$", "$") for w in words]


def unit_commands(unit_text: str) -> list[list[str]]:
    """The argv of every Exec line of a unit. A command continued over several lines must
    carry exactly one argument per line: a value that added a line would add a flag."""
    lines = unit_text.splitlines()
    commands = []
    for i, line in enumerate(lines):
        key, _, value = line.partition("=")
        if not key.startswith("Exec"):
            continue
        argv = systemd_exec_argv(value.removesuffix(" \\"))
        assert len(argv) == 1 or not line.endswith(" \\"), f"line {line!r} holds {len(argv)} arguments"
        while lines[i].endswith(" \\"):
            i += 1
            words = systemd_exec_argv(lines[i].removesuffix(" \\"))
            assert len(words) == 1, f"line {lines[i]!r} holds {len(words)} arguments"
            argv += words
        commands.append(argv)
    return commands


def read_back(files: dict) -> dict[str, object]:
    """Every rendered file (path -> File) parsed by its own format's reader: TOML, YAML, JSON,
    units (argv per Exec line), shell (`sh -n`). Fails on the first file that does not parse."""
    import json
    import subprocess
    import tomllib

    import yaml

    out: dict[str, object] = {}
    for path, f in files.items():
        text = f.content.decode()
        if path.endswith(".toml"):
            out[path] = tomllib.loads(text)
        elif path.endswith(".service"):
            out[path] = unit_commands(text)
        elif path.endswith(".yaml") or path.startswith("/etc/kubernetes/") and path.endswith(".conf"):
            out[path] = list(yaml.load_all(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)))
        elif path.startswith("/etc/cni/"):
            out[path] = json.loads(text)
        elif path.endswith(".sh"):
            subprocess.run(["sh", "-n", "-c", text], check=True)
            out[path] = text
    return out
