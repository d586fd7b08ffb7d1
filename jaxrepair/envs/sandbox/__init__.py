"""One sandbox protocol, two backends: ``local`` (bubblewrap) and ``docker`` (Docker SDK).

Why: a build the agent controls is untrusted code; it must run with no network, a read-only
system, the workspace as its only writable place, and CPU, memory, process-count, wall-time
and output limits, the same way on a laptop and on a container fleet.
"""

from __future__ import annotations

import collections
import os
import shutil
import stat
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from ..task import Task

__all__ = [
    "DEPS_MOUNT",
    "WORKSPACE_MOUNT",
    "Limits",
    "RunResult",
    "Sandbox",
    "SandboxUnavailable",
    "make_sandbox",
]

WORKSPACE_MOUNT = "/workspace"  # where the workspace appears inside every sandbox
DEPS_MOUNT = "/opt/jaxrepair/deps"  # the dependency environment (read-only); site/ on PYTHONPATH


class SandboxUnavailable(RuntimeError):
    """The backend cannot run here (bubblewrap missing, no Docker daemon, ...)."""


@dataclass
class RunResult:
    """What one command did inside the sandbox."""

    exit_code: int
    output: str  # stdout+stderr interleaved, the tail kept when capped
    timed_out: bool
    duration_s: float
    truncated: bool
    infra_error: str | None  # the sandbox itself failed (not the command); retry, never score 0


@dataclass(frozen=True)
class Limits:
    """Resource limits for one command (defaults suit the bundled corpus)."""

    cpu_s: int = 120  # CPU seconds per process (RLIMIT_CPU)
    memory_mb: int = 2048  # address space per process (local) / cgroup memory (docker)
    nproc: int = 128  # processes+threads of the sandbox user
    fsize_mb: int = 256  # largest file a command may write
    output_bytes: int = 256 * 1024  # output kept (the tail)
    output_hard_bytes: int = 512 * 1024 * 1024  # kill the command after this much output
    cpus: float = 1.0  # docker: CPU share (nano_cpus)


@runtime_checkable
class Sandbox(Protocol):
    name: str

    def create_workspace(self, task: Task) -> Path: ...

    def run(
        self, workspace: Path, command: str, timeout_s: float, pins: dict[str, str] | None = None
    ) -> RunResult: ...

    def destroy_workspace(self, workspace: Path) -> None: ...

    def fingerprint(self) -> dict: ...


def copy_repo(src: Path, parent: str | None = None, prefix: str = "jaxrepair-ws-") -> Path:
    """A fresh copy of a repository in a new temp dir; symlinks stay symlinks (never followed)."""
    ws = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    shutil.copytree(src, ws, symlinks=True, dirs_exist_ok=True)
    os.chmod(ws, 0o755)
    return ws


def remove_tree(path: Path) -> None:
    """rm -rf that copes with read-only dirs a build may leave behind."""

    def onerror(func, p, _exc):  # noqa: ANN001
        try:
            parent = os.path.dirname(p)
            os.chmod(parent, os.stat(parent).st_mode | stat.S_IWUSR | stat.S_IXUSR)
            if os.path.isdir(p) and not os.path.islink(p):
                os.chmod(p, 0o700)
            func(p)
        except OSError:
            pass

    if os.path.lexists(path):
        shutil.rmtree(path, onerror=onerror)


@dataclass
class OutputTail:
    """Drains a stream, keeping only the last ``cap`` bytes; counts everything."""

    cap: int
    hard_cap: int
    marker: bytes | None = None  # a line the sandbox prints first: stripped, and recorded
    saw_marker: bool = False
    total: int = 0
    _head: bytes = b""
    _chunks: collections.deque = field(default_factory=collections.deque)
    _kept: int = 0
    over_hard_cap: threading.Event = field(default_factory=threading.Event)

    def feed(self, data: bytes) -> None:
        if self.marker is not None:  # still looking at the first bytes
            self._head += data
            if len(self._head) < len(self.marker) and self.marker.startswith(self._head):
                return
            data, self._head = self._head, b""
            if data.startswith(self.marker):
                self.saw_marker = True
                data = data[len(self.marker) :]
            self.marker = None
            if not data:
                return
        self.total += len(data)
        if len(data) >= self.cap:
            self._chunks.clear()
            self._chunks.append(data[-self.cap :])
            self._kept = self.cap
        else:
            self._chunks.append(data)
            self._kept += len(data)
            while self._kept - len(self._chunks[0]) >= self.cap:
                self._kept -= len(self._chunks.popleft())
        if self.total > self.hard_cap:
            self.over_hard_cap.set()

    def drain(self, stream: IO[bytes]) -> None:
        while True:
            data = stream.read1(65536) if hasattr(stream, "read1") else stream.read(65536)
            if not data:
                break
            self.feed(data)

    @property
    def truncated(self) -> bool:
        return self.total > self.cap

    def text(self) -> str:
        if self._head:  # the stream ended while it still looked like the marker
            self.marker, head, self._head = None, self._head, b""
            self.feed(head)
        data = b"".join(self._chunks)[-self.cap :]
        out = data.decode("utf-8", errors="replace")
        if self.truncated:
            out = (
                f"[... output truncated: {self.total - len(data)} of {self.total} bytes dropped ...]\n"
                + out
            )
        return out


def make_sandbox(kind: str = "local", **opts) -> Sandbox:
    """Build a sandbox backend: ``"local"`` (bubblewrap; ``unisolated=True`` to run without
    it) or ``"docker"``. Options: ``limits=Limits(...)`` and backend-specific ones."""
    if kind == "local":
        from .local import LocalSandbox

        return LocalSandbox(**opts)
    if kind == "docker":
        from .docker import DockerSandbox

        return DockerSandbox(**opts)
    raise ValueError(f"unknown sandbox kind {kind!r}; expected 'local' or 'docker'")
