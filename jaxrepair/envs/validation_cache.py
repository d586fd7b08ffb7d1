"""Validation results cached by the hash of the final workspace.

Why: in GRPO several rollouts of a group often end in the same workspace (the same edit);
building it once is enough. The cache is a directory shared by all farm workers: one JSON file
per key, written atomically, and a per-key ``flock`` so that concurrent identical builds wait
for the first instead of running twice. Infra errors are never cached (they must be retried).

The key covers everything a result depends on: the workspace content (paths, bytes, the
executable bit, symlink targets, empty directories) and the reward's environment fingerprint
(backend and image id, so results of different environments are never mixed; the validation
commands and guards; the task's content hash, since guards and the reference test count depend
on the repo and the reference fix; the corpus version), plus the result schema.
"""

from __future__ import annotations

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
from typing import Any

from .protocol import Outcome

__all__ = ["ValidationCache", "workspace_hash"]

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


class ValidationCache:
    """A directory of validation results shared by processes; see the module docstring."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
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
        per key across all processes sharing the directory, unless its outcome is infra_error
        (never stored, so the next caller computes again)."""
        key = self.key(task, workspace, sandbox)
        path = self.root / f"{key}.json"
        held = _held_keys()
        if key in held:  # a nested call for the same key in this thread: flock would deadlock
            return compute(), False
        held.add(key)
        try:
            return self._locked(key, path, compute)
        finally:
            held.discard(key)

    def _locked(self, key: str, path: Path, compute: Callable[[], Any]) -> tuple[Any, bool]:
        from .reward import ValidationResult

        with open(self.root / f"{key}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes or the process dies
            if path.is_file():
                try:
                    result = ValidationResult(**json.loads(path.read_text()))
                    self.hits += 1
                    return result, True
                except (json.JSONDecodeError, TypeError, ValueError):
                    path.unlink(missing_ok=True)  # corrupt or outdated entry: rebuild it
            result = compute()
            self.misses += 1
            if getattr(result, "outcome", Outcome.INFRA_ERROR) != Outcome.INFRA_ERROR:
                tmp = path.with_name(f".{key}.tmp{os.getpid()}")
                tmp.write_text(json.dumps(dataclasses.asdict(result)))
                os.replace(tmp, path)
            return result, False

    def validate(self, task: Any, workspace: Path, sandbox: Any, compute: Callable[[], Any]) -> Any:
        """The result only (the shape ``reward.validate_workspace(..., cache=)`` needs)."""
        return self.get_or_compute(task, workspace, sandbox, compute)[0]

    def entries(self) -> list[dict]:
        """Every stored result (for tests and inspection)."""
        out = []
        for p in sorted(self.root.glob("*.json")):
            try:
                out.append(json.loads(p.read_text()))
            except (OSError, json.JSONDecodeError):
                continue
        return out
