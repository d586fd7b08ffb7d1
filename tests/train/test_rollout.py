"""The JAX-side farm driver: transcripts, batching, truncation and infra errors.

Oracles: the chat module's own rendering/tokenization of the final conversation (the token
transcript must equal `encode_chat` of the messages, with the same loss mask), the trainer's
log-probs of the transcript under the sampling params (must equal the sampler's, so GRPO ratios
start at 1), and an in-process farm that records every call.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random

import jax
import numpy as np
import pytest

from jaxrepair.envs.chat import encode_chat
from jaxrepair.envs.protocol import EpisodeTally, Outcome, StepResult
from jaxrepair.envs.tokenizer import load_tokenizer
from jaxrepair.model.sampler import GenerationOutput
from jaxrepair.train.collector import collect
from jaxrepair.train.grpo import group_advantages
from jaxrepair.train.grpo_trainer import rollouts_to_batch
from jaxrepair.train.rollout import AcceleratorClock, SamplingSettings

TOOLS = [{"type": "function", "function": {"name": "run", "description": "run", "parameters": {}}}]


@dataclasses.dataclass(frozen=True)
class FakeTask:
    id: str


class FakeFarm:
    """An in-process `EnvService`: `turns` steps per episode; the last one scores "fix"
    answers 1.

    `fail_reset` / `fail_step` hold episode-id substrings that end as infra_error there.
    """

    def __init__(self, turns=2, fail_reset=(), fail_step=(), seed=0):
        self.turns, self.fail_reset, self.fail_step = turns, fail_reset, fail_step
        self.rng = random.Random(seed)
        self.eps: dict[str, dict] = {}
        self.texts: dict[str, list[str]] = {}
        self.truncated: list[str] = []
        self.abandoned: list[str] = []

    async def reset(self, eid, task, pipeline):
        assert eid not in self.eps
        self.eps[eid] = {"outcome": None}
        self.texts[eid] = []
        await asyncio.sleep(self.rng.uniform(0, 0.01))
        if any(s in eid for s in self.fail_reset):
            self.eps[eid]["outcome"] = Outcome.INFRA_ERROR
            return StepResult(eid, "", 0.0, True, {}, Outcome.INFRA_ERROR, infra_error="boom")
        msgs = [{"role": "system", "content": "sys"}, {"role": "user", "content": f"fix {task.id}"}]
        return StepResult(eid, msgs[-1]["content"], 0.0, False, {"messages": msgs, "tools": TOOLS})

    async def step(self, eid, text):
        assert self.eps[eid]["outcome"] is None, "step after the episode ended"
        self.texts[eid].append(text)
        await asyncio.sleep(self.rng.uniform(0, 0.01))
        n = len(self.texts[eid])
        if any(s in eid for s in self.fail_step):
            self.eps[eid]["outcome"] = Outcome.INFRA_ERROR
            return StepResult(eid, "", 0.0, True, {}, Outcome.INFRA_ERROR, infra_error="boom")
        if n < self.turns:
            new = [{"role": "tool", "content": f"out {n}"}, {"role": "user", "content": "go on"}]
            return StepResult(eid, "obs", 0.0, False, {"new_messages": new})
        reward = 1.0 if "fix" in text else 0.0
        self.eps[eid]["outcome"] = Outcome.PASS if reward else Outcome.FAIL
        info = {"tool_calls": [{"name": "run"}] * (n - 1), "tampered": False, "new_messages": []}
        return StepResult(eid, "done", reward, True, info, self.eps[eid]["outcome"])

    def abandon(self, eid, reason):
        self.abandoned.append(eid)
        if self.eps[eid]["outcome"] is None:
            self.eps[eid]["outcome"] = Outcome.INFRA_ERROR

    def truncate(self, eid, reason):
        self.truncated.append(eid)
        if self.eps[eid]["outcome"] is None:
            self.eps[eid]["outcome"] = Outcome.TRUNCATED

    def outcome(self, eid):
        return self.eps[eid]["outcome"]

    def accounting(self):
        """The tally from the farm's own records (independent of the driver's counts)."""
        t = EpisodeTally(started=len(self.eps))
        for e in self.eps.values():
            if e["outcome"] is None:
                t.in_flight += 1
            else:
                t.record(e["outcome"])
        return t.to_dict()

    def metrics(self):
        return {}


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("tiny")


def scripted_generate(tok, replies, calls):
    """A generate_fn that answers each prompt with the next scripted reply (text + <|im_end|>,
    or ids as given) and log-prob -0.25 per token; records each call's batch size."""

    def gen(
        params,
        cfg,
        prompts,
        max_new_tokens,
        temperature,
        top_p,
        top_k,
        stop_tokens,
        rng,
        pad_id,
        **kw,
    ):
        calls.append(len(prompts))
        rows = []
        for p in prompts:
            r = replies(p)
            ids = r if isinstance(r, list) else tok.encode(r) + [tok.eos_id]
            rows.append(ids[:max_new_tokens])
        n = max_new_tokens
        toks = np.full((len(rows), n), pad_id, np.int32)
        lps = np.zeros((len(rows), n), np.float32)
        for i, ids in enumerate(rows):
            toks[i, : len(ids)] = ids
            lps[i, : len(ids)] = -0.25
        return GenerationOutput(toks, lps, np.asarray([len(r) for r in rows], np.int32))

    return gen


