"""The multi-turn rollout workload of `rollout_engine.py` and the loops that drive engines over it.

Kept free of jax and torch: the same code drives our JAX engine and vLLM (whose process must not
load jax), so every engine sees the same episodes, lengths and seeds.

An episode is a first prompt and, per turn, a completion length and (between turns) a tool
output. Turn k's prompt is the whole transcript so far: first prompt, then for every earlier
turn its completion and the tool output that followed. Completion lengths are fixed by the
workload (no stop tokens, `max_new_tokens` = the drawn length), so every engine generates
exactly the same number of tokens even though the sampled token ids differ.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence

import numpy as np

from jaxrepair.engine.api import Completion, Request, RolloutEngine, Sampling


@dataclasses.dataclass(frozen=True)
class Episode:
    first_prompt: tuple[int, ...]
    completion_lengths: tuple[int, ...]  # one per turn
    tool_outputs: tuple[tuple[int, ...], ...]  # one per turn but the last

    @property
    def turns(self) -> int:
        return len(self.completion_lengths)


@dataclasses.dataclass(frozen=True)
class WorkloadSpec:
    episodes: int = 64
    min_turns: int = 3
    max_turns: int = 6
    prompt_len: tuple[int, int] = (96, 320)  # first prompt, uniform [lo, hi]
    tool_len: tuple[int, int] = (16, 96)  # tool output between turns, uniform [lo, hi]
    # completion length ~ lognormal(log(median), sigma), clipped: a long tail of long turns
    completion_median: float = 48.0
    completion_sigma: float = 0.9
    completion_len: tuple[int, int] = (4, 384)
    temperature: float = 1.0

    def max_transcript(self) -> int:
        return (
            self.prompt_len[1]
            + self.max_turns * self.completion_len[1]
            + (self.max_turns - 1) * self.tool_len[1]
        )


QUICK_SPEC = WorkloadSpec(
    episodes=8,
    min_turns=2,
    max_turns=3,
    prompt_len=(24, 64),
    tool_len=(8, 24),
    completion_median=12.0,
    completion_len=(2, 48),
)


def make_workload(
    spec: WorkloadSpec, vocab: int, lengths_seed: int, tokens_seed: int
) -> list[Episode]:
    """Episodes whose lengths come from `lengths_seed` and token ids (in [1, vocab)) from
    `tokens_seed`: a warm-up pass gets the timed pass's shapes (so every compile happens in
    it) but no shared prefix (so no cache hit carries over between passes)."""
    lr = np.random.default_rng(lengths_seed)
    tr = np.random.default_rng(tokens_seed + 1_000_003)
    out = []
    for _ in range(spec.episodes):
        turns = int(lr.integers(spec.min_turns, spec.max_turns + 1))
        p = int(lr.integers(spec.prompt_len[0], spec.prompt_len[1] + 1))
        raw = lr.lognormal(np.log(spec.completion_median), spec.completion_sigma, size=turns)
        comp = np.clip(np.rint(raw), *spec.completion_len).astype(int)
        tools = lr.integers(spec.tool_len[0], spec.tool_len[1] + 1, size=turns - 1)
        out.append(
            Episode(
                first_prompt=tuple(int(t) for t in tr.integers(1, vocab, size=p)),
                completion_lengths=tuple(int(c) for c in comp),
                tool_outputs=tuple(
                    tuple(int(t) for t in tr.integers(1, vocab, size=int(n))) for n in tools
                ),
            )
        )
    return out


def summary(episodes: Sequence[Episode]) -> dict[str, float]:
    comps = [c for e in episodes for c in e.completion_lengths]
    return {
        "episodes": len(episodes),
        "turns": len(comps),
        "generated_tokens": int(sum(comps)),
        "completion_len_mean": float(np.mean(comps)),
        "completion_len_p50": float(np.median(comps)),
        "completion_len_p90": float(np.percentile(comps, 90)),
        "completion_len_max": int(max(comps)),
    }


def turn_seed(pass_seed: int, episode: int, turn: int) -> int:
    return (pass_seed * 1_000 + episode) * 16 + turn


@dataclasses.dataclass
class _Live:
    transcript: list[int]
    turn: int = 0


def drive_engine(
    engine: RolloutEngine, episodes: Sequence[Episode], temperature: float, pass_seed: int
) -> dict[str, float]:
    """Submit every episode's first turn; submit turn k+1 as soon as turn k completes.

    Returns totals: generated tokens, prompt tokens (prefilled and cached, as the engine's
    completions report them), wall seconds, steps, and the mean number of requests that got
    tokens per step (the decode batch the engine actually ran).
    """
    live: dict[int, tuple[int, _Live]] = {}  # request id -> (episode index, state)

    def submit(i: int, state: _Live) -> None:
        ep = episodes[i]
        req = Request(
            prompt=tuple(state.transcript),
            sampling=Sampling(
                max_new_tokens=ep.completion_lengths[state.turn], temperature=temperature
            ),
            seed=turn_seed(pass_seed, i, state.turn),
        )
        live[engine.add(req)] = (i, state)

    done: list[Completion] = []
    steps = 0
    active_sum = 0
    t0 = time.perf_counter()
    for i, ep in enumerate(episodes):
        submit(i, _Live(list(ep.first_prompt)))
    while engine.has_work():
        events = engine.step()
        steps += 1
        active_sum += sum(1 for e in events if e.tokens)
        for ev in events:
            if ev.done is None:
                continue
            i, state = live.pop(ev.request_id)
            done.append(ev.done)
            ep = episodes[i]
            if len(ev.done.tokens) != ep.completion_lengths[state.turn]:
                raise RuntimeError(
                    f"episode {i} turn {state.turn}: engine returned {len(ev.done.tokens)} "
                    f"tokens, asked for {ep.completion_lengths[state.turn]}"
                )
            if state.turn + 1 < ep.turns:
                state.transcript += list(ev.done.tokens) + list(ep.tool_outputs[state.turn])
                state.turn += 1
                submit(i, state)
    wall = time.perf_counter() - t0
    if live:
        raise RuntimeError(f"engine has no work but {len(live)} requests never completed")
    return {
        "wall_s": wall,
        "generated_tokens": sum(len(c.tokens) for c in done),
        "prompt_tokens": sum(c.prompt_tokens for c in done),
        "cached_prompt_tokens": sum(c.cached_prompt_tokens for c in done),
        "prefilled_prompt_tokens": sum(c.prompt_tokens - c.cached_prompt_tokens for c in done),
        "requests": len(done),
        "steps": steps,
        "mean_active_requests_per_step": active_sum / max(steps, 1),
    }


# A static batched generate: (prompts, max_new_tokens, seeds) -> (completions, stats), where
# stats has "padded_prompt_tokens" and "slot_tokens" (batch rows x decode steps it ran).
StaticGenerate = Callable[[list[list[int]], int, list[int]], tuple[list[list[int]], dict[str, int]]]


def drive_static(
    generate: StaticGenerate, episodes: Sequence[Episode], pass_seed: int
) -> dict[str, float]:
    """Today's way: every round, `generate` over the episodes still live (in as many calls as
    `generate` needs), decoding until the longest completion is done (shorter rows are cut to
    their length)."""
    states = [_Live(list(ep.first_prompt)) for ep in episodes]
    totals = {"generated_tokens": 0, "prompt_tokens": 0, "padded_prompt_tokens": 0}
    slot_tokens = 0
    calls = 0
    t0 = time.perf_counter()
    while True:
        idx = [i for i, s in enumerate(states) if s.turn < episodes[i].turns]
        if not idx:
            break
        lens = [episodes[i].completion_lengths[states[i].turn] for i in idx]
        prompts = [list(states[i].transcript) for i in idx]
        seeds = [turn_seed(pass_seed, i, states[i].turn) for i in idx]
        outs, stats = generate(prompts, max(lens), seeds)
        calls += 1
        slot_tokens += stats["slot_tokens"]
        totals["padded_prompt_tokens"] += stats["padded_prompt_tokens"]
        totals["prompt_tokens"] += sum(len(p) for p in prompts)
        for i, n, out in zip(idx, lens, outs, strict=True):
            if len(out) < n:
                raise RuntimeError(f"generate returned {len(out)} tokens for a {n}-token turn")
            totals["generated_tokens"] += n
            s, ep = states[i], episodes[i]
            if s.turn + 1 < ep.turns:
                s.transcript += list(out[:n]) + list(ep.tool_outputs[s.turn])
            s.turn += 1
    wall = time.perf_counter() - t0
    return {
        "wall_s": wall,
        **totals,
        "cached_prompt_tokens": 0,
        "prefilled_prompt_tokens": totals["prompt_tokens"],
        "rounds": calls,
        "decode_slot_occupancy": totals["generated_tokens"] / max(slot_tokens, 1),
    }
