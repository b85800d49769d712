"""`hardway secrets rotate`: a new encryption key for Secrets at rest, with no Secret unreadable
at any moment and no request refused.

Four steps (STEPS), each recorded in DIR/secrets/encryption-rotation once done, so a rotation
cut off anywhere (a failed `up`, Ctrl-C, a lost connection) resumes where it stopped when run
again:

  add      the new key second: `up` rolls the apiservers. Each can now read what the new key
           will encrypt, before any of them writes with it.
  switch   the new key first: `up` rolls; new writes use it, the old key still reads.
  rewrite  every Secret replaced through the API. An apiserver writes an object back even when
           nothing in it changed if it read it with a key other than the first (the etcd3
           store's `stale` read), so each is encrypted again with the new key. Then etcd
           itself is read: the old key goes only when no Secret there carries it.
  drop     the old key removed: `up` rolls.

The key file (cluster_secrets.py) is the only home of a key: it is written, atomically, before
an apiserver can use what it holds, and a key leaves it only after etcd showed no Secret needs it.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from .cluster_secrets import (FIRST_KEY, KEY_NAME, SECRET_MODE, EncryptionKey, format_keys,
                              new_key_secret, read_keys)
from .clusterdir import ClusterDir
from .deploy.hosts import Options
from .errors import OperationError, UsageError
from .fsio import write_atomic
from .kubectl import kubectl
from .lock import cluster_lock
from .spec.load import load_spec
from .spec.model import ClusterSpec
from .verify.etcd_data import SECRETS, describe_keys, etcdctl_get, secrets_by_key

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Step:
    name: str
    does: str  # {old} and {new}: the keys' names
    keys: tuple[str, ...]  # the key file once it is done, write key first: roles "old" / "new"
    rolls: bool  # it ends with `up`, which restarts the apiservers one at a time


START = ("old",)
STEPS = (
    Step("add", "add {new} as a read key ({old} still encrypts), then roll the apiservers", ("old", "new"), True),
    Step("switch", "make {new} the write key ({old} still reads), then roll the apiservers", ("new", "old"), True),
    Step("rewrite", "rewrite every Secret so that it is encrypted with {new}", ("new", "old"), False),
    Step("drop", "drop {old}, then roll the apiservers", ("new",), True),
)
REWRITE_PASSES = 3  # a Secret changed by someone else meanwhile gets another pass
REPLACE_TRIES = 5  # per Secret whose bulk replace failed (a conflict: it changed meanwhile)


@dataclass(frozen=True)
class Rotation:
    """The record of a rotation under way: the keys' names and the steps done, in order."""

    old: str
    new: str
    done: tuple[str, ...] = ()

    def names(self, roles: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(getattr(self, role) for role in roles)

    def text(self) -> bytes:
        return (json.dumps({"old": self.old, "new": self.new, "done": list(self.done)}, indent=1) + "\n").encode()


@dataclass
class RotateReport:
    old: str
    new: str
    dry_run: bool = False
    resumed: tuple[str, ...] = ()  # the steps an earlier run had done
    steps: dict[str, float] = field(default_factory=dict)  # step done by this run -> seconds
    rewritten: int = 0  # Secrets replaced through the API
    gone: int = 0  # Secrets deleted by someone else while they were being rewritten
    secrets: int = 0  # Secrets in etcd at the end, every one with the new key
    seconds: float = 0.0


def load_rotation(cd: ClusterDir) -> Rotation | None:
    path = cd.encryption_rotation
    try:
        doc = json.loads(path.read_bytes())
        r = Rotation(doc["old"], doc["new"], tuple(doc["done"]))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as e:
        raise OperationError(f"{path} is damaged ({type(e).__name__}: {e}): restore it from your backup; it "
                             "records how far a key rotation went") from None
    names = [s.name for s in STEPS]
    if (not all(isinstance(n, str) and KEY_NAME.fullmatch(n) for n in (r.old, r.new)) or r.old == r.new
            or list(r.done) != names[:len(r.done)]):
        raise OperationError(f"{path} is damaged: {doc!r} is not two key names and a prefix of the steps "
                             f"{', '.join(names)}: restore it from your backup")
    return r


def save_rotation(cd: ClusterDir, r: Rotation) -> None:
    write_atomic(cd.encryption_rotation, r.text(), SECRET_MODE)


def next_key_name(keys: tuple[EncryptionKey, ...]) -> str:
    """key<N+1> for the highest key<N> among `keys` (key2 after key1): never a name in use."""
    numbers = [int(m.group(1)) for k in keys if (m := re.fullmatch(r"key(\d+)", k.name))]
    return f"key{max(numbers, default=int(FIRST_KEY[3:])) + 1}"


def begin(cd: ClusterDir, keys: tuple[EncryptionKey, ...]) -> Rotation:
    """A new rotation away from the file's one key; refused while it holds several."""
    if len(keys) != 1:
        raise UsageError(
            f"{cd.encryption_key} holds {len(keys)} keys ({', '.join(k.name for k in keys)}, the write key "
            f"first), but no rotation is recorded in {cd.encryption_rotation}: a rotation starts from one "
            "key. If a rotation's record was lost, restore it from the same backup as the key file and run "
            "`hardway secrets rotate` again; keys after the first may go only once no Secret in etcd uses "
            "them (`hardway verify --smoke` says which keys they use)")
    return Rotation(keys[0].name, next_key_name(keys))


def keys_for(cd: ClusterDir, r: Rotation, index: int, keys: tuple[EncryptionKey, ...]) -> tuple[EncryptionKey, ...]:
    """The key file for step `index` of `r`, from what it holds now: the previous step's keys
    (or already this step's, when a run stopped after writing it). Only the new key may be
    missing, and only before the first step (nothing could have used it yet): it is made."""
    step = STEPS[index]
    before = r.names(STEPS[index - 1].keys if index else START)
    after = r.names(step.keys)
    have = tuple(k.name for k in keys)
    if have not in (before, after):
        missing = sorted(set(before + after) - set(have) - ({r.new} if not index else set()))
        why = (f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing, and Secrets in etcd may be "
               "encrypted with it: restore the file from your backup" if missing else
               f"put them back as {', '.join(before)} (write key first)")
        raise OperationError(
            f"{cd.encryption_key} holds {', '.join(have) or 'no key'} (write key first), but the rotation "
            f"recorded in {cd.encryption_rotation} is at step {index + 1} of {len(STEPS)} ({step.name}), "
            f"which goes from {', '.join(before)} to {', '.join(after)}: {why}; then run "
            "`hardway secrets rotate` again")
    by_name = {k.name: k for k in keys}
    return tuple(by_name.get(n) or EncryptionKey(n, new_key_secret()) for n in after)


# The actions, one function each (the unit tests put fakes in their place).

def roll(directory: Path, progress: Progress, opts: Options) -> None:
    from .deploy.up import up
    up(directory, progress, opts)


def stored_keys(spec: ClusterSpec, cd: ClusterDir, opts: Options, progress: Progress) -> dict[str, list[str]]:
    """Every Secret in etcd (namespace/name) by the name of the key it is stored with."""
    return secrets_by_key(etcdctl_get(spec, cd, SECRETS, opts, progress, prefix=True), spec.encryption.provider)


def _kubectl_json(cd: ClusterDir, *args: str) -> dict:
    r = kubectl(cd, *args, "-o", "json", timeout=300)
    if r.returncode != 0:
        raise OperationError(f"`kubectl {' '.join(args)}`: {r.stderr.decode(errors='replace').strip()[-600:]}")
    try:
        return json.loads(r.stdout)
    except ValueError as e:
        raise OperationError(f"`kubectl {' '.join(args)} -o json` printed no JSON ({e})") from None


def rewrite_secrets(cd: ClusterDir, progress: Progress, only: set[str] | None = None) -> tuple[int, int]:
    """Replace every Secret (or those in `only`, as namespace/name) through the API, unchanged:
    the apiserver encrypts each again with its first key. Per namespace one `kubectl replace`
    of the list (the names it prints are the ones done); each other one is read again and
    replaced alone, a few times (a conflict: it changed meanwhile). Returns (replaced, gone)."""
    items = [s for s in _kubectl_json(cd, "get", "secrets", "--all-namespaces")["items"]
             if only is None or _path(s) in only]
    by_ns: dict[str, list[dict]] = {}
    for s in items:
        by_ns.setdefault(s["metadata"]["namespace"], []).append(s)
    replaced = gone = 0
    failed: list[str] = []
    for ns, secrets in sorted(by_ns.items()):
        listing = json.dumps({"apiVersion": "v1", "kind": "List", "items": secrets}).encode()
        r = kubectl(cd, "replace", "-f", "-", "-o", "name", input=listing, timeout=300)
        done = {line.strip().removeprefix("secret/") for line in r.stdout.decode(errors="replace").splitlines()}
        again = [s["metadata"]["name"] for s in secrets if s["metadata"]["name"] not in done]
        outcomes = [_replace_one(cd, ns, name) for name in again]
        ok = len(secrets) - len(again) + outcomes.count("replaced")
        replaced += ok
        gone += outcomes.count("gone")
        failed += [f"{ns}/{name}: {o}" for name, o in zip(again, outcomes, strict=True) if o not in ("replaced", "gone")]
        progress(f"  {ns}: {ok} of {len(secrets)} Secret(s) rewritten"
                 + (f" ({len(again)} read again and replaced alone, {outcomes.count('gone')} deleted meanwhile)"
                    if again else ""))
    if failed:
        raise OperationError(f"{len(failed)} Secret(s) could not be rewritten through the API:\n  "
                             + "\n  ".join(failed[:20]) + "\nthe old key stays until they are: run "
                             "`hardway secrets rotate` again")
    return replaced, gone


def _path(secret: dict) -> str:
    return f"{secret['metadata']['namespace']}/{secret['metadata']['name']}"


def _replace_one(cd: ClusterDir, ns: str, name: str) -> str:
    """"replaced", "gone" (deleted meanwhile), or the last error."""
    last = ""
    for attempt in range(REPLACE_TRIES):
        if attempt:
            time.sleep(attempt)
        got = kubectl(cd, "-n", ns, "get", "secret", name, "-o", "json", timeout=60)
        if got.returncode != 0:
            last = got.stderr.decode(errors="replace").strip()
            if "NotFound" in last:
                return "gone"
            continue
        r = kubectl(cd, "replace", "-f", "-", input=got.stdout, timeout=60)
        if r.returncode == 0:
            return "replaced"
        last = r.stderr.decode(errors="replace").strip()
        if "NotFound" in last:
            return "gone"
    return last[-300:]


def _rewrite_step(spec: ClusterSpec, cd: ClusterDir, opts: Options, r: Rotation, report: RotateReport,
                  progress: Progress) -> None:
    """Rewrite, then read etcd: done when every Secret there carries the new key."""
    only: set[str] | None = None
    for _ in range(REWRITE_PASSES):
        replaced, gone = rewrite_secrets(cd, progress, only)
        report.rewritten += replaced
        report.gone += gone
        by_key = stored_keys(spec, cd, opts, progress)
        others = {k: v for k, v in by_key.items() if k != r.new}
        if not others:
            progress(f"  etcd: all {len(by_key.get(r.new, []))} Secret(s) carry {r.new}")
            return
        only = {p for paths in others.values() for p in paths}
        progress(f"  etcd: {len(only)} Secret(s) not with {r.new} yet ({describe_keys(others)}): rewriting them again")
    raise OperationError(f"after {REWRITE_PASSES} passes, Secrets in etcd still not encrypted with {r.new}: "
                         f"{describe_keys(others)}. {r.old} stays in {cd.encryption_key} until none needs "
                         "it: run `hardway secrets rotate` again")


def rotate(directory: str | Path, progress: Progress = lambda _m: None, opts: Options | None = None,
           dry_run: bool = False) -> RotateReport:
    """Rotate the encryption key, or finish the rotation recorded in DIR/secrets."""
    started = time.monotonic()
    opts = opts or Options()
    cd = ClusterDir.at(directory)
    spec = load_spec(cd.spec).spec
    with cluster_lock(directory, "secrets rotate"):
        keys = read_keys(cd)
        r = load_rotation(cd)
        report = RotateReport("", "", dry_run)
        if r is None:
            r = begin(cd, keys)
            if not dry_run:
                save_rotation(cd, r)
        else:
            report.resumed = r.done
            progress(f"resuming the rotation {r.old} -> {r.new} recorded in {cd.encryption_rotation}: "
                     + (f"done: {', '.join(r.done)}" if r.done else "no step done yet"))
        report.old, report.new = r.old, r.new
        for index in range(len(r.done), len(STEPS)):
            step = STEPS[index]
            progress(f"== step {index + 1}/{len(STEPS)} {step.name}: {step.does.format(old=r.old, new=r.new)}"
                     + (" (dry run: nothing changed)" if dry_run else ""))
            target = keys_for(cd, r, index, keys)
            if dry_run:
                keys = target
                continue
            t = time.monotonic()
            try:
                if write_atomic(cd.encryption_key, format_keys(target), SECRET_MODE):
                    progress(f"  {cd.encryption_key}: {', '.join(k.name for k in target)} (write key first)")
                keys = target
                if step.rolls:
                    roll(Path(directory), progress, opts)
                else:
                    _rewrite_step(spec, cd, opts, r, report, progress)
            except BaseException:
                progress(f"the key rotation stopped in step {index + 1} ({step.name}); `hardway secrets rotate` "
                         "resumes it (the keys and the steps done are kept in "
                         f"{cd.secrets})")
                raise
            r = replace(r, done=r.done + (step.name,))
            save_rotation(cd, r)
            report.steps[step.name] = round(time.monotonic() - t, 2)
        if not dry_run:
            by_key = stored_keys(spec, cd, opts, progress)
            cd.encryption_rotation.unlink()
            others = {k: v for k, v in by_key.items() if k != r.new}
            if others:  # cannot be: the rewrite step saw none, and every apiserver writes with r.new
                raise OperationError(f"the rotation to {r.new} is done, but etcd holds Secrets with other keys: "
                                     f"{describe_keys(others)}")
            report.secrets = len(by_key.get(r.new, []))
    report.seconds = round(time.monotonic() - started, 2)
    return report


__all__ = ["STEPS", "RotateReport", "Rotation", "keys_for", "load_rotation", "rotate"]
