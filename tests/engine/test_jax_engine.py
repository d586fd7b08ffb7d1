"""The JAX rollout engine against the static sampler, transformers, a full forward pass, and
its own one-request-at-a-time runs; its KV reuse counted token by token."""

from __future__ import annotations

import copy
import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxrepair.engine.api import Request, Sampling
from jaxrepair.engine.jax_engine import EngineConfig, JaxEngine, row_seed
from jaxrepair.model import load_hf, make_mesh
from jaxrepair.model.sampler import generate
from tests.model.hf_oracle import make_hf_model

# small sizes keep the number of compiled shapes low: prefill chunks of 16 or 32 tokens,
# tables of 1, 2 or 4 blocks
SMALL = EngineConfig(slots=3, block_size=16, num_blocks=24, decode_chunk=6, max_seq_len=64)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("engine_model")
    hf = make_hf_model(path, seed=5, num_hidden_layers=2, num_key_value_heads=4)
    cfg, params = load_hf(path, dtype=jnp.float32)
    return hf, cfg, params


def _prompts(seed, lens=(3, 9, 14, 21, 30)):
    rng = np.random.default_rng(seed)
    return [rng.integers(1, 96, size=n).tolist() for n in lens]


def _hf_greedy(hf, prompt, max_new):
    """transformers' greedy completion of one unpadded prompt (the oracle for greedy runs)."""
    with torch.no_grad():
        out = hf.generate(
            torch.tensor([prompt]), max_new_tokens=max_new, do_sample=False, pad_token_id=0
        )
    return out[0, len(prompt) :].tolist()


def _forward_logprobs(hf, prompt, completion, temperature):
    """log softmax(logits / T) of each completion token from transformers' forward pass."""
    with torch.no_grad():
        logits = hf(torch.tensor([prompt + completion])).logits[0].double().numpy()
    scaled = logits[len(prompt) - 1 : len(prompt) + len(completion) - 1] / temperature
    logz = np.log(np.exp(scaled - scaled.max(-1, keepdims=True)).sum(-1)) + scaled.max(-1)
    return scaled[np.arange(len(completion)), completion] - logz


def test_greedy_equals_transformers_on_a_ragged_batch(tiny):
    hf, cfg, params = tiny
    prompts = _prompts(0)
    engine = JaxEngine(params, cfg, SMALL)  # 3 slots for 5 requests: continuous batching
    out = engine.generate([Request(p, Sampling(12, temperature=0.0)) for p in prompts])
    assert [list(c.tokens) for c in out] == [_hf_greedy(hf, p, 12) for p in prompts]
    for p, c in zip(prompts, out, strict=True):
        np.testing.assert_allclose(
            c.logprobs, _forward_logprobs(hf, p, list(c.tokens), 1.0), atol=2e-5
        )
        assert c.finish_reason == "length" and c.versions == (0,) * 12
    assert engine.stats.occupancy > 0.5


def test_decode_gathering_context_per_step_equals_transformers(tiny, monkeypatch):
    """The accelerator decode (each row's cached KV gathered per layer and step, no scratch)
    against the same oracle as the CPU decode, which gathers it once per call."""
    from jaxrepair.engine import jax_engine, paged_model

    monkeypatch.setattr(paged_model, "hoists_context", lambda mesh: False)
    monkeypatch.setattr(jax_engine, "hoists_context", lambda mesh: False)
    paged_model.compile_programs.cache_clear()
    hf, cfg, params = tiny
    prompts = _prompts(3)
    engine = JaxEngine(params, cfg, SMALL)
    out = engine.generate([Request(p, Sampling(12, temperature=0.0)) for p in prompts])
    paged_model.compile_programs.cache_clear()  # the next tests compile the CPU decode
    assert not engine._new_scratch(8)
    assert [list(c.tokens) for c in out] == [_hf_greedy(hf, p, 12) for p in prompts]
    for p, c in zip(prompts, out, strict=True):
        np.testing.assert_allclose(
            c.logprobs, _forward_logprobs(hf, p, list(c.tokens), 1.0), atol=2e-5
        )