def test_multi_turn_transcript_matches_the_chat_template_and_batches_generation(tok):
    farm = FakeFarm(turns=2)
    calls: list[int] = []
    tasks = [FakeTask("a"), FakeTask("b")]
    rollouts, stats = collect(
        None,
        None,
        tasks,
        3,
        farm,
        tok,
        SamplingSettings(max_new_tokens=32),
        jax.random.key(0),
        generate_fn=scripted_generate(tok, lambda p: "let me fix it", calls),
        max_seq_len=4096,
    )
    assert [(r.task_id, r.group, r.member) for r in rollouts] == [
        (t, g, i) for g, t in enumerate("ab") for i in range(3)
    ]
    assert stats.complete and stats.scored == 6 and stats.passed == 6
    # 6 episodes x 2 turns of generation, episodes that became ready together share a call
    assert sum(calls) == 12 and max(calls) > 1 and len(calls) < 12
    for r in rollouts:
        assert r.reward == 1.0 and r.outcome == "pass" and r.valid and not r.truncated
        assert r.turns == 2 and r.tool_calls == 1
        # independent oracle: the conversation rendered and tokenized in one piece (a later
        # user turn keeps the template from adding an empty <think> block to the last turn)
        ids, mask = encode_chat(r.messages + [{"role": "user", "content": "x"}], tok, r.tools)
        assert ids[: len(r.tokens)] == r.tokens
        assert mask[: len(r.tokens)] == r.loss_mask
        assert sum(r.loss_mask) == 2 * (len(tok.encode("let me fix it")) + 1)
        lp = np.asarray(r.old_logprobs)
        assert np.all(lp[np.asarray(r.loss_mask) == 1] == -0.25)
        assert np.all(lp[np.asarray(r.loss_mask) == 0] == 0.0)
        assert r.target_mask == r.loss_mask[1:] and len(r.target_logprobs) == len(r.tokens) - 1


def test_generation_batches_never_exceed_max_batch(tok):
    farm = FakeFarm(turns=1)
    calls: list[int] = []
    rollouts, stats = collect(
        None,
        None,
        [FakeTask(str(i)) for i in range(5)],
        4,
        farm,
        tok,
        SamplingSettings(max_new_tokens=16, max_batch=6),
        jax.random.key(0),
        generate_fn=scripted_generate(tok, lambda p: "fix", calls),
        max_seq_len=4096,
    )
    assert stats.complete and stats.scored == 20 and len(rollouts) == 20
    assert sum(calls) == 20 and max(calls) <= 6 and len(calls) >= 4
    with pytest.raises(ValueError, match="max_batch"):
        SamplingSettings(max_batch=0)


