"""Deterministic fault injection for the environment farm (tests and chaos runs).

Why: "every started episode ends exactly once" must hold when workers die mid-build, builds
hang, or sandboxes cannot start. `FaultPlan` says which job of which episode fails how;
`WorkerSandbox`, the sandbox every farm worker uses, fires the fault from inside the worker at
the moment it would really happen, and logs what was running then.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from .farm_cleanup import child_pids, descendants
from .sandbox import RunResult, Sandbox
from .task import Task

__all__ = ["HANG_COMMAND", "FaultKey", "FaultPlan", "SandboxStartFailure", "WorkerSandbox"]

HANG_COMMAND = "sleep 3600"
FaultKey = tuple[str, int, int]  # (episode_id, step_index (-1: the reset), attempt)


@dataclasses.dataclass(frozen=True)
class FaultPlan:
    """Deterministic fault injection for tests and chaos runs.

    Each set holds (episode_id, step_index, attempt) triples; step_index -1 is the reset,
    attempt 0 the first try. A fault fires at the job's first sandbox command; a job that
    runs none gets it at its end, so every listed fault fires in its job:

    - kill: the worker SIGKILLs itself while the build runs (like the OOM killer would);
    - hang: the build command is replaced by a sandboxed ``sleep 3600``; the farm's step
      timeout must kill the worker and its sandbox;
    - sandbox_fail: no command of the job can start its sandbox (every run returns an infra
      error, as when bubblewrap or the container cannot start), so validation ends as
      infra_error after the reward's own retries.

    ``log_dir``: when set, each fired fault appends a JSON line (fault, key, worker pid and the
    pids of the sandbox processes running at that moment) to ``log_dir/faults.jsonl``.

    ``latency_s``: every reset and step is held back a random 0..latency_s seconds (drawn from
    ``latency_seed``) before it is queued: results then arrive in another order, which must
    not change what a driver produces.
    """

    kill: frozenset[FaultKey] = frozenset()
    hang: frozenset[FaultKey] = frozenset()
    sandbox_fail: frozenset[FaultKey] = frozenset()
    log_dir: str | None = None
    latency_s: float = 0.0
    latency_seed: int = 0

    def kind(self, key: FaultKey) -> str | None:
        for name in ("kill", "hang", "sandbox_fail"):
            if key in getattr(self, name):
                return name
        return None


class SandboxStartFailure(RuntimeError):
    """The sandbox could not be started (infrastructure, not the agent)."""


class WorkerSandbox:
    """The worker's sandbox: delegates to the real backend, counts builds (executions of the
    task's first build command) and fires the injected fault armed for the current job."""

    def __init__(self, inner: Sandbox, log_dir: str | None):
        self.inner = inner
        self.name = getattr(inner, "name", "?")
        self.log_dir = log_dir
        self.fault: str | None = None
        self.fault_key: FaultKey | None = None
        self.fired = False
        self.task: Task | None = None
        self.builds = 0

    def __getattr__(self, name: str) -> Any:  # image_for, image_id, limits, ...
        return getattr(self.inner, name)

    def arm(self, fault: str | None, key: FaultKey, task: Task) -> None:
        self.fault, self.fault_key, self.fired, self.task = fault, key, False, task

    def disarm(self) -> None:
        self.fault, self.fault_key, self.fired = None, None, False

    # -- protocol
    def fingerprint(self) -> dict:
        return self.inner.fingerprint()

    def create_workspace(self, task: Task) -> Path:
        return self.inner.create_workspace(task)

    def destroy_workspace(self, workspace: Path) -> None:
        self.inner.destroy_workspace(workspace)

    def run(
        self, workspace: Path, command: str, timeout_s: float, pins: dict[str, str] | None = None
    ) -> RunResult:
        if self.fault == "sandbox_fail":
            self._fire()
            return RunResult(
                -1, "", False, 0.0, False, f"injected sandbox start failure {self.fault_key}"
            )
        if self.fault in ("kill", "hang") and not self.fired:
            self.fired = True
            if self.fault == "hang":
                threading.Thread(
                    target=self._log_running, args=("hang", command), daemon=True
                ).start()
                return self.inner.run(workspace, HANG_COMMAND, 3600.0, None)
            threading.Thread(target=self._kill_when_running, args=(command,), daemon=True).start()
            self.inner.run(workspace, command, timeout_s, pins)
            time.sleep(3600)  # never report this job: the kill is on its way
        if self.task is not None and self.task.build and command == self.task.build[0]:
            self.builds += 1
        return self.inner.run(workspace, command, timeout_s, pins)

    # -- faults
    def end_of_job(self) -> None:
        """A fault armed for a job that made no sandbox operation fires now."""
        if self.fault is None or self.fired:
            return
        if self.fault == "sandbox_fail":
            self._fire()
            raise SandboxStartFailure(f"injected sandbox start failure {self.fault_key}")
        self._log(self.fault, "(no build in this job)", [])
        if self.fault == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(10**6)  # hang

    def _fire(self) -> None:
        if not self.fired:
            self.fired = True
            self._log("sandbox_fail", "", [])

    def _wait_children(self) -> list[int]:
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            kids = child_pids(os.getpid())
            if kids:
                time.sleep(0.05)  # let the sandbox get going
                return descendants(os.getpid())
            time.sleep(0.01)
        return []

    def _log_running(self, fault: str, command: str) -> None:
        self._log(fault, command, self._wait_children())

    def _kill_when_running(self, command: str) -> None:
        self._log("kill", command, self._wait_children())
        os.kill(os.getpid(), signal.SIGKILL)

    def _log(self, fault: str, command: str, sandbox_pids: list[int]) -> None:
        if not self.log_dir:
            return
        rec = {
            "fault": fault,
            "key": list(self.fault_key or ()),
            "worker_pid": os.getpid(),
            "command": command,
            "sandbox_pids": sandbox_pids,
            "time": time.time(),
        }
        with open(os.path.join(self.log_dir, "faults.jsonl"), "a") as fh:
            fh.write(json.dumps(rec) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
