"""Snapshots: source trees unpacked once from verified archives, content-addressed in the cache.

Why: a thousand tasks over thirty projects must not store thirty thousand copies of source;
each task is its project's snapshot plus a break patch. A snapshot lives under
``<cache>/corpus/snapshots/<key>/tree`` where ``key`` is the sha256 of the archive bytes (of
the archives' digests, for a Debian source with several), with ``snapshot.json`` holding the
tree's own hash so a damaged or edited snapshot is detected before a task is made from it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tarfile
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from ..envs import deps

__all__ = ["SnapshotError", "check_snapshot", "snapshot", "snapshot_key", "tree_sha256"]


class SnapshotError(ValueError):
    """An archive cannot be unpacked safely, or a cached snapshot no longer matches its hash."""


def snapshot_key(archives: list[Path]) -> str:
    """sha256 of the archive (one) or of the archives' sha256s joined (several)."""
    digests = [hashlib.sha256(Path(a).read_bytes()).hexdigest() for a in archives]
    if len(digests) == 1:
        return digests[0]
    return hashlib.sha256("\n".join(digests).encode()).hexdigest()


def tree_sha256(root: Path) -> str:
    """Hash of a tree: every regular file's relative path, executable bit and bytes, and every
    symlink's target, in sorted order (directories implied)."""
    h = hashlib.sha256()
    root = Path(root)
    entries = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            entries.append(Path(dirpath) / name)
    for p in sorted(entries, key=lambda q: q.relative_to(root).as_posix()):
        rel = p.relative_to(root).as_posix()
        if p.is_symlink():
            h.update(f"L\0{rel}\0{os.readlink(p)}\0".encode())
        else:
            x = "x" if os.stat(p).st_mode & stat.S_IXUSR else "-"
            h.update(f"F\0{rel}\0{x}\0".encode() + p.read_bytes() + b"\0")
    return h.hexdigest()


def _safe_rel(name: str, archive: Path) -> PurePosixPath:
    rel = PurePosixPath(name)
    if rel.is_absolute() or ".." in rel.parts:
        raise SnapshotError(f"{archive.name}: member {name!r} escapes the tree; refusing")
    return rel


def _top_dir(names: list[str]) -> str | None:
    """The single top-level directory every member lives under (sdists, npm's package/)."""
    tops = {PurePosixPath(n).parts[0] for n in names if PurePosixPath(n).parts}
    if len(tops) == 1:
        top = tops.pop()
        if any(len(PurePosixPath(n).parts) > 1 for n in names):
            return top
    return None


def _extract(archive: Path, dest: Path, strip_top: bool) -> None:
    if archive.name.endswith(".zip"):
        with zipfile.ZipFile(archive) as zf:
            names = [i.filename for i in zf.infolist() if not i.is_dir()]
            top = _top_dir(names) if strip_top else None
            for info in zf.infolist():
                if info.is_dir():
                    continue
                rel = _safe_rel(info.filename, archive)
                if top is not None:
                    rel = PurePosixPath(*rel.parts[1:])
                out = dest / rel
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(zf.read(info))
                if (info.external_attr >> 16) & 0o111:
                    os.chmod(out, 0o755)
        return
    with tarfile.open(archive) as tf:
        members = [m for m in tf.getmembers() if m.isfile() or m.issym() or m.isdir()]
        top = _top_dir([m.name for m in members]) if strip_top else None
        for m in members:
            rel = _safe_rel(m.name, archive)
            if top is not None:
                if len(rel.parts) <= 1:
                    continue
                rel = PurePosixPath(*rel.parts[1:])
            out = dest / rel
            if m.isdir():
                out.mkdir(parents=True, exist_ok=True)
                continue
            out.parent.mkdir(parents=True, exist_ok=True)
            if m.issym():
                landing = os.path.normpath(os.path.join(str(rel.parent), m.linkname))
                if os.path.isabs(m.linkname) or landing.split("/")[0] == "..":
                    continue  # a link out of the tree is dropped, never followed
                os.symlink(m.linkname, out)
                continue
            src = tf.extractfile(m)
            if src is None:
                continue
            out.write_bytes(src.read())
            os.chmod(out, 0o755 if m.mode & 0o111 else 0o644)


def snapshot(archives: list[Path]) -> tuple[Path, str]:
    """(tree dir, tree sha256) of the archives' contents, unpacked once into the cache.

    The first archive's single top-level directory is stripped (``six-1.17.0/``,
    ``package/``); later ones (a Debian ``debian.tar.xz``) are unpacked at the tree root.
    """
    if not archives:
        raise SnapshotError("no archives to unpack")
    key = snapshot_key(archives)
    final = deps.cache_dir() / "corpus" / "snapshots" / key
    meta = final / "snapshot.json"
    if meta.is_file():
        return final / "tree", json.loads(meta.read_text())["tree_sha256"]
    final.parent.mkdir(parents=True, exist_ok=True)
    with deps._file_lock(final.parent / (key + ".lock")):
        if meta.is_file():
            return final / "tree", json.loads(meta.read_text())["tree_sha256"]
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=final.parent))
        try:
            tree = tmp / "tree"
            tree.mkdir()
            for i, a in enumerate(archives):
                _extract(Path(a), tree, strip_top=(i == 0))
            th = tree_sha256(tree)
            (tmp / "snapshot.json").write_text(
                json.dumps({"archives": [Path(a).name for a in archives], "tree_sha256": th})
            )
            if final.exists():
                shutil.rmtree(final)
            os.rename(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final / "tree", th


def check_snapshot(tree: Path, expected: str) -> None:
    """Refuse a snapshot whose contents no longer hash to what the manifest recorded."""
    got = tree_sha256(tree)
    if got != expected:
        raise SnapshotError(
            f"snapshot {tree} hashes to {got}, the manifest records {expected}; delete it "
            "to have it unpacked again"
        )