def test_sampling_equals_generate_for_the_same_rng_and_logprobs_equal_a_forward(tiny):
    hf, cfg, params = tiny
    prompts = _prompts(1)
    settings = dict(temperature=0.8, top_k=20, top_p=0.9)
    ref = generate(params, cfg, prompts, max_new_tokens=10, rng=7, stop_tokens=[5, 6], **settings)
    engine = JaxEngine(params, cfg, SMALL)
    sampling = Sampling(10, stop_tokens=(5, 6), **settings)
    out = engine.generate(
        [Request(p, sampling, seed=row_seed(7, i)) for i, p in enumerate(prompts)]
    )
    assert [list(c.tokens) for c in out] == ref.completions()
    for p, c in zip(prompts, out, strict=True):
        want = _forward_logprobs(hf, p, list(c.tokens), 0.8)
        np.testing.assert_allclose(c.logprobs, want, atol=2e-5)
        stopped = c.tokens[-1] in (5, 6)
        assert c.finish_reason == ("stop" if stopped else "length")


def test_continuous_batching_equals_one_request_at_a_time(tiny):
    _, cfg, params = tiny
    prompts = _prompts(2, lens=(5, 17, 2, 26, 11, 8))
    reqs = [
        Request(p, Sampling(4 + 3 * i, temperature=1.0, stop_tokens=(9,)), seed=100 + i)
        for i, p in enumerate(prompts)
    ]
    batched = JaxEngine(params, cfg, SMALL).generate(reqs)
    alone = [JaxEngine(params, cfg, SMALL).generate([r])[0] for r in reqs]
    assert [c.tokens for c in batched] == [c.tokens for c in alone]
    for a, b in zip(batched, alone, strict=True):
        np.testing.assert_allclose(a.logprobs, b.logprobs, atol=2e-5)


def test_prompts_admitted_together_prefill_in_shared_calls(tiny):
    """Rows pack into calls of at most `prefill_chunk` padded tokens; a longer prompt goes in
    rounds. 32-token chunks, contexts of 39, 8 and 13 tokens: round 1 is the first prompt's
    32 tokens alone, then 8 + 13 tokens in one call of 2 x 16; round 2 its last 7 tokens."""
    hf, cfg, params = tiny
    prompts = _prompts(9, lens=(40, 9, 14))
    engine = JaxEngine(params, cfg, dataclasses.replace(SMALL, prefill_chunk=32))
    out = engine.generate([Request(p, Sampling(5, temperature=0.0)) for p in prompts])
    assert engine.stats.prefill_calls == 3
    assert engine.stats.prefilled_tokens == 39 + 8 + 13
    assert [list(c.tokens) for c in out] == [_hf_greedy(hf, p, 5) for p in prompts]


def test_next_turn_prefills_only_its_new_tokens(tiny):
    hf, cfg, params = tiny
    engine = JaxEngine(params, cfg, SMALL)
    p1 = _prompts(3, lens=(22,))[0]
    c1 = engine.generate([Request(p1, Sampling(9, temperature=0.0))])[0]
    computed = len(p1) + len(c1.tokens) - 1  # the last sampled token was never fed
    p2 = p1 + list(c1.tokens) + [7, 8, 9, 10, 11]
    before = engine.stats.prefilled_tokens
    c2 = engine.generate([Request(p2, Sampling(6, temperature=0.0))])[0]
    assert c2.cached_prompt_tokens == computed
    # the new tokens but the last (which the first decode step feeds)
    assert engine.stats.prefilled_tokens - before == len(p2) - 1 - computed
    assert list(c2.tokens) == _hf_greedy(hf, p2, 6)


def test_a_group_prefills_its_shared_prompt_once(tiny):
    _, cfg, params = tiny
    engine = JaxEngine(params, cfg, SMALL)
    prompt = _prompts(4, lens=(21,))[0]  # 20 context tokens: a full block and a partial one
    group = [Request(prompt, Sampling(6, temperature=1.0), seed=s) for s in range(3)]
    out = engine.generate(group)
    assert engine.stats.prefilled_tokens == len(prompt) - 1
    assert [c.cached_prompt_tokens for c in out] == [0, 20, 20]
    alone = [JaxEngine(params, cfg, SMALL).generate([r])[0].tokens for r in group]
    assert [c.tokens for c in out] == alone


def test_a_full_pool_preempts_and_resumes_without_changing_results(tiny):
    hf, cfg, params = tiny
    prompts = _prompts(5, lens=(20, 24, 18))
    reqs = [Request(p, Sampling(20, temperature=0.0)) for p in prompts]
    tight = EngineConfig(slots=3, block_size=16, num_blocks=7, decode_chunk=6, max_seq_len=64)
    engine = JaxEngine(params, cfg, tight)
    out = engine.generate(reqs)
    assert engine.stats.preemptions > 0
    assert [list(c.tokens) for c in out] == [_hf_greedy(hf, p, 20) for p in prompts]


