"""Where a run writes: local paths or storage URIs, shared by every process, written once.

A run's `out_dir` may be a local path (made absolute) or a URI that etils/orbax/tensorstore
understand (`gs://bucket/run`, `s3://...`), kept exactly as given: `pathlib.Path("gs://b/r")`
would silently become a local directory `gs:/b/r`.

In a multi-process run every process must see the same out_dir (orbax writes each process's
shards there and process 0 finalizes), so `check_shared_storage` proves it at start-up with a
file each process writes and all others must read back; it fails on every process with one
clear message instead of a hang in the first checkpoint save. Run-level files (config,
summary, metrics, tokenizer, exports) are written by process 0 only (`is_primary`).
"""

from __future__ import annotations

import os
import time

from etils import epath

from jaxrepair import multihost
from jaxrepair.multihost import is_primary


class StorageError(RuntimeError):
    """The run directory is unusable (unknown URI scheme, not shared by all processes)."""


def run_path(p: str | os.PathLike) -> epath.Path:
    """`p` as an etils path: URIs kept exactly as given, local paths made absolute.

    Raises StorageError for a URI whose scheme etils does not know (it would otherwise turn
    into a local directory named after the scheme).
    """
    if isinstance(p, epath.Path) and "://" in str(p):
        return p
    s = os.fspath(p)
    if "://" in s:
        try:
            out = epath.Path(s)
        except KeyError:  # etils has no path class for this scheme
            out = None
        if out is None or str(out) != s.rstrip("/"):
            raise StorageError(
                f"{s}: storage scheme {s.split('://', 1)[0]}:// is not supported; use a local "
                "path or gs://, s3://, az:// (etils/tensorstore)"
            )
        return out
    return epath.Path(os.path.abspath(s))


def is_uri(p: str | os.PathLike) -> bool:
    """True for `scheme://...` paths (cloud storage), False for local paths."""
    return "://" in os.fspath(p)


def write_text_once(path: epath.Path, text: str) -> None:
    """Write a run-level text file from process 0 only (every process may call it)."""
    if is_primary():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def _wait_readable(path: epath.Path, want: str, deadline: float) -> bool:
    delay = 0.02
    while True:
        try:
            if path.read_text() == want:
                return True
        except (FileNotFoundError, OSError):
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(min(delay, max(deadline - time.monotonic(), 0.0)))
        delay = min(delay * 2, 0.5)


def check_shared_storage(
    directory: epath.Path, timeout_s: float = 30.0, visibility_s: float = 5.0
) -> None:
    """Collective start-up check that every process sees the same `directory`.

    Process 0 draws a nonce and broadcasts it; each process writes `.shared-check-NONCE-pI`
    with its own line; after a barrier every process reads all the others' files (waiting up to
    `visibility_s` for storage that shows new files late); the matrix of who saw whom is
    gathered, so every process raises the same StorageError, naming the first process that
    cannot see another's file. Returns at once in a single-process run. All processes must call
    it (it holds collectives), before the first checkpoint save or restore.
    """
    import jax

    n = jax.process_count()
    directory.mkdir(parents=True, exist_ok=True)
    if n == 1:
        return
    start = time.monotonic()
    me = jax.process_index()
    tag = multihost.broadcast_object(os.urandom(8).hex() if is_primary() else None)
    name = f".shared-check-{tag}-p{{}}"
    line = f"{tag} {{}}\n"
    mine = directory / name.format(me)
    mine.write_text(line.format(me))
    multihost.sync(f"jaxrepair shared storage check {tag} written")
    deadline = min(start + timeout_s / 2, time.monotonic() + visibility_s)
    seen = [
        other == me or _wait_readable(directory / name.format(other), line.format(other), deadline)
        for other in range(n)
    ]
    everyone = multihost.allgather_objects(seen)  # everyone[reader][writer]
    try:
        mine.unlink()
    except OSError:  # pragma: no cover - best effort
        pass
    blind = [(r, w) for r in range(n) for w in range(n) if not everyone[r][w]]
    if blind:
        reader, writer = blind[0]
        raise StorageError(
            f"out_dir {directory} is not shared by all {n} processes: process {reader} cannot "
            f"see the file {name.format(writer)} that process {writer} wrote there "
            f"({len(blind)} of {n * (n - 1)} process pairs are blind). Every host must see the "
            "same out_dir: use a storage URI (gs://bucket/run) or a shared file system"
        )


def save_dir_once(directory: epath.Path, write_local) -> None:
    """Process 0 only: `write_local(local_dir)` writes files, which land in `directory`
    (directly when it is local, copied file by file when it is a storage URI)."""
    if not is_primary():
        return
    if not is_uri(directory):
        directory.mkdir(parents=True, exist_ok=True)
        write_local(directory)
        return
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        write_local(Path(tmp))
        directory.mkdir(parents=True, exist_ok=True)
        for f in sorted(Path(tmp).iterdir()):
            if f.is_file():
                (directory / f.name).write_bytes(f.read_bytes())
