"""The contract between environment backends and the trainers that drive them.

A trainer (the rollout collector, evaluation, GRPO) talks to environments only through
`EnvService`: start an episode, apply assistant turns, end it early, and read the
"every started episode ends exactly once" tally. Any backend (the process farm, a test fake,
a farm on another engine) that implements these methods can be driven; nothing else of the
backend is used.

Every episode that starts ends in exactly one `Outcome`: scored (``pass``/``fail``),
``truncated`` (the policy ran out of context, new tokens or turns: reward 0, masked by the
loss) or ``infra_error`` (the environment failed for reasons not the agent's: excluded from
advantages, never scored 0). `EpisodeTally` counts them; every accounting in the project is
one.

This module never imports JAX.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable, Mapping
from typing import Any, Protocol, runtime_checkable

__all__ = ["EnvService", "EpisodeTally", "IdleFarm", "Outcome", "StepResult", "episode_owner"]


class Outcome(enum.StrEnum):
    """How an episode ended. String-valued: members equal, hash and serialise (JSON, records,
    pickles read by older code) as their plain strings."""

    PASS = "pass"
    FAIL = "fail"
    TRUNCATED = "truncated"
    INFRA_ERROR = "infra_error"

    @property
    def scored(self) -> bool:
        """pass or fail: the build validation gave the episode a reward."""
        return self in (Outcome.PASS, Outcome.FAIL)


@dataclasses.dataclass
class StepResult:
    """What a reset or step returned. ``outcome`` is set when ``done``: pass, fail, truncated
    or infra_error (infra errors are not scores: exclude them from advantages). A reset's
    ``info`` holds the episode's first "messages" and its "tools"; a step's info holds the
    env's "new_messages" and, when done, "tool_calls", "tampered" and the end details."""

    episode_id: str
    observation: str
    reward: float
    done: bool
    info: dict[str, Any]
    outcome: str | None = None  # an Outcome (plain strings from older records compare equal)
    attempts: int = 1
    infra_error: str | None = None

    @property
    def failed(self) -> bool:
        """The environment could not run this reset/step (an infra error, not a score)."""
        return self.outcome == Outcome.INFRA_ERROR or bool(self.infra_error)


@dataclasses.dataclass
class EpisodeTally:
    """Episodes started and how they ended: started = scored + truncated + infra_error +
    in_flight. ``complete`` when nothing is in flight and every started episode ended exactly
    once. Tallies of disjoint sets of episodes (processes, collects, steps) add with ``+``."""

    started: int = 0
    scored: int = 0
    passed: int = 0
    truncated: int = 0
    infra_error: int = 0
    in_flight: int = 0

    KEYS = ("started", "scored", "passed", "truncated", "infra_error", "in_flight")

    @property
    def ended(self) -> int:
        return self.scored + self.truncated + self.infra_error

    @property
    def complete(self) -> bool:
        return self.in_flight == 0 and self.started == self.ended

    def record(self, outcome: str) -> None:
        """Count one ended episode by its outcome."""
        o = Outcome(outcome)  # ValueError names an unknown outcome
        if o is Outcome.TRUNCATED:
            self.truncated += 1
        elif o is Outcome.INFRA_ERROR:
            self.infra_error += 1
        else:
            self.scored += 1
            self.passed += int(o is Outcome.PASS)

    def __add__(self, other: EpisodeTally) -> EpisodeTally:
        return EpisodeTally(*(getattr(self, k) + getattr(other, k) for k in self.KEYS))

    def to_dict(self) -> dict[str, Any]:
        """The accounting record: the counts and ``complete``."""
        return {**{k: getattr(self, k) for k in self.KEYS}, "complete": self.complete}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EpisodeTally:
        """The tally part of an accounting record (missing counts are 0)."""
        return cls(**{k: int(d.get(k, 0)) for k in cls.KEYS})

    @classmethod
    def total(cls, tallies: Iterable[EpisodeTally]) -> EpisodeTally:
        out = cls()
        for t in tallies:
            out = out + t
        return out


@runtime_checkable
class EnvService(Protocol):
    """What a trainer may ask of an environment backend.

    ``reset`` and ``step`` are coroutines (many episodes run concurrently); a reset or step
    that fails in the environment returns a done result with outcome infra_error rather than
    raising. ``truncate`` and ``abandon`` end an episode from the caller's side (no-ops on an
    ended one; KeyError for an unknown one). ``accounting`` is an `EpisodeTally.to_dict`
    record, possibly with backend details beside it; ``metrics`` holds throughput counters
    (at least "builds" and "cache_hits" when the backend validates builds).
    """

    async def reset(self, episode_id: str, task: Any, pipeline: str) -> StepResult: ...

    async def step(self, episode_id: str, assistant_text: str) -> StepResult: ...

    def truncate(self, episode_id: str, reason: str) -> None: ...

    def abandon(self, episode_id: str, reason: str) -> None: ...

    def outcome(self, episode_id: str) -> str | None: ...

    def accounting(self) -> dict[str, Any]: ...

    def metrics(self) -> dict[str, Any]: ...


def episode_owner(index: int, drivers: int) -> int:
    """The JAX process whose farm runs episode `index` when processes 0..drivers-1 drive
    farms: episodes spread round-robin over the drivers. A job whose farm is one cluster-wide
    service (Ray) has one driver, process 0; a job of per-host process farms has one per
    process, so builds use every host's CPUs."""
    if drivers < 1:
        raise ValueError(f"a job needs at least one farm driver, got {drivers}")
    return index % drivers


class IdleFarm:
    """The `EnvService` of a JAX process that drives no farm (the job's farm is driven by
    another process): it runs no episode, and its accounting is an empty complete tally, so
    job-wide merges of every process's accounting stay exact."""

    async def reset(self, episode_id: str, task: Any, pipeline: str) -> StepResult:
        raise RuntimeError(f"episode {episode_id}: this process drives no farm")

    async def step(self, episode_id: str, assistant_text: str) -> StepResult:
        raise RuntimeError(f"episode {episode_id}: this process drives no farm")

    def truncate(self, episode_id: str, reason: str) -> None:
        raise KeyError(episode_id)

    def abandon(self, episode_id: str, reason: str) -> None:
        raise KeyError(episode_id)

    def outcome(self, episode_id: str) -> str | None:
        return None

    def accounting(self) -> dict[str, Any]:
        return EpisodeTally().to_dict()

    def metrics(self) -> dict[str, Any]:
        return {}

    def start(self) -> IdleFarm:
        return self

    def close(self) -> None:
        pass

    def __enter__(self) -> IdleFarm:
        return self

    def __exit__(self, *exc: object) -> None:
        pass
