"""GRPO: group-relative advantages and the clipped policy-gradient loss.

Pure functions over arrays, safe under ``jax.jit`` (string and float options are Python values:
pass them with ``functools.partial`` or as static arguments). Shape errors are raised at trace
time with the offending shapes in the message.

Notation: B sequences of T tokens; ``m[b, t]`` the loss mask (1 on generated tokens that are
trained), ``A[b]`` the advantage of sequence b, ``logp``/``old``/``ref``/``sampler`` the
log-probabilities of the sampled tokens under the current policy, the policy that generated
the batch as recomputed by the trainer, the frozen reference policy, and the sampler (which
may differ numerically from the trainer).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

ADVANTAGE_SCALES = ("std", "none", "rloo")
AGGREGATIONS = ("token", "sequence", "sequence_sum_norm")
RATIO_LEVELS = ("token", "sequence")


def _grouped(rewards: jax.Array, group_size: int, valid: jax.Array | None):
    """Reshape [N] rewards (and validity) into [N / group_size, group_size]."""
    rewards = jnp.asarray(rewards)
    if rewards.ndim != 1:
        raise ValueError(f"rewards must be 1-D [N], got shape {tuple(rewards.shape)}")
    if not isinstance(group_size, int) or isinstance(group_size, bool) or group_size < 1:
        raise ValueError(f"group_size must be a positive int, got {group_size!r}")
    n = rewards.shape[0]
    if n % group_size != 0:
        raise ValueError(
            f"number of rewards N={n} is not a multiple of group_size={group_size} "
            f"(N must be tasks * group_size)"
        )
    if valid is None:
        valid = jnp.ones((n,), dtype=bool)
    else:
        valid = jnp.asarray(valid)
        if valid.shape != rewards.shape:
            raise ValueError(
                f"valid mask shape {tuple(valid.shape)} does not match rewards shape "
                f"{tuple(rewards.shape)}"
            )
        valid = valid.astype(bool)
    r = rewards.astype(jnp.result_type(rewards.dtype, jnp.float32)).reshape(-1, group_size)
    v = valid.reshape(-1, group_size)
    return r, v


def _all_equal(r: jax.Array, v: jax.Array) -> jax.Array:
    """[G] bool: the valid rewards of each group are all equal, or fewer than two are valid."""
    big = jnp.asarray(jnp.finfo(r.dtype).max, r.dtype)
    hi = jnp.where(v, r, -big).max(axis=1)
    lo = jnp.where(v, r, big).min(axis=1)
    return (v.sum(axis=1) < 2) | (hi == lo)


def group_advantages(
    rewards: jax.Array,
    group_size: int,
    scale: str = "std",
    eps: float = 1e-6,
    valid: jax.Array | None = None,
) -> jax.Array:
    """Per-rollout advantages from rewards laid out as contiguous groups of ``group_size``.

    Rollouts ``[g*G, (g+1)*G)`` answer the same task. Within a group, over its valid members
    only (``valid`` False marks infra_error rollouts; they get advantage 0 and do not move the
    statistics), with n the number of valid members:

    - ``std`` (GRPO):        A_i = (r_i - mean) / (std + eps), std the population std (ddof=0)
    - ``none`` (Dr. GRPO):   A_i = r_i - mean
    - ``rloo`` (DeepSWE):    A_i = r_i - (sum_j r_j - r_i) / (n - 1), i.e. n/(n-1) (r_i - mean)

    A group whose valid rewards are all equal gets exact zeros (no NaN from std = 0, and no
    rounding residue), as does a group with fewer than two valid members (no baseline).
    Returns [N] float32.
    """
    if scale not in ADVANTAGE_SCALES:
        raise ValueError(f"scale must be one of {ADVANTAGE_SCALES}, got {scale!r}")
    r, v = _grouped(rewards, group_size, valid)
    vf = v.astype(r.dtype)
    n = vf.sum(axis=1, keepdims=True)
    total = (r * vf).sum(axis=1, keepdims=True)
    mean = total / jnp.maximum(n, 1.0)
    centred = (r - mean) * vf
    if scale == "std":
        var = (centred**2).sum(axis=1, keepdims=True) / jnp.maximum(n, 1.0)
        pos = var > 0  # double-where: sqrt'(0) is inf, keep gradients finite
        std = jnp.where(pos, jnp.sqrt(jnp.where(pos, var, 1.0)), 0.0)
        adv = centred / (std + eps)
    elif scale == "none":
        adv = centred
    else:  # rloo
        baseline = (total - r) / jnp.maximum(n - 1.0, 1.0)
        adv = (r - baseline) * vf
    adv = jnp.where(_all_equal(r, v)[:, None], 0.0, adv)
    return adv.reshape(-1)


class GroupStats(NamedTuple):
    """Which groups carry no learning signal (DAPO dynamic sampling filters them)."""

    all_equal: jax.Array  # [N/G] bool: every valid reward in the group is equal (or < 2 valid)
    keep: jax.Array  # [N] bool: valid rollout in a group that is not all-equal
    group_mean: jax.Array  # [N/G] mean reward over the valid members (0 if none)
    num_groups: jax.Array  # scalar int
    num_all_equal: jax.Array  # scalar int
    num_all_max: jax.Array  # all-equal groups whose reward is > 0 (all solved, binary reward)
    num_all_min: jax.Array  # all-equal groups whose reward is <= 0 (all failed)
    num_empty: jax.Array  # groups with no valid rollout at all (every one an infra_error)
    num_valid: jax.Array  # scalar int: rollouts counted (not infra_error)


def group_stats(rewards: jax.Array, group_size: int, valid: jax.Array | None = None) -> GroupStats:
    """Report the groups whose valid rewards are all equal: their advantages are all zero.

    ``all_equal[g]`` = max - min of the valid rewards of group g is 0, or the group has fewer
    than two valid members. ``keep`` is the per-rollout mask of valid rollouts in the other
    groups; dropping rollouts where it is False is DAPO's dynamic-sampling filter.
    """
    r, v = _grouped(rewards, group_size, valid)
    n = v.sum(axis=1)
    all_equal = _all_equal(r, v)
    vf = v.astype(r.dtype)
    group_mean = (r * vf).sum(axis=1) / jnp.maximum(n, 1).astype(r.dtype)
    keep = (v & ~all_equal[:, None]).reshape(-1)
    return GroupStats(
        all_equal=all_equal,
        keep=keep,
        group_mean=group_mean,
        num_groups=jnp.asarray(r.shape[0], jnp.int32),
        num_all_equal=all_equal.sum().astype(jnp.int32),
        num_all_max=(all_equal & (n > 0) & (group_mean > 0)).sum().astype(jnp.int32),
        num_all_min=(all_equal & (n > 0) & (group_mean <= 0)).sum().astype(jnp.int32),
        num_empty=(n == 0).sum().astype(jnp.int32),
        num_valid=n.sum().astype(jnp.int32),
    )


def _check_bt(name: str, x: jax.Array | None, shape: tuple[int, ...]) -> None:
    if x is not None and tuple(jnp.shape(x)) != shape:
        raise ValueError(f"{name} has shape {tuple(jnp.shape(x))}, expected {shape} like logprobs")


def grpo_loss(
    logprobs: jax.Array,
    old_logprobs: jax.Array,
    ref_logprobs: jax.Array | None,
    advantages: jax.Array,
    mask: jax.Array,
    clip_low: float = 0.2,
    clip_high: float = 0.28,
    kl_beta: float = 0.0,
    aggregation: str = "token",
    dual_clip: float | None = None,
    ratio_level: str = "token",
    truncated: jax.Array | None = None,
    sampler_logprobs: jax.Array | None = None,
    tis_cap: float | None = None,
    max_tokens: int | None = None,
    entropy: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The GRPO objective (to minimise) and its diagnostics.

    Shapes: ``logprobs``, ``old_logprobs``, ``ref_logprobs``, ``sampler_logprobs``, ``mask``,
    ``entropy``: [B, T]; ``advantages``: [B]; ``truncated``: [B] bool.

    Effective mask ``m[b, t] = mask[b, t] * (1 - truncated[b])``: trajectories cut by the step,
    context or time cap carry no signal and are masked out entirely.

    Log-ratio ``l[b, t] = logp - old`` (``ratio_level="token"``) or, GSPO,
    ``l[b, t] = sum_t m (logp - old) / sum_t m`` for every token of sequence b
    (``"sequence"``). Ratio ``rho = exp(l)``.

    Per-token policy loss (PPO clipped, asymmetric "clip-higher"):
        ``pg = max(-A rho, -A clip(rho, 1 - clip_low, 1 + clip_high))``
    Dual clip (``dual_clip = c > 1``), for A < 0 only: ``pg = min(pg, -c A)``, which bounds the
    loss when rho is very large on a negative-advantage token.

    Truncated importance sampling (``sampler_logprobs`` and ``tis_cap`` both given):
        ``pg *= stop_gradient(min(exp(old - sampler), tis_cap))``
    correcting for the sampler/trainer log-prob mismatch. ``sampler_logprobs`` alone only
    feeds the ``sampler_gap`` metric.

    KL to the reference (k3 estimator, only when ``kl_beta > 0``; ``ref_logprobs`` may then
    not be None, otherwise it is never read):
        ``k3 = exp(ref - logp) - (ref - logp) - 1``,  per-token loss ``pg + kl_beta * k3``.

    Aggregation of a per-token quantity x:
    - ``token``: ``sum_{b,t} m x / sum_{b,t} m``  (DAPO token mean)
    - ``sequence``: mean over sequences with at least one valid token of
      ``sum_t m x / sum_t m``  (original GRPO)
    - ``sequence_sum_norm``: ``sum_{b,t} m x / (B * max_tokens)``, ``max_tokens`` defaulting
      to T  (Dr. GRPO constant normaliser)

    Metrics (all stop-gradient, averaged over valid tokens): ``pg_loss``, ``kl_loss``
    (aggregated like the loss), ``clip_frac_low`` (A < 0 and rho < 1 - clip_low: clipped),
    ``clip_frac_high`` (A > 0 and rho > 1 + clip_high), ``dual_clip_frac``, ``ratio_mean``,
    ``ratio_max``, ``kl_ref`` (k3 mean, when ref given), ``kl_old`` (k3 estimate of
    KL(old || new) = rho_tok - 1 - log rho_tok), ``entropy`` (when given), ``sampler_gap``
    (mean |old - sampler|), ``tis_weight_mean`` and ``tis_clip_frac`` (with TIS),
    ``valid_tokens``, ``truncated_frac``.
    """
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
    if ratio_level not in RATIO_LEVELS:
        raise ValueError(f"ratio_level must be one of {RATIO_LEVELS}, got {ratio_level!r}")
    if not (clip_low >= 0 and clip_high >= 0):
        raise ValueError(f"clip_low and clip_high must be >= 0, got {clip_low}, {clip_high}")
    if clip_low >= 1:
        raise ValueError(f"clip_low must be < 1 (lower bound 1 - clip_low > 0), got {clip_low}")
    if dual_clip is not None and not dual_clip > 1:
        raise ValueError(f"dual_clip must be > 1 (it bounds -A * ratio), got {dual_clip}")
    if kl_beta < 0:
        raise ValueError(f"kl_beta must be >= 0, got {kl_beta}")
    if kl_beta > 0 and ref_logprobs is None:
        raise ValueError("kl_beta > 0 needs ref_logprobs (got None)")
    if tis_cap is not None:
        if sampler_logprobs is None:
            raise ValueError("tis_cap given without sampler_logprobs")
        if not tis_cap > 0:
            raise ValueError(f"tis_cap must be > 0, got {tis_cap}")

    logprobs = jnp.asarray(logprobs)
    if logprobs.ndim != 2:
        raise ValueError(f"logprobs must be [B, T], got shape {tuple(logprobs.shape)}")
    shape = tuple(logprobs.shape)
    b, t = shape
    _check_bt("old_logprobs", old_logprobs, shape)
    _check_bt("mask", mask, shape)
    _check_bt("sampler_logprobs", sampler_logprobs, shape)
    _check_bt("entropy", entropy, shape)
    if kl_beta > 0 or ref_logprobs is not None:
        _check_bt("ref_logprobs", ref_logprobs, shape)
    if tuple(jnp.shape(advantages)) != (b,):
        raise ValueError(
            f"advantages has shape {tuple(jnp.shape(advantages))}, expected ({b},) "
            f"(one per sequence of logprobs {shape})"
        )
    if truncated is not None and tuple(jnp.shape(truncated)) != (b,):
        raise ValueError(f"truncated has shape {tuple(jnp.shape(truncated))}, expected ({b},)")
    if max_tokens is not None and not max_tokens > 0:
        raise ValueError(f"max_tokens must be > 0, got {max_tokens}")

    dtype = jnp.result_type(logprobs.dtype, jnp.float32)
    logp = logprobs.astype(dtype)
    old = jax.lax.stop_gradient(jnp.asarray(old_logprobs, dtype))
    adv = jax.lax.stop_gradient(jnp.asarray(advantages, dtype))[:, None]
    m = jnp.asarray(mask).astype(dtype)
    if truncated is not None:
        m = m * (1.0 - jnp.asarray(truncated).astype(dtype))[:, None]
    sg = jax.lax.stop_gradient

    seq_tokens = m.sum(axis=1)  # [B]
    n_tokens = seq_tokens.sum()
    denom_tokens = jnp.maximum(n_tokens, 1.0)

    def masked(x: jax.Array) -> jax.Array:
        # where, not just x * m: a NaN/inf at a padded position must not leak (NaN * 0 = NaN).
        return jnp.where(m > 0, x, 0.0) * m

    def token_mean(x: jax.Array) -> jax.Array:
        return masked(x).sum() / denom_tokens

    def aggregate(x: jax.Array) -> jax.Array:
        if aggregation == "token":
            return token_mean(x)
        if aggregation == "sequence":
            has = (seq_tokens > 0).astype(dtype)
            per_seq = masked(x).sum(axis=1) / jnp.maximum(seq_tokens, 1.0)
            return (per_seq * has).sum() / jnp.maximum(has.sum(), 1.0)
        norm = float(b * (t if max_tokens is None else max_tokens))
        return masked(x).sum() / norm

    # Masked positions may hold garbage (padding): zero their log-ratio so exp() stays finite.
    tok_log_ratio = jnp.where(m > 0, logp - old, 0.0)
    if ratio_level == "token":
        log_ratio = tok_log_ratio
    else:
        seq_lr = tok_log_ratio.sum(axis=1) / jnp.maximum(seq_tokens, 1.0)
        log_ratio = jnp.broadcast_to(seq_lr[:, None], shape)
    ratio = jnp.exp(log_ratio)
    clipped = jnp.clip(ratio, 1.0 - clip_low, 1.0 + clip_high)
    pg = jnp.maximum(-adv * ratio, -adv * clipped)
    if dual_clip is not None:
        pg = jnp.where(adv < 0, jnp.minimum(pg, -dual_clip * adv), pg)

    metrics: dict[str, jax.Array] = {}
    if sampler_logprobs is not None:
        sampler = sg(jnp.asarray(sampler_logprobs, dtype))
        diff = jnp.where(m > 0, old - sampler, 0.0)
        metrics["sampler_gap"] = token_mean(jnp.abs(diff))
        if tis_cap is not None:
            raw_w = jnp.exp(diff)
            w = sg(jnp.minimum(raw_w, tis_cap))
            pg = pg * w
            metrics["tis_weight_mean"] = token_mean(w)
            metrics["tis_clip_frac"] = token_mean((raw_w > tis_cap).astype(dtype))

    pg_loss = aggregate(pg)
    loss = pg_loss
    if ref_logprobs is not None:
        ref = sg(jnp.asarray(ref_logprobs, dtype))
        d = jnp.where(m > 0, ref - logp, 0.0)
        k3 = jnp.exp(d) - d - 1.0
        metrics["kl_ref"] = sg(token_mean(k3))
        if kl_beta > 0:
            kl_loss = aggregate(k3)
            loss = loss + kl_beta * kl_loss
            metrics["kl_loss"] = sg(kl_loss)

    ratio_s = sg(ratio)
    low = (adv < 0) & (ratio_s < 1.0 - clip_low)
    high = (adv > 0) & (ratio_s > 1.0 + clip_high)
    metrics["pg_loss"] = sg(pg_loss)
    metrics["clip_frac_low"] = token_mean(low.astype(dtype))
    metrics["clip_frac_high"] = token_mean(high.astype(dtype))
    if dual_clip is not None:
        dual = (adv < 0) & (ratio_s > dual_clip)
        metrics["dual_clip_frac"] = token_mean(dual.astype(dtype))
    metrics["ratio_mean"] = token_mean(ratio_s)
    metrics["ratio_max"] = jnp.where(m > 0, ratio_s, 0.0).max()
    tok_lr = sg(tok_log_ratio)
    metrics["kl_old"] = token_mean(jnp.exp(tok_lr) - 1.0 - tok_lr)
    if entropy is not None:
        metrics["entropy"] = sg(token_mean(jnp.asarray(entropy, dtype)))
    metrics["valid_tokens"] = n_tokens
    metrics["truncated_frac"] = (
        jnp.asarray(truncated).astype(dtype).mean()
        if truncated is not None
        else jnp.zeros((), dtype)
    )
    metrics = {k: sg(v) for k, v in metrics.items()}
    return loss, metrics
