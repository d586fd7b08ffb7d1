"""Causal self-attention in query blocks with its own backward: the learner's kernel on CPU.

Why not autodiff of the dense kernel: XLA:CPU differentiates `softmax(QK^T)V` by keeping the
[B, N, T, T] probabilities and running the backward over the whole square, masked half
included, with a transpose around every batched dot. Here (the FlashAttention-2 recipe in
plain XLA ops):
- queries go in blocks that only read keys up to the block's end, so the masked upper
  triangle is never computed, and the mask is an additive bias built per block;
- q/k/v are laid out once as [B, K, (G,) T, H] (GQA groups next to their kv head) so every
  block's dots are plain batched GEMMs with no transposes inside the loop;
- the forward saves only the output and the row log-sum-exp; the backward recomputes each
  block's probabilities from them (dV = P^T dO, dS = P * (dP - rowsum(dO * O)), dQ = dS K,
  dK = dS^T Q), so no [T, T] array outlives its block.
Measured on 2 CPU cores (B=4, 8 query / 4 kv heads, head_dim 64, fp32): fwd+bwd 2-3x faster
than the dense XLA kernel at T=512 and T=2048.

Any explicit mask [B, 1, T, T] (packed rows' segment-causal mask) is honoured; rows must
see at least one key (every query sees itself under a causal or segment-causal mask).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

F32 = jnp.float32
_NEG = -1e30  # additive bias of masked keys: exp() underflows to exactly 0


def block_size(t: int) -> int:
    """Query block for a row of t tokens: small blocks skip more of the masked triangle, large
    ones make bigger GEMMs; at most 16 blocks keep the unrolled program small."""
    return max(128, -(-t // 16))


def _blocks(t: int, bq: int) -> list[tuple[int, int]]:
    return [(s, min(s + bq, t)) for s in range(0, t, bq)]


def _visible(start: int, stop: int, mask: jax.Array | None) -> jax.Array:
    """Bool [.., q, s]: which of keys 0..stop query rows start..stop see."""
    if mask is None:
        # iotas, not numpy aranges: constant [q, s] masks compiled slower (6.4 vs 4.6 s, T=2048)
        rows = jax.lax.broadcasted_iota(jnp.int32, (stop - start, stop), 0) + start
        cols = jax.lax.broadcasted_iota(jnp.int32, (stop - start, stop), 1)
        return (rows >= cols)[None, None, None]
    return mask[:, :, None, start:stop, :stop]


def _bias(start: int, stop: int, mask: jax.Array | None) -> jax.Array:
    """The forward's additive mask. The backward masks with `where` instead: were both the
    same expression, XLA would keep every block's f32 bias from the forward for it."""
    return jnp.where(_visible(start, stop, mask), 0.0, _NEG).astype(F32)


def _layout(q: jax.Array, k: jax.Array, v: jax.Array):
    """q [B,T,N,H] -> [B,K,G,T,H]; k, v [B,T,K,H] -> [B,K,T,H]."""
    b, t, n, h = q.shape
    kh = k.shape[2]
    qt = q.reshape(b, t, kh, n // kh, h).transpose(0, 2, 3, 1, 4)
    return qt, k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)


def _scores(qb: jax.Array, kt: jax.Array, stop: int, scale: float) -> jax.Array:
    s = jnp.einsum("bkgqh,bksh->bkgqs", qb, kt[:, :, :stop], preferred_element_type=F32)
    return s * scale


def _forward(q, k, v, mask, bq):
    b, t, n, h = q.shape
    qt, kt, vt = _layout(q, k, v)
    scale = h**-0.5
    outs, lses = [], []
    for start, stop in _blocks(t, bq):
        s = _scores(qt[:, :, :, start:stop], kt, stop, scale) + _bias(start, stop, mask)
        m = jnp.max(s, axis=-1, keepdims=True)
        p = jnp.exp(s - m)
        denom = jnp.sum(p, axis=-1, keepdims=True)
        o = jnp.einsum(
            "bkgqs,bksh->bkgqh", p.astype(v.dtype), vt[:, :, :stop], preferred_element_type=F32
        )
        outs.append(o / denom)
        lses.append((m + jnp.log(denom))[..., 0])
    out = jnp.concatenate(outs, axis=3).transpose(0, 3, 1, 2, 4).reshape(b, t, n, h)
    out = out.astype(q.dtype)
    return out, (q, k, v, mask, out, jnp.concatenate(lses, axis=-1))


@partial(jax.custom_vjp, nondiff_argnums=(4,))
def _attention(q, k, v, mask, bq):
    return _forward(q, k, v, mask, bq)[0]


def _backward(bq, res, dout):
    q, k, v, mask, out, lse = res
    b, t, n, h = q.shape
    kh = k.shape[2]
    scale = h**-0.5
    qt, kt, vt = _layout(q, k, v)
    dot = dout.reshape(b, t, kh, n // kh, h).transpose(0, 2, 3, 1, 4)
    ot = out.reshape(b, t, kh, n // kh, h).transpose(0, 2, 3, 1, 4)
    delta = jnp.sum(dot.astype(F32) * ot.astype(F32), axis=-1)  # rowsum(dO * O): [B,K,G,T]
    blocks = _blocks(t, bq)
    dqs = []
    dks, dvs = [], []  # per query block: contributions to keys 0..stop
    for start, stop in blocks:
        qb, db = qt[:, :, :, start:stop], dot[:, :, :, start:stop]
        s = jnp.where(_visible(start, stop, mask), _scores(qb, kt, stop, scale), _NEG)
        p = jnp.exp(s - lse[..., start:stop, None])
        dvs.append(
            jnp.einsum("bkgqs,bkgqh->bksh", p.astype(v.dtype), db, preferred_element_type=F32)
        )
        dp = jnp.einsum("bkgqh,bksh->bkgqs", db, vt[:, :, :stop], preferred_element_type=F32)
        ds = (p * (dp - delta[..., start:stop, None]) * scale).astype(q.dtype)
        dqs.append(jnp.einsum("bkgqs,bksh->bkgqh", ds, kt[:, :, :stop], preferred_element_type=F32))
        dks.append(jnp.einsum("bkgqs,bkgqh->bksh", ds, qb, preferred_element_type=F32))

    def gather_keys(parts):
        # key block j collects the query blocks i >= j that read it: one pass, no padding
        return jnp.concatenate(
            [sum(c[:, :, ks:ke] for c in parts[j:]) for j, (ks, ke) in enumerate(blocks)], axis=2
        )

    dq = jnp.concatenate(dqs, axis=3).transpose(0, 3, 1, 2, 4).reshape(b, t, n, h)
    dk = gather_keys(dks).transpose(0, 2, 1, 3)
    dv = gather_keys(dvs).transpose(0, 2, 1, 3)
    return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype), None


_attention.defvjp(_forward, _backward)


def blocked_causal_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None, block: int | None = None
) -> jax.Array:
    """Causal GQA self-attention q [B,T,N,H], k/v [B,T,K,H] -> [B,T,N,H] (softmax in float32).

    mask: None (plain causal) or a [B, 1, T, T] bool mask that already includes causality
    (`segment_causal_mask`). block: query block size (default `block_size(T)`).
    """
    t = q.shape[1]
    if k.shape[1] != t:
        raise ValueError(f"blocked attention is self-attention: {t} queries vs {k.shape[1]} keys")
    return _attention(q, k, v, mask, block or block_size(t))
