"""The sampler against transformers' `generate`, a full forward pass, and numpy references."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxrepair.model import forward, load_hf, make_mesh
from jaxrepair.model.sampler import Buckets, compile_count, generate
from tests.model.hf_oracle import make_hf_model

PROMPT_LENS = (3, 9, 14)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("sampler_model")
    hf = make_hf_model(path, seed=3, num_hidden_layers=2)
    cfg, params = load_hf(path, dtype=jnp.float32)
    return path, hf, cfg, params


def _prompts(seed: int, lens=PROMPT_LENS, vocab: int = 96) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(1, vocab, size=n).tolist() for n in lens]


def _hf_greedy(hf, prompt: list[int], max_new: int, eos=None) -> list[int]:
    """transformers' greedy generate on one unpadded prompt: its completion tokens."""
    with torch.no_grad():
        out = hf.generate(
            torch.tensor([prompt]),
            attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
            max_new_tokens=max_new,
            do_sample=False,
            eos_token_id=eos,
            pad_token_id=0,
        )
    return out[0, len(prompt) :].tolist()


def _full_forward_logprobs(params, cfg, prompt, completion, temperature: float) -> np.ndarray:
    """log softmax(logits / T) of each completion token from one forward over prompt+completion."""
    seq = np.asarray(prompt + completion)[None]
    logits = np.asarray(forward(params, cfg, jnp.asarray(seq)))[0].astype(np.float64)
    t = temperature if temperature > 0 else 1.0
    scaled = logits[len(prompt) - 1 : len(seq[0]) - 1] / t
    logz = np.log(np.exp(scaled - scaled.max(-1, keepdims=True)).sum(-1)) + scaled.max(-1)
    return scaled[np.arange(len(completion)), completion] - logz


def test_greedy_matches_transformers_generate_for_ragged_batch(tiny):
    _, hf, cfg, params = tiny
    prompts = _prompts(0, lens=(3, 9, 14, 21))  # two prompt buckets' worth of lengths
    out = generate(params, cfg, prompts, max_new_tokens=12, temperature=0.0)
    assert out.tokens.shape == (4, 12) and out.tokens.dtype == np.int32
    assert out.logprobs.shape == (4, 12) and out.logprobs.dtype == np.float32
    assert out.lengths.tolist() == [12] * 4
    for i, prompt in enumerate(prompts):
        assert out.tokens[i].tolist() == _hf_greedy(hf, prompt, 12), f"row {i}"


def test_layers_sliced_per_step_match_transformers(tiny, monkeypatch):
    """The accelerator program (each layer's weights sliced from the stack inside the decode
    loop) against the same oracles as the CPU one, which slices them once per call."""
    from jaxrepair.model import sampler

    monkeypatch.setattr(sampler, "runs_on_cpu", lambda mesh: False)
    _, hf, cfg, params = tiny
    prompts = _prompts(5, lens=(4, 11))
    out = generate(params, cfg, prompts, max_new_tokens=9, temperature=0.0)
    for i, prompt in enumerate(prompts):
        assert out.tokens[i].tolist() == _hf_greedy(hf, prompt, 9), f"row {i}"
        ref = _full_forward_logprobs(params, cfg, prompt, out.tokens[i].tolist(), 0.0)
        np.testing.assert_allclose(out.logprobs[i], ref, atol=2e-5)


@pytest.mark.parametrize("dtype,ynn", [(jnp.float32, False), (jnp.bfloat16, True)])
def test_cpu_program_dots_follow_the_params_dtype(tiny, dtype, ynn):
    """A float32 generate program on CPU compiles with XLA:CPU's own dot kernels (faster
    GEMVs), a bf16 one keeps the YNNPACK fusions; the compiled program says which."""
    from jaxrepair.model import sampler

    _, _, cfg, params = tiny
    params = jax.tree.map(lambda a: a.astype(dtype), params)
    cpu_fp32 = dtype == jnp.float32
    fn = sampler._compiled(cfg, None, True, 16, True, False, 0, cpu_fp32)
    args = (np.ones((2, 16), np.int32), np.zeros(2, np.int32), np.int32(4), np.float32(0))
    args += (np.int32(0), np.float32(1), np.full(4, -1, np.int32), jax.random.key(0))
    text = fn.lower(params, *args).compile().as_text()
    assert ("__ynn_fusion" in text) == ynn


