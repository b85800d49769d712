"""Download what a cluster needs, verify it against the published checksums, cache it.

Sources: upstream (`https://` + the layout path; the default), or `spec.artifacts.mirror`: an
`http(s)://` URL prefix or a local directory (relative paths: to the cluster directory) with
the mirror layout. Every file is checked against the checksum file its project publishes
beside it (layout.py), then stored content-addressed under `cache_dir()/blobs/sha256/<hex>`.
`cache_dir()/index.json` maps each source URL to the digest it gave, so a second fetch from
the same source transfers nothing. A download goes to a temporary file and is renamed into
the store only after its digest matched: a bad file is never cached.

A checksum file vouches only as far as its source is trusted. `fetch_for_spec` also holds
every digest to the cluster's `DIR/artifacts.lock` (recorded at the first fetch, lock.py) and
to the digests pinned in `spec.artifacts.digests`, whatever the source publishes.

The deploy step gets programs with `Fetched.binary(artifact, name)`, which matches
`hardway.render.Binary(name, artifact)`: a plain binary is its blob; a program inside an
archive is extracted once into `cache_dir()/unpacked/<archive digest>/<name>`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import http.client
import json
import os
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from ..clusterdir import ClusterDir
from ..errors import OperationError, UsageError
from . import layout
from .cache import cache_dir, sha256_file
from .debian import Progress, _quiet
from .layout import ChecksumFormatError, Download
from ..lock import cluster_lock
from .lock import ArtifactLock

TIMEOUT = 60  # seconds without progress on one connection
CHUNK = 1 << 20


# ---------------------------------------------------------------------------------------------
# sources


class NotInSource(OperationError):
    """The source has no such file (a 404, a path missing from a mirror directory)."""


class FetchFailed(OperationError):
    """Some downloads failed; `absent`: the keys the source does not have at all."""

    def __init__(self, message: str, absent: list[str]) -> None:
        super().__init__(message)
        self.absent = absent


class Source:
    """Where files come from: upstream, an HTTP(S) mirror, or a mirror directory."""

    def __init__(self, mirror: str | None = None, base_dir: Path | None = None) -> None:
        self.dir: Path | None = None
        self.prefix: str | None = None
        if not mirror:
            self.kind = "upstream"
            self.prefix = "https://"
        elif mirror.startswith(("http://", "https://")):
            self.kind = "http"
            self.prefix = mirror.rstrip("/") + "/"
        else:
            raw = mirror.removeprefix("file://") if mirror.startswith("file://") else mirror
            p = Path(raw).expanduser()
            if not p.is_absolute():
                p = (base_dir or Path(".")) / p
            if not p.is_dir():
                raise UsageError(f"artifacts mirror {mirror!r}: {p} is not a directory (a mirror is an "
                                 "http(s):// URL or a directory with the mirror layout)")
            self.kind = "dir"
            self.dir = p.resolve()

    def url(self, rel: str) -> str:
        if self.dir is not None:
            return (self.dir / rel).as_uri()
        return f"{self.prefix}{rel}"

    def describe(self) -> str:
        return {"upstream": "upstream release sites", "http": f"mirror {self.prefix}",
                "dir": f"mirror directory {self.dir}"}[self.kind]

    @contextlib.contextmanager
    def open(self, rel: str) -> Iterator[tuple[BinaryIO, int | None]]:
        url = self.url(rel)
        if self.dir is not None:
            path = self.dir / rel
            try:
                f = open(path, "rb")
            except FileNotFoundError:
                raise NotInSource(f"not in the mirror: {path}") from None
            with f:
                yield f, os.fstat(f.fileno()).st_size
            return
        req = urllib.request.Request(url, headers={"User-Agent": "hardway"})
        try:
            resp = urllib.request.urlopen(req, timeout=TIMEOUT)  # noqa: S310 (http/https only)
        except urllib.error.HTTPError as e:
            where = "upstream" if self.kind == "upstream" else "the mirror"
            error = NotInSource if e.code == 404 else OperationError
            raise error(f"{url}: HTTP {e.code} {e.reason} (is it in {where}?)") from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            hint = (" Without access to the upstream sites, set spec.artifacts.mirror to a mirror "
                    "(`hardway artifacts mirror build`, `hardway artifacts serve`)." if self.kind == "upstream" else "")
            raise OperationError(f"cannot download {url}: {reason}.{hint}") from None
        with resp:
            length = resp.headers.get("Content-Length")
            yield resp, int(length) if length and length.isdigit() else None

    def read_text(self, rel: str, limit: int = 1 << 20) -> str:
        with self.open(rel) as (f, _size):
            data = f.read(limit + 1)
        if len(data) > limit:
            raise OperationError(f"{self.url(rel)}: too large for a checksum file")
        return data.decode("utf-8", errors="replace")


# ---------------------------------------------------------------------------------------------
# the store


class Store:
    """Content-addressed blobs plus the URL -> digest index, under one cache root."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else cache_dir()
        self.blobs = self.root / "blobs" / "sha256"
        self.index_path = self.root / "index.json"

    def blob(self, hexdigest: str) -> Path:
        return self.blobs / hexdigest

    def index(self) -> dict[str, dict]:
        try:
            return json.loads(self.index_path.read_text()).get("urls", {})
        except FileNotFoundError:
            return {}
        except (ValueError, AttributeError):
            return {}  # a damaged index only costs a re-download

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def record(self, url: str, hexdigest: str, size: int) -> None:
        with self._locked():
            urls = self.index()
            urls[url] = {"sha256": hexdigest, "size": size}
            data = json.dumps({"version": 1, "urls": dict(sorted(urls.items()))}, indent=1) + "\n"
            tmp = self.index_path.with_name(f".index.json.{os.getpid()}")
            tmp.write_text(data)
            os.replace(tmp, self.index_path)

    def lookup(self, url: str) -> str | None:
        """The digest `url` gave last time, if its blob is still here, intact in size."""
        entry = self.index().get(url)
        if not entry:
            return None
        blob = self.blob(entry["sha256"])
        try:
            return entry["sha256"] if blob.stat().st_size == entry["size"] else None
        except FileNotFoundError:
            return None

    def tmpdir(self) -> Path:
        d = self.root / "tmp"
        d.mkdir(parents=True, exist_ok=True)
        return d


