"""Plain-numpy reference for GRPO advantages and loss, written from the formulas with loops.

Independent of jaxrepair.train.grpo: float64 throughout, one rollout / token at a time, so a
test comparing the two checks the vectorised JAX code against the textbook definitions.
"""

from __future__ import annotations

import math

import numpy as np


def ref_group_advantages(rewards, group_size, scale="std", eps=1e-6, valid=None):
    rewards = [float(r) for r in rewards]
    n_total = len(rewards)
    valid = [True] * n_total if valid is None else [bool(v) for v in valid]
    out = [0.0] * n_total
    for start in range(0, n_total, group_size):
        idx = [i for i in range(start, start + group_size) if valid[i]]
        n = len(idx)
        if n < 2:
            continue  # no baseline: advantage 0
        vals = [rewards[i] for i in idx]
        mean = sum(vals) / n
        if scale == "std":
            std = math.sqrt(sum((x - mean) ** 2 for x in vals) / n)
            for i in idx:
                out[i] = (rewards[i] - mean) / (std + eps)
        elif scale == "none":
            for i in idx:
                out[i] = rewards[i] - mean
        elif scale == "rloo":
            for i in idx:
                others = [rewards[j] for j in idx if j != i]
                out[i] = rewards[i] - sum(others) / len(others)
        else:
            raise ValueError(scale)
    return np.array(out)


def ref_group_all_equal(rewards, group_size, valid=None):
    n_total = len(rewards)
    valid = [True] * n_total if valid is None else [bool(v) for v in valid]
    res = []
    for start in range(0, n_total, group_size):
        vals = {float(rewards[i]) for i in range(start, start + group_size) if valid[i]}
        count = sum(valid[start : start + group_size])
        res.append(count < 2 or len(vals) == 1)
    return np.array(res)


def ref_grpo_loss(
    logprobs,
    old_logprobs,
    ref_logprobs,
    advantages,
    mask,
    clip_low=0.2,
    clip_high=0.28,
    kl_beta=0.0,
    aggregation="token",
    dual_clip=None,
    ratio_level="token",
    truncated=None,
    sampler_logprobs=None,
    tis_cap=None,
    max_tokens=None,
):
    """Returns (loss, metrics dict) in float64."""
    logprobs = np.asarray(logprobs, np.float64)
    old_logprobs = np.asarray(old_logprobs, np.float64)
    B, T = logprobs.shape
    # Effective mask: truncated trajectories are dropped entirely.
    m = [
        [bool(mask[b][t]) and not (truncated is not None and truncated[b]) for t in range(T)]
        for b in range(B)
    ]

    # Ratios.
    ratio = [[1.0] * T for _ in range(B)]
    for b in range(B):
        if ratio_level == "token":
            for t in range(T):
                if m[b][t]:
                    ratio[b][t] = math.exp(logprobs[b, t] - old_logprobs[b, t])
        else:  # GSPO: geometric mean of the token ratios over the sequence
            toks = [t for t in range(T) if m[b][t]]
            if toks:
                s = sum(logprobs[b, t] - old_logprobs[b, t] for t in toks) / len(toks)
                for t in range(T):
                    ratio[b][t] = math.exp(s)

    per_token = [[0.0] * T for _ in range(B)]
    pg_tok = [[0.0] * T for _ in range(B)]
    k3_tok = [[0.0] * T for _ in range(B)]
    n_low = n_high = 0
    for b in range(B):
        A = float(advantages[b])
        for t in range(T):
            if not m[b][t]:
                continue
            r = ratio[b][t]
            # PPO clipped surrogate (objective), then negate.
            rc = min(max(r, 1 - clip_low), 1 + clip_high)
            obj = min(r * A, rc * A)
            if dual_clip is not None and A < 0:
                obj = max(obj, dual_clip * A)
            pg = -obj
            if tis_cap is not None:
                w = min(math.exp(old_logprobs[b, t] - sampler_logprobs[b][t]), tis_cap)
                pg *= w
            pg_tok[b][t] = pg
            if ref_logprobs is not None:
                d = ref_logprobs[b][t] - logprobs[b, t]
                k3_tok[b][t] = math.exp(d) - d - 1
            per_token[b][t] = pg + kl_beta * k3_tok[b][t]
            if A < 0 and r < 1 - clip_low:
                n_low += 1
            if A > 0 and r > 1 + clip_high:
                n_high += 1

    def agg(x):
        if aggregation == "token":
            n = sum(sum(row) for row in m)
            tot = sum(x[b][t] for b in range(B) for t in range(T) if m[b][t])
            return tot / n if n else 0.0
        if aggregation == "sequence":
            means = []
            for b in range(B):
                toks = [t for t in range(T) if m[b][t]]
                if toks:
                    means.append(sum(x[b][t] for t in toks) / len(toks))
            return sum(means) / len(means) if means else 0.0
        if aggregation == "sequence_sum_norm":
            tot = sum(x[b][t] for b in range(B) for t in range(T) if m[b][t])
            return tot / (B * (T if max_tokens is None else max_tokens))
        raise ValueError(aggregation)

    loss = agg(per_token)
    n_valid = sum(sum(row) for row in m)
    denom = max(n_valid, 1)
    metrics = {
        "pg_loss": agg(pg_tok),
        "clip_frac_low": n_low / denom,
        "clip_frac_high": n_high / denom,
        "ratio_mean": sum(ratio[b][t] for b in range(B) for t in range(T) if m[b][t]) / denom,
        "valid_tokens": float(n_valid),
    }
    kl_old = 0.0
    for b in range(B):
        for t in range(T):
            if m[b][t]:
                lr = logprobs[b, t] - old_logprobs[b, t]
                kl_old += math.exp(lr) - 1 - lr
    metrics["kl_old"] = kl_old / denom
    if ref_logprobs is not None:
        metrics["kl_ref"] = sum(k3_tok[b][t] for b in range(B) for t in range(T) if m[b][t]) / denom
        if kl_beta > 0:
            metrics["kl_loss"] = agg(k3_tok)
    if sampler_logprobs is not None:
        metrics["sampler_gap"] = (
            sum(
                abs(old_logprobs[b, t] - sampler_logprobs[b][t])
                for b in range(B)
                for t in range(T)
                if m[b][t]
            )
            / denom
        )
    return loss, metrics


def ref_grad_fd(fn, x, h=1e-6):
    """Central finite-difference gradient of scalar fn at float64 array x."""
    x = np.array(x, np.float64)
    g = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        xp = x.copy()
        xp[i] += h
        xm = x.copy()
        xm[i] -= h
        g[i] = (fn(xp) - fn(xm)) / (2 * h)
    return g