@pytest.mark.slow  # the blocked kernel itself is checked against dense in test_attention_impls
def test_blocked_prefill_of_long_ragged_prompts_matches_transformers(tiny):
    """Prefill runs causal attention over the prompt alone; with the "blocked" kernel and
    prompts longer than its block (left padding of different lengths) the completions and
    log-probs still equal transformers' greedy generate and a full forward."""
    import dataclasses

    from jaxrepair.model.attention import BLOCK

    _, hf, cfg, params = tiny
    blocked = dataclasses.replace(cfg, attention_impl="blocked")
    prompts = _prompts(5, lens=(BLOCK + 70, 2 * BLOCK + 9, 40))
    out = generate(params, blocked, prompts, max_new_tokens=6, temperature=0.0)
    for i, prompt in enumerate(prompts):
        assert out.tokens[i].tolist() == _hf_greedy(hf, prompt, 6), f"row {i}"
        ref = _full_forward_logprobs(params, cfg, prompt, out.tokens[i].tolist(), 0.0)
        assert np.abs(out.logprobs[i] - ref).max() <= 1e-4
    # the layer loop unrolled (scan_layers=False) writes the same cache slots
    unrolled = dataclasses.replace(blocked, scan_layers=False)
    same = generate(params, unrolled, prompts, max_new_tokens=6, temperature=0.0)
    assert same.tokens.tolist() == out.tokens.tolist()
    np.testing.assert_allclose(same.logprobs, out.logprobs, atol=1e-5)


def test_greedy_matches_transformers_on_tied_gqa1_model(tmp_path):
    hf = make_hf_model(
        tmp_path, seed=5, num_hidden_layers=3, head_dim=24, num_key_value_heads=1,
        tie_word_embeddings=True,
    )  # fmt: skip
    cfg, params = load_hf(tmp_path, dtype=jnp.float32)
    prompts = _prompts(1, lens=(1, 6, 11))
    out = generate(params, cfg, prompts, max_new_tokens=8, temperature=0.0)
    for i, prompt in enumerate(prompts):
        assert out.tokens[i].tolist() == _hf_greedy(hf, prompt, 8), f"row {i}"
    # a one-token prompt bucket: no prefill at all, the prompt goes through the decode loop
    alone = generate(
        params, cfg, prompts[:1], 8, temperature=0.0, buckets=Buckets(batch=(1,), prompt=(1, 16))
    )
    assert alone.tokens[0].tolist() == out.tokens[0].tolist()


def test_stop_tokens_end_rows_like_transformers_and_pad_after(tiny):
    _, hf, cfg, params = tiny
    prompts = _prompts(2)
    free = generate(params, cfg, prompts, max_new_tokens=12, temperature=0.0)
    # stop tokens picked from the free-running output so rows 0 and 1 stop early
    stops = [int(free.tokens[0, 2]), int(free.tokens[1, 4])]
    pad_id = 7
    out = generate(
        params, cfg, prompts, max_new_tokens=12, temperature=0.0, stop_tokens=stops, pad_id=pad_id
    )
    for i, prompt in enumerate(prompts):
        ref = _hf_greedy(hf, prompt, 12, eos=stops)
        n = int(out.lengths[i])
        assert n == len(ref), (i, n, ref)
        assert out.tokens[i, :n].tolist() == ref
        assert (out.tokens[i, n:] == pad_id).all()
        assert (out.logprobs[i, n:] == 0).all() and (out.logprobs[i, :n] < 0).all()
        if n < 12:
            assert out.tokens[i, n - 1] in stops
            assert not set(out.tokens[i, : n - 1].tolist()) & set(stops)
    assert out.lengths[0] <= 3 and out.lengths[1] <= 5
    assert out.completions()[0] == out.tokens[0, : out.lengths[0]].tolist()
    # when every row stops, decoding stops there instead of running to max_new_tokens
    all_stop = generate(
        params, cfg, prompts[:2], max_new_tokens=12, temperature=0.0, stop_tokens=stops
    )
    assert all_stop.steps == int(all_stop.lengths.max()) < 12


