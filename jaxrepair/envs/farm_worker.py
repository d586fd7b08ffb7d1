"""What a farm worker does with a job: keep live episodes, apply a turn, replay when needed.

Why apart from the scheduler: the same worker logic runs in a spawned process (the process
farm) and in a Ray actor (the Ray farm); only the transport differs. A job carries the
episode's whole assistant history, so any worker can rebuild an episode it does not hold
(replay) and a lost worker loses no episode.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .faults import FaultPlan, SandboxStartFailure, WorkerSandbox
from .protocol import Outcome, StepResult
from .task import Task
from .validation_cache import ValidationCache

if TYPE_CHECKING:
    from .pipelines import Episode

__all__ = [
    "EpisodeHost",
    "Fatal",
    "Job",
    "LiveEpisode",
    "Ready",
    "Reply",
    "ReplayError",
    "worker_main",
]


class ReplayError(RuntimeError):
    """Replaying an episode's history did not reproduce a live episode."""


@dataclasses.dataclass
class Job:
    """One reset or step for a worker: the episode's whole history travels with it."""

    job_id: int
    kind: str  # "reset" | "step"
    episode_id: str
    task: Task
    pipeline: str
    history: tuple[str, ...]
    caps: dict[str, Any]
    attempt: int = 0
    drop: tuple[str, ...] = ()  # episodes the receiving worker should forget first


@dataclasses.dataclass
class LiveEpisode:
    """An episode a worker holds in memory and how many assistant turns it has applied."""

    episode: Episode
    steps: int = 0


@dataclasses.dataclass(frozen=True)
class Ready:
    """The worker has its sandbox and takes jobs."""

    pid: int


@dataclasses.dataclass(frozen=True)
class Fatal:
    """The worker could not start (no sandbox): the farm refuses to start."""

    reason: str


@dataclasses.dataclass
class Reply:
    """A finished job: its result, or the infra error it hit, and the work it did."""

    job_id: int
    result: StepResult | None  # None: the job failed, see ``error``
    error: str = ""
    builds: int = 0
    cache_hits: int = 0


def json_safe(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return json_safe(dataclasses.asdict(x))
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    return str(x)


def episode_factory(cache: ValidationCache | None) -> Callable[..., Episode]:
    """make_episode, with the validation cache threaded through when one is configured."""
    from .pipelines import make_episode

    if cache is None:
        return make_episode
    return lambda *a, **kw: make_episode(*a, validation_cache=cache, **kw)


def close_episode(ep: Episode) -> None:
    try:
        ep.close()
    except Exception:  # noqa: BLE001 - best effort; the farm removes the worker dir anyway
        pass


def _tool_infra(ep: Episode, before: object) -> str | None:
    """An infra error seen by a validate_and_build tool call during the last step."""
    tb = getattr(ep, "toolbox", None)
    lv = getattr(tb, "last_validation", None)
    if lv is not None and lv is not before and getattr(lv, "outcome", None) == Outcome.INFRA_ERROR:
        return "validate_and_build hit an infrastructure error: " + "; ".join(
            lv.infra_errors or [lv.log[-300:]]
        )
    return None


def run_job(
    job: Job,
    live: dict[str, LiveEpisode],
    sandbox: WorkerSandbox,
    make_episode: Callable[..., Episode],
) -> StepResult:
    eid = job.episode_id

    def fresh() -> Episode:
        old = live.pop(eid, None)
        if old is not None:
            close_episode(old.episode)
        return make_episode(job.task, pipeline=job.pipeline, sandbox=sandbox, **job.caps)

    if job.kind == "reset":
        ep = fresh()
        obs = ep.reset()
        live[eid] = LiveEpisode(ep)
        sandbox.end_of_job()
        info = json_safe({"messages": ep.messages, "tools": ep.tools})
        return StepResult(eid, obs, 0.0, False, info)

    n = len(job.history)
    held = live.get(eid)
    if held is None or held.steps != n - 1:
        # replay on this worker: a fresh workspace, then every earlier turn
        ep = fresh()
        ep.reset()
        live[eid] = held = LiveEpisode(ep)
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
            held.steps = i + 1
    ep = held.episode
    n_before = len(ep.messages)
    before = getattr(getattr(ep, "toolbox", None), "last_validation", None)
    obs, reward, done, info = ep.step(job.history[-1])
    held.steps = n
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
    info = json_safe(info)
    outcome = info.get("outcome") if done else None
    if done:
        live.pop(eid, None)
        close_episode(ep)
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


class EpisodeHost:
    """A worker's state: its sandbox (with the fault plan), validation cache and the episodes
    it holds live. ``handle`` runs one job and never raises: failures become infra replies."""

    def __init__(
        self,
        sandbox_kind: str,
        sandbox_opts: dict,
        faults: FaultPlan,
        cache_dir: str | None,
    ):
        from . import make_sandbox

        self.faults = faults
        self.cache = ValidationCache(Path(cache_dir)) if cache_dir else None
        self.sandbox = WorkerSandbox(make_sandbox(sandbox_kind, **sandbox_opts), faults.log_dir)
        self.make_episode = episode_factory(self.cache)
        self.live: dict[str, LiveEpisode] = {}

    def handle(self, job: Job) -> Reply:
        for eid in job.drop:
            held = self.live.pop(eid, None)
            if held is not None:
                close_episode(held.episode)
        step_idx = len(job.history) - 1 if job.kind == "step" else -1
        key = (job.episode_id, step_idx, job.attempt)
        sandbox, cache = self.sandbox, self.cache
        sandbox.arm(self.faults.kind(key), key, job.task)
        builds0, hits0 = sandbox.builds, cache.hits if cache else 0
        result, error = None, ""
        try:
            result = run_job(job, self.live, sandbox, self.make_episode)
        except Exception as e:  # noqa: BLE001 - every failure becomes a reported infra error
            held = self.live.pop(job.episode_id, None)
            if held is not None:
                close_episode(held.episode)
            error = f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=4)}"
        finally:
            sandbox.disarm()
        return Reply(
            job.job_id,
            result,
            error,
            builds=sandbox.builds - builds0,
            cache_hits=(cache.hits if cache else 0) - hits0,
        )

    def close(self) -> None:
        for held in self.live.values():
            close_episode(held.episode)
        self.live.clear()


def worker_main(
    slot: int,
    conn: Connection,
    sandbox_kind: str,
    sandbox_opts: dict,
    faults: FaultPlan,
    cache_dir: str | None,
) -> None:
    """A spawned process farm worker: jobs in, replies out, over its own pipe."""
    os.setsid()  # own process group: killing it kills every build started in it
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        host = EpisodeHost(sandbox_kind, sandbox_opts, faults, cache_dir)
    except BaseException as e:  # noqa: BLE001 - reported to the farm, which refuses to start
        conn.send(Fatal(f"worker {slot} could not start: {type(e).__name__}: {e}"))
        return
    conn.send(Ready(os.getpid()))
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            break
        if job is None:
            break
        reply = host.handle(job)
        try:
            conn.send(reply)
        except (BrokenPipeError, OSError):
            break
    host.close()
