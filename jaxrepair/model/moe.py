"""Qwen3-MoE sparse block: softmax router, top-k experts per token, SwiGLU experts run as
grouped GEMMs (each token pays for its k experts only, never for all E).

Two formulations of the same math, chosen by `Qwen3Config.moe_impl` ("auto" picks by backend
at trace time):

- "ragged": token-expert pairs sorted by expert, `jax.lax.ragged_dot`. TPU and GPU have
  grouped-GEMM kernels for it; XLA:CPU lowers it to a masked loop over every expert.
- "tiled" (megablocks-style): each expert's group is padded to a whole number of T-row tiles
  in a static buffer of at most N*k + E*(T-1) rows, and a loop over the tiles runs one GEMM
  per tile with that tile's expert weights. Every pair has a row, so no token is ever
  dropped; padding rows are zeros whose outputs are never read. Rows move by gathers only, in
  both directions (`_take`): XLA:CPU runs scatters one element at a time.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxrepair.model.config import Qwen3Config
from jaxrepair.model.linear import F32, plain, swapped_operand

Params = dict[str, Any]

# Tile heights: the 2-core EPYC ran the benchmark MoE block (2048 tokens, 8 experts of 384,
# top 2) equally fast with 64- and 128-row tiles and 15-40% slower with 256 (more padding).
MAX_TILE = 128
MIN_TILE = 8


def moe(cfg: Qwen3Config, lp: Params, h: jax.Array) -> jax.Array:
    """h [B, T, D] -> the sparse MLP's output [B, T, D] (router weights renormalised over the
    top k when norm_topk_prob)."""
    b, t, d = h.shape
    flat = h.reshape(b * t, d)
    logits = jnp.dot(flat, lp["router"], preferred_element_type=jnp.float32)
    top_w, top_i = jax.lax.top_k(jax.nn.softmax(logits, axis=-1), cfg.num_experts_per_tok)
    if cfg.norm_topk_prob:
        top_w = top_w / jnp.sum(top_w, axis=-1, keepdims=True)
    grouped = _tiled if resolve_impl(cfg.moe_impl) == "tiled" else _ragged
    return grouped(lp, flat, top_w, top_i).reshape(b, t, d)


def resolve_impl(moe_impl: str) -> str:
    """ "auto" -> "tiled" on CPU (no grouped-GEMM kernel there), "ragged" elsewhere."""
    if moe_impl != "auto":
        return moe_impl
    return "tiled" if jax.default_backend() == "cpu" else "ragged"


def _ragged(lp: Params, flat: jax.Array, top_w: jax.Array, top_i: jax.Array) -> jax.Array:
    k = top_i.shape[-1]
    expert_of = top_i.reshape(-1)
    order = jnp.argsort(expert_of, stable=True)
    token_of = order // k
    sizes = jnp.bincount(expert_of, length=lp["router"].shape[-1]).astype(jnp.int32)
    xs = flat[token_of]
    g = jax.lax.ragged_dot(xs, lp["experts_gate"], sizes)
    u = jax.lax.ragged_dot(xs, lp["experts_up"], sizes)
    y = jax.lax.ragged_dot(jax.nn.silu(g) * u, lp["experts_down"], sizes)
    y = y * top_w.reshape(-1)[order][:, None].astype(y.dtype)
    return jnp.zeros_like(flat).at[token_of].add(y)


def tile_rows(pairs: int, experts: int) -> int:
    """Tile height for `pairs` token-expert pairs: a power of two at most half the mean group
    size, within [MIN_TILE, MAX_TILE], so the padding bound E*(T-1) stays at most about half
    the real rows (decode steps get small tiles)."""
    half_mean = max(1, pairs // (2 * experts))
    return max(MIN_TILE, min(MAX_TILE, 1 << (half_mean.bit_length() - 1)))


def _tiled(lp: Params, flat: jax.Array, top_w: jax.Array, top_i: jax.Array) -> jax.Array:
    n, d = flat.shape
    k = top_i.shape[-1]
    e = lp["router"].shape[-1]
    pairs = n * k
    tile = tile_rows(pairs, e)
    num_tiles = (pairs + e * (tile - 1)) // tile  # >= sum over experts of ceil(size / tile)
    rows = num_tiles * tile
    expert_of = top_i.reshape(pairs)
    # each pair's rank within its expert (in pair order), without sorting
    onehot = (expert_of[:, None] == jnp.arange(e)).astype(jnp.int32)  # [P, E]
    rank = jnp.sum(jnp.cumsum(onehot, axis=0) * onehot, axis=1) - 1
    sizes = jnp.sum(onehot, axis=0)
    tiles_of = (sizes + tile - 1) // tile
    tile_end = jnp.cumsum(tiles_of)
    row_of_pair = (tile_end - tiles_of)[expert_of] * tile + rank  # [P], distinct rows
    pair_of_row = (
        jnp.full((rows,), pairs, jnp.int32)
        .at[row_of_pair]
        .set(jnp.arange(pairs, dtype=jnp.int32), unique_indices=True)
    )  # [R], `pairs` on padding rows
    token_of_row = jnp.where(pair_of_row < pairs, pair_of_row // k, n)
    x = _take(flat, token_of_row, row_of_pair.reshape(n, k)).reshape(num_tiles, tile, d)
    g = _tile_matmul(x, lp["experts_gate"], tiles_of)
    u = _tile_matmul(x, lp["experts_up"], tiles_of)
    y = _tile_matmul(jax.nn.silu(g) * u, lp["experts_down"], tiles_of)
    ys = _take(y.reshape(rows, d), row_of_pair, pair_of_row[:, None]).reshape(n, k, d)
    # elementwise, not an einsum: XLA:CPU makes "nkd,nk->nd" N tiny batched dots
    return jnp.sum(ys * top_w.astype(ys.dtype)[:, :, None], axis=1)


@jax.custom_vjp
def _tile_matmul(x: jax.Array, w: jax.Array, tiles_of: jax.Array) -> jax.Array:
    """x [tiles, T, in] @ the tiles' experts' w -> [tiles, T, out]: expert e owns the
    `tiles_of[e]` tiles after those of experts < e; tiles past the last expert's are padding
    and stay zero.

    Loops over experts, then over each expert's own tiles (a trip count from the routing):
    each expert's weights are sliced once, not once per tile (that copy cost about a third of
    a tile GEMM), and padding tiles cost nothing. Not a batched einsum over per-tile weight
    copies: those cost tiles*in*out memory (GBs for 128 experts) and made the forward 1.7x
    slower here. Every product runs in XLA:CPU's plain form with a float32 result
    (`linear.py`)."""
    starts = jnp.cumsum(tiles_of) - tiles_of

    def expert(e, y):
        we = w[e]

        def tile(i, y):
            return jax.lax.dynamic_update_index_in_dim(y, plain(x[i], we, x.dtype), i, 0)

        return jax.lax.fori_loop(starts[e], starts[e] + tiles_of[e], tile, y)

    y = jnp.zeros((*x.shape[:2], w.shape[-1]), x.dtype)
    return jax.lax.fori_loop(0, w.shape[0], expert, y)


def _tile_matmul_fwd(x, w, tiles_of):
    return _tile_matmul(x, w, tiles_of), (x, w, tiles_of)


def _tile_matmul_bwd(res, dy):
    """dx per tile, and each expert's dw summed over its tiles in a float32 accumulator
    (autodiff of the loop would add a zero-padded full-size dw every step). w[e]^T is made
    once per expert and each tile's x^T in its step (`swapped_operand`: row-major copies in
    bf16; in float32 a transpose of all of x, made before the loop, cost a full copy), and
    both products run in the weight's dtype."""
    x, w, tiles_of = res
    dy = dy.astype(w.dtype)
    starts = jnp.cumsum(tiles_of) - tiles_of

    def expert(e, carry):
        dx, dw = carry
        wt = swapped_operand(w[e])

        def tile(i, carry):
            dx, acc = carry
            dx = jax.lax.dynamic_update_index_in_dim(dx, plain(dy[i], wt, x.dtype), i, 0)
            return dx, acc + plain(swapped_operand(x[i]), dy[i], F32)

        acc = jnp.zeros(w.shape[1:], F32)
        dx, acc = jax.lax.fori_loop(starts[e], starts[e] + tiles_of[e], tile, (dx, acc))
        return dx, jax.lax.dynamic_update_index_in_dim(dw, acc.astype(w.dtype), e, 0)

    init = (jnp.zeros(x.shape, x.dtype), jnp.zeros(w.shape, w.dtype))
    dx, dw = jax.lax.fori_loop(0, w.shape[0], expert, init)
    return dx, dw, None


_tile_matmul.defvjp(_tile_matmul_fwd, _tile_matmul_bwd)


@jax.custom_vjp
def _take(x: jax.Array, src: jax.Array, dst: jax.Array) -> jax.Array:
    """Rows of x (a zero row appended) at `src` [R]: out[r] = x[src[r]], src == len(x) gives
    zeros. `dst` [len(x), g] lists, for each row of x, the out rows that read it (len(out)
    where fewer than g do), so the gradient is a gather too: dx[m] = sum_j dout[dst[m, j]]."""
    return _with_zero_row(x)[src]


def _take_fwd(x, src, dst):
    return _take(x, src, dst), dst


def _take_bwd(dst, dout):
    return _with_zero_row(dout)[dst].sum(axis=1), None, None


_take.defvjp(_take_fwd, _take_bwd)


def _with_zero_row(x: jax.Array) -> jax.Array:
    return jnp.concatenate([x, jnp.zeros((1, *x.shape[1:]), x.dtype)], axis=0)