@pytest.mark.parametrize(
    "temperature,top_k,top_p",
    # temperature 0 and 1 are the two ends the others interpolate (the rollout engine's tests
    # check greedy and sampled log-probs against transformers' forward too): slow tier
    [
        pytest.param(0.0, 0, 1.0, marks=pytest.mark.slow),
        pytest.param(1.0, 0, 1.0, marks=pytest.mark.slow),
        (0.7, 0, 1.0),
        (1.3, 5, 0.8),
    ],
)
def test_logprobs_equal_full_forward_log_softmax(tiny, temperature, top_k, top_p):
    _, _, cfg, params = tiny
    prompts = _prompts(3)
    out = generate(
        params, cfg, prompts, max_new_tokens=10, temperature=temperature, top_k=top_k,
        top_p=top_p, stop_tokens=[11, 12, 13], rng=jax.random.key(4),
    )  # fmt: skip
    for i, prompt in enumerate(prompts):
        n = int(out.lengths[i])
        ref = _full_forward_logprobs(params, cfg, prompt, out.tokens[i, :n].tolist(), temperature)
        assert np.abs(out.logprobs[i, :n] - ref).max() <= 1e-4, (i, out.logprobs[i, :n], ref)


def test_sampling_reproducible_with_fixed_key_and_varies_with_key(tiny):
    _, _, cfg, params = tiny
    prompts = _prompts(4)
    kw = dict(max_new_tokens=12, temperature=1.5)
    a = generate(params, cfg, prompts, rng=jax.random.key(1), **kw)
    b = generate(params, cfg, prompts, rng=jax.random.key(1), **kw)
    c = generate(params, cfg, prompts, rng=jax.random.key(2), **kw)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    np.testing.assert_array_equal(a.logprobs, b.logprobs)
    assert (a.tokens != c.tokens).any()
    greedy = generate(params, cfg, prompts, max_new_tokens=12, temperature=0.0)
    assert (a.tokens != greedy.tokens).any()


def test_top_k_1_equals_greedy(tiny):
    _, _, cfg, params = tiny
    prompts = _prompts(5)
    greedy = generate(params, cfg, prompts, max_new_tokens=10, temperature=0.0)
    topk1 = generate(
        params, cfg, prompts, max_new_tokens=10, temperature=1.0, top_k=1, rng=jax.random.key(9)
    )
    np.testing.assert_array_equal(topk1.tokens, greedy.tokens)
    np.testing.assert_allclose(topk1.logprobs, greedy.logprobs, atol=1e-6)


@pytest.mark.parametrize("top_k,top_p", [(4, 1.0), (0, 0.3)])
def test_samples_stay_inside_top_k_and_nucleus(tiny, top_k, top_p):
    """Every sampled token lies in the top-k set / top-p nucleus computed here in numpy."""
    _, _, cfg, params = tiny
    prompts = _prompts(6)
    t = 2.0  # a flat distribution, so an unfiltered sample would often fall outside
    out = generate(
        params, cfg, prompts, max_new_tokens=10, temperature=t, top_k=top_k, top_p=top_p,
        rng=jax.random.key(3),
    )  # fmt: skip
    for i, prompt in enumerate(prompts):
        seq = np.asarray(prompt + out.tokens[i].tolist())[None]
        logits = np.asarray(forward(params, cfg, jnp.asarray(seq)))[0, len(prompt) - 1 : -1] / t
        for step, tok in enumerate(out.tokens[i]):
            order = np.argsort(-logits[step])
            if top_k:
                allowed = order[:top_k]
            else:
                probs = np.exp(logits[step] - logits[step].max())
                probs = probs[order] / probs.sum()
                before = np.cumsum(probs) - probs
                allowed = order[before < top_p]
            assert tok in allowed, (i, step, tok, allowed)