def test_truncation_and_infra_errors_are_accounted_and_masked(tok):
    farm = FakeFarm(turns=3, fail_reset=("-0-1-",), fail_step=("-1-2-",))
    calls: list[int] = []

    msgs = [{"role": "system", "content": "sys"}, {"role": "user", "content": "fix a"}]
    prompt_len = len(encode_chat(msgs, tok, TOOLS, add_generation_prompt=True)[0])

    def replies(prompt):  # a short first answer, then one that runs past max_seq_len
        return "fix" if len(prompt) == prompt_len else tok.encode(" and on") * 40

    cap = prompt_len + 40
    tasks = [FakeTask("a"), FakeTask("b")]
    rollouts, stats = collect(
        None,
        None,
        tasks,
        3,
        farm,
        tok,
        SamplingSettings(max_new_tokens=64),
        None,
        generate_fn=scripted_generate(tok, replies, calls),
        max_seq_len=cap,
    )
    by_member = {(r.group, r.member): r for r in rollouts}
    assert by_member[(0, 1)].outcome == "infra_error" and not by_member[(0, 1)].valid
    assert by_member[(1, 2)].outcome == "infra_error"
    truncated = [r for r in rollouts if r.truncated]
    assert truncated and all(
        r.outcome == "truncated" and r.reward == 0.0 and r.valid for r in truncated
    )
    assert all(len(r.tokens) <= cap for r in rollouts)
    assert {r.truncation_reason for r in truncated} == {"max_seq_len"}
    assert all(len(r.tokens) == cap and r.turns == 2 for r in truncated)
    # every started episode ended exactly once, in the driver and in the farm
    assert stats.complete and stats.episodes == 6
    assert stats.scored + stats.truncated + stats.infra_errors == 6
    assert all(farm.outcome(r.episode_id) is not None for r in rollouts)
    assert farm.accounting()["complete"]
    # the farm's own records tell the same story: truncated there, counted alike
    assert sorted(farm.truncated) == sorted(r.episode_id for r in truncated)
    assert farm.accounting() == stats.accounting
    # infra errors are excluded from advantages and from the loss, truncated rows are flagged
    rewards = np.asarray([r.reward for r in rollouts], np.float32)
    valid = np.asarray([r.valid for r in rollouts])
    adv = np.asarray(group_advantages(rewards, 3, "std", valid=valid))
    batch = rollouts_to_batch(rollouts, adv, tok.pad_id, cap)
    assert np.all(adv[~valid] == 0)
    assert np.all(batch["loss_mask"][~valid] == 0)
    assert batch["truncated"].tolist() == [r.truncated for r in rollouts]


def test_a_reset_without_messages_ends_as_infra_error(tok):
    """A backend off the contract (no first messages) ends its episodes as infra_error on
    both sides instead of the driver inventing a prompt."""

    class Mute(FakeFarm):
        async def reset(self, eid, task, pipeline):
            return dataclasses.replace(await super().reset(eid, task, pipeline), info={})

    farm, calls = Mute(turns=1), []
    gen = scripted_generate(tok, lambda p: "fix", calls)
    rollouts, stats = collect(
        None, None, [FakeTask("a")], 2, farm, tok, SamplingSettings(), None, generate_fn=gen
    )
    assert [r.outcome for r in rollouts] == ["infra_error"] * 2 and calls == []
    assert all("no 'messages'" in r.infra_error for r in rollouts)
    assert stats.complete and farm.accounting() == stats.accounting


def test_unfinished_completions_can_be_submitted(tok):
    farm = FakeFarm(turns=1)
    gen = scripted_generate(tok, lambda p: tok.encode(" fix") * 3, [])  # never a stop token
    rollouts, stats = collect(
        None,
        None,
        [FakeTask("a")],
        2,
        farm,
        tok,
        SamplingSettings(max_new_tokens=8),
        None,
        generate_fn=gen,
        truncate_unfinished=False,
    )
    assert [r.outcome for r in rollouts] == ["pass", "pass"] and stats.truncated == 0
    rollouts, stats = collect(
        None,
        None,
        [FakeTask("b")],
        2,
        FakeFarm(turns=1),
        tok,
        SamplingSettings(max_new_tokens=8),
        None,
        generate_fn=gen,
    )
    assert [r.truncation_reason for r in rollouts] == ["max_new_tokens"] * 2


def test_generation_failure_ends_every_episode_and_raises(tok):
    farm = FakeFarm(turns=2)

    def broken(*a, **k):
        raise RuntimeError("device lost")

    with pytest.raises(RuntimeError, match="device lost"):
        collect(
            None, None, [FakeTask("a")], 2, farm, tok, SamplingSettings(), None, generate_fn=broken
        )
    assert farm.accounting()["complete"]


