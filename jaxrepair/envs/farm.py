"""Asynchronous environment farm: many concurrent episodes on a pool of CPU worker processes.

Why processes: builds are CPU-bound and untrusted; a worker that crashes, hangs or loses its
sandbox must not take the trainer down. Each worker is a *spawned* process (never a fork of a
JAX-initialised parent) leading its own process group, talking to the farm over its own pipe
(a worker killed mid-write can only break its own pipe, never a queue shared with the others).
Every workspace a worker creates lives under that worker's private directory, so when a worker
dies the farm kills whatever still runs there (its process tree, any process whose command
line or working directory is inside that directory, and for the Docker backend any sandbox
container mounting it) and removes the directory.

Episodes are *replayable*: a step request carries the episode's whole assistant history. A
worker keeps live episodes in memory and applies only the newest turn; steps go to the worker
that holds the episode (sticky). When that worker died, or when replay is cheap (the first
step), another worker rebuilds the episode from a fresh workspace by replaying the history
(validation results are cached by workspace hash when a cache dir is set, so a replay rebuilds
nothing that was built before). A failed job (worker died, hung past the step timeout, sandbox
failure, infra_error validation) is retried up to ``max_attempts`` times and otherwise reported
as ``infra_error``, which callers exclude from advantages. Every episode that starts ends in
exactly one of: scored (pass/fail), truncated (the caller ran out of context, tokens or turns:
``truncate``) or infra_error; ``accounting()`` checks it.
"""

from __future__ import annotations

import asyncio
import atexit
import dataclasses
import itertools
import json
import multiprocessing as mp
import multiprocessing.connection as mpc
import os
import random
import signal
import sys
import tempfile
import threading
import time
import traceback
import weakref
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from jaxrepair.config import EnvsConfig

from .protocol import EpisodeTally, Outcome, StepResult
from .task import Task, require_backend

__all__ = [
    "EnvFarm",
    "FaultPlan",
    "SandboxStartFailure",
    "farm_from_config",
    "run_episodes_with_policy",
]

PIPELINES = ("full", "simplified")
_HANG_COMMAND = "sleep 3600"


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

    kill: frozenset[tuple[str, int, int]] = frozenset()
    hang: frozenset[tuple[str, int, int]] = frozenset()
    sandbox_fail: frozenset[tuple[str, int, int]] = frozenset()
    log_dir: str | None = None
    latency_s: float = 0.0
    latency_seed: int = 0

    def kind(self, key: tuple[str, int, int]) -> str | None:
        for name in ("kill", "hang", "sandbox_fail"):
            if key in getattr(self, name):
                return name
        return None


class SandboxStartFailure(RuntimeError):
    """The sandbox could not be started (infrastructure, not the agent)."""


class ReplayError(RuntimeError):
    """Replaying an episode's history did not reproduce a live episode."""


@dataclasses.dataclass
class _Job:
    job_id: int
    kind: str  # "reset" | "step"
    episode_id: str
    task: Task
    pipeline: str
    history: tuple[str, ...]
    caps: dict[str, Any]
    attempt: int = 0
    drop: tuple[str, ...] = ()  # episodes the receiving worker should forget first


