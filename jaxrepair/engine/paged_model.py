"""Qwen3 over a paged KV cache: the jitted programs the engine runs.

The cache is two pools in the compute dtype, keys [L, num_blocks, K, H, block_size] and values
[L, num_blocks, K, block_size, H] (layouts whose decode products are plain GEMMs). A row's
keys are its block table's blocks in order, so the gathered index of a key is its position in the sequence and causal masking is `key position <= query position`; table
entries past a row's blocks point at block 0 and are masked the same way.

Three programs, each compiled once per shape bucket:
- `prefill`: write the KV of a chunk of new tokens (no logits: the last prompt token goes
  through the first decode step, as in `jaxrepair.model.sampler`);
- `decode`: up to `steps` decode steps for every slot in one `while_loop`, sampling with the
  sampler's own `sample_tokens`; a slot stops at a stop token or its token budget, and the
  loop ends early when all have. Its attention (`decode_attention`) reads the running rows'
  own blocks listed one after another, not a [rows, widest table] gather, so a long-tailed
  mix of lengths reads each row's KV once instead of padding every row to the longest. The
  tokens a call feeds go to a small side buffer and into the pool at the end of the call, so
  the listed blocks do not change during it: on CPU they are gathered once per call;
- `copy_blocks`: copy-on-write of cached blocks.

The layer math is the model's own (`_attn_block`, `_mlp_block`), so the engine cannot drift
from the learner.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import lru_cache, partial

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from jaxrepair.model.attention import attention, rms_norm, rope_cos_sin
from jaxrepair.model.config import Qwen3Config
from jaxrepair.model.qwen3 import (
    Params,
    _attn_block,
    _dense,
    _mlp_block,
    logits_from_hidden,
    plain_forms,
)
from jaxrepair.model.sampler import sample_tokens
from jaxrepair.model.sharding import runs_on_cpu

KVPool = dict[
    str, jax.Array
]  # {"k": [L, blocks, K, H, block_size], "v": [L, blocks, K, block_size, H]}


def init_pool(cfg: Qwen3Config, num_blocks: int, block_size: int, dtype) -> KVPool:
    """Keys [L, num_blocks, K, H, block_size] (transposed: see `ragged_decode_attention`),
    values [L, num_blocks, K, block_size, H]."""
    layers, kv, h = cfg.num_hidden_layers, cfg.num_key_value_heads, cfg.head_dim
    return {
        "k": jnp.zeros((layers, num_blocks, kv, h, block_size), dtype),
        "v": jnp.zeros((layers, num_blocks, kv, block_size, h), dtype),
    }


@dataclasses.dataclass(frozen=True)
class RaggedBlocks:
    """The KV blocks of a batch of rows listed one after another (row 0's, then row 1's...).

    blocks [P]: pool block ids; rows [P]: the row each belongs to (non-decreasing); first [P]:
    the sequence position of the block's first slot. Padding entries name block 0, the last
    row and a `first` past every position, so they are masked out.
    """

    blocks: jax.Array
    rows: jax.Array
    first: jax.Array


jax.tree_util.register_dataclass(
    RaggedBlocks, data_fields=["blocks", "rows", "first"], meta_fields=[]
)


def decode_attention(
    q: jax.Array,  # [B, 1, N, H]: one query per row
    k_self: jax.Array,  # [B, 1, K, H]: the queried token's own key and value
    v_self: jax.Array,
    kb: jax.Array,  # [P, K, H, bs]: the listed blocks (keys transposed), gathered once per call
    vb: jax.Array,  # [P, K, bs, H]
    lists: RaggedBlocks,
    start: jax.Array,  # [B]: keys at positions < start[row] come from the listed blocks
    side_k: jax.Array,  # [B, K, H, C]: keys of the tokens this call already decoded
    side_v: jax.Array,  # [B, K, C, H]
    step: jax.Array,  # scalar j: side entries < j are visible
) -> jax.Array:
    """GQA attention of one query per row over its context, softmax in float32.

    The context is three parts, one softmax: the KV computed before this decode call (the
    row's listed blocks, gathered once per call, not at every step), the tokens this call
    decoded so far (a small side buffer), and the token itself. Equal to `attention` over
    the row's keys with a causal mask. Listed blocks are scored against their own row's
    query ([G, H] @ [H, bs] per block and KV head: keys are kept transposed so both products
    are plain GEMMs) and summed into rows by a one-hot [B, P] matmul (XLA:CPU runs a
    scatter-add serially).
    """
    b, _, n, h = q.shape
    kv_heads, bs = kb.shape[1], kb.shape[3]
    g = n // kv_heads
    rows = lists.rows
    # materialised before the per-block gather, which would otherwise recompute the query's
    # norm and rotary for each of the P blocks
    # scaled by a matmul so the query is materialised before the per-block gather: an
    # elementwise producer would be fused into it, running the norm and rotary per block
    scale = jnp.eye(h, dtype=jnp.float32) * jnp.float32(h**-0.5)
    qr = jnp.einsum("bkgh,hi->bkgi", q[:, 0].reshape(b, kv_heads, g, h).astype(jnp.float32), scale)
    qg = gather_rows(qr, rows)  # [P, K, G, H]
    scores = jnp.einsum(
        "pkgh,pkhs->pkgs", qg.astype(kb.dtype), kb, preferred_element_type=jnp.float32
    )
    key_pos = lists.first[:, None] + jnp.arange(bs)[None, :]
    visible = key_pos < start[rows][:, None]  # [P, bs]
    scores = jnp.where(visible[:, None, None, :], scores, -jnp.inf)
    side = jnp.einsum(
        "bkgh,bkhc->bkgc", qr.astype(side_k.dtype), side_k, preferred_element_type=jnp.float32
    )
    side = jnp.where(jnp.arange(side.shape[-1]) < step, side, -jnp.inf)
    own_score = jnp.einsum("bkgh,bkh->bkg", qr, k_self[:, 0].astype(jnp.float32))  # [B, K, G]
    own = rows[None, :] == jnp.arange(b)[:, None]  # [B, P]
    block_peak = jnp.max(scores, axis=-1)  # [P, K, G]
    peak = jnp.max(jnp.where(own[:, :, None, None], block_peak[None], -jnp.inf), axis=1)
    peak = jnp.maximum(jnp.maximum(peak, jnp.max(side, axis=-1)), own_score)  # finite
    p = jnp.exp(scores - peak[rows][..., None])  # [P, K, G, bs]
    ps = jnp.exp(side - peak[..., None])  # [B, K, G, C]
    p_own = jnp.exp(own_score - peak)  # [B, K, G]
    one_hot = own.astype(jnp.float32)
    norm = (one_hot @ jnp.sum(p, axis=-1).reshape(-1, kv_heads * g)).reshape(b, kv_heads, g)
    norm = norm + jnp.sum(ps, axis=-1) + p_own
    out = jnp.einsum("pkgs,pksh->pkgh", p.astype(vb.dtype), vb, preferred_element_type=jnp.float32)
    out = (one_hot @ out.reshape(-1, kv_heads * g * h)).reshape(b, kv_heads, g, h)
    out = out + jnp.einsum(
        "bkgc,bkch->bkgh", ps.astype(side_v.dtype), side_v, preferred_element_type=jnp.float32
    )
    out = out + p_own[..., None] * v_self[:, 0, :, None, :].astype(jnp.float32)
    out = out / norm[..., None]
    return out.reshape(b, 1, n, h).astype(q.dtype)


def gather_rows(x: jax.Array, index: jax.Array) -> jax.Array:
    """x[index] along the first axis, as one copy of whole rows of a [rows, elements] view:
    XLA:CPU copies such rows as contiguous runs, where a gather of the N-d array (or one fused
    into its consumer) goes element by element, an order of magnitude slower."""
    flat = jnp.take(x.reshape(x.shape[0], -1), index, axis=0, mode="clip")
    return jax.lax.optimization_barrier(flat).reshape(index.shape[0], *x.shape[1:])


def paged_forward(
    params: Params,
    cfg: Qwen3Config,
    mesh: Mesh | None,
    pool: KVPool,
    tokens: jax.Array,  # [B, T]
    positions: jax.Array,  # [B, T]
    valid: jax.Array,  # [B, T] bool: False for padding (writes go to block 0)
    table: jax.Array,  # [B, W] int32
) -> KVPool:
    """The pool with these tokens' KV written (a prefill: each row attends to its whole
    table, causally). `params["layers"]` is the engine's list of per-layer parameters
    (`unstack_layers`)."""
    b, t = tokens.shape
    bs = pool["v"].shape[3]
    x = jnp.take(params["embed"], tokens, axis=0)
    cos, sin = rope_cos_sin(cfg, positions, x.dtype)
    blk = jnp.take_along_axis(table, jnp.clip(positions // bs, 0, table.shape[1] - 1), axis=1)
    blk = jnp.where(valid, blk, 0)
    off = jnp.where(valid, positions % bs, 0)
    span = table.shape[1] * bs
    mask = (jnp.arange(span)[None, None, :] <= positions[:, :, None])[:, None]  # [B,1,T,S]

    k_all, v_all = pool["k"], pool["v"]
    for i, lp in enumerate(params["layers"]):
        q, k, v = _attn_block(cfg, lp, x, cos, sin, mesh)
        k_all = k_all.at[i, blk, :, :, off].set(k.astype(k_all.dtype))  # [B, T, K, H] updates
        v_all = v_all.at[i, blk, :, off].set(v.astype(v_all.dtype))
        kc = jnp.moveaxis(k_all[i][table], 4, 2).reshape(b, span, *k_all.shape[2:4])  # [B,S,K,H]
        vc = jnp.moveaxis(v_all[i][table], 3, 2).reshape(b, span, v_all.shape[2], v_all.shape[4])
        kc, vc = kc.astype(q.dtype), vc.astype(q.dtype)
        a = attention(q, kc, vc, mask, cfg.attention_impl)
        x = x + _dense(a, lp["o_proj"], plain_forms(cfg, mesh), in_dims=2)
        x = x + _mlp_block(cfg, lp, x, mesh)
    return {"k": k_all, "v": v_all}


def _prefill(cfg, mesh, params, pool, tokens, start, count, table):
    """KV of tokens [B, T] at positions start..start+count-1 of each row (rest padding)."""
    t = tokens.shape[1]
    idx = jnp.arange(t)[None, :]
    valid = idx < count[:, None]
    positions = jnp.where(valid, start[:, None] + idx, 0)
    return paged_forward(params, cfg, mesh, pool, tokens, positions, valid, table)


def decode_forward(
    layers: list[Params],  # each layer's own parameters (not slices of a stacked tree)
    params: Params,
    cfg: Qwen3Config,
    mesh: Mesh | None,
    tokens: jax.Array,  # [B]: the token each row feeds
    positions: jax.Array,  # [B]
    context: Callable[[int], tuple[jax.Array, jax.Array]],  # layer -> listed blocks
    lists: RaggedBlocks,
    start: jax.Array,  # [B]: position of each row's first token this call
    side: list[
        tuple[jax.Array, jax.Array]
    ],  # per layer: this call's KV, [B, K, H, C], [B, K, C, H]
    step: jax.Array,  # scalar: how many side entries are filled
) -> tuple[jax.Array, list[tuple[jax.Array, jax.Array]]]:
    """One decode step: final hidden states [B, 1, D] (normed) and, per layer, the fed
    tokens' keys and values [B, K, H] (`decode_attention` reads the context; nothing is
    written here). The layers are unrolled: a scan would slice each layer's context out of
    a stacked buffer, and XLA:CPU copies such a slice at every step."""
    x = jnp.take(params["embed"], tokens[:, None], axis=0)
    cos, sin = rope_cos_sin(cfg, positions[:, None], x.dtype)
    fed = []
    for i, (lp, (sk, sv)) in enumerate(zip(layers, side, strict=True)):
        kb, vb = context(i)  # [P, K, H, bs], [P, K, bs, H]
        q, k, v = _attn_block(cfg, lp, x, cos, sin, mesh)
        a = decode_attention(q, k, v, kb, vb, lists, start, sk, sv, step)
        x = x + _dense(a, lp["o_proj"], plain_forms(cfg, mesh), in_dims=2)
        x = x + _mlp_block(cfg, lp, x, mesh)
        fed.append((k[:, 0], v[:, 0]))
    return rms_norm(x, params["final_norm"], cfg.rms_norm_eps), fed


def _decode(
    cfg,
    mesh,
    hoist_context,  # gather the rows' context once per call (see `compile_programs`)
    greedy,
    truncate,
    params,
    pool,
    table,  # [S, W]: the blocks this call writes, from block index `base` of each row
    base,  # [S]
    lists,  # RaggedBlocks: the rows' blocks, read by attention
    length,  # [S] tokens with KV = position of the token fed next
    last,  # [S] the token fed next
    active,  # [S] bool
    produced,  # [S] tokens this request sampled so far (its key index)
    budget,  # [S] the request's max_new_tokens
    keys,  # [S] raw uint32[2] request keys
    temperature,
    top_k,
    top_p,
    stops,  # [S, NS], -1 unused
    steps,  # scalar <= C
    out_len: int,  # C (static)
    scratch,  # with hoist_context: per layer (k, v) buffers of the context's shape, donated,
    # so the context is gathered into memory the process already holds (on CPU, touching
    # fresh pages costs more than the copy); otherwise empty
):
    """Up to `steps` decode steps. The KV of the tokens fed during the call goes to a side
    buffer the steps attend to, and into the pool once at the end, so the rows' cached KV
    does not change during the call: with `hoist_context` it is gathered from the pool once
    (returned in the scratch buffers), otherwise per layer at every step."""
    s = table.shape[0]
    start = length
    dtype = pool["k"].dtype
    _, _, kv_heads, head_dim, bs = pool["k"].shape
    layers = params["layers"]

    def gather(i):
        return gather_rows(pool["k"][i], lists.blocks), gather_rows(pool["v"][i], lists.blocks)

    hoisted = [gather(i) for i in range(cfg.num_hidden_layers)] if hoist_context else []
    context = hoisted.__getitem__ if hoist_context else gather
    side = [
        (
            jnp.zeros((s, kv_heads, head_dim, out_len), dtype),
            jnp.zeros((s, kv_heads, out_len, head_dim), dtype),
        )
        for _ in range(cfg.num_hidden_layers)
    ]

    def cond(state):
        j, _len, _last, act, *_ = state
        return (j < steps) & jnp.any(act)

    def body(state):
        j, length, last, act, prod, out_tok, out_lp, n_out, side = state
        hidden, fed = decode_forward(
            layers, params, cfg, mesh, last, length, context, lists, start, side, j
        )
        side = [
            (
                jax.lax.dynamic_update_index_in_dim(sk, k.astype(dtype), j, 3),
                jax.lax.dynamic_update_index_in_dim(sv, v.astype(dtype), j, 2),
            )
            for (sk, sv), (k, v) in zip(side, fed, strict=True)
        ]
        logits = logits_from_hidden(params, cfg, hidden)[:, 0]
        step_keys = jax.vmap(lambda kd, n: jax.random.fold_in(jax.random.wrap_key_data(kd), n))(
            keys, prod
        )
        tok, lp = sample_tokens(
            logits, step_keys, temperature, top_k, top_p, greedy=greedy, truncate=truncate
        )
        tok = jnp.where(act, tok, 0)
        lp = jnp.where(act, lp, 0.0)
        out_tok = out_tok.at[:, j].set(tok)
        out_lp = out_lp.at[:, j].set(lp)
        n_out = n_out + act
        prod = prod + act
        stopped = jnp.any(tok[:, None] == stops, axis=-1) | (prod >= budget)
        length = length + act
        last = jnp.where(act, tok, last)
        return (j + 1, length, last, act & ~stopped, prod, out_tok, out_lp, n_out, side)

    state = (
        jnp.int32(0),
        length,
        last,
        active,
        produced,
        jnp.zeros((s, out_len), jnp.int32),
        jnp.zeros((s, out_len), jnp.float32),
        jnp.zeros((s,), jnp.int32),
        side,
    )
    _, _, _, act, _, out_tok, out_lp, n_out, side = jax.lax.while_loop(cond, body, state)
    side_k = jnp.stack([sk for sk, _ in side])  # [L, S, K, H, C]
    side_v = jnp.stack([sv for _, sv in side])  # [L, S, K, C, H]
    # the fed tokens' KV into their blocks (a row fed n_out tokens); the rest to block 0
    c = jnp.arange(out_len)
    positions = start[:, None] + c[None, :]  # [S, C]
    written = c[None, :] < n_out[:, None]
    index = jnp.clip(positions // bs - base[:, None], 0, table.shape[1] - 1)
    blk = jnp.where(written, jnp.take_along_axis(table, index, axis=1), 0)
    off = jnp.where(written, positions % bs, 0)
    pool = {  # advanced indices [S, C] first, then [L, K, H]
        "k": pool["k"].at[:, blk, :, :, off].set(side_k.transpose(1, 4, 0, 2, 3)),
        "v": pool["v"].at[:, blk, :, off, :].set(side_v.transpose(1, 3, 0, 2, 4)),
    }
    return pool, out_tok, out_lp, n_out, act, hoisted


def _copy_blocks(pool, src, dst):
    return {name: p.at[:, dst].set(p[:, src]) for name, p in pool.items()}


def hoists_context(mesh: Mesh | None) -> bool:
    """Whether decode gathers the rows' context once per call: on CPU, where XLA cannot fuse
    the gather into the attention products and a per-step copy of every row's KV costs more
    than the products (one copy per call holds the running rows' KV of every layer, in the
    scratch buffers); on accelerators the gather is fused per layer and step, and memory is
    kept for the pool."""
    return runs_on_cpu(mesh)


@lru_cache(maxsize=16)
def compile_programs(cfg: Qwen3Config, mesh: Mesh | None):
    """The three jitted programs for one model config and mesh, shared by every engine of
    that pair so a new engine reuses the compiled shapes (the pool and the decode scratch are
    donated: updated in place)."""
    prefill = jax.jit(partial(_prefill, cfg, mesh), donate_argnums=(1,))
    decode = jax.jit(
        partial(_decode, cfg, mesh, hoists_context(mesh)),
        static_argnums=(0, 1, 18),
        donate_argnums=(3, 19),
        keep_unused=True,
    )
    copy = jax.jit(_copy_blocks, donate_argnums=(0,))
    return prefill, decode, copy
