"""The decode attention over ragged block lists against numpy attention over each row's keys."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from jaxrepair.engine.jax_engine import _list_buckets, _ragged_lists
from jaxrepair.engine.paged_model import ragged_decode_attention


def _reference(q, k_pool, v_pool, tables, positions, bs):
    """Softmax attention (float64) of each row's query over its keys at positions <= its own."""
    b, _, n, h = q.shape
    kv = k_pool.shape[2]
    out = np.zeros((b, 1, n, h))
    for r, table in enumerate(tables):
        if not table:
            continue
        keys = np.concatenate([k_pool[blk] for blk in table])[: positions[r] + 1]
        vals = np.concatenate([v_pool[blk] for blk in table])[: positions[r] + 1]
        for head in range(n):
            g = head // (n // kv)  # GQA: query head -> its kv head
            s = keys[:, g].astype(np.float64) @ q[r, 0, head] / np.sqrt(h)
            p = np.exp(s - s.max())
            out[r, 0, head] = (p / p.sum()) @ vals[:, g]
    return out


def test_ragged_attention_equals_per_row_attention():
    rng = np.random.default_rng(0)
    bs, kv, n, h, num_blocks = 4, 2, 6, 8, 40
    k_pool = rng.standard_normal((num_blocks, bs, kv, h)).astype(np.float32)
    v_pool = rng.standard_normal((num_blocks, bs, kv, h)).astype(np.float32)
    # long-tailed rows: one block, several, a long one, and two padding rows with none;
    # tables hold blocks past the query (reserved for the chunk) that must stay unseen
    positions = np.asarray([2, 9, 30, 4, 0, 0], np.int32)
    sizes = [1, 4, 9, 3, 0, 0]
    ids = iter(rng.permutation(np.arange(1, num_blocks)).tolist())
    tables = [[next(ids) for _ in range(s)] for s in sizes]
    q = rng.standard_normal((len(sizes), 1, n, h)).astype(np.float32)
    lists = _ragged_lists(tables, len(sizes), _list_buckets(64, 8), bs)
    assert lists.blocks.size > sum(sizes)  # padding entries present and ignored
    got = ragged_decode_attention(  # the pool's layouts: keys [blocks, K, H, bs], values [blocks, K, bs, H]
        jnp.asarray(q),
        jnp.asarray(k_pool.transpose(0, 2, 3, 1)),
        jnp.asarray(v_pool.transpose(0, 2, 1, 3)),
        lists,
        jnp.asarray(positions),
    )
    want = _reference(q, k_pool, v_pool, tables, positions, bs)
    np.testing.assert_allclose(np.asarray(got), want, atol=2e-6)
    assert not np.asarray(got)[4:].any()  # rows with no blocks: zeros, not NaN


def test_list_sizes_bound_the_padding():
    sizes = _list_buckets(4096, 64)
    assert sizes[0] == 64 and sizes[-1] == 4096
    assert all(b / a <= 1.5 for a, b in zip(sizes, sizes[1:], strict=False))
