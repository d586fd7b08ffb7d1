"""The typed contract between a rollout engine and whoever drives it (trainer, eval, server).

An engine takes `Request`s (token ids + `Sampling`), runs them with continuous batching and
reports progress as `Event`s: each call to `step()` returns the tokens each running request
produced since the last call, and a `Completion` for each request that finished. `generate`
is the blocking convenience on top (results in request order). Any engine (ours in JAX, or an
external one such as vLLM) implements `RolloutEngine`.

Sampling semantics are those of `jaxrepair.model.sampler.generate`: temperature 0 is greedy;
top-k <= 0 and top-p >= 1 are off; a request ends at its first stop token (kept) or after
`max_new_tokens`; log-probs are the sampled token's under softmax(logits / temperature) before
top-k/top-p truncation (temperature 0 counts as 1). Token t of a request is drawn with
`fold_in(request key, t)`, so a request's completion does not depend on what it was batched
with.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Literal, Protocol

FinishReason = Literal["stop", "length"]


@dataclasses.dataclass(frozen=True)
class Sampling:
    """Per-request sampling settings."""

    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    stop_tokens: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be a positive int, got {self.max_new_tokens!r}")
        if not (self.temperature >= 0 and math.isfinite(self.temperature)):
            raise ValueError(f"temperature must be a finite number >= 0, got {self.temperature!r}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if not isinstance(self.top_k, int) or not -(2**31) <= self.top_k < 2**31:
            raise ValueError(f"top_k must be a 32-bit int (0 = off), got {self.top_k!r}")
        object.__setattr__(self, "stop_tokens", tuple(int(t) for t in self.stop_tokens))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclasses.dataclass(frozen=True)
class Request:
    """One generation request: a prompt of token ids, its sampling, and its random seed.

    `seed` is either an int or a raw uint32[2] key as a tuple; greedy requests ignore it.
    """

    prompt: tuple[int, ...]
    sampling: Sampling
    seed: int | tuple[int, int] = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "prompt", tuple(int(t) for t in self.prompt))
        if not self.prompt:
            raise ValueError("a request needs a non-empty prompt")


@dataclasses.dataclass(frozen=True)
class Completion:
    """A finished request. `versions[t]` is the policy version that sampled token t."""

    request_id: int
    tokens: tuple[int, ...]
    logprobs: tuple[float, ...]
    finish_reason: FinishReason
    prompt_tokens: int
    cached_prompt_tokens: int  # prompt tokens whose KV came from the cache (not prefilled)
    versions: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Event:
    """New tokens of a running request since the previous `step()`; `done` when it finished."""

    request_id: int
    tokens: tuple[int, ...]
    logprobs: tuple[float, ...]
    done: Completion | None = None


class RolloutEngine(Protocol):
    """What trainers, evaluation and the server need from an engine."""

    @property
    def vocab_size(self) -> int: ...

    def add(self, request: Request) -> int:
        """Queue a request; returns its id (unique for the engine's lifetime)."""
        ...

    def step(self) -> list[Event]:
        """One scheduling round (admit, prefill, a decode chunk); events of this round."""
        ...

    @property
    def version(self) -> int:
        """The policy version of the weights it samples with now."""
        ...

    @property
    def max_seq_len(self) -> int:
        """Most prompt + completion tokens one request may have."""
        ...

    def cancel(self, request_id: int) -> bool:
        """Drop a queued or running request (a client went away); False if it is unknown or
        already finished. Its cached prefix stays reusable."""
        ...

    def has_work(self) -> bool:
        """True while any request is queued or running."""
        ...

    def generate(self, requests: Sequence[Request]) -> list[Completion]:
        """Run requests to completion; completions in request order."""
        ...

    def update_weights(self, params: object, version: int) -> float:
        """Load new policy weights (the learner's params tree); returns seconds it took.

        Requests in flight continue under the new weights from their next token on.
        """
        ...
