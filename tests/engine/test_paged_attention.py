"""The decode attention (ragged block lists + this call's side buffer + the token itself)
against numpy attention over each row's keys."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from jaxrepair.engine.jax_engine import _list_buckets, _ragged_lists
from jaxrepair.engine.paged_model import decode_attention


def _reference(q, keys, vals):
    """Softmax attention (float64) of one query [N, H] over keys/values [S, K, H] (GQA)."""
    n, h = q.shape
    kv = keys.shape[1]
    out = np.zeros((n, h))
    for head in range(n):
        g = head // (n // kv)  # GQA: query head -> its kv head
        s = keys[:, g].astype(np.float64) @ q[head] / np.sqrt(h)
        p = np.exp(s - s.max())
        out[head] = (p / p.sum()) @ vals[:, g]
    return out


def test_decode_attention_equals_attention_over_each_rows_context():
    """Each row's context = its cached tokens (listed blocks, positions < start) + the tokens
    this call decoded (side buffer, first `step`) + its own token."""
    rng = np.random.default_rng(0)
    bs, kv, n, h, num_blocks, chunk, step = 4, 2, 6, 8, 40, 5, 3
    k_pool = rng.standard_normal((num_blocks, bs, kv, h)).astype(np.float32)
    v_pool = rng.standard_normal((num_blocks, bs, kv, h)).astype(np.float32)
    # long-tailed rows: one block, several, a long one, a row with no cache yet, padding;
    # tables hold blocks past `start` (reserved for the chunk) that must stay unseen
    start = np.asarray([3, 9, 30, 4, 0, 0], np.int32)
    sizes = [1, 4, 9, 3, 0, 0]
    ids = iter(rng.permutation(np.arange(1, num_blocks)).tolist())
    tables = [[next(ids) for _ in range(s)] for s in sizes]
    b = len(sizes)
    q = rng.standard_normal((b, 1, n, h)).astype(np.float32)
    k_self = rng.standard_normal((b, 1, kv, h)).astype(np.float32)
    v_self = rng.standard_normal((b, 1, kv, h)).astype(np.float32)
    side_k = rng.standard_normal((b, chunk, kv, h)).astype(np.float32)  # [B, C, K, H]
    side_v = rng.standard_normal((b, chunk, kv, h)).astype(np.float32)
    lists = _ragged_lists(tables, b, _list_buckets(64, 8), bs)
    assert lists.blocks.size > sum(sizes)  # padding entries present and ignored
    got = decode_attention(  # the pool's layouts: keys [P, K, H, bs], values [P, K, bs, H]
        jnp.asarray(q),
        jnp.asarray(k_self),
        jnp.asarray(v_self),
        jnp.asarray(k_pool.transpose(0, 2, 3, 1)[lists.blocks]),
        jnp.asarray(v_pool.transpose(0, 2, 1, 3)[lists.blocks]),
        lists,
        jnp.asarray(start),
        jnp.asarray(side_k.transpose(0, 2, 3, 1)),
        jnp.asarray(side_v.transpose(0, 2, 1, 3)),
        jnp.int32(step),
    )
    for r, table in enumerate(tables):
        cached = [k_pool[blk] for blk in table] or [np.zeros((0, kv, h), np.float32)]
        cached_v = [v_pool[blk] for blk in table] or [np.zeros((0, kv, h), np.float32)]
        keys = np.concatenate([np.concatenate(cached)[: start[r]], side_k[r, :step], k_self[r]])
        vals = np.concatenate([np.concatenate(cached_v)[: start[r]], side_v[r, :step], v_self[r]])
        want = _reference(q[r, 0], keys, vals)
        np.testing.assert_allclose(np.asarray(got)[r, 0], want, atol=2e-6)


def test_list_sizes_bound_the_padding():
    sizes = _list_buckets(4096, 64)
    assert sizes[0] == 64 and sizes[-1] == 4096
    assert all(b / a <= 1.5 for a, b in zip(sizes, sizes[1:], strict=False))