def _mode(executable: bool) -> int:
    return 0o755 if executable else 0o644


# ---------------------------------------------------------------------------------------------
# fetching


@dataclass
class Fetched(Mapping[str, Path]):
    """Download key ("kubernetes-server/kubelet", "etcd", "image/pause-3.2") -> cached file."""

    files: dict[str, Path]
    downloads: dict[str, Download]
    store: Store
    downloaded: list[str] = field(default_factory=list)  # keys transferred this run
    reused: list[str] = field(default_factory=list)  # keys already in the cache
    source: str = ""

    def __getitem__(self, key: str) -> Path:
        return self.files[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.files)

    def __len__(self) -> int:
        return len(self.files)

    def binary(self, artifact: str, name: str) -> Path:
        """The executable `name` of `artifact` (as in render.Binary), extracted if needed."""
        key = f"{artifact}/{name}" if artifact == "kubernetes-server" else artifact
        if key not in self.downloads:
            raise KeyError(f"{artifact}/{name}: not fetched (fetched: {', '.join(sorted(self.downloads))})")
        d, path = self.downloads[key], self.files[key]
        if d.executable:
            if artifact != "kubernetes-server" and name != artifact:
                raise KeyError(f"{d.filename} is the {artifact} binary, not {name!r}")
            return path
        return extract_member(self.store, path, d.member(name), name)

    def binaries(self, wanted: Iterable) -> dict:
        """{b: path} for objects with .name and .artifact (hardway.render.Binary)."""
        return {b: self.binary(b.artifact, b.name) for b in wanted}


def extract_member(store: Store, archive: Path, member: str, name: str) -> Path:
    """`member` of the .tar.gz `archive` (a blob), extracted once as an executable."""
    out = store.root / "unpacked" / archive.name / name
    if out.exists():
        return out
    want = member.removeprefix("./")
    with tarfile.open(archive, "r:gz") as tar:
        for m in tar:
            if m.name.removeprefix("./") == want and m.isfile():
                src = tar.extractfile(m)
                break
        else:
            raise OperationError(f"{archive} (a cached archive) has no {member}")
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{name}.")
        try:
            with os.fdopen(fd, "wb") as f:
                while chunk := src.read(CHUNK):
                    f.write(chunk)
            os.chmod(tmp, 0o755)
            os.replace(tmp, out)
        except BaseException:
            os.unlink(tmp)
            raise
    return out


