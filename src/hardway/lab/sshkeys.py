"""SSH to lab machines: the lab's key pair, the machines' host keys, and cluster.yaml's `ssh:`.

    DIR/lab/id_ed25519(.pub)   the key authorised for root in every machine
    DIR/lab/known_hosts        every machine's host key, by name and address

Host keys are generated on the host when a machine is made (never taken from the network), so
the first connection is already verified: no trust-on-first-use.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import OperationError
from ..fsio import write_atomic
from ..quoting import yaml_scalar
from ..spec.load import parse_spec
from .host import run

KEY_NAME = "id_ed25519"
KNOWN_HOSTS = "known_hosts"


def ensure_keypair(lab: Path, comment: str) -> Path:
    key = lab / KEY_NAME
    if key.exists() and key.with_suffix(".pub").exists():
        return key
    lab.mkdir(parents=True, exist_ok=True)
    key.unlink(missing_ok=True)
    key.with_suffix(".pub").unlink(missing_ok=True)
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", key], "making the lab's SSH key")
    key.chmod(0o600)
    return key


def ensure_host_key(root: Path, comment: str) -> str:
    """The machine's ed25519 host key (made once, in its root); returns the public line."""
    key = root / "etc/ssh/ssh_host_ed25519_key"
    pub = key.with_name(key.name + ".pub")
    for p in (key.parent, key, pub):
        if p.is_symlink():
            raise OperationError(f"{p} is a symbolic link; refusing to touch it")
    if not (key.exists() and pub.exists()):
        key.unlink(missing_ok=True)
        pub.unlink(missing_ok=True)
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", key], "making a host key")
        key.chmod(0o600)
    return pub.read_text().strip()


def known_hosts_text(entries: list[tuple[str, str, str]]) -> str:
    """Lines for (name, address, 'ssh-ed25519 AAAA... comment')."""
    lines = []
    for name, address, pub in sorted(entries):
        kind, blob = pub.split()[:2]
        lines.append(f"{name},{address} {kind} {blob}\n")
    return "".join(lines)


def write_known_hosts(lab: Path, entries: list[tuple[str, str, str]]) -> Path:
    path = lab / KNOWN_HOSTS
    write_atomic(path, known_hosts_text(entries).encode(), 0o644)
    return path


def ssh_base(lab: Path) -> list[str]:
    """ssh with only the lab's key and known_hosts; the user's ssh config is not read (-F none),
    so no ProxyJump or other setting can send lab traffic anywhere else."""
    return [
        "ssh", "-F", "none", "-i", str(lab / KEY_NAME),
        "-o", "IdentitiesOnly=yes",
        "-o", f"UserKnownHostsFile={lab / KNOWN_HOSTS}",
        "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "StrictHostKeyChecking=yes",
        "-o", "LogLevel=ERROR",
        "-o", "ConnectTimeout=5",
    ]


# ---------------------------------------------------------------------------------------------
# cluster.yaml's top-level `ssh:` block, edited as text so every comment stays

_TOP_KEY = re.compile(r"^ssh\s*:(?P<rest>.*)$")


def _scalar(value: str | int) -> str:
    return str(value) if isinstance(value, int) else yaml_scalar(value)


def _split_comment(text: str) -> tuple[str, str]:
    """'value   # note' -> ('value', '# note'); a '#' inside quotes is not a comment."""
    quote = None
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or text[i - 1] in " \t"):
            return text[:i].rstrip(), text[i:]
    return text.rstrip(), ""


def set_ssh_settings(text: str, settings: dict[str, str | int]) -> str:
    """Return `text` with the top-level `ssh:` block holding `settings` (user, port, key).

    Existing keys keep their trailing comments; a commented-out `# key: ...` line is replaced
    by the real setting; missing keys are added; a missing block is appended.
    """
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    start = next((i for i, line in enumerate(lines) if _TOP_KEY.match(line.rstrip("\n"))), None)
    if start is None:
        block = "".join(f"  {k}: {_scalar(v)}\n" for k, v in settings.items())
        sep = "" if not lines or lines[-1].strip() == "" else "\n"
        return "".join(lines) + sep + "# SSH to the nodes; set by `hardway lab up` for the lab machines.\nssh:\n" + block
    head = _TOP_KEY.match(lines[start].rstrip("\n"))
    assert head is not None
    value, comment = _split_comment(head["rest"].strip())
    if value:  # `ssh: {user: x}` or `ssh: null`: the block is replaced whole
        lines[start] = "ssh:" + (f"  {comment}" if comment else "") + "\n"
    end = start + 1
    while end < len(lines) and (lines[end].strip() == "" or lines[end][0] in " \t" or lines[end].startswith("#")):
        end += 1
    # blank lines and column-0 comments at the end introduce the next section, not this one
    while end > start + 1 and (lines[end - 1].strip() == "" or lines[end - 1].startswith("#")):
        end -= 1
    if value:
        end = start + 1  # the old flow-style value held the whole block
    body = lines[start + 1:end]
    indent = next((re.match(r"^([ \t]+)\S", line)[1] for line in body if re.match(r"^[ \t]+[^\s#]", line)), "  ")
    for key, val in settings.items():
        rendered = f"{indent}{key}: {_scalar(val)}"
        live = re.compile(rf"^{re.escape(indent)}{key}\s*:(?P<rest>.*)$")
        commented = re.compile(rf"^[ \t]*#\s*{key}\s*:")
        for i, line in enumerate(body):
            m = live.match(line.rstrip("\n"))
            if m:
                _old, note = _split_comment(m["rest"].strip())
                body[i] = rendered + (f"  {note}" if note else "") + "\n"
                break
        else:
            for i, line in enumerate(body):
                if commented.match(line):
                    body[i] = rendered + "  # set by `hardway lab up`\n"
                    break
            else:
                body.append(rendered + "\n")
    return "".join(lines[:start + 1] + body + lines[end:])


def point_spec_at_lab(spec_path: Path, key: Path, user: str = "root", port: int = 22) -> bool:
    """Edit cluster.yaml's `ssh:` to use the lab key; returns whether the file changed."""
    text = spec_path.read_text()
    settings: dict[str, str | int] = {"user": user, "port": port, "key": str(key)}
    new = set_ssh_settings(text, settings)
    if new == text:
        return False
    try:
        spec = parse_spec(new, str(spec_path)).spec
    except Exception as e:  # the edit must never break the file
        raise OperationError(f"could not point {spec_path}'s ssh: block at the lab key ({e}); set "
                             f"ssh: {{user: {user}, port: {port}, key: {key}}} by hand") from None
    if (spec.ssh.user, spec.ssh.port, spec.ssh.key) != (user, port, str(key)):
        raise OperationError(f"could not point {spec_path}'s ssh: block at the lab key; set "
                             f"ssh: {{user: {user}, port: {port}, key: {key}}} by hand")
    write_atomic(spec_path, new.encode(), spec_path.stat().st_mode & 0o7777)
    return True
