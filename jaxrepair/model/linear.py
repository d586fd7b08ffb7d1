"""The linear layers' matrix product, x [M, K] @ w [K, N], and its backward on XLA:CPU.

XLA:CPU runs a product fast only in its plain form, both operands row-major with the
contraction on the lhs's minor and the rhs's major dimension, and for bfloat16 only with a
float32 result. Autodiff of `x @ w` gives the other two forms, dx = dy w^T and dw = x^T dy,
which XLA folds into the dot as transposed operands instead of copying them. Measured on a
2-core AVX-512 EPYC, [2048, 512] x [512, 1536] (docs/decisions.md, model): bf16 plain with a
float32 result 378 GFLOP/s, with a bf16 result 190, transposed operands 164-181; fp32 plain
205, transposed 162-194.

`product(..., plain_forms=True)` is that product with its own backward: both gradient
products run in the weight's dtype with a float32 result, and for bfloat16 in the plain
form, on w^T and x^T copied once into row-major arrays (`swapped_operand`). Its outputs are
opaque to a remat policy that saves dots, so the model uses it only where no such policy
applies (`qwen3.plain_forms`).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

F32 = jnp.float32


def _row_major_swap(a: jax.Array) -> jax.Array:
    """a with its last two axes swapped, copied into a row-major array of its own. JAX emits
    a transpose as a layout change (column-major), which XLA:CPU either folds into the dot or,
    for bfloat16, answers by running the product in float32. A reshape's result is row-major;
    the optimization barrier keeps XLA from cancelling the reshape, and the unit axis keeps
    every axis's sharding."""
    swapped = jnp.swapaxes(a, -1, -2)
    return jax.lax.optimization_barrier(swapped[..., None]).reshape(swapped.shape)


def swapped_operand(a: jax.Array) -> jax.Array:
    """a with its last two axes swapped, as a product's operand: a row-major copy for bfloat16
    (which otherwise runs in float32), the plain transpose for float32, whose transposed
    products ran as fast as a copy plus a plain product (the copy measured 3-8% slower)."""
    return jnp.swapaxes(a, -1, -2) if a.dtype == F32 else _row_major_swap(a)


def plain(x: jax.Array, w: jax.Array, out_dtype) -> jax.Array:
    """x @ w in the plain form: a float32 result, cast to out_dtype."""
    return jnp.dot(x, w, preferred_element_type=F32).astype(out_dtype)


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def _plain_backward(x: jax.Array, w: jax.Array, out_dtype) -> jax.Array:
    return plain(x, w, out_dtype)


def _fwd(x, w, out_dtype):
    return plain(x, w, out_dtype), (x, w)


def _bwd(out_dtype, res, dy):
    x, w = res
    dy = dy.astype(w.dtype)  # the gradient products run in the weight's dtype
    return plain(dy, swapped_operand(w), x.dtype), plain(swapped_operand(x), dy, w.dtype)


_plain_backward.defvjp(_fwd, _bwd)


def product(x: jax.Array, w: jax.Array, out_dtype, *, plain_forms: bool) -> jax.Array:
    """x [M, K] @ w [K, N] -> [M, N] in out_dtype.

    plain_forms: a float32 result cast to out_dtype, and the backward above (XLA:CPU);
    otherwise autodiff of one dot with an out_dtype result, which accelerators' compilers
    lay out and accumulate themselves.
    """
    if plain_forms:
        return _plain_backward(x, w, jnp.dtype(out_dtype))
    return jnp.dot(x, w, preferred_element_type=out_dtype)