def _mb(n: int | None) -> str:
    return "? MB" if n is None else f"{n / 1e6:.1f} MB"


def _download(source: Source, d: Download, expected: str, checksum_url: str, store: Store,
              progress: Progress) -> int:
    """Download `d` into the store, verifying `expected`; returns its size. Nothing bad is kept."""
    url = source.url(d.path)
    fd, tmp_name = tempfile.mkstemp(dir=store.tmpdir(), prefix=f"{d.filename}.")
    tmp = Path(tmp_name)
    try:
        h = hashlib.sha256()
        size = 0
        started = last = time.monotonic()
        with os.fdopen(fd, "wb") as out, source.open(d.path) as (f, total):
            verb = "copying" if source.kind == "dir" else "downloading"
            progress(f"{verb} {d.filename} ({_mb(total)}) from {url}")
            try:
                while chunk := f.read(CHUNK):
                    out.write(chunk)
                    h.update(chunk)
                    size += len(chunk)
                    now = time.monotonic()
                    if total and now - last > 5:
                        last = now
                        progress(f"  {d.filename}: {100 * size // total}% of {_mb(total)}")
                out.flush()
                os.fsync(out.fileno())
            except (OSError, http.client.HTTPException) as e:  # a reset, a timeout, a full disk
                raise OperationError(
                    f"{url}: {verb} failed after {size} of {total if total is not None else '?'} bytes "
                    f"({str(e) or type(e).__name__}; cache {store.root}); nothing was cached. Run "
                    "the command again to retry") from None
        if total is not None and size != total:
            raise OperationError(f"{url}: download cut short ({size} of {total} bytes); nothing was cached")
        got = h.hexdigest()
        if got != expected:
            raise OperationError(
                f"checksum mismatch for {url}:\n"
                f"    published sha256 {expected} (in {checksum_url})\n"
                f"    downloaded        {got}\n"
                "  The file is damaged or was tampered with; it was NOT cached. Rebuild or repair the "
                "mirror (or retry, if upstream), then fetch again."
            )
        os.chmod(tmp, _mode(d.executable))
        store.blobs.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, store.blob(got))
        progress(f"  {d.filename}: sha256 verified ({time.monotonic() - started:.1f} s)")
        return size
    finally:
        tmp.unlink(missing_ok=True)


def _vouch(d: Download, digest: str, offered_by: str, pins: Mapping[str, str], lock: ArtifactLock | None) -> None:
    """Refuse a digest that the spec's pin or the cluster's lock (lock.py) contradicts. A pin is
    the user's deliberate word: it is checked instead of the lock, and then recorded in it."""
    pinned = pins.get(d.key)
    if pinned is not None:
        if pinned.removeprefix("sha256:") != digest:
            raise OperationError(f"{offered_by} offers sha256 {digest} for {d.filename}, but spec.artifacts.digests "
                                 f"pins {pinned}; nothing was taken. Check the pin, or the source.")
    elif lock is not None:
        lock.check(d, digest, offered_by)


