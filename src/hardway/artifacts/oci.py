"""OCI image layout tarballs written from plain files: images without a registry.

`ctr -n k8s.io images import FILE` takes the result; the image's name comes from the
`io.containerd.image.name` annotation. Output is deterministic (fixed mtimes, sorted
entries), so the same inputs give the same digest and a cache can key on it.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path

from ..fsio import write_atomic


@dataclass(frozen=True)
class ImageFile:
    content: bytes
    mode: int = 0o755
    symlink: str | None = None  # set: a symbolic link to this target (content is ignored)
    directory: bool = False  # set: a directory with this mode (e.g. /tmp 1777)


def symlink(target: str) -> ImageFile:
    """An image entry that is a symbolic link, e.g. /bin/sh -> busybox."""
    return ImageFile(b"", 0o777, target)


def directory(mode: int = 0o755) -> ImageFile:
    return ImageFile(b"", mode, directory=True)


def tree_files(roots: list[Path], skip: tuple[str, ...] = ()) -> dict[str, ImageFile]:
    """The files, symbolic links and directories under each root, as image entries (a later
    root's entry replaces an earlier one's). Paths starting with a `skip` prefix are left out."""
    files: dict[str, ImageFile] = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            rel_dir = os.path.relpath(dirpath, root)
            for name in sorted(dirnames) + sorted(filenames):
                path = Path(dirpath) / name
                rel = name if rel_dir == "." else f"{rel_dir}/{name}"
                if rel.startswith(".") and rel_dir == "." or any((rel + "/").startswith(p) for p in skip):
                    continue
                st = path.lstat()
                if stat.S_ISLNK(st.st_mode):
                    files[rel] = symlink(os.readlink(path))
                elif stat.S_ISDIR(st.st_mode):
                    files.setdefault(rel, directory(stat.S_IMODE(st.st_mode)))
                elif stat.S_ISREG(st.st_mode):
                    files[rel] = ImageFile(path.read_bytes(), stat.S_IMODE(st.st_mode))
            dirnames[:] = [d for d in dirnames if not (Path(dirpath) / d).is_symlink()]
    return files


def _tar(entries: dict[str, bytes | tuple[bytes, int] | ImageFile], gz: bool) -> bytes:
    """A tar of `entries` (path -> content, (content, mode) or ImageFile); directories added as needed."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs: set[str] = set()
        for path in sorted(entries):
            parts = path.strip("/").split("/")
            for i in range(1, len(parts)):
                d = "/".join(parts[:i])
                if d not in dirs:
                    dirs.add(d)
                    info = tarfile.TarInfo(d)
                    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
                    tar.addfile(info)
            value = entries[path]
            if isinstance(value, ImageFile) and value.directory:
                if path.strip("/") not in dirs:
                    dirs.add(path.strip("/"))
                    info = tarfile.TarInfo(path.strip("/"))
                    info.type, info.mode, info.mtime = tarfile.DIRTYPE, value.mode, 0
                    tar.addfile(info)
                continue
            if isinstance(value, ImageFile) and value.symlink is not None:
                info = tarfile.TarInfo(path.strip("/"))
                info.type, info.linkname, info.mode, info.mtime = tarfile.SYMTYPE, value.symlink, 0o777, 0
                tar.addfile(info)
                continue
            if isinstance(value, ImageFile):
                content, mode = value.content, value.mode
            else:
                content, mode = value if isinstance(value, tuple) else (value, 0o644)
            info = tarfile.TarInfo(path.strip("/"))
            info.size, info.mode, info.mtime = len(content), mode, 0
            tar.addfile(info, io.BytesIO(content))
    data = buf.getvalue()
    if gz:
        out = io.BytesIO()
        with gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as g:
            g.write(data)
        return out.getvalue()
    return data


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def image_tar(
    ref: str,
    files: dict[str, ImageFile],
    entrypoint: list[str],
    cmd: list[str] | None = None,
    env: list[str] | None = None,
    arch: str = "amd64",
    user: str | None = None,
) -> bytes:
    """An OCI image layout tarball (oci-layout, index.json, blobs/sha256/...) of one layer."""
    layer_tar = _tar(dict(files), gz=False)
    layer = gzip.compress(layer_tar, mtime=0)
    config_obj: dict = {
        "architecture": arch,
        "os": "linux",
        "config": {**({"Entrypoint": entrypoint} if entrypoint else {}), "Env": env or ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [_sha(layer_tar)]},
        "history": [{"created_by": "hardway (OCI image from files)"}],
    }
    if cmd:
        config_obj["config"]["Cmd"] = cmd
    if user:
        config_obj["config"]["User"] = user
    config = json.dumps(config_obj, sort_keys=True).encode()
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": _sha(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": _sha(layer), "size": len(layer)}],
    }, sort_keys=True).encode()
    tag = ref.rsplit(":", 1)[1] if ":" in ref.rsplit("/", 1)[-1] else "latest"
    index = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": _sha(manifest),
            "size": len(manifest),
            "platform": {"architecture": arch, "os": "linux"},
            "annotations": {"io.containerd.image.name": ref, "org.opencontainers.image.ref.name": tag},
        }],
    }, sort_keys=True).encode()
    blobs = {f"blobs/sha256/{_sha(b)[7:]}": b for b in (layer, config, manifest)}
    return _tar({"oci-layout": b'{"imageLayoutVersion":"1.0.0"}', "index.json": index, **blobs}, gz=False)


def write_image(dest: Path, ref: str, files: dict[str, ImageFile], entrypoint: list[str],
                cmd: list[str] | None = None, user: str | None = None) -> bool:
    return write_atomic(dest, image_tar(ref, files, entrypoint, cmd, user=user), 0o644)


def image_refs(path: Path) -> list[str]:
    """The image names an OCI layout tarball carries (what `ctr images import` will create).
    Raises ValueError, saying why, for a file that is not a tar or has no readable index."""
    return list(image_digests(path))


def image_digests(path: Path) -> dict[str, str]:
    """image name -> the manifest digest it will have in containerd after `ctr images import`
    (what `ctr images ls` shows as DIGEST). Raises ValueError like image_refs."""
    try:
        with tarfile.open(path) as tar:
            try:
                member = tar.extractfile("index.json")
            except KeyError:
                member = None
            if member is None:
                return []
            index = json.loads(member.read())
    except (tarfile.TarError, OSError, EOFError) as e:
        raise ValueError(f"not a readable tar archive ({e})") from None
    except ValueError as e:  # JSON, or UTF-8
        raise ValueError(f"its index.json is not JSON ({e})") from None
    refs: dict[str, str] = {}
    try:
        for m in index.get("manifests", []):
            ann = m.get("annotations") or {}
            ref = ann.get("io.containerd.image.name") or ann.get("org.opencontainers.image.ref.name")
            if ref and ref not in refs:
                refs[str(ref)] = str(m.get("digest", ""))
    except (AttributeError, TypeError):
        raise ValueError("its index.json is not an OCI image index") from None
    return refs
