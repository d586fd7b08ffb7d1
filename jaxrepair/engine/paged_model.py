"""Qwen3 over a paged KV cache: the jitted programs the engine runs.

The cache is two pools in the compute dtype, keys [L, num_blocks, K, H, block_size] and values
[L, num_blocks, K, block_size, H] (layouts whose decode products are plain GEMMs). A row's keys are its block table's blocks in order, so the gathered index of a key is
its position in the sequence and causal masking is `key position <= query position`; table
entries past a row's blocks point at block 0 and are masked the same way.

Three programs, each compiled once per shape bucket:
- `prefill`: write the KV of a chunk of new tokens (no logits: the last prompt token goes
  through the first decode step, as in `jaxrepair.model.sampler`);
- `decode`: up to `steps` decode steps for every slot in one `while_loop`, sampling with the
  sampler's own `sample_tokens`; a slot stops at a stop token or its token budget, and the
  loop ends early when all have. Its attention is `ragged_decode_attention`: over the
  running rows' own blocks listed one after another, not over a [rows, widest table] gather,
  so a long-tailed mix of lengths reads each row's KV once instead of padding every row to
  the longest;
- `copy_blocks`: copy-on-write of cached blocks.

The layer math is the model's own (`_attn_block`, `_mlp_block`), so the engine cannot drift
from the learner.
"""

from __future__ import annotations

import dataclasses
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
    _run_layers,
    logits_from_hidden,
)
from jaxrepair.model.sampler import sample_tokens

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


def ragged_decode_attention(
    q: jax.Array,  # [B, 1, N, H]: one query per row
    k: jax.Array,  # [num_blocks, K, H, block_size]: one layer of the pool, keys transposed
    v: jax.Array,  # [num_blocks, K, block_size, H]
    lists: RaggedBlocks,
    positions: jax.Array,  # [B]: each row's query position (it sees keys at <= it)
) -> jax.Array:
    """GQA attention of one query per row over that row's listed blocks, softmax in float32.

    The same function as `attention` over a [B, W * block_size] gather with a causal mask,
    but the work and the memory traffic are the sum of the rows' blocks, not B times the
    longest row: every block is scored against its own row's query ([G, H] @ [H, bs] per block
    and KV head: the pool keeps keys transposed so that both products are plain GEMMs, no
    transpose of the gathered blocks), and the rows' softmax normalisers and weighted values
    are summed by a one-hot [B, P] matmul (XLA:CPU runs a scatter-add serially). The gathered
    blocks are materialised once (a copy of whole blocks) rather than fused into the products,
    which XLA:CPU emits element by element. A row with no listed block gets zeros.
    """
    b, _, n, h = q.shape
    kv_heads, bs = k.shape[1], k.shape[3]
    g = n // kv_heads
    rows = lists.rows
    qg = (q[:, 0].reshape(b, kv_heads, g, h).astype(jnp.float32) * jnp.float32(h**-0.5))[rows]
    kb = _gather_blocks(k, lists.blocks)  # [P, K, H, bs]
    vb = _gather_blocks(v, lists.blocks)  # [P, K, bs, H]
    scores = jnp.einsum(
        "pkgh,pkhs->pkgs", qg.astype(kb.dtype), kb, preferred_element_type=jnp.float32
    )
    key_pos = lists.first[:, None] + jnp.arange(bs)[None, :]
    visible = key_pos <= positions[rows][:, None]  # [P, bs]
    scores = jnp.where(visible[:, None, None, :], scores, -jnp.inf)
    own = rows[None, :] == jnp.arange(b)[:, None]  # [B, P]
    block_peak = jnp.max(scores, axis=-1)  # [P, K, G]
    peak = jnp.max(jnp.where(own[:, :, None, None], block_peak[None], -jnp.inf), axis=1)
    peak = jnp.where(jnp.isfinite(peak), peak, 0.0)  # [B, K, G]
    p = jnp.exp(scores - peak[rows][..., None])  # [P, K, G, bs]
    out = jnp.einsum("pkgs,pksh->pkgh", p.astype(vb.dtype), vb, preferred_element_type=jnp.float32)
    one_hot = own.astype(jnp.float32)
    norm = one_hot @ jnp.sum(p, axis=-1).reshape(-1, kv_heads * g)  # [B, K*G]
    out = (one_hot @ out.reshape(-1, kv_heads * g * h)).reshape(b, kv_heads, g, h)
    out = out / jnp.where(norm > 0, norm, 1.0).reshape(b, kv_heads, g, 1)
    return out.reshape(b, 1, n, h).astype(q.dtype)


def _gather_blocks(pool: jax.Array, blocks: jax.Array) -> jax.Array:
    """pool[blocks] as one copy of whole blocks (rows of a [num_blocks, block elements] view)."""
    flat = jnp.take(pool.reshape(pool.shape[0], -1), blocks, axis=0, mode="clip")
    return jax.lax.optimization_barrier(flat).reshape(blocks.shape[0], *pool.shape[1:])


