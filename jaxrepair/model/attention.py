"""Attention pieces of Qwen3: RMSNorm, RoPE, masks (causal + segments + KV cache), GQA attention.

The attention kernel is selectable (`Qwen3Config.attention_impl`):
- "xla": `jax.nn.dot_product_attention(implementation="xla")`, any backend, explicit mask.
- "cudnn": the cuDNN flash-attention kernel on NVIDIA GPUs (causal, no materialised mask when
  there is no packing).
- "blocked": causal attention in query blocks that skip the masked upper triangle (the fastest
  choice on CPU for long packed rows).
- "reference": plain einsum + softmax (for debugging and as a template for kernels).
More (e.g. a TPU splash-attention kernel) can be plugged in with `register_attention_impl`.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxrepair.model.config import ATTENTION_IMPLS, Qwen3Config

# fn(q [B,T,N,H], k [B,S,K,H], v [B,S,K,H], mask [B,1,T,S] bool | None, is_causal) -> [B,T,N,H]
AttentionFn = Callable[[jax.Array, jax.Array, jax.Array, jax.Array | None, bool], jax.Array]
_IMPLS: dict[str, AttentionFn] = {}


def register_attention_impl(name: str, fn: AttentionFn) -> None:
    """Plug in an attention kernel (e.g. TPU splash attention) under a config name."""
    _IMPLS[name] = fn
    if name not in ATTENTION_IMPLS:
        # Qwen3Config validates names against this tuple; extend it for the new kernel.
        import jaxrepair.model.config as config_mod

        config_mod.ATTENTION_IMPLS = (*config_mod.ATTENTION_IMPLS, name)


def rms_norm(x: jax.Array, weight: jax.Array, eps: float) -> jax.Array:
    """RMSNorm in float32, cast back before the weight multiply (as transformers' Qwen3RMSNorm)."""
    dtype = x.dtype
    xf = x.astype(jnp.float32)
    xf = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + eps)
    return weight.astype(dtype) * xf.astype(dtype)


def rope_cos_sin(cfg: Qwen3Config, positions: jax.Array, dtype) -> tuple[jax.Array, jax.Array]:
    """cos/sin tables [B, T, head_dim] for integer positions [B, T]."""
    inv_freq = jnp.asarray(cfg.inv_freq())
    freqs = positions.astype(jnp.float32)[..., None] * inv_freq
    emb = jnp.concatenate([freqs, freqs], axis=-1)
    scale = cfg.rope_attention_scale()
    return (jnp.cos(emb) * scale).astype(dtype), (jnp.sin(emb) * scale).astype(dtype)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Rotate-half RoPE on x [B, T, heads, head_dim]."""
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos[:, :, None, :] + rotated * sin[:, :, None, :]


def segment_causal_mask(segment_ids: jax.Array) -> jax.Array:
    """[B, 1, T, T] bool: causal and within the same segment (padding = its own segment)."""
    t = segment_ids.shape[-1]
    causal = jnp.tril(jnp.ones((t, t), dtype=bool))
    same = segment_ids[:, :, None] == segment_ids[:, None, :]
    return (causal[None] & same)[:, None]


def cache_mask(query_slots: jax.Array, key_valid: jax.Array) -> jax.Array:
    """[B, 1, T, S] bool for attention against a KV cache.

    query_slots [B, T]: cache slot each query token was written to; key_valid [B, S]: slots
    holding real (non-padding) keys. A query sees valid keys at slots <= its own.
    """
    s = key_valid.shape[-1]
    slots = jnp.arange(s)
    visible = slots[None, None, :] <= query_slots[:, :, None]
    return (visible & key_valid[:, None, :])[:, None]


def _xla(q, k, v, mask, is_causal):
    return jax.nn.dot_product_attention(
        q, k, v, mask=mask, is_causal=is_causal and mask is None, implementation="xla"
    )


def _cudnn(q, k, v, mask, is_causal):
    if mask is None:
        return jax.nn.dot_product_attention(q, k, v, is_causal=is_causal, implementation="cudnn")
    return jax.nn.dot_product_attention(q, k, v, mask=mask, implementation="cudnn")


def _reference(q, k, v, mask, is_causal):
    b, t, n, h = q.shape
    kh = k.shape[2]
    g = n // kh
    qg = q.reshape(b, t, kh, g, h)
    logits = jnp.einsum("btkgh,bskh->bkgts", qg, k, preferred_element_type=jnp.float32)
    logits = logits * (h**-0.5)
    if mask is None and is_causal:
        s = k.shape[1]
        mask = jnp.tril(jnp.ones((t, s), dtype=bool))[None, None]
    if mask is not None:
        logits = jnp.where(mask[:, :, None], logits, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    out = jnp.einsum("bkgts,bskh->btkgh", probs, v)
    return out.reshape(b, t, n, h)


BLOCK = 256


def _blocked(q, k, v, mask, is_causal):
    """Causal attention in query blocks that only look at keys up to the block's end.

    Skips the upper triangle (half the FLOPs and half the [T, T] traffic of a dense kernel) and
    keeps each block's scores small; on CPU, where long-context attention is memory-bound, this
    is several times faster than the dense path at 4k tokens. Cache (decode) calls, where
    queries and keys differ in length, use the dense path.
    """
    t, s = q.shape[1], k.shape[1]
    if not is_causal or t != s or t <= BLOCK:
        return _xla(q, k, v, mask, is_causal)
    outs = []
    for start in range(0, t, BLOCK):
        stop = min(start + BLOCK, t)
        qb = q[:, start:stop]
        if mask is None:
            causal = jnp.arange(start, stop)[:, None] >= jnp.arange(stop)[None, :]
            mb = jnp.broadcast_to(causal, (q.shape[0], 1, stop - start, stop))
        else:
            mb = mask[:, :, start:stop, :stop]
        outs.append(_xla(qb, k[:, :stop], v[:, :stop], mb, False))
    return jnp.concatenate(outs, axis=1)


_IMPLS.update(xla=_xla, cudnn=_cudnn, reference=_reference, blocked=_blocked)


def attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    mask: jax.Array | None,
    impl: str,
    is_causal: bool = True,
) -> jax.Array:
    """GQA attention with softmax in float32; q [B,T,N,H], k/v [B,S,K,H]."""
    try:
        fn = _IMPLS[impl]
    except KeyError:
        raise ValueError(f"unknown attention_impl {impl!r}; registered: {sorted(_IMPLS)}") from None
    return fn(q, k, v, mask, is_causal)
