"""The farm's parent side, whatever runs the workers: episode records, the job queue, sticky
dispatch, retries, the exactly-once tally and the throughput counters.

Why one scheduler for every backend: the fault semantics (a failed job is retried up to
``max_attempts`` times, then the episode ends as infra_error, counted once) and the
accounting must not differ between the process farm and the Ray farm. A backend subclasses
`FarmScheduler` and supplies the transport: how a worker is started, sent a job, watched and
killed.
"""

from __future__ import annotations

import asyncio
import atexit
import dataclasses
import itertools
import random
import threading
import time
import traceback
import weakref
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .farm_worker import Job, Reply
from .faults import FaultPlan
from .protocol import EpisodeTally, Outcome, StepResult
from .task import Task, require_backend

__all__ = ["PIPELINES", "EpisodeRecord", "FarmScheduler", "Pending", "Slot"]

PIPELINES = ("full", "simplified")


@dataclasses.dataclass
class EpisodeRecord:
    """The parent's record of one episode: what to replay, and how it ended."""

    task: Task
    pipeline: str
    caps: dict[str, Any]
    history: list[str] = dataclasses.field(default_factory=list)
    outcome: Outcome | None = None
    reward: float = 0.0
    infra_reason: str | None = None
    end_reason: str | None = None
    failures: list[str] = dataclasses.field(default_factory=list)  # every failed attempt
    stepping: bool = False


@dataclasses.dataclass
class Pending:
    """A job and the caller awaiting it (on the caller's own event loop)."""

    job: Job
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop


@dataclasses.dataclass(frozen=True)
class LivePlace:
    """Where an episode is held live: slot, that slot's worker generation, turns applied."""

    slot: int
    gen: int
    steps: int


@dataclasses.dataclass
class Slot:
    """One worker place; a backend subclass adds its handle on the running worker."""

    index: int
    gen: int = 0
    ready: bool = False
    spawned_at: float = 0.0
    job: Job | None = None
    deadline: float = 0.0
    busy_since: float = 0.0
    drops: list[str] = dataclasses.field(default_factory=list)
    workdir: str = ""
    failed_starts: int = 0
    disabled: str | None = None

    @property
    def running(self) -> bool:
        """A worker is attached (started or starting)."""
        raise NotImplementedError