def fetch(downloads: Iterable[Download], source: Source, store: Store | None = None,
          progress: Progress = _quiet, lock: ArtifactLock | None = None,
          pins: Mapping[str, str] | None = None) -> Fetched:
    """Fetch and verify each download (see the module doc). Raises OperationError naming every
    file that failed, after fetching the others. With `lock`, a digest other than the recorded
    one is refused and every digest taken is recorded (lock.py); `pins`: key -> "sha256:<hex>"
    that the checksum file must agree with."""
    store = store or Store()
    pins = pins or {}
    downloads = list(downloads)
    result = Fetched({}, {d.key: d for d in downloads}, store, source=source.describe())
    checksum_texts: dict[str, str] = {}
    failures: list[str] = []
    absent: list[str] = []  # keys the source does not have at all

    def expected_for(d: Download) -> tuple[str, str]:
        curl = source.url(d.checksum_path)
        if curl not in checksum_texts:
            checksum_texts[curl] = source.read_text(d.checksum_path)
        try:
            return layout.expected_digest(checksum_texts[curl], d.filename), curl
        except ChecksumFormatError as e:
            raise OperationError(f"checksum file {curl}: {e}") from None

    for d in downloads:
        url = source.url(d.path)
        try:
            known = store.lookup(url)
            if known and source.kind == "dir":
                # A local mirror costs nothing to re-check: follow it if it was rebuilt.
                if expected_for(d)[0] != known:
                    known = None
            if known:
                _vouch(d, known, f"the cache's record of {url}", pins, lock)
                path = store.blob(known)
                if d.executable and not os.access(path, os.X_OK):
                    os.chmod(path, 0o755)
                result.files[d.key] = path
                result.reused.append(d.key)
                if lock is not None:
                    lock.record(d, known, path.stat().st_size)
                continue
            expected, curl = expected_for(d)
            _vouch(d, expected, curl, pins, lock)
            blob = store.blob(expected)
            if blob.exists() and blob.stat().st_size > 0 and sha256_file(blob) == expected:
                # Same content already cached from another source: skip the transfer.
                if d.executable:
                    os.chmod(blob, 0o755)
                size = blob.stat().st_size
                result.reused.append(d.key)
            else:
                blob.unlink(missing_ok=True)
                size = _download(source, d, expected, curl, store, progress)
                result.downloaded.append(d.key)
            store.record(url, expected, size)
            result.files[d.key] = blob
            if lock is not None:
                lock.record(d, expected, size)
        except OperationError as e:
            failures.append(f"{d.key}: {e}")
            if isinstance(e, NotInSource):
                absent.append(d.key)
            progress(f"FAILED {d.key}: {str(e).splitlines()[0]}")
    if lock is not None and lock.save():
        # Even after a failure: what was verified stays recorded.
        progress(f"{lock.path}: " + "; ".join(lock.changes) + " (commit it with cluster.yaml)")
    if failures:
        raise FetchFailed(f"{len(failures)} of {len(downloads)} artifact(s) failed:\n" + "\n".join(failures), absent)
    return result


def fetch_for_cluster(spec, downloads: Iterable[Download], base_dir: Path, progress: Progress = _quiet,
                      store: Store | None = None, mirror: str | None = None, update_lock: bool = False) -> Fetched:
    """`downloads` for the cluster of `spec` (in `base_dir`): from `mirror` or its
    spec.artifacts.mirror, each digest held to its pins and to DIR/artifacts.lock."""
    source = Source(mirror if mirror is not None else spec.artifacts.mirror, base_dir)
    # DIR/artifacts.lock is read, extended and written back whole: one writer at a time (the
    # cluster lock is re-entrant, so `up`, which holds it already, goes straight on).
    Path(base_dir).mkdir(parents=True, exist_ok=True)  # where artifacts.lock is written
    with cluster_lock(base_dir, "artifacts fetch"):
        lock = ArtifactLock.load(ClusterDir.at(base_dir).artifacts_lock, update_lock)
        progress(f"fetching from {source.describe()}")
        return fetch(downloads, source, store, progress, lock, spec.artifacts.digests)


def fetch_for_spec(spec, base_dir: Path | None = None, progress: Progress = _quiet,
                   store: Store | None = None, mirror: str | None = None,
                   update_lock: bool = False) -> Fetched:
    """Everything `spec` needs (layout.downloads_for_spec), from `mirror` or spec.artifacts.mirror,
    each digest held to spec.artifacts.digests and to `base_dir`/artifacts.lock (lock.py;
    `update_lock` accepts digests that differ from it).

    Image entries that are paths (layout.image_is_path) are not fetched: they map to the
    file itself, relative to `base_dir` (the cluster directory), which must exist.
    """
    base_dir = Path(base_dir) if base_dir is not None else Path(".")
    result = fetch_for_cluster(spec, layout.downloads_for_spec(spec), base_dir, progress, store, mirror, update_lock)
    missing = []
    for entry in spec.artifacts.images:
        if layout.image_is_path(entry):
            p = Path(entry).expanduser()
            p = p if p.is_absolute() else base_dir / p
            if not p.is_file():
                missing.append(f"spec.artifacts.images: {entry}: no such file ({p})")
            result.files[f"image/{entry}"] = p
    if missing:
        raise UsageError("\n".join(missing))
    return result


def source_url(mirror: str | None, rel: str, base_dir: Path | None = None) -> str:
    """The URL a file would be fetched from (for messages and tests)."""
    return Source(mirror, base_dir).url(rel)


__all__ = ["Fetched", "Source", "Store", "extract_member", "fetch", "fetch_for_cluster", "fetch_for_spec", "source_url"]
