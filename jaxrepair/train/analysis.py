"""The paper's analyses of evaluated and trained episodes, from trajectory records alone.

- `pass_at_k` / `success_summary`: avg@k and pass@k with confidence intervals (the unbiased
  pass@k estimator of Chen et al. 2021; Wilson intervals for a success rate; a normal interval
  over tasks for avg@k and pass@k, whose samples are per-task means).
- `tool_markov_chain`: transition probabilities between the agent's tool calls, with start and
  end states, and each tool's share of the calls; the paper reads RL's effect from how this
  chain shifts (towards dependency upgrades and validate-and-build).
- `mismatch_matrix`: success of checkpoints trained in one pipeline when evaluated in each
  pipeline; RL helps only where the two match.
- `HackingMonitor`: per GRPO step, the share of rollouts whose answer tripped a reward guard
  (protected paths, removed tests, edited validation files), and an alarm when it rises.

Everything here is plain Python and numpy over JSON-safe records, so it runs on the
trajectory files of any run, ours or another framework's.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "END",
    "GUARDS",
    "START",
    "HackingMonitor",
    "MarkovChain",
    "mismatch_matrix",
    "pass_at_k",
    "success_summary",
    "tool_markov_chain",
    "tool_sequence",
    "wilson_interval",
]

log = logging.getLogger(__name__)

START, END = "(start)", "(end)"  # readable in Markdown tables, never a tool name
# the reward's guards (jaxrepair.envs.reward): what an answer that games the reward trips
GUARDS = ("protected_path", "tests_removed", "validation_changed")
Z95 = 1.959963984540054


# ----------------------------------------------------------------------------- success
def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k samples drawn without replacement from n samples,
    c of them correct, is correct: 1 - C(n-c, k) / C(n, k)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n (n={n}, c={c}, k={k})")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (stays inside [0, 1], sane at 0 and n)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, mid - half), min(1.0, mid + half)


def _mean_interval(values: Sequence[float], z: float = Z95) -> tuple[float, float, float]:
    """Mean and a normal-approximation interval over per-task values (clipped to [0, 1])."""
    x = np.asarray(values, np.float64)
    if x.size == 0:
        return 0.0, 0.0, 1.0
    m = float(x.mean())
    half = z * float(x.std(ddof=1)) / math.sqrt(x.size) if x.size > 1 else 0.0
    return m, max(0.0, m - half), min(1.0, m + half)


def success_summary(outcomes: Mapping[str, Sequence[bool]], ks: Sequence[int] = (1,)) -> dict:
    """avg@k and pass@k (for each k no larger than every task's sample count) with 95%
    intervals, from each task's sample outcomes {task: [solved, ...]}."""
    per_task = {t: list(v) for t, v in outcomes.items() if len(v)}
    flat = [s for v in per_task.values() for s in v]
    wins = int(sum(flat))
    avg, lo, hi = _mean_interval([float(np.mean(v)) for v in per_task.values()])
    out: dict[str, Any] = {
        "tasks": len(per_task),
        "samples": len(flat),
        "success_rate": wins / len(flat) if flat else 0.0,
        "success_ci": list(wilson_interval(wins, len(flat))),
        "avg_at_k": avg,
        "avg_at_k_ci": [lo, hi],
    }
    n_min = min((len(v) for v in per_task.values()), default=0)
    for k in ks:
        if 1 <= k <= n_min:
            vals = [pass_at_k(len(v), int(sum(v)), k) for v in per_task.values()]
            m, lo, hi = _mean_interval(vals)
            out[f"pass_at_{k}"] = m
            out[f"pass_at_{k}_ci"] = [lo, hi]
    return out


# ----------------------------------------------------------------------------- tool use
def tool_sequence(messages: Sequence[Mapping[str, Any]]) -> list[str]:
    """The names of the tool calls of an episode's assistant turns, in order."""
    names: list[str] = []
    for m in messages:
        if m.get("role") != "assistant":
            continue
        for call in m.get("tool_calls") or ():
            fn = call.get("function", call)
            names.append(str(fn.get("name", "?")))
    return names


@dataclasses.dataclass(frozen=True)
class MarkovChain:
    """Transition counts between states (START, the tools, END); row i -> column j."""

    states: tuple[str, ...]
    counts: np.ndarray  # [S, S] int

    @property
    def probabilities(self) -> np.ndarray:
        """Row-normalised counts (rows without transitions stay 0: END has none)."""
        rows = self.counts.sum(axis=1, keepdims=True)
        return np.divide(self.counts, rows, out=np.zeros(self.counts.shape), where=rows > 0)

    def probability(self, a: str, b: str) -> float:
        return float(self.probabilities[self.states.index(a), self.states.index(b)])

    @property
    def tool_share(self) -> dict[str, float]:
        """Each tool's share of all tool calls (the columns' counts, START/END excluded)."""
        calls = self.counts.sum(axis=0)
        tools = [(s, int(calls[i])) for i, s in enumerate(self.states) if s not in (START, END)]
        total = sum(n for _, n in tools)
        return {s: n / total if total else 0.0 for s, n in tools}

    def to_dict(self) -> dict[str, Any]:
        return {
            "states": list(self.states),
            "counts": self.counts.tolist(),
            "probabilities": self.probabilities.round(6).tolist(),
            "tool_share": self.tool_share,
        }


def tool_markov_chain(
    episodes: Iterable[Sequence[Mapping[str, Any]]], tools: Sequence[str] = ()
) -> MarkovChain:
    """The chain of tool calls over `episodes` (each an episode's messages): START -> first
    call -> ... -> last call -> END (START -> END for an episode without calls). `tools`
    fixes the tool states' order (others seen are appended, sorted), so chains of two models
    compare cell by cell."""
    seqs = [tool_sequence(m) for m in episodes]
    seen = sorted({n for s in seqs for n in s} - set(tools))
    states = (START, *tools, *seen, END)
    idx = {s: i for i, s in enumerate(states)}
    counts = np.zeros((len(states), len(states)), np.int64)
    for s in seqs:
        path = [START, *s, END]
        for a, b in zip(path, path[1:], strict=False):
            counts[idx[a], idx[b]] += 1
    return MarkovChain(states, counts)


# ----------------------------------------------------------------------------- transfer
def mismatch_matrix(
    results: Mapping[str, Mapping[str, float]], pipelines: Sequence[str]
) -> tuple[list[str], list[str], np.ndarray]:
    """(rows, columns, success[row, column]) of checkpoints x evaluation pipelines from
    {checkpoint: {pipeline: success}}; a pipeline a checkpoint was not evaluated in is NaN."""
    rows = list(results)
    m = np.full((len(rows), len(pipelines)), np.nan)
    for i, r in enumerate(rows):
        for j, p in enumerate(pipelines):
            if p in results[r]:
                m[i, j] = float(results[r][p])
    return rows, list(pipelines), m


# ----------------------------------------------------------------------------- hacking
class HackingMonitor:
    """Per GRPO step: the share of (valid) rollouts whose answer tripped each reward guard,
    and an alarm when the share of the last `window` steps reaches `floor` and at least
    `ratio` times the share of the run's first `window` steps (reward hacking grows with
    training; a constant low rate is the policy's noise)."""

    def __init__(self, window: int = 5, ratio: float = 2.0, floor: float = 0.05):
        if window < 1 or ratio < 1 or not 0 < floor <= 1:
            raise ValueError("HackingMonitor needs window >= 1, ratio >= 1, 0 < floor <= 1")
        self.window, self.ratio, self.floor = window, ratio, floor
        self.rates: list[float] = []
        self.alarmed_at: int | None = None

    def update(self, step: int, guards: Sequence[str | None]) -> dict[str, float]:
        """Metrics of one step from its valid rollouts' guards (the guard an answer tripped,
        None for an honest one); logs a warning the first time the alarm condition holds."""
        n = max(1, len(guards))
        fired = collections.Counter(g for g in guards if g is not None)
        rate = sum(fired.values()) / n
        self.rates.append(rate)
        out = {"hack_rate": rate, **{f"hack_{g}": fired.get(g, 0) / n for g in GUARDS}}
        out["hack_alarm"] = float(self.alarm)
        if self.alarm and self.alarmed_at is None:
            self.alarmed_at = step
            log.warning(
                "reward hacking rising at step %d: %.1f%% of the last %d steps' rollouts "
                "tripped a reward guard (%s), against %.1f%% at the start",
                step,
                100 * self.recent,
                self.window,
                ", ".join(f"{g} {c}" for g, c in sorted(fired.items())) or "none this step",
                100 * self.baseline,
            )
        return out

    @property
    def baseline(self) -> float:
        return float(np.mean(self.rates[: self.window])) if self.rates else 0.0

    @property
    def recent(self) -> float:
        return float(np.mean(self.rates[-self.window :])) if self.rates else 0.0

    @property
    def alarm(self) -> bool:
        if len(self.rates) < 2 * self.window:
            return False
        return self.recent >= self.floor and self.recent >= self.ratio * self.baseline
