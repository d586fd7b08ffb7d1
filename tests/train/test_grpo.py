"""GRPO advantages and loss against the plain-numpy reference (values and gradients)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrepair.train.grpo import group_advantages, group_stats, grpo_loss

try:  # tests/ as a package or as plain rootdir-relative modules
    from .grpo_reference import (
        ref_grad_fd,
        ref_group_advantages,
        ref_group_all_equal,
        ref_grpo_loss,
    )
except ImportError:
    from grpo_reference import (
        ref_grad_fd,
        ref_group_advantages,
        ref_group_all_equal,
        ref_grpo_loss,
    )

# ---------------------------------------------------------------- inputs


def make_batch(seed: int, B: int, T: int, spread: float = 0.4):
    """Random log-probs near each other (so some ratios clip), padded masks, one empty row."""
    rng = np.random.default_rng(seed)
    old = -rng.uniform(0.05, 3.0, size=(B, T))
    logp = old + rng.normal(0.0, spread, size=(B, T))
    ref = old + rng.normal(0.0, spread, size=(B, T))
    sampler = old + rng.normal(0.0, 0.3, size=(B, T))
    lengths = rng.integers(1, T + 1, size=B)
    mask = (np.arange(T)[None, :] < lengths[:, None]).astype(np.float64)
    mask[0, :] = 0.0  # a fully masked row
    mask[-1, 0] = 0.0  # a hole (prompt token inside the row)
    mask[-1, -1] = 1.0
    adv = rng.normal(0.0, 1.0, size=B)
    truncated = rng.random(B) < 0.3
    truncated[-1] = False
    entropy = rng.uniform(0.0, 2.0, size=(B, T))
    return dict(
        logprobs=logp,
        old_logprobs=old,
        ref_logprobs=ref,
        advantages=adv,
        mask=mask,
        sampler_logprobs=sampler,
        truncated=truncated,
        entropy=entropy,
    )


OPTION_SETS = {
    "default": dict(),
    "symmetric_clip": dict(clip_low=0.2, clip_high=0.2),
    "kl": dict(kl_beta=0.05),
    "kl_sequence": dict(kl_beta=0.1, aggregation="sequence"),
    "sequence": dict(aggregation="sequence"),
    "sum_norm": dict(aggregation="sequence_sum_norm"),
    "sum_norm_max_tokens": dict(aggregation="sequence_sum_norm", max_tokens=16),
    "dual_clip": dict(dual_clip=1.5, clip_low=0.1, clip_high=0.1),
    "gspo": dict(ratio_level="sequence", clip_low=3e-4, clip_high=4e-4),
    "gspo_sequence_agg": dict(ratio_level="sequence", aggregation="sequence"),
    "truncated": dict(use_truncated=True),
    "tis": dict(use_sampler=True, tis_cap=1.2),
    "sampler_metric_only": dict(use_sampler=True),
    "everything": dict(
        kl_beta=0.02,
        aggregation="sequence_sum_norm",
        dual_clip=2.0,
        use_truncated=True,
        use_sampler=True,
        tis_cap=1.5,
        max_tokens=12,
    ),
}


def split_options(opts: dict, batch: dict):
    """Option dict -> (static kwargs, array kwargs) for both implementations."""
    opts = dict(opts)
    use_trunc = opts.pop("use_truncated", False)
    use_sampler = opts.pop("use_sampler", False)
    arrays = dict(
        old_logprobs=batch["old_logprobs"],
        ref_logprobs=batch["ref_logprobs"] if opts.get("kl_beta", 0.0) > 0 else None,
        advantages=batch["advantages"],
        mask=batch["mask"],
        truncated=batch["truncated"] if use_trunc else None,
        sampler_logprobs=batch["sampler_logprobs"] if use_sampler else None,
    )
    return opts, arrays


def jitted_loss(**static):
    return jax.jit(functools.partial(grpo_loss, **static))


# ---------------------------------------------------------------- advantages


@pytest.mark.parametrize("scale", ["std", "none", "rloo"])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("group_size", [1, 2, 5, 8])
def test_group_advantages_match_reference(scale, seed, group_size):
    rng = np.random.default_rng(seed)
    n_groups = 4
    N = n_groups * group_size
    binary = rng.integers(0, 2, size=N).astype(np.float64)
    cont = rng.normal(size=N)
    valid = rng.random(N) < 0.8
    fn = jax.jit(functools.partial(group_advantages, group_size=group_size, scale=scale))
    for rewards in (binary, cont):
        for v in (None, valid):
            got = np.asarray(fn(jnp.asarray(rewards, jnp.float32), valid=v))
            want = ref_group_advantages(rewards, group_size, scale=scale, valid=v)
            assert got.shape == (N,)
            np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)
            if v is not None:
                assert np.all(got[~valid] == 0.0), "infra_error rollouts must get advantage 0"


def test_all_equal_groups_give_zero_advantages_without_nan():
    rewards = jnp.array([1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0])
    for scale in ("std", "none", "rloo"):
        adv = np.asarray(jax.jit(group_advantages, static_argnums=(1, 2))(rewards, 4, scale))
        assert np.all(np.isfinite(adv))
        np.testing.assert_array_equal(adv[:8], 0.0)
        assert np.all(adv[8:] != 0.0)
    # std scale of a mixed binary group of 4 (two 1s): +-1 / (0.5 + eps)
    adv = np.asarray(group_advantages(rewards, 4, "std"))
    np.testing.assert_allclose(adv[8:], ref_group_advantages(np.asarray(rewards)[8:], 4), 1e-6)


def test_group_advantages_gradient_free_of_nan_for_equal_groups():
    # Rewards are data, but a NaN from 0/0 would still poison anything downstream.
    g = jax.grad(lambda r: group_advantages(r, 2, "std").sum())(jnp.ones(4))
    assert np.all(np.isfinite(np.asarray(g)))


def test_group_advantages_bad_sizes():
    with pytest.raises(ValueError, match=r"N=10.*group_size=4"):
        group_advantages(jnp.zeros(10), 4)
    with pytest.raises(ValueError, match="group_size"):
        group_advantages(jnp.zeros(8), 0)
    with pytest.raises(ValueError, match="1-D"):
        group_advantages(jnp.zeros((2, 4)), 4)
    with pytest.raises(ValueError, match="scale"):
        group_advantages(jnp.zeros(8), 4, scale="zscore")
    with pytest.raises(ValueError, match=r"valid mask shape \(7,\)"):
        group_advantages(jnp.zeros(8), 4, valid=jnp.ones(7, bool))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_group_stats_match_reference(seed):
    rng = np.random.default_rng(seed)
    G, n_groups = 4, 6
    rewards = rng.integers(0, 2, size=G * n_groups).astype(np.float32)
    rewards[:G] = 1.0  # all solved
    rewards[G : 2 * G] = 0.0  # all failed
    valid = rng.random(G * n_groups) < 0.85
    valid[2 * G : 2 * G + G - 1] = False  # a group with one valid member
    for v in (None, valid):
        st = jax.jit(functools.partial(group_stats, group_size=G))(jnp.asarray(rewards), valid=v)
        want = ref_group_all_equal(rewards, G, v)
        np.testing.assert_array_equal(np.asarray(st.all_equal), want)
        vv = np.ones_like(rewards, bool) if v is None else v
        np.testing.assert_array_equal(np.asarray(st.keep), vv & ~np.repeat(want, G))
        assert int(st.num_groups) == n_groups
        assert int(st.num_all_equal) == int(want.sum())
        n_empty = int((vv.reshape(-1, G).sum(1) == 0).sum())
        assert int(st.num_empty) == n_empty
        assert int(st.num_all_equal) == int(st.num_all_max) + int(st.num_all_min) + n_empty
        assert int(st.num_all_max) >= 1 and int(st.num_all_min) >= 1
        assert int(st.num_valid) == int(vv.sum())
        # Kept rollouts are exactly those with a non-zero advantage (binary rewards).
        adv = np.asarray(group_advantages(jnp.asarray(rewards), G, "std", valid=v))
        np.testing.assert_array_equal(np.asarray(st.keep), adv != 0.0)
    with pytest.raises(ValueError, match=r"N=7.*group_size=4"):
        group_stats(jnp.zeros(7), 4)


# ---------------------------------------------------------------- loss values


@pytest.mark.parametrize("name", sorted(OPTION_SETS))
@pytest.mark.parametrize("seed,B,T", [(0, 4, 6), (1, 6, 9), (2, 3, 16)])
def test_grpo_loss_matches_reference(name, seed, B, T):
    batch = make_batch(seed, B, T)
    static, arrays = split_options(OPTION_SETS[name], batch)
    fn = jitted_loss(**static)
    as32 = lambda x: None if x is None else jnp.asarray(x, jnp.float32)
    loss, metrics = fn(
        jnp.asarray(batch["logprobs"], jnp.float32),
        **{k: (as32(v) if k != "truncated" else v) for k, v in arrays.items()},
        entropy=jnp.asarray(batch["entropy"], jnp.float32),
    )
    want_loss, want_m = ref_grpo_loss(batch["logprobs"], **arrays, **static)
    np.testing.assert_allclose(float(loss), want_loss, rtol=1e-5, atol=1e-6)
    for key, val in want_m.items():
        np.testing.assert_allclose(float(metrics[key]), val, rtol=1e-5, atol=1e-6, err_msg=key)
    # Entropy metric: masked token mean of what was passed.
    m = batch["mask"]
    if arrays["truncated"] is not None:
        m = m * (~arrays["truncated"])[:, None]
    want_ent = (batch["entropy"] * m).sum() / max(m.sum(), 1)
    np.testing.assert_allclose(float(metrics["entropy"]), want_ent, rtol=1e-5)
    assert all(np.all(np.isfinite(np.asarray(v))) for v in metrics.values())


def test_clip_fractions_are_exercised():
    """The random inputs really hit both clip sides, so the clip branches are tested."""
    batch = make_batch(0, 6, 9, spread=0.6)
    _, m = ref_grpo_loss(
        batch["logprobs"], batch["old_logprobs"], None, batch["advantages"], batch["mask"]
    )
    assert m["clip_frac_low"] > 0 and m["clip_frac_high"] > 0


# ---------------------------------------------------------------- gradients


@pytest.mark.parametrize("name", sorted(OPTION_SETS))
@pytest.mark.parametrize("seed,B,T", [(3, 4, 5), (4, 3, 7)])
def test_grpo_loss_gradient_matches_finite_differences(name, seed, B, T):
    batch = make_batch(seed, B, T)
    static, arrays = split_options(OPTION_SETS[name], batch)
    with jax.enable_x64(True):
        arrs = {k: (None if v is None else jnp.asarray(v)) for k, v in arrays.items()}
        grad_fn = jax.jit(jax.grad(lambda lp: grpo_loss(lp, **arrs, **static)[0]))
        got = np.asarray(grad_fn(jnp.asarray(batch["logprobs"], jnp.float64)))
    want = ref_grad_fd(lambda lp: ref_grpo_loss(lp, **arrays, **static)[0], batch["logprobs"])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-8)
    assert np.any(got != 0.0)


def test_gradient_float32_close_to_float64_reference():
    batch = make_batch(7, 5, 8)
    static, arrays = split_options(OPTION_SETS["everything"], batch)
    arrs = {k: (None if v is None else jnp.asarray(v)) for k, v in arrays.items()}
    g = jax.jit(jax.grad(lambda lp: grpo_loss(lp, **arrs, **static)[0]))(
        jnp.asarray(batch["logprobs"], jnp.float32)
    )
    want = ref_grad_fd(lambda lp: ref_grpo_loss(lp, **arrays, **static)[0], batch["logprobs"])
    np.testing.assert_allclose(np.asarray(g), want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("aggregation", ["token", "sequence", "sequence_sum_norm"])
@pytest.mark.parametrize("ratio_level", ["token", "sequence"])
@pytest.mark.parametrize("seed", [0, 1])
def test_ratio_one_gradient_is_reinforce(aggregation, ratio_level, seed):
    """logp == old, beta 0: d loss / d logp[b, t] = -A_b / normaliser on valid tokens.

    REINFORCE with group-normalised advantages: the policy-gradient estimator
    -sum_b A_b sum_t grad logp[b, t], divided by the aggregation's normaliser (token count,
    sequences x sequence length, or B * T). GSPO gives the same gradient: each of the len_b
    tokens carries exp(mean log-ratio), whose derivative per token is 1/len_b.
    """
    rng = np.random.default_rng(seed)
    G, n_tasks, T = 4, 3, 7
    B = G * n_tasks
    rewards = rng.integers(0, 2, size=B).astype(np.float32)
    rewards[:G] = [1, 0, 0, 1]
    adv = np.asarray(group_advantages(jnp.asarray(rewards), G, "std"))
    np.testing.assert_allclose(adv, ref_group_advantages(rewards, G), rtol=1e-5, atol=1e-6)
    lengths = rng.integers(1, T + 1, size=B)
    mask = (np.arange(T)[None, :] < lengths[:, None]).astype(np.float32)
    logp = -rng.uniform(0.1, 2.0, size=(B, T)).astype(np.float32)
    fn = jax.jit(
        jax.grad(
            lambda lp: grpo_loss(
                lp, lp, None, adv, mask, aggregation=aggregation, ratio_level=ratio_level
            )[0]
        )
    )
    # old_logprobs is the same array but stop-gradient'd inside: only the ratio's numerator moves.
    got = np.asarray(fn(jnp.asarray(logp)))
    want = np.zeros((B, T))
    n_tok = mask.sum()
    for b in range(B):
        for t in range(T):
            if not mask[b, t]:
                continue
            if aggregation == "token":
                norm = n_tok
            elif aggregation == "sequence":
                norm = B * lengths[b]
            else:
                norm = B * T
            want[b, t] = -adv[b] / norm
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------- options and edge cases


def test_kl_beta_zero_needs_no_reference_and_ignores_it():
    batch = make_batch(5, 4, 6)
    args = (batch["logprobs"], batch["old_logprobs"])
    rest = (batch["advantages"], batch["mask"])
    l_none, m_none = jax.jit(grpo_loss)(*args, None, *rest)
    l_ref, m_ref = jax.jit(grpo_loss)(*args, batch["ref_logprobs"], *rest)
    np.testing.assert_allclose(float(l_none), float(l_ref), rtol=1e-6)
    assert "kl_ref" not in m_none and "kl_ref" in m_ref and "kl_loss" not in m_ref
    with pytest.raises(ValueError, match="kl_beta > 0 needs ref_logprobs"):
        grpo_loss(*args, None, *rest, kl_beta=0.1)


def test_kl_term_is_k3_and_only_term_when_advantages_zero():
    batch = make_batch(6, 4, 6)
    zero = np.zeros(4)
    loss, m = grpo_loss(
        batch["logprobs"],
        batch["old_logprobs"],
        batch["ref_logprobs"],
        zero,
        batch["mask"],
        kl_beta=0.5,
    )
    d = batch["ref_logprobs"] - batch["logprobs"]
    k3 = np.exp(d) - d - 1
    want = 0.5 * (k3 * batch["mask"]).sum() / batch["mask"].sum()
    np.testing.assert_allclose(float(loss), want, rtol=1e-5)
    assert float(m["kl_ref"]) >= 0.0


def test_fully_masked_rows_and_batch():
    batch = make_batch(8, 4, 6)
    grad = jax.grad(
        lambda lp: grpo_loss(
            lp,
            batch["old_logprobs"],
            batch["ref_logprobs"],
            batch["advantages"],
            batch["mask"],
            kl_beta=0.1,
            aggregation="sequence",
        )[0]
    )(jnp.asarray(batch["logprobs"], jnp.float32))
    assert np.all(np.asarray(grad)[0] == 0.0)  # row 0 is fully masked
    assert np.all(np.asarray(grad)[batch["mask"] == 0] == 0.0)
    empty = np.zeros_like(batch["mask"])
    for agg in ("token", "sequence", "sequence_sum_norm"):
        for level in ("token", "sequence"):
            loss, m = jax.jit(
                functools.partial(grpo_loss, aggregation=agg, ratio_level=level, kl_beta=0.1)
            )(
                batch["logprobs"],
                batch["old_logprobs"],
                batch["ref_logprobs"],
                batch["advantages"],
                empty,
            )
            assert float(loss) == 0.0
            assert all(np.all(np.isfinite(np.asarray(v))) for v in m.values())


@pytest.mark.parametrize("ratio_level", ["token", "sequence"])
@pytest.mark.parametrize("aggregation", ["token", "sequence", "sequence_sum_norm"])
def test_padding_garbage_does_not_leak(ratio_level, aggregation):
    """Padded positions may hold -inf, NaN or huge values: loss, grads and metrics unchanged."""
    batch = make_batch(9, 4, 6)
    pad = batch["mask"] == 0
    dirty = {k: np.array(batch[k]) for k in ("logprobs", "old_logprobs", "ref_logprobs")}
    dirty["logprobs"][pad] = -np.inf
    dirty["old_logprobs"][pad] = 50.0
    dirty["ref_logprobs"][pad] = np.nan
    dirty["sampler_logprobs"] = np.array(batch["sampler_logprobs"])
    dirty["sampler_logprobs"][pad] = np.inf
    dirty["entropy"] = np.array(batch["entropy"])
    dirty["entropy"][pad] = np.nan

    def run(src):
        f = lambda lp: grpo_loss(
            lp,
            src["old_logprobs"],
            src["ref_logprobs"],
            batch["advantages"],
            batch["mask"],
            kl_beta=0.1,
            ratio_level=ratio_level,
            aggregation=aggregation,
            sampler_logprobs=src["sampler_logprobs"],
            tis_cap=1.5,
            entropy=src["entropy"],
            dual_clip=2.0,
        )
        (loss, m), g = jax.value_and_grad(f, has_aux=True)(
            jnp.asarray(src["logprobs"], jnp.float32)
        )
        return float(loss), np.asarray(g), m

    l0, g0, m0 = run(batch)
    l1, g1, m1 = run(dirty)
    np.testing.assert_allclose(l1, l0, rtol=1e-6)
    np.testing.assert_allclose(g1, g0, rtol=1e-6)
    for k, v in m1.items():
        np.testing.assert_allclose(np.asarray(v), np.asarray(m0[k]), rtol=1e-6, err_msg=k)


def test_truncated_equals_masking_the_rows():
    batch = make_batch(10, 5, 6)
    trunc = np.array([False, True, False, True, False])
    kw = dict(kl_beta=0.1, aggregation="sequence")
    a = grpo_loss(
        batch["logprobs"],
        batch["old_logprobs"],
        batch["ref_logprobs"],
        batch["advantages"],
        batch["mask"],
        truncated=trunc,
        **kw,
    )[0]
    b = grpo_loss(
        batch["logprobs"],
        batch["old_logprobs"],
        batch["ref_logprobs"],
        batch["advantages"],
        batch["mask"] * (~trunc)[:, None],
        **kw,
    )[0]
    np.testing.assert_allclose(float(a), float(b), rtol=1e-6)


def test_tis_weights_are_stop_gradient_and_capped():
    batch = make_batch(11, 4, 6)
    m = batch["mask"]
    # With sampler == old the weight is 1: TIS changes nothing.
    base = grpo_loss(batch["logprobs"], batch["old_logprobs"], None, batch["advantages"], m)[0]
    same = grpo_loss(
        batch["logprobs"],
        batch["old_logprobs"],
        None,
        batch["advantages"],
        m,
        sampler_logprobs=batch["old_logprobs"],
        tis_cap=2.0,
    )
    np.testing.assert_allclose(float(same[0]), float(base), rtol=1e-6)
    assert float(same[1]["sampler_gap"]) == 0.0
    # A big gap is capped: every weight <= cap, and the clip fraction reports it.
    far = batch["old_logprobs"] + 5.0 * m  # old - sampler = -5 -> weight e^-5
    near = batch["old_logprobs"] - 5.0 * m  # old - sampler = +5 -> weight capped at 1.5
    _, m_far = grpo_loss(
        batch["logprobs"],
        batch["old_logprobs"],
        None,
        batch["advantages"],
        m,
        sampler_logprobs=far,
        tis_cap=1.5,
    )
    _, m_near = grpo_loss(
        batch["logprobs"],
        batch["old_logprobs"],
        None,
        batch["advantages"],
        m,
        sampler_logprobs=near,
        tis_cap=1.5,
    )
    np.testing.assert_allclose(float(m_near["tis_weight_mean"]), 1.5, rtol=1e-6)
    np.testing.assert_allclose(float(m_near["tis_clip_frac"]), 1.0)
    np.testing.assert_allclose(float(m_far["tis_weight_mean"]), np.exp(-5.0), rtol=1e-5)
    np.testing.assert_allclose(float(m_far["sampler_gap"]), 5.0, rtol=1e-6)


def test_dual_clip_bounds_negative_advantage_loss():
    # ratio e^3 ~ 20 on a negative-advantage token: PPO loss = 20 |A|, dual clip caps it at 3|A|.
    lp = jnp.array([[3.0]])
    old = jnp.zeros((1, 1))
    mask = jnp.ones((1, 1))
    plain = grpo_loss(lp, old, None, jnp.array([-1.0]), mask)[0]
    dual, m = grpo_loss(lp, old, None, jnp.array([-1.0]), mask, dual_clip=3.0)
    np.testing.assert_allclose(float(plain), np.exp(3.0), rtol=1e-6)
    np.testing.assert_allclose(float(dual), 3.0, rtol=1e-6)
    assert float(m["dual_clip_frac"]) == 1.0
    g = jax.grad(lambda x: grpo_loss(x, old, None, jnp.array([-1.0]), mask, dual_clip=3.0)[0])(lp)
    assert float(g[0, 0]) == 0.0  # no gradient through the bound
    # Positive advantages are untouched by dual clip.
    pos = grpo_loss(lp, old, None, jnp.array([1.0]), mask, dual_clip=3.0)[0]
    np.testing.assert_allclose(float(pos), -1.28, rtol=1e-6)


def test_bf16_inputs_compute_in_float32():
    batch = make_batch(12, 4, 6)
    args = [jnp.asarray(batch[k], jnp.bfloat16) for k in ("logprobs", "old_logprobs")]
    loss, m = jax.jit(grpo_loss)(*args, None, batch["advantages"], batch["mask"])
    assert loss.dtype == jnp.float32
    assert np.isfinite(float(loss))


def test_bad_shapes_and_options_raise_clear_errors():
    lp = jnp.zeros((3, 5))
    adv = jnp.zeros(3)
    mask = jnp.ones((3, 5))
    with pytest.raises(ValueError, match=r"old_logprobs has shape \(3, 4\), expected \(3, 5\)"):
        grpo_loss(lp, jnp.zeros((3, 4)), None, adv, mask)
    with pytest.raises(ValueError, match=r"advantages has shape \(4,\), expected \(3,\)"):
        grpo_loss(lp, lp, None, jnp.zeros(4), mask)
    with pytest.raises(ValueError, match=r"mask has shape \(5, 3\)"):
        grpo_loss(lp, lp, None, adv, jnp.ones((5, 3)))
    with pytest.raises(ValueError, match=r"logprobs must be \[B, T\]"):
        grpo_loss(jnp.zeros(5), jnp.zeros(5), None, adv, mask)
    with pytest.raises(ValueError, match=r"ref_logprobs has shape \(3, 2\)"):
        grpo_loss(lp, lp, jnp.zeros((3, 2)), adv, mask, kl_beta=0.1)
    with pytest.raises(ValueError, match=r"truncated has shape \(2,\)"):
        grpo_loss(lp, lp, None, adv, mask, truncated=jnp.zeros(2, bool))
    with pytest.raises(ValueError, match="aggregation must be one of"):
        grpo_loss(lp, lp, None, adv, mask, aggregation="mean")
    with pytest.raises(ValueError, match="ratio_level must be one of"):
        grpo_loss(lp, lp, None, adv, mask, ratio_level="seq")
    with pytest.raises(ValueError, match="dual_clip must be > 1"):
        grpo_loss(lp, lp, None, adv, mask, dual_clip=0.5)
    with pytest.raises(ValueError, match="tis_cap given without sampler_logprobs"):
        grpo_loss(lp, lp, None, adv, mask, tis_cap=2.0)
    with pytest.raises(ValueError, match="clip_low must be < 1"):
        grpo_loss(lp, lp, None, adv, mask, clip_low=1.0)
