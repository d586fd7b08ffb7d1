"""The JAX-side driver of the environment farm: G episodes per task, batched generation,
correct as a multi-controller program and independent of timing.

Why it is shaped this way:
- Environment steps (builds, tool calls) run on CPU worker processes and take seconds;
  generation runs on the accelerator. Episodes are split into fixed *chunks* of
  `sampling.max_batch` consecutive episodes. A chunk generates one turn for all its live
  episodes in ONE `generate` call, as soon as none of them is still in the farm; chunks advance
  independently, so slow builds of one chunk never hold up another.
- What a chunk generates depends only on its episodes' transcripts and a key derived from
  (chunk, turn): never on which builds happened to finish first. The same seed gives the same
  rollouts on any number of processes, with any environment latency.
- Several JAX processes (one per host): episode i runs in the farm of process
  `episode_owner(i, farm_drivers)`: i % P when every process drives a farm of its own (builds
  spread over every host), process 0 when the job has one farm driver (a cluster-wide Ray
  farm). Each `poll` exchanges the results that arrived since the last one
  (`multihost.allgather_objects`) and applies them in episode order, so every process holds the
  same transcripts and issues the same `generate` calls in the same order. Generated tokens
  come back from the device with `process_allgather`; no process reads another's shards.
- `poll` is one round of that protocol; callers interleave it with training (GRPO overlap)
  at points that are the same on every process.

Token transcript per episode (what the trainer trains on; generated text is never
re-tokenised):

    prompt ids   = chat.encode_prompt(reset messages, tokenizer, tools)       loss mask 0
    completion   = the sampler's ids verbatim (stop token included)           loss mask 1,
                   with the sampler's log-probs
    continuation = tokenize("\\n" + the env's new messages rendered as chat
                   + "<|im_start|>assistant\\n")                              loss mask 0
    completion, continuation, ... until the env says done

Endings (every episode that starts ends in exactly one of them):
- scored: the env finished it (outcome pass/fail, reward from build validation);
- truncated: it would exceed `max_seq_len`, or a completion hit `max_new_tokens` without a stop
  token, or the driver's turn cap: reward 0 and `truncated=True` so grpo_loss can mask it;
- infra_error: reset/step failed in the farm (after its retries): `valid=False`, excluded from
  the advantages, never scored 0.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from jaxrepair import multihost
from jaxrepair.engine.api import RolloutEngine
from jaxrepair.envs.chat import encode_prompt, parse_assistant
from jaxrepair.envs.protocol import EnvService, EpisodeTally, Outcome, StepResult, episode_owner
from jaxrepair.train.rollout import (
    AcceleratorClock,
    Rollout,
    RolloutStats,
    SamplingSettings,
    continuation_ids,
)

__all__ = ["Collector", "collect", "merge_accounting", "merge_metrics"]

_ENV, _GEN, _DONE = "env", "gen", "done"


@dataclasses.dataclass
class _Episode:
    r: Rollout
    task: Any
    status: str = _ENV  # env: in the farm; gen: waiting for its chunk's generation; done


class Collector:
    """G rollouts of every task, laid out group by group (task-major); see the module doc.

    collector = Collector(params, cfg, tasks, G, farm, tokenizer, sampling, key, ...)
    collector.start()                  # resets of this process's episodes go to its farm
    while not collector.poll(0.05): ...  # or collector.run()
    rollouts, stats = collector.result()

    `farm` is any `EnvService` (jaxrepair.envs.protocol); nothing else of it is used. With
    `farm_drivers` = D (default: every process), processes 0..D-1 each pass their own farm and
    the others an `IdleFarm`. All processes call `start`, `poll`, `set_policy` and `result` in
    the same order.
    """

    def __init__(
        self,
        params: Any,
        cfg: Any,
        tasks: Sequence[Any],
        group_size: int,
        farm: EnvService,
        tokenizer: Any,
        sampling: SamplingSettings,
        rng: Any,
        pipeline: str = "simplified",
        max_seq_len: int = 4096,
        *,
        mesh: Any = None,
        generate_fn: Callable[..., Any] | None = None,
        engine: RolloutEngine | None = None,
        policy_version: int = 0,
        episode_prefix: str = "ep",
        max_turns: int = 64,
        clock: AcceleratorClock | None = None,
        truncate_unfinished: bool = True,
        farm_drivers: int | None = None,
    ):
        if group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {group_size}")
        if not tasks:
            raise ValueError("collect needs at least one task")
        if max_seq_len < 2:
            raise ValueError(f"max_seq_len must be >= 2, got {max_seq_len}")
        import jax

        from jaxrepair.model.sampler import generate

        self.params, self.cfg, self.farm, self.tok = params, cfg, farm, tokenizer
        self.sampling, self.pipeline, self.max_seq_len = sampling, pipeline, max_seq_len
        if engine is not None and generate_fn is not None:
            raise ValueError("pass either engine or generate_fn, not both")
        self.mesh, self.gen, self.engine = mesh, generate_fn or generate, engine
        self.policy_version = policy_version
        self.max_turns, self.clock = max_turns, clock
        self.truncate_unfinished = truncate_unfinished
        self.key = rng if rng is not None else jax.random.key(0)
        self.stop_ids = list(tokenizer.stop_ids)
        self.rank, self.nproc = jax.process_index(), jax.process_count()
        self.drivers = self.nproc if farm_drivers is None else farm_drivers
        if not 1 <= self.drivers <= self.nproc:
            raise ValueError(
                f"farm_drivers must be between 1 and the {self.nproc} processes, got {farm_drivers}"
            )
        self.eps = [
            _Episode(Rollout(t.id, g, i, f"{episode_prefix}-{g}-{i}-{t.id}", [], [], [], 0), t)
            for g, t in enumerate(tasks)
            for i in range(group_size)
        ]
        b = sampling.max_batch
        self.chunks = [
            list(range(s, min(s + b, len(self.eps)))) for s in range(0, len(self.eps), b)
        ]
        self.chunk_turns = [0] * len(self.chunks)
        self.stats = RolloutStats(tally=EpisodeTally(started=len(self.eps)))
        self._pending: dict[int, tuple[str, concurrent.futures.Future]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._t0 = 0.0
        self._farm_m0: dict[str, Any] = {}
        self._closed = False

    # ------------------------------------------------------------------ lifecycle
    def _owns(self, i: int) -> bool:
        return episode_owner(i, self.drivers) == self.rank

    def set_policy(self, params: Any, version: int) -> None:
        """Generate the rest of this collect with learner version `version` (partial rollouts:
        episodes in flight continue under the new weights; each token keeps the version that
        sampled it). Called at the same point on every process."""
        self.params, self.policy_version = params, version
        if self.engine is not None and self.engine.version != version:
            self.stats.reshard_s += self.engine.update_weights(params, version)

    def start(self) -> Collector:
        """Send the resets of this process's episodes to its farm (returns at once)."""
        self._t0 = time.perf_counter()
        self.set_policy(self.params, self.policy_version)
        self._farm_m0 = self.farm.metrics()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="collector-farm", daemon=True
        )
        self._thread.start()
        for i, ep in enumerate(self.eps):
            if self._owns(i):
                self._submit(i, "reset", self.farm.reset(ep.r.episode_id, ep.task, self.pipeline))
        return self

    def _submit(self, i: int, kind: str, coro: Any) -> None:
        assert self._loop is not None
        self._pending[i] = (kind, asyncio.run_coroutine_threadsafe(coro, self._loop))

    @property
    def done(self) -> bool:
        return all(ep.status == _DONE for ep in self.eps)

    def close(self) -> None:
        """End whatever is unfinished (after an error) as infra_error and stop the loop."""
        if self._closed:
            return
        self._closed = True
        for i, ep in enumerate(self.eps):
            if ep.status != _DONE:
                if self._owns(i):
                    _safe_abandon(self.farm, ep.r.episode_id, "driver stopped before the end")
                self._end(ep, Outcome.INFRA_ERROR, reason="driver stopped before the episode ended")
        for _, fut in self._pending.values():
            fut.cancel()
        self._pending.clear()
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            assert self._thread is not None
            self._thread.join(timeout=10)
            self._loop.close()
            self._loop = None

    # ------------------------------------------------------------------ one round
    def poll(self, wait_s: float = 0.05, generate: bool = True) -> bool:
        """One round: wait up to `wait_s` for farm results of this process, exchange every
        process's results, apply them in episode order, and (unless `generate` is False)
        generate for every chunk whose live episodes are all out of the farm. True once every
        episode has ended."""
        if self.done:
            return True
        in_env = any(ep.status == _ENV for ep in self.eps)
        if in_env and wait_s > 0:
            t0 = time.perf_counter()
            futs = [f for _, f in self._pending.values()]
            if not any(f.done() for f in futs):
                if futs:
                    concurrent.futures.wait(futs, wait_s, concurrent.futures.FIRST_COMPLETED)
                else:
                    time.sleep(wait_s)
            self.stats.env_wait_s += time.perf_counter() - t0
        mine = []
        for i in sorted(i for i, (_, f) in self._pending.items() if f.done()):
            kind, fut = self._pending.pop(i)
            mine.append(self._report(i, kind, fut))
        arrived = [p for part in multihost.allgather_objects(mine) for p in part]
        for p in sorted(arrived, key=lambda p: p["i"]):
            self._apply(p)
        waiting = sum(ep.status == _GEN for ep in self.eps)
        self.stats.max_queue_depth = max(self.stats.max_queue_depth, waiting)
        if not generate:
            return self.done
        ready = []
        for c, members in enumerate(self.chunks):
            live = [i for i in members if self.eps[i].status != _DONE]
            if live and all(self.eps[i].status == _GEN for i in live):
                ready.append((c, live))
        if self.engine is not None and ready:
            self._generate_with_engine(ready)
        for c, live in ready if self.engine is None else ():
            self._generate(c, live)
        return self.done

    def run(self, until_generated: bool = False, wait_s: float = 0.05) -> None:
        """Poll until every episode ended, or (`until_generated`) until every chunk has had its
        first generation, i.e. the farm holds all the remaining work."""
        while not self.poll(wait_s):
            if until_generated and all(
                t > 0 or all(self.eps[i].status == _DONE for i in m)
                for t, m in zip(self.chunk_turns, self.chunks, strict=True)
            ):
                return

    def result(self) -> tuple[list[Rollout], RolloutStats]:
        """Run to the end (if needed) and return the rollouts and this collect's stats."""
        try:
            self.run()
        finally:
            self.close()
        s = self.stats
        s.wall_s = time.perf_counter() - self._t0
        m1 = self.farm.metrics()
        local = {
            k: int(m1.get(k, 0)) - int(self._farm_m0.get(k, 0)) for k in ("cache_hits", "builds")
        }
        acct = self.farm.accounting()
        every = multihost.allgather_objects((local, acct))
        s.cache_hits = sum(d["cache_hits"] for d, _ in every)
        s.builds = sum(d["builds"] for d, _ in every)
        s.farm_accounting = merge_accounting([a for _, a in every])
        return [ep.r for ep in self.eps], s

    # ------------------------------------------------------------------ farm results
    def _report(self, i: int, kind: str, fut: concurrent.futures.Future) -> dict[str, Any]:
        """What the rest of the job needs to know of a finished reset/step (picklable)."""
        ep = self.eps[i]
        eid = ep.r.episode_id
        try:
            res: StepResult = fut.result()
        except Exception as e:  # noqa: BLE001 - the farm reports faults as infra_error
            _safe_abandon(self.farm, eid, f"{kind} raised {type(e).__name__}: {e}")
            return {"i": i, "kind": kind, "infra": f"{kind}: {type(e).__name__}: {e}"}
        if kind == "reset":
            if res.failed or self.farm.outcome(eid) == Outcome.INFRA_ERROR:
                return {"i": i, "kind": kind, "infra": "reset failed in the farm"}
            info = res.info or {}
            if not info.get("messages"):  # a backend off the contract: end it, here and there
                why = f"{type(self.farm).__name__}.reset returned no 'messages' in its info"
                _safe_abandon(self.farm, eid, why)
                return {"i": i, "kind": kind, "infra": why}
            return {
                "i": i,
                "kind": kind,
                "messages": list(info["messages"]),
                "tools": info.get("tools"),
            }
        info = res.info or {}
        out: dict[str, Any] = {
            "i": i,
            "kind": kind,
            "done": bool(res.done),
            "new_messages": list(info.get("new_messages") or []),
        }
        if res.done:
            calls = info.get("tool_calls")
            out.update(
                tool_calls=len(calls) if isinstance(calls, list) else int(calls or 0),
                tampered=bool(info.get("tampered", False)),
                info={k: info[k] for k in ("end_reason", "guard", "steps") if k in info},
                reward=float(res.reward),
                outcome=res.outcome or (Outcome.PASS if res.reward > 0 else Outcome.FAIL),
            )
            if res.failed:
                out["infra"] = res.infra_error or "step failed in the farm"
        return out

    def _apply(self, p: dict[str, Any]) -> None:
        """Apply one farm result to the replicated transcript (same on every process)."""
        i = p["i"]
        ep = self.eps[i]
        r = ep.r
        if p.get("infra") is not None:
            self._end(ep, Outcome.INFRA_ERROR, reason=p["infra"])
            return
        if p["kind"] == "reset":
            r.messages, r.tools = p["messages"], p["tools"]
            prompt = encode_prompt(r.messages, self.tok, r.tools, self.sampling.thinking)
            r.tokens, r.prompt_len = list(prompt), len(prompt)
            r.loss_mask, r.old_logprobs = [0] * len(prompt), [0.0] * len(prompt)
        elif p["done"]:
            r.tool_calls, r.tampered, r.info = p["tool_calls"], p["tampered"], p["info"]
            r.messages += p["new_messages"]
            self._end(ep, p["outcome"], p["reward"])
            return
        else:
            r.messages += p["new_messages"]
            cont = continuation_ids(
                self.tok,
                p["new_messages"],
                ended_with_im_end=r.tokens[-1] == self.tok.eos_id,
                thinking=self.sampling.thinking,
            )
            r.tokens += cont
            r.loss_mask += [0] * len(cont)
            r.old_logprobs += [0.0] * len(cont)
        if len(r.tokens) >= self.max_seq_len:  # no room to generate: keep max_seq_len tokens
            del r.tokens[self.max_seq_len :], r.loss_mask[self.max_seq_len :]
            del r.old_logprobs[self.max_seq_len :]
            self._truncate(i, "max_seq_len")
        elif r.turns >= self.max_turns:
            self._truncate(i, "max_turns")
        else:
            ep.status = _GEN

    def _end(self, ep: _Episode, outcome: str, reward: float = 0.0, reason: str | None = None):
        r, o = ep.r, Outcome(outcome)
        r.outcome = o
        r.reward = float(reward) if o.scored else 0.0
        if o is Outcome.TRUNCATED:
            r.truncated, r.truncation_reason = True, reason
        elif o is Outcome.INFRA_ERROR:
            r.infra_error = reason
        self.stats.tally.record(o)
        ep.status = _DONE

    def _truncate(self, i: int, reason: str) -> None:
        ep = self.eps[i]
        if self._owns(i):
            self.farm.truncate(ep.r.episode_id, reason)
        self._end(ep, Outcome.TRUNCATED, reason=reason)

    # ------------------------------------------------------------------ generation
    def _generate(self, c: int, live: list[int]) -> None:
        import jax

        key = jax.random.fold_in(jax.random.fold_in(self.key, c), self.chunk_turns[c])
        self.chunk_turns[c] += 1
        prompts = [self.eps[i].r.tokens for i in live]
        sp = self.sampling
        t0 = time.perf_counter()
        try:
            out = self.gen(
                self.params,
                self.cfg,
                prompts,
                max_new_tokens=sp.max_new_tokens,
                temperature=sp.temperature,
                top_p=sp.top_p,
                top_k=sp.top_k,
                stop_tokens=self.stop_ids,
                rng=key,
                pad_id=self.tok.pad_id,
                **({"mesh": self.mesh} if self.mesh is not None else {}),
            )
            tokens = np.asarray(out.tokens)
        except BaseException as e:
            raise RuntimeError(f"generation failed: {e!r}") from e
        self._record_generation(t0, len(live))
        logprobs, lengths = np.asarray(out.logprobs), np.asarray(out.lengths)
        for row, i in enumerate(live):
            n = int(lengths[row])
            comp = tokens[row, :n].tolist()
            self._take_completion(
                i, comp, logprobs[row, :n].tolist(), [self.policy_version] * len(comp)
            )

    def _generate_with_engine(self, ready: list[tuple[int, list[int]]]) -> None:
        """Every ready chunk's turn in one engine run: each process generates the episodes it
        owns on its own engine (request seeds as `generate`'s rows, so the rows are the
        static sampler's), then the completions are exchanged."""
        import jax

        from jaxrepair.engine.api import Request
        from jaxrepair.engine.jax_engine import row_seed

        assert self.engine is not None
        # the settings' knobs (a Sampling already) with the tokenizer's stop tokens
        sampling = dataclasses.replace(self.sampling, stop_tokens=tuple(self.stop_ids))
        mine: list[int] = []
        requests: list[Request] = []
        for c, live in ready:
            key = jax.random.fold_in(jax.random.fold_in(self.key, c), self.chunk_turns[c])
            self.chunk_turns[c] += 1
            for row, i in enumerate(live):
                if episode_owner(i, self.nproc) == self.rank:  # generation: every process
                    mine.append(i)
                    requests.append(Request(self.eps[i].r.tokens, sampling, row_seed(key, row)))
        t0 = time.perf_counter()
        try:
            done = self.engine.generate(requests) if requests else []
        except BaseException as e:
            raise RuntimeError(f"generation failed: {e!r}") from e
        self._record_generation(t0, sum(len(live) for _, live in ready))
        local = {
            i: (list(d.tokens), list(d.logprobs), list(d.versions), d.cached_prompt_tokens)
            for i, d in zip(mine, done, strict=True)
        }
        results: dict[int, tuple[list[int], list[float], list[int], int]] = {}
        for part in multihost.allgather_objects(local):
            results.update(part)
        for _, live in ready:
            for i in live:
                tokens, lps, versions, cached = results[i]
                self.stats.cached_prompt_tokens += cached
                self._take_completion(i, tokens, lps, versions)

    def _record_generation(self, t0: float, rows: int) -> None:
        """One generation call that started at t0 and took `rows` episodes."""
        t1 = time.perf_counter()
        if self.clock is not None:
            self.clock.add(t0, t1)
        s = self.stats
        s.generation_s += t1 - t0
        s.generate_calls += 1
        s.batch_sizes.append(rows)

    def _take_completion(
        self, i: int, comp: list[int], lps: list[float], versions: list[int]
    ) -> None:
        ep = self.eps[i]
        r = ep.r
        r.turns += 1
        room = self.max_seq_len - len(r.tokens)
        stopped = bool(comp) and comp[-1] in self.stop_ids
        if len(comp) > room:
            comp, lps, why = comp[:room], lps[:room], "max_seq_len"
            versions = versions[:room]
        elif not stopped and self.truncate_unfinished:
            why = "max_new_tokens"
        else:
            why = None
        r.tokens += comp
        r.loss_mask += [1] * len(comp)
        r.old_logprobs += [float(x) for x in lps]
        r.versions += [int(v) for v in versions]
        self.stats.generated_tokens += len(comp)
        text = self.tok.decode(comp[:-1] if stopped and why is None else comp)
        r.messages.append(parse_assistant(text).to_message())
        if why is not None:
            self._truncate(i, why)
            return
        ep.status = _ENV
        if self._owns(i):
            self._submit(i, "step", self.farm.step(r.episode_id, text))


