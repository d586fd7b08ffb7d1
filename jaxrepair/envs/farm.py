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

The parts: `farm_scheduler` (queue, dispatch, retries, accounting), `farm_worker` (what a
worker does with a job), `faults` (fault injection), `farm_cleanup` (killing what a dead
worker left); `ray_farm` runs the same workers as Ray actors across machines.
"""

from __future__ import annotations

import asyncio
import dataclasses
import multiprocessing as mp
import multiprocessing.connection as mpc
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from jaxrepair.config import EnvsConfig

from .farm_cleanup import kill_process_tree, sweep_directory
from .farm_scheduler import FarmScheduler, Slot
from .farm_worker import Fatal, Job, Ready, Reply, worker_main
from .faults import FaultPlan
from .protocol import EnvService, Outcome, StepResult
from .task import Task

__all__ = ["EnvFarm", "farm_from_config", "run_episodes_with_policy"]

_SPAWN = mp.get_context("spawn")  # workers never fork a JAX-initialised parent


@dataclasses.dataclass
class _ProcessSlot(Slot):
    proc: BaseProcess | None = None
    conn: mpc.Connection | None = None
    pid: int | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None


class EnvFarm(FarmScheduler):
    """Pool of sandboxed worker processes serving episode resets and steps to asyncio callers.

    ``with EnvFarm(workers=4) as farm:`` then, inside a coroutine,
    ``r = await farm.reset(eid, task, "full")`` (r.info has "messages" and "tools") and
    ``r = await farm.step(eid, assistant_text)`` (r.info has "new_messages"), until r.done.
    """

    _slots: list[_ProcessSlot]
    _dir: str | None = None  # the farm's private directory, once started

    def _new_slot(self, index: int) -> _ProcessSlot:
        return _ProcessSlot(index)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> EnvFarm:
        """Spawn the workers and wait until each has its sandbox (a worker that cannot make
        one, e.g. bubblewrap missing, makes start fail with its message)."""
        super().start()
        return self

    def _start_workers(self) -> None:
        base = self.sandbox_opts.get("workdir") or None
        self._dir = tempfile.mkdtemp(prefix="jaxrepair-farm-", dir=base)
        for slot in self._slots:
            self._spawn(slot)
        deadline = time.monotonic() + self.start_timeout_s
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
            if not isinstance(msg, Ready):
                raise RuntimeError(f"farm could not start: {msg.reason}")
            slot.ready, slot.pid = True, msg.pid

    @property
    def workdir(self) -> str | None:
        """The farm's private directory (every workspace lives under it); removed by close()."""
        return self._dir

    def worker_pids(self) -> list[int]:
        with self._lock:
            return [s.proc.pid for s in self._slots if s.proc is not None and s.proc.is_alive()]

    def _spawn(self, slot: _ProcessSlot) -> None:
        slot.gen += 1
        slot.workdir = os.path.join(self._dir, f"w{slot.index}-g{slot.gen}")
        os.makedirs(slot.workdir)
        opts = dict(self.sandbox_opts)
        opts["workdir"] = slot.workdir
        parent, child = _SPAWN.Pipe(duplex=True)
        p = _SPAWN.Process(
            target=worker_main,
            args=(slot.index, child, self.sandbox_kind, opts, self.faults, self.cache_dir),
            daemon=True,
            name=f"farm-worker-{slot.index}",
        )
        p.start()
        child.close()
        slot.proc, slot.conn, slot.pid, slot.ready = p, parent, p.pid, False
        slot.spawned_at, slot.job, slot.drops = time.monotonic(), None, []

    def _transmit(self, slot: _ProcessSlot, job: Job) -> bool:
        try:
            slot.conn.send(job)
        except (BrokenPipeError, OSError, ValueError):
            return False
        return True

    def _kill_slot(self, slot: _ProcessSlot) -> None:
        """Kill the worker, everything it started, and anything still using its directory."""
        p = slot.proc
        if p is not None:
            kill_process_tree(p.pid)
            p.join(timeout=10)
        if slot.conn is not None:
            slot.conn.close()
        slot.proc, slot.conn, slot.ready = None, None, False
        self._sweep(slot.workdir)

    def _sweep(self, directory: str) -> None:
        sweep_directory(directory, self.sandbox_kind, self.sandbox_opts.get("base_url"))

    def _stop_workers(self) -> None:
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
        if self._dir:
            self._sweep(self._dir)

    # ------------------------------------------------------------------ monitor
    def _on_message(self, slot: _ProcessSlot, msg: Ready | Fatal | Reply) -> None:
        if isinstance(msg, Ready):
            slot.ready, slot.pid, slot.failed_starts = True, msg.pid, 0
        elif isinstance(msg, Fatal):
            self._restart(slot, msg.reason, failed_start=True)
        else:
            self._on_reply(slot, msg)

    def _watched(self) -> dict[Any, Slot | None]:
        handles: dict[Any, Slot | None] = {}
        for s in self._slots:
            if s.proc is not None and s.conn is not None:
                handles[s.conn] = s
                handles[s.proc.sentinel] = s
        return handles

    def _wait(self, watched: dict[Any, Slot | None]) -> list[Any]:
        if not watched:
            time.sleep(0.05)
            return []
        try:
            return mpc.wait(list(watched), timeout=0.05)
        except OSError:
            return []

    def _poll(self, handles: dict[Any, Any], ready: list[Any]) -> None:
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
            else:
                self._check_deadlines(slot, now)
        self._dispatch()


async def run_episodes_with_policy(
    farm: EnvService,
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
) -> FarmScheduler:
    """The farm a run config asks for (not started): worker processes on this host
    (``envs.backend = "local"``) or Ray actors on a cluster (``"ray"``, at ``envs.ray_address``
    with at most ``envs.max_concurrent_builds`` jobs building at once, each worker actor
    reserving ``envs.ray_resources``). `episode_caps`: apply
    envs.max_steps and envs.max_context_tokens (the full pipeline's caps); `latency_seed` seeds
    the chaos latency (`envs.latency_jitter_s`), one seed per process."""
    common: dict[str, Any] = dict(
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
    if envs.backend == "ray":
        try:
            from .ray_farm import RayFarm
        except ImportError as e:
            raise RuntimeError(
                f"envs.backend='ray' needs Ray ({e}); install it with `pip install -e '.[ray]'`"
            ) from None
        return RayFarm(
            **common,
            address=envs.ray_address,
            max_concurrent_builds=envs.max_concurrent_builds,
            resources=envs.ray_resource_amounts,
        )
    return EnvFarm(**common)
