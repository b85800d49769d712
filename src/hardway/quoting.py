"""Quoting, one function per output format: every value hardway writes into a file or a
script goes through the quoter of the format it lands in.

Validation (spec/model.py) already refuses values outside each field's grammar; quoting is
the second wall. A value that slipped past validation still arrives as one word, never as
a new flag, line, key or command. A quoter that cannot represent a value raises
`QuotingError`, never writes something else.

Formats handled elsewhere, by their own serialisers: YAML documents (`render/common.to_yaml`,
`yaml.safe_dump`: objects are dumped, never templated), JSON (`json.dumps`), shell
(`shlex.quote`/`shlex.join`, the standard library's quoter, used directly by deploy/ and lab/).
"""

from __future__ import annotations

import re

import yaml


class QuotingError(ValueError):
    """A value cannot be written safely in this format (a bug: validation should refuse it)."""


def _control(value: str) -> bool:
    return any(ord(c) < 0x20 or c == "\x7f" for c in value)


# ---- systemd (Exec*= command lines) ----

# Words that need no quoting on an Exec line. Not `%` (specifiers), `$` (environment
# expansion), quotes, backslash, `;` or whitespace.
_SYSTEMD_BARE = re.compile(r"[A-Za-z0-9_@+=:,./-]+")
# systemd expands `%` specifiers and `$` variables even inside quotes: both are doubled.
_SYSTEMD_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r", "%": "%%", "$": "$$"}


def _double_quoted(value: str, escapes: dict[str, str], control: str) -> str:
    """`value` in double quotes: characters in `escapes` replaced, other control characters
    written with the `control` format (given the code point)."""
    out = [escapes.get(c) or (control.format(ord(c)) if _control(c) else c) for c in value]
    return '"' + "".join(out) + '"'


def systemd_word(value: str) -> str:
    """One argument of an `Exec*=` line, exactly as the program will receive it.

    systemd expands `%` specifiers on the whole line (quotes or not), then splits it into
    words honouring double quotes with C escapes, then expands `$VAR` in each word. So `%` is
    written `%%`, `$` is `$$`, and anything else unusual goes in a double-quoted word whose
    opening quote starts the word (systemd.service(5): "Quoting").
    """
    if _SYSTEMD_BARE.fullmatch(value):
        return value
    return _double_quoted(value, _SYSTEMD_ESCAPES, "\\x{:02x}")


def systemd_command(argv: list[str]) -> str:
    """A whole command line for `Exec*=`: each argument one word."""
    return " ".join(systemd_word(a) for a in argv)


# ---- systemd EnvironmentFile= ----

_ENV_ESCAPES = {"\\": "\\\\", '"': '\\"', "$": "\\$", "`": "\\`"}


def systemd_env_value(value: str) -> str:
    """The value of a `KEY=value` line in a file read by `EnvironmentFile=`: bare when plain,
    else double-quoted with backslash escapes for `\\`, `"`, `$` and backquote, which systemd's
    parser removes (systemd.exec(5), EnvironmentFile=). A line break or another control
    character would end or bend the line: refused."""
    if _SYSTEMD_BARE.fullmatch(value):
        return value
    if _control(value):
        raise QuotingError(f"{value!r} cannot be written into an environment file")
    return '"' + "".join(_ENV_ESCAPES.get(c, c) for c in value) + '"'


# ---- TOML (containerd's config) ----

_TOML_ESCAPES = {"\\": "\\\\", '"': '\\"', "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def toml_string(value: str) -> str:
    """A TOML basic string (TOML 1.0, "String"): quotes, backslashes and control
    characters escaped."""
    return _double_quoted(value, _TOML_ESCAPES, "\\u{:04x}")


# ---- CoreDNS Corefile ----

_COREFILE_BARE = re.compile(r"[A-Za-z0-9._:/-]+")


def corefile_token(value: str) -> str:
    """One token of a Corefile (Caddy's lexer, as CoreDNS uses it).

    Inside double quotes only `\\"` is an escape; a backslash before anything else is kept
    as is, so a backslash cannot be written reliably, and `{$VAR}`/`{%VAR%}` are replaced
    from the environment: those characters are refused.
    """
    if _COREFILE_BARE.fullmatch(value):
        return value
    if not value or _control(value) or any(c in value for c in "\\{}"):
        raise QuotingError(f"{value!r} cannot be written as a Corefile token")
    return '"' + value.replace('"', '\\"') + '"'


# ---- HAProxy ----

_HAPROXY_BARE = re.compile(r"[A-Za-z0-9_.:/@+,=*-]+")


def haproxy_word(value: str) -> str:
    """One argument in haproxy.cfg. Single quotes are HAProxy's strong quoting: nothing is
    interpreted inside (no `$VAR`, no escapes); a `'` is closed, escaped and reopened
    (configuration.txt, 2.2 "Quoting and escaping")."""
    if _HAPROXY_BARE.fullmatch(value):
        return value
    if not value or _control(value):
        raise QuotingError(f"{value!r} cannot be written into haproxy.cfg")
    return "'" + value.replace("'", "'\\''") + "'"


# ---- keepalived ----

_KEEPALIVED_BARE = re.compile(r"[A-Za-z0-9_.:/@+,=-]+")


def keepalived_word(value: str) -> str:
    """One word in keepalived.conf (keepalived.conf(5), "Quoted strings"). A double-quoted
    string is one word, and `#`/`!` start comments only outside quotes. keepalived 2.x reads
    shell-like escapes inside quotes and 1.x does not, so a value with a `"`, a backslash or
    a control character has no portable spelling and is refused."""
    if _KEEPALIVED_BARE.fullmatch(value):
        return value
    if not value or _control(value) or '"' in value or "\\" in value:
        raise QuotingError(f"{value!r} cannot be written into keepalived.conf")
    return '"' + value + '"'


# ---- YAML written as text (cluster.yaml from a preset keeps its comments) ----


def yaml_scalar(value: str) -> str:
    """`value` as one YAML scalar on one line: plain when YAML reads it back unchanged,
    else quoted by PyYAML itself (a `#`, `: ` or leading `{` never changes the document)."""
    out = yaml.safe_dump(value, width=float("inf"), allow_unicode=True).removesuffix("\n...\n").removesuffix("\n")
    if any(c in out for c in _YAML_BREAKS):  # double quotes, non-ASCII escaped: always one line
        out = yaml.safe_dump(value, default_style='"', width=float("inf")).removesuffix("\n")
    return out


_YAML_BREAKS = "\n\r\x85\u2028\u2029"  # YAML 1.1 line breaks


__all__ = ["QuotingError", "corefile_token", "haproxy_word", "keepalived_word", "systemd_command",
           "systemd_word", "toml_string", "yaml_scalar"]
