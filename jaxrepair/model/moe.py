"""Qwen3-MoE sparse block: softmax router, top-k experts per token, SwiGLU experts run as
grouped GEMMs (each token pays for its k experts only, never for all E).

Two formulations of the same math, chosen by `Qwen3Config.moe_impl` ("auto" picks by backend
at trace time):

- "ragged": token-expert pairs sorted by expert, `jax.lax.ragged_dot`. TPU and GPU have
  grouped-GEMM kernels for it; XLA:CPU lowers it to a masked loop over every expert.
- "tiled" (megablocks-style): each expert's group is padded to a whole number of T-row tiles
  in a static buffer of at most N*k + E*(T-1) rows, and a loop over the experts and each
  expert's own tiles runs the expert's SwiGLU MLP on every tile, with its own backward.
  Every pair has a row, so no token is ever dropped; padding rows are zeros whose outputs
  are never read. Rows move by gathers only, in both directions (`_take`): XLA:CPU runs
  scatters one element at a time.
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
    y = _tile_experts(x, lp["experts_gate"], lp["experts_up"], lp["experts_down"], tiles_of)
    ys = _take(y.reshape(rows, d), row_of_pair, pair_of_row[:, None]).reshape(n, k, d)
    # elementwise, not an einsum: XLA:CPU makes "nkd,nk->nd" N tiny batched dots
    return jnp.sum(ys * top_w.astype(ys.dtype)[:, :, None], axis=1)


def _over_experts(tiles_of: jax.Array, expert_body, carry):
    """expert_body(e, first_tile, end_tile, carry) for every expert with tiles: the loops run
    over experts, then over each expert's own tiles (a trip count from the routing), so an
    expert's weights are sliced once, not once per tile (that copy cost about a third of a
    tile GEMM), padding tiles cost nothing, and experts without tokens are skipped (decode
    steps route a few tokens to a few of many experts)."""
    ends = jnp.cumsum(tiles_of)

    def expert(e, carry):
        return jax.lax.cond(
            tiles_of[e] > 0,
            lambda c: expert_body(e, ends[e] - tiles_of[e], ends[e], c),
            lambda c: c,
            carry,
        )

    return jax.lax.fori_loop(0, tiles_of.shape[0], expert, carry)


@jax.custom_vjp
def _tile_experts(
    x: jax.Array, w_gate: jax.Array, w_up: jax.Array, w_down: jax.Array, tiles_of: jax.Array
) -> jax.Array:
    """The SwiGLU experts on tiles: x [tiles, T, D] -> [tiles, T, D], where expert e owns the
    `tiles_of[e]` tiles after those of experts < e; tiles past the last expert's are padding
    and stay zero. Per tile y = (silu(g) * u) @ w_down[e] with [g | u] = x @ [w_gate[e] |
    w_up[e]] (one product of twice the width, the two weights joined once per expert): one
    loop for the whole expert MLP. Not a batched einsum over per-tile weight copies: those cost
    tiles*in*out memory (GBs for 128 experts) and made the forward 1.7x slower here. Every
    product runs in XLA:CPU's plain form with a float32 result (`linear.py`)."""
    return _tile_experts_fwd(x, w_gate, w_up, w_down, tiles_of)[0]


def _swiglu(gu: jax.Array) -> jax.Array:
    g, u = jnp.split(gu, 2, axis=-1)
    return jax.nn.silu(g) * u


def _tile_experts_fwd(x, w_gate, w_up, w_down, tiles_of):
    """Also keeps each tile's [g | u] for the backward, in the activations' dtype (as
    autodiff of separate products kept g and u)."""

    def expert(e, first, end, carry):
        wgu_e, wd_e = _gate_up(w_gate, w_up, e), w_down[e]

        def tile(i, carry):
            y, gus = carry
            gu = plain(x[i], wgu_e, F32)
            yi = plain(_swiglu(gu).astype(x.dtype), wd_e, x.dtype)
            return (
                jax.lax.dynamic_update_index_in_dim(y, yi, i, 0),
                jax.lax.dynamic_update_index_in_dim(gus, gu.astype(x.dtype), i, 0),
            )

        return jax.lax.fori_loop(first, end, tile, carry)

    tiles, t, _ = x.shape
    init = (jnp.zeros(x.shape, x.dtype), jnp.zeros((tiles, t, 2 * w_up.shape[-1]), x.dtype))
    y, gus = _over_experts(tiles_of, expert, init)
    return y, (x, w_gate, w_up, w_down, tiles_of, gus)


def _tile_experts_bwd(res, dy):
    """dx per tile, and each expert's weight gradients summed over its tiles in float32
    accumulators (autodiff of the loop would add zero-padded full-size gradients every
    step). Transposed operands come from `swapped_operand` (row-major copies in bf16; w^T
    once per expert), so every product runs in the weights' dtype with a float32 result."""
    x, w_gate, w_up, w_down, tiles_of, gus = res
    dy = dy.astype(w_down.dtype)
    m = w_up.shape[-1]

    def expert(e, first, end, carry):
        dwg, dwu, dwd, dx = carry
        wgu_t = swapped_operand(_gate_up(w_gate, w_up, e))
        wd_t = swapped_operand(w_down[e])

        def tile(i, carry):
            dx, acc_gu, acc_d = carry
            g, u = jnp.split(gus[i].astype(F32), 2, axis=-1)
            sig = jax.nn.sigmoid(g)
            a = (g * sig * u).astype(x.dtype)
            da = plain(dy[i], wd_t, F32)
            dg = da * u * sig * (1 + g * (1 - sig))
            dgu = jnp.concatenate([dg, da * g * sig], axis=-1).astype(x.dtype)
            dxi = plain(dgu, wgu_t, x.dtype)
            return (
                jax.lax.dynamic_update_index_in_dim(dx, dxi, i, 0),
                acc_gu + plain(swapped_operand(x[i]), dgu, F32),
                acc_d + plain(swapped_operand(a), dy[i], F32),
            )

        acc = (jnp.zeros((x.shape[-1], 2 * m), F32), jnp.zeros(w_down.shape[1:], F32))
        dx, acc_gu, acc_d = jax.lax.fori_loop(first, end, tile, (dx, *acc))

        def put(dw, a):
            return jax.lax.dynamic_update_index_in_dim(dw, a.astype(dw.dtype), e, 0)

        return put(dwg, acc_gu[:, :m]), put(dwu, acc_gu[:, m:]), put(dwd, acc_d), dx

    init = (*map(jnp.zeros_like, (w_gate, w_up, w_down)), jnp.zeros(x.shape, x.dtype))
    dwg, dwu, dwd, dx = _over_experts(tiles_of, expert, init)
    return dx, dwg, dwu, dwd, None


def _gate_up(w_gate: jax.Array, w_up: jax.Array, e: jax.Array) -> jax.Array:
    """Expert e's [D, 2M] joined gate and up weights, made inside the expert loop: joining
    all experts' at once would copy every expert's weights each call (decode steps too)."""
    return jnp.concatenate([w_gate[e], w_up[e]], axis=-1)


_tile_experts.defvjp(_tile_experts_fwd, _tile_experts_bwd)


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