def test_sampler_logprobs_equal_trainer_logprobs_on_the_transcript(tok):
    """Real sampler on a tiny Qwen3, multi-turn: the transcript's sampler log-probs at the
    generated positions equal the trainer's log-probs of the same targets (ratio starts at 1)."""
    from jaxrepair.model import Qwen3Config, init_params
    from jaxrepair.train.losses import token_logprobs

    cfg = Qwen3Config.preset("tiny", vocab_size=tok.vocab_size)
    params = init_params(cfg, jax.random.key(0))
    clock = AcceleratorClock()
    rollouts, stats = collect(
        params,
        cfg,
        [FakeTask("a")],
        2,
        FakeFarm(turns=2),
        tok,
        SamplingSettings(max_new_tokens=8, temperature=0.7),
        jax.random.key(3),
        truncate_unfinished=False,
        clock=clock,
    )
    assert stats.complete and stats.generate_calls >= 2 and stats.generation_s > 0
    assert 0.0 < clock.busy_seconds(0.0, float("inf")) <= stats.wall_s
    batch = rollouts_to_batch(rollouts, np.zeros(2, np.float32), tok.pad_id, 4096)
    lp = np.asarray(
        token_logprobs(params, cfg, batch["tokens"], None, None, batch["targets"], 0.7, None)
    )
    m = batch["loss_mask"] > 0
    assert m.sum() == sum(r.generated_tokens for r in rollouts) > 8
    np.testing.assert_allclose(lp[m], batch["sampler_logprobs"][m], atol=1e-4)


class SlowFarm(FakeFarm):
    """FakeFarm whose resets and steps take a seeded random 0-`jitter` seconds each."""

    def __init__(self, jitter, seed, **kw):
        super().__init__(seed=seed, **kw)
        self.jitter = jitter

    async def reset(self, eid, task, pipeline):
        await asyncio.sleep(self.rng.uniform(0, self.jitter))
        return await super().reset(eid, task, pipeline)

    async def step(self, eid, text):
        await asyncio.sleep(self.rng.uniform(0, self.jitter))
        return await super().step(eid, text)


def test_rollouts_do_not_depend_on_environment_timing(tok):
    """Real sampler at temperature 1, multi-turn, several chunks: farms with different latency
    patterns (results arriving in different orders) give bit-identical rollouts, and the
    generate calls are the same chunks whatever finished first."""
    from jaxrepair.model import Qwen3Config, init_params
    from jaxrepair.model.sampler import generate

    cfg = Qwen3Config.preset("tiny", vocab_size=tok.vocab_size)
    params = init_params(cfg, jax.random.key(0))

    def run(jitter, seed):
        calls: list[list[int]] = []

        def gen(params, cfg, prompts, **kw):
            calls.append([len(p) for p in prompts])
            return generate(params, cfg, prompts, **kw)

        rollouts, stats = collect(
            params,
            cfg,
            [FakeTask("a"), FakeTask("b"), FakeTask("c")],
            2,
            SlowFarm(jitter, seed, turns=2),
            tok,
            SamplingSettings(max_new_tokens=6, temperature=1.0, max_batch=4),
            jax.random.key(7),
            truncate_unfinished=False,
            generate_fn=gen,
        )
        assert stats.complete and stats.episodes == 6
        return rollouts, sorted(calls)

    a, calls_a = run(0.0, 0)
    b, calls_b = run(0.05, 1)
    c, calls_c = run(0.05, 2)
    assert calls_a == calls_b == calls_c
    # 2 chunks (4 + 2 episodes) x 2 turns, every live episode of a chunk in one call
    assert sorted(len(x) for x in calls_a) == [2, 2, 4, 4]
    for ra, rb, rc in zip(a, b, c, strict=True):
        assert ra.tokens == rb.tokens == rc.tokens
        assert ra.old_logprobs == rb.old_logprobs == rc.old_logprobs
        assert ra.loss_mask == rb.loss_mask and ra.messages == rb.messages
    assert len({tuple(r.tokens) for r in a}) == 6  # sampling really differs between episodes


