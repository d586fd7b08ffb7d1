"""Per-token log-probs and cross-entropy without materialising [batch, length, vocab] logits.

The model's final hidden states are projected to the vocabulary one chunk of the sequence at a
time (`jax.lax.map` over chunks, each chunk under `jax.checkpoint`), so at most
[batch, chunk, vocab] float32 logits exist at once in the forward *and* in the backward pass
(the backward recomputes each chunk's logits instead of storing them). With Qwen3's 151,936-row
vocabulary this is what makes long packed SFT rows and GRPO batches fit.

    log p(target_t) = z_t[target_t] / tau - logsumexp(z_t / tau)      (float32)

`temperature` tau matches the sampler's definition (0 counts as 1), so GRPO ratios start at 1.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from jaxrepair.model.config import Qwen3Config
from jaxrepair.model.qwen3 import forward, logits_from_hidden

DEFAULT_CHUNK = 1024

Params = dict[str, Any]


def _effective_temperature(temperature: float) -> float:
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    return 1.0 if temperature == 0 else float(temperature)


def _pick(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """logits[..., targets] as a compare-and-sum over the vocabulary. Its gradient is an
    elementwise select that fuses with the softmax's; `take_along_axis`'s is a scatter into a
    zero [.., vocab] buffer, which under SPMD doubled the per-device memory of a sharded
    grad-accumulation SFT step (docs/decisions.md, trainer)."""
    vocab = jax.lax.broadcasted_iota(jnp.int32, logits.shape, logits.ndim - 1)
    hit = vocab == targets[..., None].astype(jnp.int32)
    return jnp.sum(jnp.where(hit, logits, 0.0), axis=-1)


def logprobs_from_hidden(
    params: Params,
    cfg: Qwen3Config,
    hidden: jax.Array,
    targets: jax.Array,
    temperature: float = 1.0,
    chunk: int | None = DEFAULT_CHUNK,
    return_entropy: bool = False,
) -> jax.Array | tuple[jax.Array, jax.Array]:
    """log p(targets) [B, T] (float32) from final hidden states [B, T, D], chunked over T.

    `chunk=None` (or >= T) computes everything in one piece (the unchunked reference path).
    With `return_entropy` also returns the per-position entropy of the (tempered) distribution.
    """
    if hidden.ndim != 3:
        raise ValueError(f"hidden must be [batch, length, dim], got shape {hidden.shape}")
    if targets.shape != hidden.shape[:2]:
        raise ValueError(f"targets shape {targets.shape} != hidden[:2] {hidden.shape[:2]}")
    if chunk is not None and chunk <= 0:
        raise ValueError(f"chunk must be a positive int or None, got {chunk}")
    tau = _effective_temperature(temperature)
    b, t, d = hidden.shape
    c = t if chunk is None or chunk >= t else int(chunk)

    def one(h_c: jax.Array, y_c: jax.Array) -> tuple[jax.Array, jax.Array]:
        logits = logits_from_hidden(params, cfg, h_c) / tau
        lse = jax.nn.logsumexp(logits, axis=-1)
        tgt = _pick(logits, y_c)
        if return_entropy:
            p = jnp.exp(logits - lse[..., None])
            ent = lse - jnp.sum(p * logits, axis=-1)
        else:
            ent = jnp.zeros_like(lse)
        return tgt - lse, ent

    if c == t:
        lp, ent = one(hidden, targets)
    else:
        n = -(-t // c)
        pad = n * c - t
        h = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
        y = jnp.pad(targets, ((0, 0), (0, pad)))
        h = h.reshape(b, n, c, d).swapaxes(0, 1)  # [n, B, c, D]
        y = y.reshape(b, n, c).swapaxes(0, 1)
        body = jax.checkpoint(lambda xs: one(*xs), prevent_cse=False)
        lp, ent = jax.lax.map(body, (h, y))  # [n, B, c]
        lp = lp.swapaxes(0, 1).reshape(b, n * c)[:, :t]
        ent = ent.swapaxes(0, 1).reshape(b, n * c)[:, :t]
    return (lp, ent) if return_entropy else lp


def token_logprobs(
    params: Params,
    cfg: Qwen3Config,
    tokens: jax.Array,
    positions: jax.Array | None,
    segment_ids: jax.Array | None,
    targets: jax.Array,
    temperature: float = 1.0,
    chunk: int | None = DEFAULT_CHUNK,
    *,
    mesh: Mesh | None = None,
    return_entropy: bool = False,
) -> jax.Array | tuple[jax.Array, jax.Array]:
    """log p(targets[b, t] | tokens[b, :t+1]) [B, T] in float32, logits computed in chunks.

    `targets` are usually the next tokens (already shifted by the caller, so packed documents
    never predict across their boundary); positions/segment_ids as in `model.forward`.
    """
    tokens, targets = jnp.asarray(tokens), jnp.asarray(targets)
    if targets.shape != tokens.shape:  # checked before the (expensive) forward
        raise ValueError(f"targets shape {targets.shape} != tokens shape {tokens.shape}")
    if chunk is not None and chunk <= 0:
        raise ValueError(f"chunk must be a positive int or None, got {chunk}")
    _effective_temperature(temperature)
    hidden = forward(params, cfg, tokens, positions, segment_ids, mesh=mesh, return_hidden=True)
    return logprobs_from_hidden(params, cfg, hidden, targets, temperature, chunk, return_entropy)


def chunked_cross_entropy(
    params: Params,
    cfg: Qwen3Config,
    tokens: jax.Array,
    positions: jax.Array | None,
    segment_ids: jax.Array | None,
    targets: jax.Array,
    loss_mask: jax.Array,
    chunk: int | None = DEFAULT_CHUNK,
    *,
    mesh: Mesh | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Mean cross-entropy over the tokens where loss_mask > 0 (weights allowed), and metrics.

    Returns (loss, {"loss_sum", "num_tokens"}); an all-zero mask gives loss 0, not NaN.
    """
    lp = token_logprobs(params, cfg, tokens, positions, segment_ids, targets, 1.0, chunk, mesh=mesh)
    m = jnp.asarray(loss_mask).astype(jnp.float32)
    if m.shape != lp.shape:
        raise ValueError(f"loss_mask shape {m.shape} != tokens shape {lp.shape}")
    loss_sum = -jnp.sum(lp * m)
    n = jnp.sum(m)
    return loss_sum / jnp.maximum(n, 1.0), {"loss_sum": loss_sum, "num_tokens": n}