def test_new_lengths_in_same_buckets_do_not_recompile(tiny):
    _, _, cfg, params = tiny
    buckets = Buckets(batch=(4, 8), prompt=(16, 24), new_tokens=(16,))
    generate(params, cfg, _prompts(7, (2, 5, 15)), 9, temperature=0.0, buckets=buckets)
    before = compile_count()
    # other prompt lengths, batch size, max_new_tokens and stop tokens in the same buckets
    generate(params, cfg, _prompts(8, (16, 1)), 16, temperature=0.0, buckets=buckets)
    generate(params, cfg, _prompts(9, (4, 4, 4, 7)), 3, 0.0, stop_tokens=[5, 6], buckets=buckets)
    assert compile_count() == before
    # a longer prompt moves to the next bucket: exactly one new program
    generate(params, cfg, _prompts(10, (20,)), 4, temperature=0.0, buckets=buckets)
    assert compile_count() == before + 1


def test_sharded_generation_equals_unsharded(tiny):
    path, _, cfg, params = tiny
    mesh = make_mesh({"fsdp": 4, "tensor": 2})
    _, sharded = load_hf(path, mesh=mesh, dtype=jnp.float32)
    prompts = _prompts(11, lens=(3, 9, 14, 5, 2))
    ref = generate(params, cfg, prompts, max_new_tokens=10, temperature=0.0)
    out = generate(sharded, cfg, prompts, max_new_tokens=10, temperature=0.0, mesh=mesh)
    np.testing.assert_array_equal(out.tokens, ref.tokens)
    np.testing.assert_allclose(out.logprobs, ref.logprobs, atol=1e-4)
    # host (unsharded) params are placed onto the mesh by generate itself
    again = generate(params, cfg, prompts, max_new_tokens=10, temperature=0.0, mesh=mesh)
    np.testing.assert_array_equal(again.tokens, ref.tokens)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(prompts=[[1, 2], []]), "prompt 1"),
        (dict(prompts=[[1, 200]]), "outside"),
        (dict(prompts=[[1, 2]], temperature=0.5), "rng"),
        (dict(prompts=[[1, 2]], max_new_tokens=0), "max_new_tokens"),
        (dict(prompts=[[1, 2]], top_p=0.0, rng=0), "top_p"),
        (dict(prompts=[[1, 2]], stop_tokens=[500]), "stop_tokens"),
        (dict(prompts=[]), "non-empty"),
    ],
)
def test_bad_input_is_named(tiny, kwargs, match):
    _, _, cfg, params = tiny
    kw = dict(max_new_tokens=4, temperature=0.0) | kwargs
    with pytest.raises(ValueError, match=match):
        generate(params, cfg, **kw)


def test_bucket_choice_covers_request_and_mesh_split():
    sizes = (1, 2, 4, 8)
    for n in range(1, 40):
        for split in (1, 2, 3, 4):
            got = Buckets.pick(sizes, n, split)
            assert got >= n and got % split == 0, (n, split, got)
            # within the buckets: the smallest bucket that holds n, only rounded for the split
            if n <= 8:
                smallest = min(s for s in sizes if s >= n)
                assert got == -(-smallest // split) * split
            else:
                assert got - n < 8 + split  # rounded up by less than one step
    with pytest.raises(ValueError, match="sorted"):
        Buckets(batch=(4, 2))