def merge_accounting(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One farm accounting from every process's farm: the episode tallies add up, `complete`
    holds when it holds everywhere, the backends' details merge as in `merge_metrics`."""
    if not parts:
        return {}
    tally = EpisodeTally.total(EpisodeTally.from_dict(p) for p in parts)
    return {
        **merge_metrics(parts),
        **tally.to_dict(),
        "complete": tally.complete and all(bool(p.get("complete", True)) for p in parts),
    }


def merge_metrics(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One record from every process's: numbers add up, flags hold when they hold everywhere,
    lists are joined, mappings merged."""
    out: dict[str, Any] = {}
    for part in parts:
        for k, v in part.items():
            if isinstance(v, bool):
                out[k] = out.get(k, True) and v
            elif isinstance(v, int | float):
                out[k] = out.get(k, 0) + v
            elif isinstance(v, list):
                out[k] = [*out.get(k, []), *v]
            elif isinstance(v, dict):
                out[k] = {**out.get(k, {}), **v}
            else:
                out.setdefault(k, v)
    return out


def _safe_abandon(farm: EnvService, eid: str, reason: str) -> None:
    try:
        farm.abandon(eid, reason)
    except Exception:  # noqa: BLE001 - an episode the farm never registered
        pass


def collect(
    params: Any,
    cfg: Any,
    tasks: Sequence[Any],
    group_size: int,
    farm: EnvService,
    tokenizer: Any,
    sampling: SamplingSettings,
    rng: Any,
    pipeline: str = "simplified",
    max_seq_len: int = 4096,
    **kwargs: Any,
) -> tuple[list[Rollout], RolloutStats]:
    """`group_size` rollouts of every task, task-major: a `Collector` run to the end.

    Keyword options: `mesh`, `generate_fn` (same signature as
    `jaxrepair.model.sampler.generate`, for tests), `engine` (a `RolloutEngine` that
    generates instead of the static sampler; it is given `params` as `policy_version` at
    start unless it has that version already), `policy_version`, `episode_prefix` (episode ids must be unique
    per farm), `max_turns`, `clock` (an AcceleratorClock), `truncate_unfinished`.
    """
    c = Collector(
        params,
        cfg,
        tasks,
        group_size,
        farm,
        tokenizer,
        sampling,
        rng,
        pipeline,
        max_seq_len,
        **kwargs,
    )
    try:
        c.start()
        return c.result()
    finally:
        c.close()