def test_full_pipeline_through_the_real_farm(tok, tmp_path):
    """Multi-turn episodes in real sandboxes: a tool call, its result as the continuation, then
    submit. The transcript equals the chat rendering of the env's own conversation."""
    from jaxrepair.config import load_config
    from jaxrepair.envs import load_tasks
    from jaxrepair.envs.chat import ToolCall, format_tool_call
    from jaxrepair.envs.farm import EnvFarm
    from jaxrepair.train.grpo_trainer import load_train_tasks

    task = load_train_tasks(load_config(None, ["grpo.tasks=recipes-config-002"]))[0]
    assert load_tasks(task.root)[0].id == task.id
    read = format_tool_call(ToolCall("read_file", {"path": task.relevant_files[0]}))
    submit = format_tool_call(ToolCall("submit", {}))
    calls: list[int] = []
    n_prompt: dict[int, int] = {}

    def replies(prompt):
        first = n_prompt.setdefault(len(prompt), len(n_prompt)) == 0
        return read if first else submit

    with EnvFarm(workers=2, cache_dir=tmp_path / "cache", episode_caps={"max_steps": 4}) as farm:
        rollouts, stats = collect(
            None,
            None,
            [task],
            2,
            farm,
            tok,
            SamplingSettings(max_new_tokens=256),
            None,
            pipeline="full",
            generate_fn=scripted_generate(tok, replies, calls),
            max_seq_len=16384,
        )
        acc = farm.accounting()
    assert stats.complete and acc["complete"] and acc["started"] == 2
    for r in rollouts:
        assert r.valid and r.outcome in ("pass", "fail") and r.turns == 2 and r.tool_calls == 2
        assert r.tools and [m["role"] for m in r.messages][:2] == ["system", "user"]
        assert any(m["role"] == "tool" for m in r.messages)
        ids, mask = encode_chat(r.messages + [{"role": "user", "content": "x"}], tok, r.tools)
        assert ids[: len(r.tokens)] == r.tokens and mask[: len(r.tokens)] == r.loss_mask
    assert sum(calls) == 4


def test_the_rollout_engine_gives_the_static_samplers_rollouts_and_reuses_turns(tok):
    """Same collect with the rollout engine instead of `generate`: the same rollouts (tokens,
    log-probs, transcripts) at temperature 1 over several chunks and turns, turn 2 prefilled
    from the cache, and new weights loaded when the policy version moves on."""
    from jaxrepair.engine.jax_engine import EngineConfig, JaxEngine
    from jaxrepair.model import Qwen3Config, init_params

    cfg = Qwen3Config.preset("tiny", vocab_size=tok.vocab_size)
    first, second = init_params(cfg, jax.random.key(0)), init_params(cfg, jax.random.key(1))
    engine = JaxEngine(
        first, cfg, EngineConfig(slots=4, block_size=16, num_blocks=256, max_seq_len=1024)
    )
    tasks = [FakeTask("a"), FakeTask("b"), FakeTask("c")]
    sampling = SamplingSettings(max_new_tokens=6, temperature=1.0, max_batch=4)

    def run(params, version, **kw):
        return collect(
            params,
            cfg,
            tasks,
            2,
            FakeFarm(turns=2),
            tok,
            sampling,
            jax.random.key(7),
            truncate_unfinished=False,
            policy_version=version,
            **kw,
        )

    for version, params in enumerate((first, second)):
        static, _ = run(params, version)
        served, stats = run(params, version, engine=engine)
        assert stats.complete and stats.episodes == 6
        for a, b in zip(static, served, strict=True):
            assert a.tokens == b.tokens and a.messages == b.messages
            assert a.versions == b.versions == [version] * b.generated_tokens
            np.testing.assert_allclose(a.old_logprobs, b.old_logprobs, atol=2e-5)
        # turn 2 of every episode reuses turn 1's KV, and a group shares its prompt
        assert stats.cached_prompt_tokens > sum(r.prompt_len for r in served) // 2
        assert (stats.reshard_s > 0) == (version == 1) and engine.version == version
    assert len({tuple(r.tokens) for r in served}) == 6


