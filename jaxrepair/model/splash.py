"""TPU flash attention for the learner: JAX's Pallas splash-attention kernel.

`splash_attention` computes causal self-attention over packed rows (segment ids) without a
[T, T] score or mask buffer: the kernel walks [block, block] tiles, skips tiles above the
diagonal (CausalMask) and masks tokens of other documents in-kernel (SegmentIds), and its
backward pass (dq, dk, dv kernels) recomputes scores tile by tile from the saved logsumexp.

Choices:
- GQA runs natively: splash's multi-head kernel accepts K < N key/value heads and maps query
  head n to kv head n // (N / K), the grouping of `attention._reference`. Repeating kv heads
  would multiply k/v memory and the dk/dv reduction by N / K for nothing.
- The kernel does not scale the scores; q is multiplied by 1/sqrt(head_dim) first.
- Rows whose length is not a multiple of 128 are padded at the end: a causal query never sees
  a later key, so padding changes no real output, and the padded outputs are sliced off.
- Under a mesh the kernel runs per shard (`attention.per_shard`: batch over the mesh axes the
  activations use for "batch", heads over "heads"), since a Pallas call cannot be partitioned
  automatically. The sequence is never split.
- Only the learner's full-sequence forward (`qwen3.forward`) uses it; the sampler's
  `prefill_cache` (which passes an explicit mask) keeps the mask-based XLA path.

On CPU the kernel runs only in Pallas TPU interpret mode
(`jax.experimental.pallas.tpu.force_tpu_interpret_mode()`), which the tests use.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from jaxrepair.model.attention import per_shard

LANES = 128  # splash tiles are multiples of the TPU lane width
BLOCK_CANDIDATES = (512, 256, 128)

try:  # the Pallas TPU modules import on every platform today; guard against builds without them
    from jax.experimental.pallas.ops.tpu import splash_attention as _splash

    _IMPORT_ERROR: Exception | None = None
except ImportError as e:  # pragma: no cover - depends on the jax build
    _splash = None
    _IMPORT_ERROR = e


def splash_available() -> bool:
    """True where jax ships the Pallas TPU splash-attention kernel."""
    return _splash is not None


def padded_length(t: int) -> int:
    """Sequence length the kernel runs at: t rounded up to a multiple of 128."""
    return -(-t // LANES) * LANES


def block_size(t_padded: int) -> int:
    """Largest supported tile (512, 256 or 128) that divides the padded sequence length."""
    for b in BLOCK_CANDIDATES:
        if t_padded % b == 0:
            return b
    raise ValueError(f"splash attention needs a length divisible by {LANES}, got {t_padded}")


@functools.lru_cache(maxsize=32)
def _kernel(num_heads: int, t: int, block: int) -> Any:
    """Splash kernel for [num_heads, t, head_dim] queries (built once per shape: the block
    sparsity tables are computed on the host)."""
    mask = _splash.MultiHeadMask([_splash.CausalMask((t, t)) for _ in range(num_heads)])
    sizes = _splash.BlockSizes(
        block_q=block,
        block_kv=block,
        block_kv_compute=block,
        block_q_dkv=block,
        block_kv_dkv=block,
        block_kv_dkv_compute=block,
        block_q_dq=block,
        block_kv_dq=block,
    )
    # concrete tables even when first asked for inside a trace, so the cache never holds tracers
    with jax.ensure_compile_time_eval():
        return _splash.make_splash_mha(mask, block_sizes=sizes, head_shards=1, q_seq_shards=1)


def _interpret_mode() -> bool:
    try:
        from jax._src import config as jax_config

        return jax_config.pallas_tpu_interpret_mode_context_manager.value is not None
    except (ImportError, AttributeError):  # pragma: no cover - older/newer jax internals
        return False


def _check_platform(mesh: Mesh | None) -> None:
    if _splash is None:
        raise RuntimeError(
            f"attention_impl='splash' needs jax's Pallas TPU kernels, which this jax build "
            f"lacks ({_IMPORT_ERROR}); use 'xla', 'blocked' or 'cudnn'"
        )
    platform = mesh.devices.flat[0].platform if mesh is not None else jax.default_backend()
    if platform != "tpu" and not _interpret_mode():
        raise ValueError(
            f"attention_impl='splash' runs on TPU only (this is {platform}; tests use "
            f"jax.experimental.pallas.tpu.force_tpu_interpret_mode()); on GPU use 'cudnn', "
            f"on CPU 'blocked'"
        )


def _local_splash(q: jax.Array, k: jax.Array, v: jax.Array, seg: jax.Array | None) -> jax.Array:
    """Splash on one shard: q [B,T,N,H], k/v [B,T,K,H], seg [B,T] or None -> [B,T,N,H]."""
    b, t, n, h = q.shape
    tp = padded_length(t)
    kernel = _kernel(n, tp, block_size(tp))
    scale = h**-0.5
    qs = (q.astype(jnp.float32) * scale).astype(q.dtype)
    # [B, T, heads, H] -> [B, heads, T, H]; pad the sequence at the end
    pad = ((0, 0), (0, 0), (0, tp - t), (0, 0))
    qt, kt, vt = (jnp.pad(jnp.swapaxes(x, 1, 2), pad) for x in (qs, k, v))
    # one kernel call per row (lax.map): a TPU core walks the kernel's grid sequentially, so
    # this costs what a batched grid would, and it is the form Pallas interpret mode runs
    if seg is None:
        out = jax.lax.map(lambda a: kernel(*a), (qt, kt, vt))
    else:
        segp = jnp.pad(seg.astype(jnp.int32), ((0, 0), (0, tp - t)))

        def one(a):
            qi, ki, vi, si = a
            return kernel(qi, ki, vi, segment_ids=_splash.SegmentIds(q=si, kv=si))

        out = jax.lax.map(one, (qt, kt, vt, segp))
    return jnp.swapaxes(out[:, :, :t], 1, 2)


def splash_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    segment_ids: jax.Array | None,
    mesh: Mesh | None,
) -> jax.Array:
    """Causal GQA self-attention of q [B,T,N,H] over k/v [B,T,K,H] with the splash kernel.

    segment_ids [B, T] (equal ids attend to each other; padding 0 is one more segment, as in
    `attention.segment_causal_mask`) or None for plain causal rows.
    """
    if q.shape[1] != k.shape[1]:
        raise ValueError(
            f"splash attention is self-attention over whole rows; got {q.shape[1]} queries "
            f"and {k.shape[1]} keys (cached decode uses the mask path)"
        )
    if q.shape[2] % k.shape[2]:
        raise ValueError(f"{q.shape[2]} query heads are not a multiple of {k.shape[2]} kv heads")
    _check_platform(mesh)
    return per_shard(_local_splash, q, k, v, segment_ids, mesh)
