"""The sampler's draw and its top-k/top-p mask against numpy references.

`draw_categorical` (inverse CDF in two levels) is checked by frequencies over many keys
against numpy's softmax; `mask_top_k_top_p` (a `lax.top_k` prefix, full sort as fallback)
against a float64 numpy sort, for rows whose kept set lies in each prefix level and past it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrepair.model.sampler import draw_categorical, mask_top_k_top_p


def _softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    e = np.exp(x - x.max())
    return e / e.sum()


def test_draws_follow_the_softmax_and_never_hit_masked_entries():
    rng = np.random.default_rng(0)
    v, n = 600, 40_000  # three chunks of 256 and a padded fourth
    rows = [
        rng.standard_normal(v) * 2.0,  # spread over the whole vocabulary
        np.where(np.arange(v) % 7 == 0, rng.standard_normal(v), -np.inf),  # masked holes
        np.concatenate([np.full(v - 3, -np.inf), [0.0, np.log(2.0), np.log(5.0)]]),  # tail
    ]
    keys = jax.random.split(jax.random.key(3), n)
    draw = jax.jit(lambda k, row: draw_categorical(k, jnp.broadcast_to(row, (n, v))))
    for row in rows:
        got = np.asarray(draw(keys, jnp.asarray(row, jnp.float32)))
        freq = np.bincount(got, minlength=v) / n
        want = _softmax(row)
        assert not freq[want == 0].any()
        # every entry within 5 standard deviations of its binomial count
        sd = np.sqrt(want * (1 - want) / n)
        assert (np.abs(freq - want) <= 5 * sd + 1e-12).all(), np.abs(freq - want).max()
        # and the distribution as a whole: total variation far below a wrong one's
        assert 0.5 * np.abs(freq - want).sum() < 0.07


def test_a_single_allowed_entry_is_always_drawn():
    row = np.full((8, 1000), -np.inf, np.float32)
    row[np.arange(8), [0, 255, 256, 511, 600, 998, 999, 3]] = 1.0
    got = draw_categorical(jax.random.split(jax.random.key(0), 8), jnp.asarray(row))
    np.testing.assert_array_equal(np.asarray(got), [0, 255, 256, 511, 600, 998, 999, 3])


def _mask_reference(row: np.ndarray, top_k: int, top_p: float) -> np.ndarray:
    """Kept entries (bool) by the definition: top-k by value, then the smallest prefix of
    the top-k-restricted softmax reaching top_p, ties with its smallest entry kept."""
    v = row.size
    if top_k <= 0 and top_p >= 1:
        return np.ones(v, bool)
    k = min(top_k, v) if top_k > 0 else v
    order = np.argsort(-row, kind="stable")[:k]
    vals = row[order].astype(np.float64)
    probs = np.exp(vals - vals.max())
    probs /= probs.sum()
    before = np.cumsum(probs) - probs
    keep = (before < top_p) | (np.arange(k) == 0)
    return row >= vals[keep].min()


# (top_k, top_p, temperature of the logits): which level finds the kept set
CASES = [
    (0, 1.0, 1.0),  # no filter
    (10, 1.0, 1.0),  # top-k inside the first prefix
    (300, 1.0, 1.0),  # top-k inside the second
    (4500, 1.0, 1.0),  # top-k past both: full sort
    (0, 0.5, 0.2),  # peaked: nucleus inside the first prefix
    (0, 0.9, 3.0),  # flat: nucleus past both prefixes
    (50, 0.6, 1.0),  # both filters
]


@pytest.mark.parametrize("top_k,top_p,temp", CASES)
def test_mask_equals_the_reference_alone(top_k, top_p, temp):
    rng = np.random.default_rng(top_k + int(top_p * 10))
    row = (rng.standard_normal(5000) / temp).astype(np.float32)
    got = mask_top_k_top_p(jnp.asarray(row)[None], jnp.int32(top_k), jnp.float32(top_p))
    np.testing.assert_array_equal(
        np.isfinite(np.asarray(got[0])), _mask_reference(row, top_k, top_p)
    )
    kept = np.isfinite(np.asarray(got[0]))
    np.testing.assert_array_equal(np.asarray(got[0])[kept], row[kept])


def test_mask_equals_the_reference_per_row_in_one_batch():
    """Rows that need different levels share one call (the batch takes the deepest)."""
    rng = np.random.default_rng(11)
    rows = np.stack([(rng.standard_normal(5000) / t).astype(np.float32) for *_, t in CASES])
    top_k = np.asarray([c[0] for c in CASES], np.int32)[:, None]
    top_p = np.asarray([c[1] for c in CASES], np.float32)[:, None]
    got = np.asarray(jax.jit(mask_top_k_top_p)(jnp.asarray(rows), top_k, top_p))
    for i, (k, p, _) in enumerate(CASES):
        np.testing.assert_array_equal(np.isfinite(got[i]), _mask_reference(rows[i], k, p))