@pytest.mark.parametrize("use_engine", [False, True], ids=["generate", "engine"])
def test_partial_rollouts_continue_in_flight_episodes_under_new_weights(tok, use_engine):
    """A collect started with version 0 and handed version 1 after its first turns (GRPO's
    partial rollouts): turn 1 is the version-0 run's, later tokens carry version 1, and every
    token's log-prob is the trainer's under the weights that sampled it (the engine and the
    static sampler agree)."""
    from jaxrepair.engine.jax_engine import EngineConfig, JaxEngine
    from jaxrepair.model import Qwen3Config, init_params
    from jaxrepair.train.collector import Collector
    from jaxrepair.train.grpo_trainer import sampled_by
    from jaxrepair.train.losses import token_logprobs

    cfg = Qwen3Config.preset("tiny", vocab_size=tok.vocab_size)
    first, second = init_params(cfg, jax.random.key(0)), init_params(cfg, jax.random.key(1))
    sampling = SamplingSettings(max_new_tokens=6, temperature=1.0, max_batch=4)
    engine = (
        JaxEngine(
            first, cfg, EngineConfig(slots=4, block_size=16, num_blocks=256, max_seq_len=1024)
        )
        if use_engine
        else None
    )

    def collector(params):
        return Collector(
            params,
            cfg,
            [FakeTask("a"), FakeTask("b")],
            2,
            FakeFarm(turns=3),
            tok,
            sampling,
            jax.random.key(7),
            truncate_unfinished=False,
            engine=engine,
        ).start()

    whole, _ = collector(first).result()  # version 0 from start to end
    c = collector(first)
    c.run(until_generated=True)  # every episode's first turn sampled by version 0
    c.set_policy(second, 1)
    partial, stats = c.result()
    assert stats.complete
    assert stats.reshard_s > 0 if use_engine else stats.reshard_s == 0
    batch = rollouts_to_batch(partial, np.zeros(len(partial), np.float32), tok.pad_id, 4096)
    shape = batch["loss_mask"].shape
    for a, b in zip(whole, partial, strict=True):
        n1 = b.loss_mask.index(1)
        turn1 = b.loss_mask[n1:].index(0)  # the first completion's length
        assert b.tokens[: n1 + turn1] == a.tokens[: n1 + turn1]
        assert b.versions == [0] * turn1 + [1] * (b.generated_tokens - turn1)
        assert b.turns == 3
    for version, params in enumerate((first, second)):
        lp = np.asarray(
            token_logprobs(params, cfg, batch["tokens"], None, None, batch["targets"], 1.0, None)
        )
        m = sampled_by(partial, shape, version)
        assert m.sum() > 0
        np.testing.assert_allclose(lp[m], batch["sampler_logprobs"][m], atol=1e-4)


@pytest.mark.parametrize("thinking", [True, False])
def test_thinking_switch_renders_every_generation_prompt_as_qwen3s_template(tok, thinking):
    """Qwen3's published template (transformers' apply_chat_template) is the oracle: the first
    prompt is its rendering with enable_thinking as chosen, and every later generation prompt
    ends as its generation prompt does (an empty <think></think> block with thinking off)."""
    pytest.importorskip("transformers")
    hf = tok.to_transformers()
    seen: list[list[int]] = []

    def reply(prompt):
        seen.append(list(prompt))
        return "let me fix it"

    rollouts, stats = collect(
        None,
        None,
        [FakeTask("a")],
        1,
        FakeFarm(turns=3),
        tok,
        SamplingSettings(max_new_tokens=32, thinking=thinking),
        jax.random.key(0),
        generate_fn=scripted_generate(tok, reply, []),
        max_seq_len=4096,
    )
    (r,) = rollouts
    assert stats.complete and r.turns == 3 and len(seen) == 3
    first = hf.apply_chat_template(
        r.messages[:2],
        tools=r.tools,
        add_generation_prompt=True,
        tokenize=False,
        enable_thinking=thinking,
    )
    assert r.tokens[: r.prompt_len] == tok.encode(first) == seen[0]
    suffix = hf.apply_chat_template(
        [{"role": "user", "content": "x"}],
        add_generation_prompt=True,
        tokenize=False,
        enable_thinking=thinking,
    ).split("x<|im_end|>\n", 1)[1]
    assert ("<think>" in suffix) == (not thinking)
    for prompt in seen:
        assert prompt[-len(tok.encode(suffix)) :] == tok.encode(suffix)