class FarmScheduler:
    """Queue, dispatch and accounting shared by the farm backends (see the module doc).

    A backend supplies the transport hooks below: its slots, starting and stopping its
    workers, handing a job to one, and the monitor's wait and poll; its poll reports through
    ``_on_reply``, ``_restart`` and ``_check_deadlines``, all under ``self._lock``.
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
        self._slots: list[Slot] = [self._new_slot(i) for i in range(workers)]
        self._pending: list[Pending] = []
        self._running: dict[int, Pending] = {}  # job_id -> the caller waiting for it
        self._live: dict[str, LivePlace] = {}
        self._episodes: dict[str, EpisodeRecord] = {}
        self._ids = itertools.count()
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._started = False
        self._closed = False
        self._stats: Counter[str] = Counter()
        self._tally = EpisodeTally()  # started and ended episodes (in_flight from the records)
        self._max_queue = 0
        self._busy_s = 0.0
        self._t0 = 0.0
        self._t_end: float | None = None
        self._monitor: threading.Thread | None = None
        self._at_exit: Callable[[], None] | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> FarmScheduler:
        """Start the workers and wait until each has its sandbox (a worker that cannot make
        one, e.g. bubblewrap missing, makes start fail with its message, leaving nothing)."""
        if self._started:
            raise RuntimeError("the farm is already started")
        self._started = True
        ref = weakref.ref(self)

        def close_at_exit() -> None:  # a farm never closed (e.g. the driver crashed)
            farm = ref()
            if farm is not None:
                farm.close()

        self._at_exit = close_at_exit
        try:
            self._start_workers()
            atexit.register(close_at_exit)  # after any engine's own exit hook: runs first
        except BaseException:
            self.close()
            raise
        self._t0 = time.perf_counter()
        self._monitor = threading.Thread(
            target=self._monitor_loop, daemon=True, name=f"{type(self).__name__}-monitor"
        )
        self._monitor.start()
        return self

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
        self._stop_workers()
        self._fail_waiting("the farm was closed")

    def __enter__(self) -> FarmScheduler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _monitor_loop(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                watched = self._watched()
            ready = self._wait(watched)
            with self._lock:
                if self._closed:
                    return
                try:
                    self._poll(watched, ready)
                except Exception:  # noqa: BLE001 - the monitor must never die silently
                    traceback.print_exc()

    # ------------------------------------------------------------------ transport hooks
    def _start_workers(self) -> None:
        """Start every slot's worker and wait until each is ready (or raise)."""
        raise NotImplementedError

    def _stop_workers(self) -> None:
        """Stop every worker and remove what the workers left (the monitor has stopped)."""
        raise NotImplementedError

    def _watched(self) -> dict[Any, Slot | None]:
        """What the monitor waits on (lock held): handle -> its slot."""
        raise NotImplementedError

    def _wait(self, watched: dict[Any, Slot | None]) -> list[Any]:
        """The watched handles that became ready within about 50 ms (lock not held)."""
        raise NotImplementedError

    def _poll(self, watched: dict[Any, Slot | None], ready: list[Any]) -> None:
        """Handle replies and deaths, check deadlines, dispatch (lock held)."""
        raise NotImplementedError

    def _new_slot(self, index: int) -> Slot:
        raise NotImplementedError

    def _transmit(self, slot: Slot, job: Job) -> bool:
        """Hand ``job`` to the slot's worker; False when the worker cannot take it."""
        raise NotImplementedError

    def _kill_slot(self, slot: Slot) -> None:
        raise NotImplementedError

    def _spawn(self, slot: Slot) -> None:
        raise NotImplementedError

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
            self._episodes[episode_id] = EpisodeRecord(
                task, pipeline, {**self.episode_caps, **caps}
            )
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
            if ep.outcome:
                raise ValueError(f"episode {episode_id!r} already ended ({ep.outcome})")
            if ep.stepping:
                raise ValueError(f"episode {episode_id!r} has a step in flight; await it first")
            ep.stepping = True
            ep.history.append(assistant_text)
        try:
            res = await self._submit("step", episode_id)
        finally:
            ep.stepping = False
        with self._lock:
            self._stats["steps"] += 1
            # ended by the caller (truncate / abandon) while the step ran: the record stands
            if ep.outcome == Outcome.TRUNCATED:
                info = {"truncated": ep.end_reason}
                return StepResult(episode_id, "", 0.0, True, info, Outcome.TRUNCATED, res.attempts)
            if ep.outcome == Outcome.INFRA_ERROR:
                reason = ep.infra_reason or Outcome.INFRA_ERROR.value
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
        return self._episodes[episode_id].outcome

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
            if ep.outcome:
                return
            self._finish(episode_id, outcome, 0.0, reason)
            where = self._live.pop(episode_id, None)
            if where is not None:
                self._slots[where.slot].drops.append(episode_id)

    def accounting(self) -> dict[str, Any]:
        """started = scored + truncated + infra_error + in_flight; ``complete`` when nothing is
        in flight and the sum holds. Infra errors are listed separately, with their reasons, and every
        failed attempt (retried or not) is listed per episode."""
        with self._lock:
            outcomes = Counter(e.outcome or "in_flight" for e in self._episodes.values())
            tally = dataclasses.replace(self._tally, in_flight=outcomes.get("in_flight", 0))
            return {
                **tally.to_dict(),
                "outcomes": dict(outcomes),
                "infra_errors": {
                    k: e.infra_reason
                    for k, e in self._episodes.items()
                    if e.outcome == Outcome.INFRA_ERROR
                },
                "failed_attempts": {
                    k: list(e.failures) for k, e in self._episodes.items() if e.failures
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
                f"the farm is not started: call start() or use `with {type(self).__name__}(...) "
                "as farm`"
            )
        if self._closed:
            raise RuntimeError("the farm is closed")

    def _finish(self, episode_id: str, outcome: str, reward: float, reason: str | None) -> None:
        with self._lock:
            ep = self._episodes[episode_id]
            if ep.outcome:
                return
            ep.outcome, ep.reward = Outcome(outcome), reward
            if ep.outcome is Outcome.INFRA_ERROR:
                ep.infra_reason = reason or Outcome.INFRA_ERROR.value
            elif ep.outcome is Outcome.TRUNCATED:
                ep.end_reason = reason
            self._tally.record(ep.outcome)

    @staticmethod
    def _infra_result(job: Job, reason: str) -> StepResult:
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
        job = Job(
            next(self._ids), kind, episode_id, ep.task, ep.pipeline, tuple(ep.history), ep.caps
        )
        fut = loop.create_future()
        with self._lock:
            if self._closed:
                return self._infra_result(job, "the farm was closed")
            self._pending.append(Pending(job, fut, loop))
            self._max_queue = max(self._max_queue, len(self._pending))
            self._dispatch()
        return await fut

    @staticmethod
    def _resolve(w: Pending, result: StepResult) -> None:
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
        slot = self._slots[where.slot]
        if slot.gen != where.gen or not slot.running or where.steps != history_len - 1:
            return None
        return slot.index

    def _idle_slots(self) -> list[Slot]:
        return [s for s in self._slots if s.ready and s.job is None and s.disabled is None]

    def _room(self) -> int:
        """How many more jobs may start now (a backend may cap jobs running at once)."""
        return len(self._slots)

    def _dispatch(self) -> None:
        """Assign pending jobs to idle workers (lock held): a step goes to the worker holding
        its episode; it moves (and is replayed) only if that worker is gone, or if replay is
        cheap (a reset, or the first step, whose replay is just a reset)."""
        idle = self._idle_slots()
        room = self._room()
        if not idle or room <= 0:
            return
        still: list[Pending] = []
        for w in self._pending:
            job = w.job
            if not idle or room <= 0:
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
            room -= 1
        self._pending = still

    def _send(self, slot: Slot, w: Pending, owner: int | None) -> bool:
        job = w.job
        replay = job.kind == "step" and owner != slot.index
        where = self._live.pop(job.episode_id, None)
        if where is not None and where.slot != slot.index:
            self._slots[where.slot].drops.append(job.episode_id)
        job.drop, slot.drops = tuple(slot.drops), []
        if not self._transmit(slot, job):
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

    def _job_done(self, slot: Slot) -> Pending | None:
        job = slot.job
        slot.job = None
        self._busy_s += time.monotonic() - slot.busy_since
        return self._running.pop(job.job_id, None) if job is not None else None

    def _retry_or_fail(self, w: Pending, reason: str) -> None:
        job = w.job
        self._live.pop(job.episode_id, None)
        ep = self._episodes.get(job.episode_id)
        if ep is not None:
            ep.failures.append(reason.strip().splitlines()[0][:300] if reason.strip() else "?")
        if job.attempt + 1 < self.max_attempts:
            job.attempt += 1
            self._stats["retries"] += 1
            self._pending.insert(0, w)
            return
        self._resolve(w, self._infra_result(job, reason))

    def _on_reply(self, slot: Slot, reply: Reply) -> None:
        """A worker's answer to a job (lock held)."""
        self._stats["builds"] += reply.builds
        self._stats["cache_hits"] += reply.cache_hits
        if slot.job is None or slot.job.job_id != reply.job_id:
            return  # a reply for a job already given up on
        w = self._job_done(slot)
        if w is None:
            return
        job = w.job
        res = reply.result
        if res is None:
            self._retry_or_fail(w, reply.error)
            return
        res.attempts = job.attempt + 1
        rec = self._episodes.get(job.episode_id)
        if res.done:
            self._live.pop(job.episode_id, None)
        elif rec is not None and rec.outcome:  # abandoned while this step ran: forget it
            slot.drops.append(job.episode_id)
        else:
            self._live[job.episode_id] = LivePlace(slot.index, slot.gen, len(job.history))
        self._resolve(w, res)

    def _restart(self, slot: Slot, reason: str, failed_start: bool = False) -> None:
        """The slot's worker died, hung or could not start: kill what is left of it, retry its
        job elsewhere (or end it as infra_error) and start a new worker in its place."""
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

    def _check_deadlines(self, slot: Slot, now: float) -> None:
        """A running worker past its job's deadline, or not ready in time: restart it."""
        if slot.job is not None and now > slot.deadline:
            self._restart(slot, f"worker hung past the step timeout ({self.step_timeout_s:g}s)")
        elif not slot.ready and now - slot.spawned_at > self.start_timeout_s:
            self._restart(slot, "worker did not start in time", failed_start=True)

    def _fail_waiting(self, reason: str) -> None:
        """Every caller still waiting (running or queued) gets an infra_error result."""
        with self._lock:
            waiting = list(self._running.values()) + self._pending
            self._running.clear()
            self._pending = []
        for w in waiting:
            self._resolve(w, self._infra_result(w.job, reason))