# --------------------------------------------------------------------------- /proc helpers
def _proc_table() -> dict[int, int]:
    """pid -> parent pid for every process (Linux /proc; empty elsewhere)."""
    out: dict[int, int] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return out
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                data = fh.read()
            out[int(name)] = int(data[data.rindex(b")") + 2 :].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return out


def _descendants(pid: int, table: dict[int, int] | None = None) -> list[int]:
    table = _proc_table() if table is None else table
    children: dict[int, list[int]] = {}
    for p, pp in table.items():
        children.setdefault(pp, []).append(p)
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _pids_using(directory: str) -> list[int]:
    """Processes whose command line mentions ``directory`` or whose cwd lies inside it."""
    needle = directory.encode()
    me = os.getpid()
    out = []
    for pid in _proc_table():
        if pid == me:
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                if needle in fh.read():
                    out.append(pid)
                    continue
            cwd = os.readlink(f"/proc/{pid}/cwd")
            if cwd == directory or cwd.startswith(directory + "/"):
                out.append(pid)
        except OSError:
            continue
    return out


def _kill_pids(pids: Sequence[int]) -> None:
    own_group = os.getpgrp()
    for pid in pids:
        if pid == os.getpid():
            continue
        try:
            pgid = os.getpgid(pid)
            if pgid == pid and pgid != own_group:
                os.killpg(pgid, signal.SIGKILL)  # a session/group leader: take its group too
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            continue


def _child_pids(pid: int) -> list[int]:
    return [p for p, pp in _proc_table().items() if pp == pid]


def _remove_containers_using(directory: str, base_url: str | None) -> None:
    """Docker sandbox containers belong to dockerd, not to the worker: remove those whose
    mounts lie in ``directory`` (a dead worker's workspaces)."""
    try:
        import docker

        client = docker.DockerClient(base_url=base_url) if base_url else docker.from_env()
    except Exception:  # noqa: BLE001 - no daemon: nothing of ours can run there
        return
    root = os.path.realpath(directory) + os.sep
    try:
        for c in client.containers.list(all=True, filters={"label": "jaxrepair.sandbox"}):
            mounts = c.attrs.get("Mounts") or []
            if any(str(m.get("Source", "")).startswith(root) for m in mounts):
                try:
                    c.remove(force=True)
                except Exception:  # noqa: BLE001 - already gone
                    pass
    except Exception as e:  # noqa: BLE001 - best effort, but say so
        print(f"farm: could not list sandbox containers: {e}", file=sys.stderr)
    finally:
        client.close()


# --------------------------------------------------------------------------- worker process
def _json_safe(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return _json_safe(dataclasses.asdict(x))
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    return str(x)


class _WorkerSandbox:
    """The worker's sandbox: delegates to the real backend, counts builds (executions of the
    task's first build command) and fires the injected fault armed for the current job."""

    def __init__(self, inner: Any, log_dir: str | None):
        self.inner = inner
        self.name = getattr(inner, "name", "?")
        self.log_dir = log_dir
        self.fault: str | None = None
        self.fault_key: tuple | None = None
        self.fired = False
        self.task: Task | None = None
        self.builds = 0

    def __getattr__(self, name: str) -> Any:  # image_for, image_id, limits, ...
        return getattr(self.inner, name)

    def arm(self, fault: str | None, key: tuple, task: Task) -> None:
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
    ) -> Any:
        if self.fault == "sandbox_fail":
            from .sandbox import RunResult

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
                return self.inner.run(workspace, _HANG_COMMAND, 3600.0, None)
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
            kids = _child_pids(os.getpid())
            if kids:
                time.sleep(0.05)  # let the sandbox get going
                return _descendants(os.getpid())
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


def _episode_factory(cache: Any) -> Callable[..., Any]:
    """make_episode, with the validation cache threaded through when one is configured."""
    from .pipelines import make_episode

    if cache is None:
        return make_episode
    return lambda *a, **kw: make_episode(*a, validation_cache=cache, **kw)


def _close_episode(ep: Any) -> None:
    try:
        ep.close()
    except Exception:  # noqa: BLE001 - best effort; the farm removes the worker dir anyway
        pass


def _tool_infra(ep: Any, before: Any) -> str | None:
    """An infra error seen by a validate_and_build tool call during the last step."""
    tb = getattr(ep, "toolbox", None)
    lv = getattr(tb, "last_validation", None)
    if lv is not None and lv is not before and getattr(lv, "outcome", None) == Outcome.INFRA_ERROR:
        return "validate_and_build hit an infrastructure error: " + "; ".join(
            lv.infra_errors or [lv.log[-300:]]
        )
    return None


def _run_job(
    job: _Job, live: dict[str, list], sandbox: _WorkerSandbox, make_episode: Callable[..., Any]
) -> StepResult:
    eid = job.episode_id

    def fresh() -> Any:
        old = live.pop(eid, None)
        if old is not None:
            _close_episode(old[0])
        return make_episode(job.task, pipeline=job.pipeline, sandbox=sandbox, **job.caps)

    if job.kind == "reset":
        ep = fresh()
        obs = ep.reset()
        live[eid] = [ep, 0]
        sandbox.end_of_job()
        info = _json_safe({"messages": ep.messages, "tools": ep.tools})
        return StepResult(eid, obs, 0.0, False, info)

    n = len(job.history)
    held = live.get(eid)
    if held is None or held[1] != n - 1:
        # replay on this worker: a fresh workspace, then every earlier turn
        ep = fresh()
        ep.reset()
        live[eid] = held = [ep, 0]
        for i, text in enumerate(job.history[:-1]):
            before = getattr(getattr(ep, "toolbox", None), "last_validation", None)
            _, _, done, _ = ep.step(text)
            why = _tool_infra(ep, before)
            if why:
                raise ReplayError(f"replaying turn {i}: {why}")
            if done:
                raise ReplayError(
                    f"replaying turn {i} ended the episode, which the original run did not"
                )
            held[1] = i + 1
    ep = held[0]
    n_before = len(ep.messages)
    before = getattr(getattr(ep, "toolbox", None), "last_validation", None)
    obs, reward, done, info = ep.step(job.history[-1])
    held[1] = n
    if not done:
        why = _tool_infra(ep, before)
        if why:
            raise SandboxStartFailure(why)
    sandbox.end_of_job()
    # messages the environment added after the assistant turn (tool results), so the driver
    # can extend its token transcript without re-tokenising the past
    info = dict(info, new_messages=ep.messages[n_before + 1 :])
    if not done:
        info.pop("validation", None)
    info = _json_safe(info)
    outcome = info.get("outcome") if done else None
    if done:
        live.pop(eid, None)
        _close_episode(ep)
        if outcome == Outcome.INFRA_ERROR:
            v = info.get("validation") or {}
            raise SandboxStartFailure(
                "validation infra_error: "
                + "; ".join(v.get("infra_errors") or [str(v.get("log", ""))[-300:]])
            )
        if outcome not in (Outcome.PASS, Outcome.FAIL):
            raise RuntimeError(
                f"episode ended without a validation outcome (info outcome {outcome!r})"
            )
    return StepResult(
        eid, obs, float(reward), bool(done), info, Outcome(outcome) if outcome else None
    )


def _worker_main(
    slot: int,
    conn: Any,
    sandbox_kind: str,
    sandbox_opts: dict,
    faults: FaultPlan,
    cache_dir: str | None,
) -> None:
    os.setsid()  # own process group: killing it kills every build started in it
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        from . import make_sandbox
        from .validation_cache import ValidationCache

        cache = ValidationCache(Path(cache_dir)) if cache_dir else None
        sandbox = _WorkerSandbox(make_sandbox(sandbox_kind, **sandbox_opts), faults.log_dir)
        make_episode = _episode_factory(cache)
    except BaseException as e:  # noqa: BLE001 - reported to the farm, which refuses to start
        conn.send(("fatal", f"worker {slot} could not start: {type(e).__name__}: {e}"))
        return
    conn.send(("ready", os.getpid()))
    live: dict[str, list] = {}  # episode_id -> [episode, steps applied]
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            break
        if job is None:
            break
        for eid in job.drop:
            held = live.pop(eid, None)
            if held is not None:
                _close_episode(held[0])
        step_idx = len(job.history) - 1 if job.kind == "step" else -1
        key = (job.episode_id, step_idx, job.attempt)
        sandbox.arm(faults.kind(key), key, job.task)
        builds0, hits0 = sandbox.builds, cache.hits if cache else 0
        try:
            result = _run_job(job, live, sandbox, make_episode)
            status, payload = "ok", result
        except Exception as e:  # noqa: BLE001 - every failure becomes a reported infra error
            held = live.pop(job.episode_id, None)
            if held is not None:
                _close_episode(held[0])
            status, payload = "infra", f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=4)}"
        finally:
            sandbox.disarm()
        counters = {
            "builds": sandbox.builds - builds0,
            "cache_hits": (cache.hits if cache else 0) - hits0,
        }
        try:
            conn.send((status, job.job_id, payload, counters))
        except (BrokenPipeError, OSError):
            break
    for ep, _ in live.values():
        _close_episode(ep)