def paged_forward(
    params: Params,
    cfg: Qwen3Config,
    mesh: Mesh | None,
    pool: KVPool,
    tokens: jax.Array,  # [B, T]
    positions: jax.Array,  # [B, T]
    valid: jax.Array,  # [B, T] bool: False for padding (writes go to block 0)
    table: jax.Array,  # [B, W] int32
    lists: RaggedBlocks | None = None,
    table_base: jax.Array | None = None,  # [B]: block index of table[:, 0] (default 0)
) -> tuple[jax.Array, KVPool]:
    """Final hidden states [B, T, D] (normed) and the pool with these tokens' KV written.

    With `lists` (one token per row, T = 1), attention reads the listed blocks
    (`ragged_decode_attention`) and `table` (starting at block `table_base` of each row) is
    used only to place the new KV; without, every row gathers its whole table."""
    b, t = tokens.shape
    bs = pool["v"].shape[3]
    x = jnp.take(params["embed"], tokens, axis=0)
    cos, sin = rope_cos_sin(cfg, positions, x.dtype)
    index = positions // bs if table_base is None else positions // bs - table_base[:, None]
    blk = jnp.take_along_axis(table, jnp.clip(index, 0, table.shape[1] - 1), axis=1)
    blk = jnp.where(valid, blk, 0)
    off = jnp.where(valid, positions % bs, 0)
    span = table.shape[1] * bs
    mask = None
    if lists is None:
        mask = (jnp.arange(span)[None, None, :] <= positions[:, :, None])[:, None]  # [B,1,T,S]
    elif t != 1:
        raise ValueError(f"ragged block lists take one token per row, got {t}")

    def step(carry, lp):
        x, k_all, v_all, i = carry
        q, k, v = _attn_block(cfg, lp, x, cos, sin, mesh)
        k_all = k_all.at[i, blk, :, :, off].set(k.astype(k_all.dtype))  # [B, T, K, H] updates
        v_all = v_all.at[i, blk, :, off].set(v.astype(v_all.dtype))
        kl = jax.lax.dynamic_index_in_dim(k_all, i, 0, keepdims=False)
        vl = jax.lax.dynamic_index_in_dim(v_all, i, 0, keepdims=False)
        if lists is not None:
            a = ragged_decode_attention(q, kl, vl, lists, positions[:, 0])
        else:
            kc = jnp.moveaxis(kl[table], 4, 2).reshape(b, span, *kl.shape[1:3])  # [B, S, K, H]
            vc = jnp.moveaxis(vl[table], 3, 2).reshape(b, span, vl.shape[1], vl.shape[3])
            kc, vc = kc.astype(q.dtype), vc.astype(q.dtype)
            a = attention(q, kc, vc, mask, cfg.attention_impl)
        x = x + _dense(a, lp["o_proj"], in_dims=2)
        x = x + _mlp_block(cfg, lp, x, mesh)
        return (x, k_all, v_all, i + 1), None

    carry = (x, pool["k"], pool["v"], jnp.int32(0))
    (x, k_new, v_new, _), _ = _run_layers(
        cfg, params["layers"], carry, lambda c, lp, _e: step(c, lp)
    )
    return rms_norm(x, params["final_norm"], cfg.rms_norm_eps), {"k": k_new, "v": v_new}


def _prefill(cfg, mesh, params, pool, tokens, start, count, table):
    """KV of tokens [B, T] at positions start..start+count-1 of each row (rest padding)."""
    t = tokens.shape[1]
    idx = jnp.arange(t)[None, :]
    valid = idx < count[:, None]
    positions = jnp.where(valid, start[:, None] + idx, 0)
    _, pool = paged_forward(params, cfg, mesh, pool, tokens, positions, valid, table)
    return pool


def _decode(
    cfg,
    mesh,
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
):
    s = table.shape[0]

    def cond(state):
        j, _pool, _len, _last, act, *_ = state
        return (j < steps) & jnp.any(act)

    def body(state):
        j, pool, length, last, act, prod, out_tok, out_lp, n_out = state
        hidden, pool = paged_forward(
            params,
            cfg,
            mesh,
            pool,
            last[:, None],
            length[:, None],
            act[:, None],
            table,
            lists,
            base,
        )
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
        return j + 1, pool, length, last, act & ~stopped, prod, out_tok, out_lp, n_out

    state = (
        jnp.int32(0),
        pool,
        length,
        last,
        active,
        produced,
        jnp.zeros((s, out_len), jnp.int32),
        jnp.zeros((s, out_len), jnp.float32),
        jnp.zeros((s,), jnp.int32),
    )
    _, pool, _, _, act, _, out_tok, out_lp, n_out = jax.lax.while_loop(cond, body, state)
    return pool, out_tok, out_lp, n_out, act


def _copy_blocks(pool, src, dst):
    return {name: p.at[:, dst].set(p[:, src]) for name, p in pool.items()}


@lru_cache(maxsize=16)
def compile_programs(cfg: Qwen3Config, mesh: Mesh | None):
    """The three jitted programs for one model config and mesh, shared by every engine of
    that pair so a new engine reuses the compiled shapes (the pool is donated: updated in
    place)."""
    prefill = jax.jit(partial(_prefill, cfg, mesh), donate_argnums=(1,))
    decode = jax.jit(
        partial(_decode, cfg, mesh),
        static_argnums=(0, 1, 18),
        donate_argnums=(3,),
    )
    copy = jax.jit(_copy_blocks, donate_argnums=(0,))
    return prefill, decode, copy