def test_new_weights_apply_to_the_next_token_and_are_recorded(tiny):
    hf, cfg, params = tiny
    engine = JaxEngine(params, cfg, SMALL)
    prompt = _prompts(6, lens=(10,))[0]
    other = jax.tree.map(lambda x: x * 1.5, params)
    engine.add(Request(prompt, Sampling(12, temperature=0.0)))
    first = engine.step()[0]  # one decode chunk under version 0
    seconds = engine.update_weights(other, version=1)
    for x in jax.tree.leaves(other):  # the learner's next update donates its buffers
        x.delete()
    assert seconds >= 0 and engine.stats.weight_updates == 2
    assert engine.stats.reshard_seconds >= seconds
    done = None
    while engine.has_work():
        for ev in engine.step():
            done = ev.done or done
    n0 = len(first.tokens)
    assert done.versions == (0,) * n0 + (1,) * (12 - n0)
    # tokens after the switch are the new weights' greedy continuation of the transcript
    hf_other = copy.deepcopy(hf)
    with torch.no_grad():
        for w in hf_other.parameters():
            w.mul_(1.5)
    after = _hf_greedy(hf_other, prompt + list(first.tokens), 12 - n0)
    assert list(done.tokens[n0:]) != [] and list(done.tokens[n0:]) == after


def test_engine_weights_and_kv_in_the_compute_dtype(tiny):
    _, cfg, params = tiny
    engine = JaxEngine(params, cfg, EngineConfig(**{**SMALL.__dict__, "dtype": "bfloat16"}))
    assert engine.pool["k"].dtype == jnp.bfloat16 and engine.pool["v"].dtype == jnp.bfloat16
    assert {x.dtype for x in jax.tree.leaves(engine.params)} == {jnp.dtype(jnp.bfloat16)}
    np.testing.assert_array_equal(
        np.asarray(engine.params["embed"]), np.asarray(params["embed"].astype(jnp.bfloat16))
    )


def test_decode_on_a_tensor_mesh_gathers_no_weights_and_matches(tiny):
    hf, cfg, params = tiny
    mesh = make_mesh({"tensor": 4}, devices=jax.devices()[:4])
    engine = JaxEngine(params, cfg, SMALL, mesh=mesh)
    prompts = _prompts(8, lens=(7, 13))
    out = engine.generate([Request(p, Sampling(8, temperature=0.0)) for p in prompts])
    assert [list(c.tokens) for c in out] == [_hf_greedy(hf, p, 8) for p in prompts]
    assert engine.params["layers"][0]["q_proj"].sharding.spec[1] == "tensor"
    hlo = engine.decode_hlo()
    weight_shapes = set()
    for x in jax.tree.leaves(params):
        weight_shapes.add(tuple(x.shape))
        weight_shapes.add(tuple(x.shape[1:]))  # one layer of a stacked weight
    gathered = [
        tuple(int(d) for d in dims.split(",") if d)
        for dims in re.findall(r"= \w+\[([\d,]*)\][^\n]*? all-gather\(", hlo)
    ]
    assert not [s for s in gathered if s in weight_shapes], gathered


def test_bad_requests_fail_with_one_clear_line(tiny):
    _, cfg, params = tiny
    engine = JaxEngine(params, cfg, SMALL)
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 96\)"):
        engine.add(Request((1, 200), Sampling(3)))
    with pytest.raises(ValueError, match="exceeds the engine's max_seq_len 64"):
        engine.add(Request((1,) * 50, Sampling(20)))
    with pytest.raises(ValueError, match="temperature must be"):
        Sampling(3, temperature=-1.0)
    with pytest.raises(ValueError, match="non-empty prompt"):
        Request((), Sampling(3))
    assert not engine.has_work()


def test_a_cancelled_request_frees_its_slot_and_blocks(tiny):
    _, cfg, params = tiny
    engine = JaxEngine(params, cfg, SMALL)
    free = engine.blocks.free_blocks
    rid = engine.add(Request(_prompts(9, lens=(12,))[0], Sampling(30, temperature=0.0)))
    queued = engine.add(Request((1, 2, 3), Sampling(3, temperature=0.0)))
    assert engine.cancel(queued) and not engine.cancel(queued)
    engine.step()
    assert engine.cancel(rid) and not engine.has_work()
    assert engine.blocks.free_blocks == free  # cached, but all obtainable again
    assert not engine.cancel(12345)