# --------------------------------------------------------------------------- the farm
@dataclasses.dataclass
class _Slot:
    index: int
    gen: int = 0
    proc: Any = None
    conn: Any = None
    pid: int | None = None
    ready: bool = False
    spawned_at: float = 0.0
    job: _Job | None = None
    deadline: float = 0.0
    busy_since: float = 0.0
    drops: list[str] = dataclasses.field(default_factory=list)
    workdir: str = ""
    failed_starts: int = 0
    disabled: str | None = None


@dataclasses.dataclass
class _Pending:
    job: _Job
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop


class EnvFarm:
    """Pool of sandboxed worker processes serving episode resets and steps to asyncio callers.

    ``with EnvFarm(workers=4) as farm:`` then, inside a coroutine,
    ``r = await farm.reset(eid, task, "full")`` (r.info has "messages" and "tools") and
    ``r = await farm.step(eid, assistant_text)`` (r.info has "new_messages"), until r.done.
    """

    def __init__(
        self,
        workers: int = 2,
        sandbox_kind: str = "local",
        sandbox_opts: dict | None = None,
        max_attempts: int = 3,
        step_timeout_s: float = 900.0,
        faults: FaultPlan | None = None,
        cache_dir: str | Path | None = None,
        episode_caps: dict[str, Any] | None = None,
        start_timeout_s: float = 120.0,
    ):
        if not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
        if not isinstance(max_attempts, int) or max_attempts < 1:
            raise ValueError(f"max_attempts must be an integer >= 1, got {max_attempts!r}")
        if not step_timeout_s > 0:
            raise ValueError(f"step_timeout_s must be > 0, got {step_timeout_s!r}")
        if sandbox_kind not in ("local", "docker"):
            raise ValueError(f"unknown sandbox_kind {sandbox_kind!r}; expected 'local' or 'docker'")
        self.n_workers = workers
        self.sandbox_kind = sandbox_kind
        self.sandbox_opts = dict(sandbox_opts or {})
        self.max_attempts = max_attempts
        self.step_timeout_s = float(step_timeout_s)
        self.start_timeout_s = float(start_timeout_s)
        self.faults = faults or FaultPlan()
        if not self.faults.latency_s >= 0:
            raise ValueError(f"latency_s must be >= 0, got {self.faults.latency_s!r}")
        self._latency_rng = random.Random(self.faults.latency_seed)
        self.cache_dir = str(cache_dir) if cache_dir else None
        self.episode_caps = dict(episode_caps or {})
        self._ctx = mp.get_context("spawn")
        self._slots = [_Slot(i) for i in range(workers)]
        self._pending: list[_Pending] = []
        self._running: dict[int, _Pending] = {}  # job_id -> the caller waiting for it
        self._live: dict[str, tuple[int, int, int]] = {}  # episode -> (slot, gen, steps applied)
        self._episodes: dict[str, dict[str, Any]] = {}
        self._ids = itertools.count()
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._monitor: threading.Thread | None = None
        self._started = False
        self._closed = False
        self._dir: str | None = None
        self._stats = Counter()
        self._tally = EpisodeTally()  # started and ended episodes (in_flight from the records)
        self._max_queue = 0
        self._busy_s = 0.0
        self._t0 = 0.0
        self._t_end: float | None = None
        self._at_exit: Callable[[], None] | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> EnvFarm:
        """Spawn the workers and wait until each has its sandbox (a worker that cannot make
        one, e.g. bubblewrap missing, makes start fail with its message)."""
        if self._started:
            raise RuntimeError("the farm is already started")
        self._started = True
        ref = weakref.ref(self)

        def close_at_exit() -> None:  # a farm never closed (e.g. the driver crashed)
            farm = ref()
            if farm is not None:
                farm.close()

        self._at_exit = close_at_exit
        atexit.register(close_at_exit)
        base = self.sandbox_opts.get("workdir") or None
        self._dir = tempfile.mkdtemp(prefix="jaxrepair-farm-", dir=base)
        for slot in self._slots:
            self._spawn(slot)
        deadline = time.monotonic() + self.start_timeout_s
        try:
            for slot in self._slots:
                left = deadline - time.monotonic()
                if left <= 0 or not slot.conn.poll(left):
                    raise RuntimeError(
                        f"farm worker {slot.index} did not start within {self.start_timeout_s:g}s"
                    )
                try:
                    msg = slot.conn.recv()
                except (EOFError, OSError):
                    slot.proc.join(timeout=5)
                    raise RuntimeError(
                        f"farm worker {slot.index} exited during start (exit code "
                        f"{slot.proc.exitcode}); if this runs from a script, guard it with "
                        "`if __name__ == '__main__':` (workers are spawned)"
                    ) from None
                if msg[0] != "ready":
                    raise RuntimeError(f"farm could not start: {msg[1]}")
                slot.ready, slot.pid = True, msg[1]
        except BaseException:
            self.close()
            raise
        self._t0 = time.perf_counter()
        self._monitor = threading.Thread(
            target=self._monitor_loop, daemon=True, name="farm-monitor"
        )
        self._monitor.start()
        return self

    def __enter__(self) -> EnvFarm:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def workdir(self) -> str | None:
        """The farm's private directory (every workspace lives under it); removed by close()."""
        return self._dir

    def worker_pids(self) -> list[int]:
        with self._lock:
            return [s.proc.pid for s in self._slots if s.proc is not None and s.proc.is_alive()]

    def _spawn(self, slot: _Slot) -> None:
        slot.gen += 1
        slot.workdir = os.path.join(self._dir, f"w{slot.index}-g{slot.gen}")
        os.makedirs(slot.workdir)
        opts = dict(self.sandbox_opts)
        opts["workdir"] = slot.workdir
        parent, child = self._ctx.Pipe(duplex=True)
        p = self._ctx.Process(
            target=_worker_main,
            args=(slot.index, child, self.sandbox_kind, opts, self.faults, self.cache_dir),
            daemon=True,
            name=f"farm-worker-{slot.index}",
        )
        p.start()
        child.close()
        slot.proc, slot.conn, slot.pid, slot.ready = p, parent, p.pid, False
        slot.spawned_at, slot.job, slot.drops = time.monotonic(), None, []

    def _kill_slot(self, slot: _Slot) -> None:
        """Kill the worker, everything it started, and anything still using its directory."""
        p = slot.proc
        if p is not None:
            tree = _descendants(p.pid)
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            _kill_pids([p.pid, *tree])
            p.join(timeout=10)
        if slot.conn is not None:
            slot.conn.close()
        slot.proc, slot.conn, slot.ready = None, None, False
        self._sweep(slot.workdir)

    def _sweep(self, directory: str) -> None:
        """Kill every process (and, for Docker, every sandbox container) still using
        ``directory``, then remove it."""
        if not directory or not os.path.isdir(directory):
            return
        if self.sandbox_kind == "docker":
            _remove_containers_using(directory, self.sandbox_opts.get("base_url"))
        for _ in range(3):  # processes may still be exiting or forking
            pids = _pids_using(directory)
            if not pids:
                break
            table = _proc_table()
            _kill_pids([q for pid in pids for q in (pid, *_descendants(pid, table))])
            time.sleep(0.05)
        from .sandbox import remove_tree

        remove_tree(Path(directory))

    def close(self) -> None:
        """Stop every worker and sandbox process and remove every workspace. Callers still
        waiting get infra_error results ("farm closed")."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._t_end = time.perf_counter()
        if self._at_exit is not None:
            atexit.unregister(self._at_exit)
        self._stop.set()
        if self._monitor is not None:
            self._monitor.join(timeout=10)
        with self._lock:
            for slot in self._slots:
                if slot.proc is not None and slot.job is None and slot.conn is not None:
                    try:
                        slot.conn.send(None)  # idle: let it close its episodes itself
                    except (BrokenPipeError, OSError):
                        pass
            deadline = time.monotonic() + 5.0
            for slot in self._slots:
                if slot.proc is not None and slot.job is None:
                    slot.proc.join(timeout=max(0.0, deadline - time.monotonic()))
            for slot in self._slots:
                self._kill_slot(slot)
            waiting = list(self._running.values()) + self._pending
            self._running.clear()
            self._pending = []
        for w in waiting:
            self._resolve(w, self._infra_result(w.job, "the farm was closed"))
        if self._dir:
            self._sweep(self._dir)

    # ------------------------------------------------------------------ public async API
    async def reset(self, episode_id: str, task: Task, pipeline: str, **caps: Any) -> StepResult:
        """Start an episode. The result's observation is the first observation and its info
        holds "messages" and "tools"; a reset that fails max_attempts times returns
        done=True with outcome infra_error (the episode is then over). A task this farm's
        backend cannot run (SWE-bench off Docker) raises TaskError instead."""
        if not isinstance(episode_id, str) or not episode_id:
            raise ValueError(f"episode_id must be a non-empty string, got {episode_id!r}")
        if not isinstance(task, Task):
            raise TypeError(f"task must be a jaxrepair.envs.Task, got {type(task).__name__}")
        if pipeline not in PIPELINES:
            raise ValueError(f"unknown pipeline {pipeline!r}; expected one of {PIPELINES}")
        require_backend(task, self.sandbox_kind)  # TaskError now, not an infra_error later
        self._check_open()
        with self._lock:
            if episode_id in self._episodes:
                raise ValueError(f"episode id {episode_id!r} already used")
            self._episodes[episode_id] = {
                "task": task,
                "pipeline": pipeline,
                "history": [],
                "caps": {**self.episode_caps, **caps},
                "outcome": None,
            }
            self._tally.started += 1
        res = await self._submit("reset", episode_id)
        if res.infra_error:
            self._finish(episode_id, Outcome.INFRA_ERROR, 0.0, res.infra_error)
        return res

    async def step(self, episode_id: str, assistant_text: str) -> StepResult:
        """Apply one assistant turn. On done, outcome is pass/fail (scored) or infra_error
        (not a score: the episode failed max_attempts times for reasons not the agent's)."""
        if not isinstance(assistant_text, str):
            raise TypeError(f"assistant_text must be a string, got {type(assistant_text).__name__}")
        self._check_open()
        with self._lock:
            ep = self._episodes.get(episode_id)
            if ep is None:
                raise KeyError(f"unknown episode {episode_id!r}; call reset() first")
            if ep["outcome"]:
                raise ValueError(f"episode {episode_id!r} already ended ({ep['outcome']})")
            if ep.get("stepping"):
                raise ValueError(f"episode {episode_id!r} has a step in flight; await it first")
            ep["stepping"] = True
            ep["history"].append(assistant_text)
        try:
            res = await self._submit("step", episode_id)
        finally:
            ep["stepping"] = False
        with self._lock:
            self._stats["steps"] += 1
            # ended by the caller (truncate / abandon) while the step ran: the record stands
            if ep["outcome"] == Outcome.TRUNCATED:
                info = {"truncated": ep.get("end_reason")}
                return StepResult(episode_id, "", 0.0, True, info, Outcome.TRUNCATED, res.attempts)
            if ep["outcome"] == Outcome.INFRA_ERROR:
                reason = ep.get("infra_reason") or Outcome.INFRA_ERROR.value
                info = {"infra_error": reason}
                return StepResult(
                    episode_id, "", 0.0, True, info, Outcome.INFRA_ERROR, res.attempts, reason
                )
        if res.done:
            self._finish(
                episode_id, res.outcome or Outcome.INFRA_ERROR, res.reward, res.infra_error
            )
        return res

    def outcome(self, episode_id: str) -> str | None:
        """pass | fail | truncated | infra_error once the episode ended, else None."""
        return self._episodes[episode_id]["outcome"]

    def abandon(self, episode_id: str, reason: str) -> None:
        """Record an episode the caller cannot continue (e.g. generation failed) as infra_error."""
        self._end_by_caller(episode_id, Outcome.INFRA_ERROR, f"abandoned: {reason}")

    def truncate(self, episode_id: str, reason: str) -> None:
        """End an episode the policy ran out of room for (context, new-token or turn cap):
        outcome truncated, reward 0. Not an infra error: the policy's own length is the cause,
        so callers mask it (grpo.mask_truncated) rather than exclude it as a failed build."""
        self._end_by_caller(episode_id, Outcome.TRUNCATED, reason)

    def _end_by_caller(self, episode_id: str, outcome: str, reason: str) -> None:
        with self._lock:
            ep = self._episodes.get(episode_id)
            if ep is None:
                raise KeyError(f"unknown episode {episode_id!r}")
            if ep["outcome"]:
                return
            self._finish(episode_id, outcome, 0.0, reason)
            where = self._live.pop(episode_id, None)
            if where is not None:
                self._slots[where[0]].drops.append(episode_id)

    def accounting(self) -> dict[str, Any]:
        """started = scored + truncated + infra_error + in_flight; ``complete`` when nothing is
        in flight and the sum holds. Infra errors are listed separately, with their reasons, and every
        failed attempt (retried or not) is listed per episode."""
        with self._lock:
            outcomes = Counter(e["outcome"] or "in_flight" for e in self._episodes.values())
            tally = dataclasses.replace(self._tally, in_flight=outcomes.get("in_flight", 0))
            return {
                **tally.to_dict(),
                "outcomes": dict(outcomes),
                "infra_errors": {
                    k: e.get("infra_reason")
                    for k, e in self._episodes.items()
                    if e["outcome"] == Outcome.INFRA_ERROR
                },
                "failed_attempts": {
                    k: list(e["failures"]) for k, e in self._episodes.items() if e.get("failures")
                },
                "complete": tally.complete and tally.started == len(self._episodes),
            }

    def metrics(self) -> dict[str, Any]:
        """Throughput and health: episodes/s, builds/s, cache hits, retries, restarts, queues."""
        with self._lock:
            end = self._t_end if self._t_end is not None else time.perf_counter()
            dt = max(1e-9, end - self._t0) if self._t0 else 0.0
            s, t = self._stats, self._tally
            busy = self._busy_s + sum(
                time.monotonic() - sl.busy_since for sl in self._slots if sl.job is not None
            )
            done = t.ended
            return {
                "workers": self.n_workers,
                "elapsed_s": dt,
                "started": t.started,
                "episodes_done": done,
                "scored": t.scored,
                "passed": t.passed,
                "truncated": t.truncated,
                "infra_error": t.infra_error,
                "steps": s["steps"],
                "jobs": s["jobs"],
                "builds": s["builds"],
                "cache_hits": s["cache_hits"],
                "retries": s["retries"],
                "worker_restarts": s["worker_restarts"],
                "replays": s["replays"],
                "episodes_per_s": done / dt if dt else 0.0,
                "builds_per_s": s["builds"] / dt if dt else 0.0,
                "worker_busy_fraction": busy / (dt * self.n_workers) if dt else 0.0,
                "queue_depth": len(self._pending),
                "max_queue_depth": self._max_queue,
            }

    # ------------------------------------------------------------------ internals
    def _check_open(self) -> None:
        if not self._started:
            raise RuntimeError(
                "the farm is not started: call start() or use `with EnvFarm(...) as farm`"
            )
        if self._closed:
            raise RuntimeError("the farm is closed")

    def _finish(self, episode_id: str, outcome: str, reward: float, reason: str | None) -> None:
        with self._lock:
            ep = self._episodes[episode_id]
            if ep["outcome"]:
                return
            outcome = Outcome(outcome)
            ep["outcome"], ep["reward"] = outcome, reward
            if outcome is Outcome.INFRA_ERROR:
                ep["infra_reason"] = reason or Outcome.INFRA_ERROR.value
            elif outcome is Outcome.TRUNCATED:
                ep["end_reason"] = reason
            self._tally.record(outcome)

    @staticmethod
    def _infra_result(job: _Job, reason: str) -> StepResult:
        return StepResult(
            job.episode_id,
            "",
            0.0,
            True,
            {"infra_error": reason},
            Outcome.INFRA_ERROR,
            job.attempt + 1,
            reason,
        )

    async def _submit(self, kind: str, episode_id: str) -> StepResult:
        loop = asyncio.get_running_loop()
        if self.faults.latency_s > 0:
            with self._lock:
                delay = self._latency_rng.uniform(0.0, self.faults.latency_s)
            await asyncio.sleep(delay)
        ep = self._episodes[episode_id]
        job = _Job(
            next(self._ids),
            kind,
            episode_id,
            ep["task"],
            ep["pipeline"],
            tuple(ep["history"]),
            ep["caps"],
        )
        fut = loop.create_future()
        with self._lock:
            if self._closed:
                return self._infra_result(job, "the farm was closed")
            self._pending.append(_Pending(job, fut, loop))
            self._max_queue = max(self._max_queue, len(self._pending))
            self._dispatch()
        return await fut

    @staticmethod
    def _resolve(w: _Pending, result: StepResult) -> None:
        def setter() -> None:
            if not w.future.done():
                w.future.set_result(result)

        try:
            w.loop.call_soon_threadsafe(setter)
        except RuntimeError:  # the caller's loop is gone
            pass

    def _owner(self, episode_id: str, history_len: int) -> int | None:
        """Slot holding the episode live at the right step, if its worker still runs."""
        where = self._live.get(episode_id)
        if where is None:
            return None
        slot = self._slots[where[0]]
        if slot.gen != where[1] or slot.proc is None or where[2] != history_len - 1:
            return None
        return slot.index

    def _dispatch(self) -> None:
        """Assign pending jobs to idle workers (lock held): a step goes to the worker holding
        its episode; it moves (and is replayed) only if that worker is gone, or if replay is
        cheap (a reset, or the first step, whose replay is just a reset)."""
        idle = [s for s in self._slots if s.ready and s.job is None and s.disabled is None]
        if not idle:
            return
        still: list[_Pending] = []
        for w in self._pending:
            job = w.job
            if not idle:
                still.append(w)
                continue
            owner = self._owner(job.episode_id, len(job.history)) if job.kind == "step" else None
            target = None
            if owner is not None:
                target = next((s for s in idle if s.index == owner), None)
                if target is None and len(job.history) <= 1:
                    target = idle[0]
            else:
                target = idle[0]
            if target is None:
                still.append(w)
                continue
            if not self._send(target, w, owner):
                still.append(w)
                continue
            idle.remove(target)
        self._pending = still

    def _send(self, slot: _Slot, w: _Pending, owner: int | None) -> bool:
        job = w.job
        replay = job.kind == "step" and owner != slot.index
        where = self._live.pop(job.episode_id, None)
        if where is not None and where[0] != slot.index:
            self._slots[where[0]].drops.append(job.episode_id)
        job.drop, slot.drops = tuple(slot.drops), []
        try:
            slot.conn.send(job)
        except (BrokenPipeError, OSError, ValueError):
            slot.drops.extend(job.drop)
            return False  # the monitor will notice the dead worker; the job waits
        now = time.monotonic()
        n_replay = len(job.history) - 1 if replay else 0
        slot.job, slot.busy_since = job, now
        slot.deadline = now + self.step_timeout_s * (1 + n_replay)
        self._running[job.job_id] = w
        self._stats["jobs"] += 1
        self._stats["replays"] += int(replay and n_replay > 0)
        return True

    def _job_done(self, slot: _Slot) -> _Pending | None:
        job = slot.job
        slot.job = None
        self._busy_s += time.monotonic() - slot.busy_since
        return self._running.pop(job.job_id, None) if job is not None else None

    def _retry_or_fail(self, w: _Pending, reason: str) -> None:
        job = w.job
        self._live.pop(job.episode_id, None)
        ep = self._episodes.get(job.episode_id)
        if ep is not None:
            ep.setdefault("failures", []).append(
                reason.strip().splitlines()[0][:300] if reason.strip() else "?"
            )
        if job.attempt + 1 < self.max_attempts:
            job.attempt += 1
            self._stats["retries"] += 1
            self._pending.insert(0, w)
            return
        self._resolve(w, self._infra_result(job, reason))

    def _on_message(self, slot: _Slot, msg: tuple) -> None:
        if msg[0] == "ready":
            slot.ready, slot.pid, slot.failed_starts = True, msg[1], 0
            return
        if msg[0] == "fatal":
            self._restart(slot, msg[1], failed_start=True)
            return
        status, job_id, payload, counters = msg
        self._stats["builds"] += counters.get("builds", 0)
        self._stats["cache_hits"] += counters.get("cache_hits", 0)
        if slot.job is None or slot.job.job_id != job_id:
            return  # a reply for a job already given up on
        w = self._job_done(slot)
        if w is None:
            return
        job = w.job
        if status == "ok":
            res: StepResult = payload
            res.attempts = job.attempt + 1
            ended = (self._episodes.get(job.episode_id) or {}).get("outcome")
            if res.done:
                self._live.pop(job.episode_id, None)
            elif ended:  # abandoned while this step ran: the worker can forget it
                slot.drops.append(job.episode_id)
            else:
                self._live[job.episode_id] = (slot.index, slot.gen, len(job.history))
            self._resolve(w, res)
        else:
            self._retry_or_fail(w, str(payload))

    def _restart(self, slot: _Slot, reason: str, failed_start: bool = False) -> None:
        w = self._job_done(slot) if slot.job is not None else None
        self._kill_slot(slot)
        self._stats["worker_restarts"] += 1
        if w is not None:
            self._retry_or_fail(w, reason)
        slot.failed_starts = slot.failed_starts + 1 if failed_start else 0
        if slot.failed_starts >= 3:
            slot.disabled = reason
            if all(s.disabled for s in self._slots):  # nothing can run: fail, never hang
                for p in self._pending:
                    self._resolve(
                        p, self._infra_result(p.job, f"no farm worker can start: {reason}")
                    )
                self._pending = []
            return
        if not self._closed:
            self._spawn(slot)

    def _monitor_loop(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                handles = {}
                for s in self._slots:
                    if s.proc is not None and s.conn is not None:
                        handles[s.conn] = s
                        handles[s.proc.sentinel] = s
            try:
                ready = mpc.wait(list(handles), timeout=0.05) if handles else []
            except OSError:
                ready = []
            if not handles:
                time.sleep(0.05)
            with self._lock:
                if self._closed:
                    return
                try:
                    self._poll(handles, ready)
                except Exception:  # noqa: BLE001 - the monitor must never die silently
                    traceback.print_exc()

    def _poll(self, handles: dict, ready: list) -> None:
        for h in ready:
            slot = handles[h]
            if h is not slot.conn or slot.conn is None:
                continue
            try:
                while slot.conn is not None and slot.conn.poll():
                    self._on_message(slot, slot.conn.recv())
            except (EOFError, OSError):
                pass  # the worker died; noticed below
        now = time.monotonic()
        for slot in self._slots:
            if slot.proc is None or slot.disabled:
                continue
            if not slot.proc.is_alive():
                try:  # a reply sent just before dying still counts
                    while slot.conn is not None and slot.conn.poll():
                        self._on_message(slot, slot.conn.recv())
                except (EOFError, OSError):
                    pass
                if slot.proc is None or slot.proc.is_alive():
                    continue
                self._restart(slot, f"worker died (exit code {slot.proc.exitcode})")
            elif slot.job is not None and now > slot.deadline:
                self._restart(slot, f"worker hung past the step timeout ({self.step_timeout_s:g}s)")
            elif not slot.ready and now - slot.spawned_at > self.start_timeout_s:
                self._restart(slot, "worker did not start in time", failed_start=True)
        self._dispatch()


async def run_episodes_with_policy(
    farm: EnvFarm,
    specs: Sequence[tuple[str, Task, str]],
    policy: Callable[[str, str], str],
    max_turns: int = 32,
) -> dict[str, StepResult]:
    """Drive episodes (episode_id, task, pipeline) to the end with a text policy
    ``policy(episode_id, observation) -> assistant text``; returns each episode's last result.

    Used by farm tests and throughput benchmarks (no accelerator involved).
    """

    async def one(eid: str, task: Task, pipeline: str) -> StepResult:
        res = await farm.reset(eid, task, pipeline)
        obs = res.observation
        for _ in range(max_turns):
            if res.done:
                return res
            res = await farm.step(eid, policy(eid, obs))
            obs = res.observation
        if res.done:
            return res
        farm.truncate(eid, f"the driver's turn limit ({max_turns})")
        return StepResult(eid, obs, 0.0, True, {"truncated": "turn limit"}, Outcome.TRUNCATED)

    results = await asyncio.gather(*(one(*s) for s in specs))
    return {r.episode_id: r for r in results}


def farm_from_config(
    envs: EnvsConfig,
    *,
    episode_caps: bool,
    cache_dir: str | Path | None = None,
    latency_seed: int = 0,
) -> EnvFarm:
    """The farm a run config asks for (not started). `episode_caps`: apply envs.max_steps and
    envs.max_context_tokens (the full pipeline's caps); `latency_seed` seeds the chaos latency
    (`envs.latency_jitter_s`), one seed per process."""
    return EnvFarm(
        workers=envs.workers,
        sandbox_kind=envs.sandbox,
        max_attempts=envs.retries + 1,
        step_timeout_s=envs.episode_timeout_s,
        cache_dir=cache_dir if envs.cache_validation else None,
        episode_caps={"max_steps": envs.max_steps, "max_context_tokens": envs.max_context_tokens}
        if episode_caps
        else {},
        faults=FaultPlan(latency_s=envs.latency_jitter_s, latency_seed=latency_seed),
    )
