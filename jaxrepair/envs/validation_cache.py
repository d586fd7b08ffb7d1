"""Validation results cached by the hash of the final workspace.

Why: in GRPO several rollouts of a group often end in the same workspace (the same edit);
building it once is enough. Every worker computes the key of its workspace itself; where the
results live is a `ResultStore`:

- `DirectoryStore`: a directory shared by the workers of one host (the process farm): one JSON
  file per key, written atomically, and a per-key ``flock`` so that concurrent identical builds
  wait for the first instead of running twice;
- `CacheServer`: one owner of the directory serving workers on every node of a cluster (the
  Ray farm runs it as an actor beside the driver): a worker claims a key, builds, then puts
  the result; the others wait for it. A claim dies with its worker (``release_owner``), so a
  lost worker never blocks the rest.

Infra errors are never cached (they must be retried).

The key covers everything a result depends on: the workspace content (paths, bytes, the
executable bit, symlink targets, empty directories) and the reward's environment fingerprint
(backend and image id, so results of different environments are never mixed; the validation
commands and guards; the task's content hash, since guards and the reference test count depend
on the repo and the reference fix; the corpus version), plus the result schema.
"""

from __future__ import annotations

import asyncio
import dataclasses
import fcntl
import hashlib
import json
import os
import re
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, Protocol

from .protocol import Outcome

__all__ = ["CacheServer", "DirectoryStore", "ResultStore", "ValidationCache", "workspace_hash"]

# Caches that never change what a build validates (compiled objects DO count: a stale object
# file can change what `make` does, so only interpreter/tool caches are skipped).
_SKIP = re.compile(r"(^|/)(__pycache__|\.pytest_cache|\.mypy_cache|\.ruff_cache)(/|$)|\.py[co]$")


_local = threading.local()


def _held_keys() -> set[str]:
    if not hasattr(_local, "keys"):
        _local.keys = set()
    return _local.keys


def workspace_hash(workspace: Path) -> str:
    """sha256 over every entry's relative path and content; symlinks by target, never followed."""
    root = Path(workspace)
    if not root.is_dir():
        raise FileNotFoundError(f"workspace {root} is not a directory")
    entries: list[tuple[str, bytes]] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames + dirnames):
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root).replace(os.sep, "/")
            if _SKIP.search(rel):
                continue
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                entries.append((rel, b"L" + os.readlink(p).encode()))
            elif stat.S_ISDIR(st.st_mode):
                entries.append((rel, b"D"))
            elif stat.S_ISREG(st.st_mode):
                with open(p, "rb") as fh:
                    digest = hashlib.file_digest(fh, "sha256").digest()
                entries.append((rel, b"F" + (b"x" if st.st_mode & 0o111 else b"-") + digest))
            else:
                entries.append((rel, b"S"))  # fifo, socket, device: present, content irrelevant
    h = hashlib.sha256()
    for rel, sig in sorted(entries):
        h.update(rel.encode() + b"\0" + sig + b"\0")
    return h.hexdigest()


class ResultStore(Protocol):
    """Where validation results live, and who builds a key first. ``acquire`` returns the
    stored record of ``key``, or None after claiming the key for this caller, who then builds
    it and calls ``put`` (a result to keep) or ``release`` (nothing to keep, e.g. infra_error)."""

    def acquire(self, key: str) -> dict[str, Any] | None: ...

    def put(self, key: str, record: dict[str, Any]) -> None: ...

    def release(self, key: str) -> None: ...


class DirectoryStore:
    """Results as JSON files in a directory; a claim is an exclusive ``flock`` on the key's
    lock file (released by ``put``/``release``, or by the kernel when the process dies)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._claims: dict[str, IO[str]] = {}

    def read(self, key: str) -> dict[str, Any] | None:
        """The stored record, None when absent; a corrupt entry is removed (rebuilt later)."""
        path = self.root / f"{key}.json"
        if not path.is_file():
            return None
        try:
            rec = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            rec = None
        if not isinstance(rec, dict):
            path.unlink(missing_ok=True)
            return None
        return rec

    def write(self, key: str, record: dict[str, Any]) -> None:
        """Store ``record`` atomically (readers see the old file or the new one)."""
        path = self.root / f"{key}.json"
        tmp = path.with_name(f".{key}.tmp{os.getpid()}.{threading.get_ident()}")
        tmp.write_text(json.dumps(record))
        os.replace(tmp, path)

    def acquire(self, key: str) -> dict[str, Any] | None:
        lock = open(self.root / f"{key}.lock", "a")  # noqa: SIM115 - held until put/release
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes or the process dies
        rec = self.read(key)
        if rec is not None:
            lock.close()
            return rec
        self._claims[key] = lock
        return None

    def put(self, key: str, record: dict[str, Any]) -> None:
        try:
            self.write(key, record)
        finally:
            self.release(key)

    def release(self, key: str) -> None:
        lock = self._claims.pop(key, None)
        if lock is not None:
            lock.close()

    def entries(self) -> list[dict[str, Any]]:
        out = []
        for p in sorted(self.root.glob("*.json")):
            try:
                out.append(json.loads(p.read_text()))
            except (OSError, json.JSONDecodeError):
                continue
        return out


class CacheServer:
    """The one owner of a cache directory for workers on many nodes (run as an asyncio actor).

    ``acquire(key, owner)``: the stored record, or None with the key claimed by ``owner``;
    while another owner holds the claim the call waits for its result (at most ``wait_s``,
    then the caller builds too: a stuck builder costs a duplicate build, never a deadlock).
    ``release_owner`` drops every claim of a worker that died, waking its waiters."""

    def __init__(self, root: str | Path):
        self.store = DirectoryStore(root)
        self._claims: dict[str, str] = {}  # key -> owner building it
        self._done: dict[str, asyncio.Event] = {}  # key -> set when its claim ends
        self.hits = 0
        self.misses = 0

    async def acquire(self, key: str, owner: str, wait_s: float) -> dict[str, Any] | None:
        while True:
            rec = self.store.read(key)
            if rec is not None:
                self.hits += 1
                return rec
            holder = self._claims.get(key)
            if holder is None or holder == owner:
                self._claims[key] = owner
                self.misses += 1
                return None
            event = self._done.setdefault(key, asyncio.Event())
            try:
                await asyncio.wait_for(event.wait(), wait_s)
            except TimeoutError:
                self._end_claim(key)

    async def put(self, key: str, owner: str, record: dict[str, Any]) -> None:
        if record.get("outcome", Outcome.INFRA_ERROR) != Outcome.INFRA_ERROR:
            self.store.write(key, record)
        if self._claims.get(key) == owner:
            self._end_claim(key)

    async def release(self, key: str, owner: str) -> None:
        if self._claims.get(key) == owner:
            self._end_claim(key)

    async def release_owner(self, owner: str) -> int:
        """Drop every claim ``owner`` holds (it died); returns how many."""
        keys = [k for k, o in self._claims.items() if o == owner]
        for k in keys:
            self._end_claim(k)
        return len(keys)

    async def stats(self) -> dict[str, int]:
        """Lookups answered from the store (hits), claims granted (misses), open claims."""
        return {"hits": self.hits, "misses": self.misses, "claims": len(self._claims)}

    def _end_claim(self, key: str) -> None:
        self._claims.pop(key, None)
        event = self._done.pop(key, None)
        if event is not None:
            event.set()


class ValidationCache:
    """Validation results by workspace key: a directory of this host (``root``) or any other
    `ResultStore` (``store``); see the module docstring."""

    def __init__(self, root: str | Path | None = None, *, store: ResultStore | None = None):
        if (root is None) == (store is None):
            raise ValueError("ValidationCache needs exactly one of root (a directory) or store")
        self.root = Path(root) if root is not None else None
        self.store: ResultStore = store if store is not None else DirectoryStore(Path(root))
        self.hits = 0
        self.misses = 0

    def key(self, task: Any, workspace: Path, sandbox: Any) -> str:
        """What the result of validating ``workspace`` for ``task`` in ``sandbox`` depends on:
        the reward's environment fingerprint (backend and image id, validation commands and
        guards, task content, corpus version; pins come from the workspace's requirements.txt),
        the result schema and the workspace content."""
        from . import reward

        parts = {
            "fingerprint": reward.fingerprint(task, sandbox, None),
            "task_id": task.id,
            "schema": sorted(f.name for f in dataclasses.fields(reward.ValidationResult)),
            "workspace": workspace_hash(workspace),
        }
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()

    def get_or_compute(
        self, task: Any, workspace: Path, sandbox: Any, compute: Callable[[], Any]
    ) -> tuple[Any, bool]:
        """(result, hit). ``compute()`` returns a reward.ValidationResult; it runs at most once
        per key across everything sharing the store, unless its outcome is infra_error (never
        stored, so the next caller computes again)."""
        key = self.key(task, workspace, sandbox)
        held = _held_keys()
        if key in held:  # a nested call for the same key in this thread: the claim is ours
            return compute(), False
        held.add(key)
        try:
            return self._claimed(key, compute)
        finally:
            held.discard(key)

    def _claimed(self, key: str, compute: Callable[[], Any]) -> tuple[Any, bool]:
        from .reward import ValidationResult

        rec = self.store.acquire(key)
        if rec is not None:
            try:
                result = ValidationResult(**rec)
                self.hits += 1
                return result, True
            except (TypeError, ValueError):
                pass  # an entry of another shape: rebuilt (without a claim) and overwritten
        try:
            result = compute()
        except BaseException:
            self.store.release(key)
            raise
        self.misses += 1
        if getattr(result, "outcome", Outcome.INFRA_ERROR) != Outcome.INFRA_ERROR:
            self.store.put(key, dataclasses.asdict(result))
        else:
            self.store.release(key)
        return result, False

    def validate(self, task: Any, workspace: Path, sandbox: Any, compute: Callable[[], Any]) -> Any:
        """The result only (the shape ``reward.validate_workspace(..., cache=)`` needs)."""
        return self.get_or_compute(task, workspace, sandbox, compute)[0]

    def entries(self) -> list[dict]:
        """Every stored result of a directory cache (for tests and inspection)."""
        return self.store.entries() if isinstance(self.store, DirectoryStore) else []
