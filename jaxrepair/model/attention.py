"""Attention pieces of Qwen3: RMSNorm, RoPE, masks (causal + segments + KV cache), GQA attention.

The attention kernel is selectable (`Qwen3Config.attention_impl`):
- "xla": `jax.nn.dot_product_attention(implementation="xla")`, any backend, explicit mask.
- "cudnn": the cuDNN flash-attention kernel on NVIDIA GPUs; packed rows use cuDNN's packed
  (ragged) layout, so no [T, T] mask is built (see `make_cudnn_attention`).
- "splash": the Pallas splash-attention kernel on TPU (`jaxrepair.model.splash`).
- "blocked": causal attention in query blocks that skip the masked upper triangle, with its own
  backward that keeps no [T, T] array (`jaxrepair.model.blocked_attention`; fastest on CPU).
- "auto" (the default): "blocked" on CPU, "xla" on accelerators.
- "reference": plain einsum + softmax (for debugging and as a template for kernels).
More can be plugged in with `register_attention_impl`.

"cudnn" and "splash" are flash kernels: for the learner's full-row causal attention
(`qwen3.forward`) they take the rows' segment ids instead of a mask. Calls with an explicit
mask (the sampler's prefill and decode against a KV cache) use their mask path: cuDNN with a
mask for "cudnn", the XLA kernel for "splash".
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from jaxrepair.model.blocked_attention import blocked_causal_attention
from jaxrepair.model.config import ATTENTION_IMPLS, Qwen3Config

# fn(q [B,T,N,H], k [B,S,K,H], v [B,S,K,H], mask [B,1,T,S] bool | None, is_causal) -> [B,T,N,H]
AttentionFn = Callable[[jax.Array, jax.Array, jax.Array, jax.Array | None, bool], jax.Array]
# fn(q [B,T,N,H], k [B,T,K,H], v [B,T,K,H], segment_ids [B,T] int | None, mesh | None)
#   -> [B,T,N,H]: causal self-attention over whole (packed) rows, no mask argument
SegmentAttentionFn = Callable[
    [jax.Array, jax.Array, jax.Array, jax.Array | None, Mesh | None], jax.Array
]
_IMPLS: dict[str, AttentionFn] = {}
_SEGMENT_IMPLS: dict[str, SegmentAttentionFn] = {}


def register_attention_impl(
    name: str, fn: AttentionFn, *, segment_fn: SegmentAttentionFn | None = None
) -> None:
    """Plug in an attention kernel under a config name.

    fn handles calls with an explicit mask (and the KV-cache paths); segment_fn, when given,
    handles the learner's causal full-row attention from segment ids, so a flash kernel never
    needs a [T, T] mask.
    """
    _IMPLS[name] = fn
    if segment_fn is None:
        _SEGMENT_IMPLS.pop(name, None)
    else:
        _SEGMENT_IMPLS[name] = segment_fn
    if name not in ATTENTION_IMPLS:
        # Qwen3Config validates names against this tuple; extend it for the new kernel.
        import jaxrepair.model.config as config_mod

        config_mod.ATTENTION_IMPLS = (*config_mod.ATTENTION_IMPLS, name)


def rms_norm(x: jax.Array, weight: jax.Array, eps: float) -> jax.Array:
    """RMSNorm in float32, cast back before the weight multiply (as transformers' Qwen3RMSNorm)."""
    dtype = x.dtype
    xf = x.astype(jnp.float32)
    xf = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + eps)
    return weight.astype(dtype) * xf.astype(dtype)


def rope_cos_sin(cfg: Qwen3Config, positions: jax.Array, dtype) -> tuple[jax.Array, jax.Array]:
    """cos/sin tables [B, T, head_dim] for integer positions [B, T]."""
    inv_freq = jnp.asarray(cfg.inv_freq())
    freqs = positions.astype(jnp.float32)[..., None] * inv_freq
    emb = jnp.concatenate([freqs, freqs], axis=-1)
    scale = cfg.rope_attention_scale()
    return (jnp.cos(emb) * scale).astype(dtype), (jnp.sin(emb) * scale).astype(dtype)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Rotate-half RoPE on x [B, T, heads, head_dim]."""
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos[:, :, None, :] + rotated * sin[:, :, None, :]


def segment_causal_mask(segment_ids: jax.Array) -> jax.Array:
    """[B, 1, T, T] bool: causal and within the same segment (padding = its own segment)."""
    t = segment_ids.shape[-1]
    causal = jnp.tril(jnp.ones((t, t), dtype=bool))
    same = segment_ids[:, :, None] == segment_ids[:, None, :]
    return (causal[None] & same)[:, None]


def cache_mask(query_slots: jax.Array, key_valid: jax.Array) -> jax.Array:
    """[B, 1, T, S] bool for attention against a KV cache.

    query_slots [B, T]: cache slot each query token was written to; key_valid [B, S]: slots
    holding real (non-padding) keys. A query sees valid keys at slots <= its own.
    """
    s = key_valid.shape[-1]
    slots = jnp.arange(s)
    visible = slots[None, None, :] <= query_slots[:, :, None]
    return (visible & key_valid[:, None, :])[:, None]


def _xla(q, k, v, mask, is_causal):
    return jax.nn.dot_product_attention(
        q, k, v, mask=mask, is_causal=is_causal and mask is None, implementation="xla"
    )


def _cudnn(q, k, v, mask, is_causal):
    if mask is None:
        return jax.nn.dot_product_attention(q, k, v, is_causal=is_causal, implementation="cudnn")
    return jax.nn.dot_product_attention(q, k, v, mask=mask, implementation="cudnn")


# Most contiguous segments (documents plus the padding tail) one packed row may hold for
# "cudnn": the static size of cuDNN's packed-layout offset tables. cuDNN keeps softmax
# statistics of shape [B * max_segments, N, T], so this is not made large.
CUDNN_MAX_SEGMENTS = 32


def cudnn_segment_layout(
    segment_ids: jax.Array, max_segments: int
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """cuDNN packed-layout tables for rows of segment ids [B, T].

    Every run of equal ids (a packed document, or the padding tail) becomes one cuDNN segment:
    offsets [B, max_segments + 1] (start of each run, then -1) and lengths [B, max_segments]
    (run length, then -1), the form `jax._src.cudnn.fused_attention_stablehlo` takes; plus the
    number of runs per row [B]. Each id occupying one contiguous run (what the SFT packer
    writes) makes this the same attention as `segment_causal_mask`.
    """
    b, t = segment_ids.shape
    starts = jnp.concatenate(
        [jnp.ones((b, 1), bool), segment_ids[:, 1:] != segment_ids[:, :-1]], axis=1
    )
    run = jnp.cumsum(starts, axis=1, dtype=jnp.int32) - 1
    count = run[:, -1] + 1
    rows = jnp.arange(b)[:, None]
    target = jnp.where(starts & (run < max_segments), run, max_segments + 1)  # else dropped
    idx = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
    offsets = jnp.full((b, max_segments + 1), -1, jnp.int32)
    offsets = offsets.at[rows, target].set(idx, mode="drop")
    m = jnp.arange(max_segments)[None, :]
    ends = jnp.where(m + 1 < count[:, None], offsets[:, 1:], t)
    lengths = jnp.where(m < count[:, None], ends - offsets[:, :max_segments], -1)
    return offsets, lengths.astype(jnp.int32), count


def _cudnn_packed_call(q, k, v, lengths, offsets):
    """cuDNN flash attention, causal within each packed segment (Hopper or newer)."""
    from jax._src.cudnn.fused_attention_stablehlo import MaskType
    from jax._src.cudnn.fused_attention_stablehlo import dot_product_attention as cudnn_dpa

    return cudnn_dpa(
        q,
        k,
        v,
        q_seqlen=lengths,
        kv_seqlen=lengths,
        q_offsets=offsets,
        kv_offsets=offsets,
        scale=q.shape[-1] ** -0.5,
        mask_type=MaskType.PADDING_CAUSAL,
        qkv_layout="BTNH",
    )


def make_cudnn_attention(max_segments: int = CUDNN_MAX_SEGMENTS) -> SegmentAttentionFn:
    """The "cudnn" learner kernel for rows of at most max_segments contiguous segments.

    Plain causal rows use cuDNN's causal kernel (GQA native); packed rows use its packed
    layout (one cuDNN segment per run of equal ids, causal within it, kv heads repeated to
    the query heads), so neither builds a [T, T] mask.
    A row with more runs than max_segments cannot be expressed in the static tables: its
    output is NaN (the loss turns NaN) rather than silently attending across documents;
    register a larger bound under another name for such data.
    """
    if max_segments < 2:
        raise ValueError(f"max_segments must be at least 2, got {max_segments}")

    def local(q, k, v, segment_ids):
        if segment_ids is None:
            return jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation="cudnn")
        offsets, lengths, count = cudnn_segment_layout(segment_ids, max_segments)
        if k.shape[2] != q.shape[2]:
            # jax scales the packed kv offsets by the query heads' stride, which is right
            # only when kv has as many heads: repeat kv heads (query head n reads kv head
            # n // group, as in GQA) for this call
            group = q.shape[2] // k.shape[2]
            k, v = jnp.repeat(k, group, axis=2), jnp.repeat(v, group, axis=2)
        out = _cudnn_packed_call(q, k, v, lengths, offsets)
        fits = (count <= max_segments)[:, None, None, None]
        return jnp.where(fits, out, jnp.nan).astype(q.dtype)

    def fn(q, k, v, segment_ids, mesh):
        return per_shard(local, q, k, v, segment_ids, mesh)

    return fn


def per_shard(
    fn: Callable[[jax.Array, jax.Array, jax.Array, jax.Array | None], jax.Array],
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    segment_ids: jax.Array | None,
    mesh: Mesh | None,
) -> jax.Array:
    """Run fn(q, k, v, segment_ids) on each device's shard (`jax.shard_map`).

    Custom kernels (Pallas, cuDNN) are not partitioned automatically: batch is split over the
    mesh axes the activations use for "batch" and heads over those for "heads"; query and kv
    heads must split alike so each shard keeps whole GQA groups. No mesh: fn on the arrays.
    """
    if mesh is None:
        return fn(q, k, v, segment_ids)
    from jax.sharding import PartitionSpec

    from jaxrepair.model.sharding import logical_to_spec

    q_spec = logical_to_spec(("batch", "length", "heads", "head_dim"), mesh, q.shape)
    kv_spec = logical_to_spec(("batch", "length", "kv_heads", "head_dim"), mesh, k.shape)
    if q_spec != kv_spec:
        raise ValueError(
            f"flash attention needs query and kv heads split alike over the mesh; got "
            f"{q_spec} for {q.shape[2]} query heads and {kv_spec} for {k.shape[2]} kv heads "
            f"(choose a tensor size that divides num_key_value_heads)"
        )
    if segment_ids is None:
        args: tuple[jax.Array, ...] = (q, k, v)
        specs: tuple[PartitionSpec, ...] = (q_spec, kv_spec, kv_spec)
        body = lambda q_, k_, v_: fn(q_, k_, v_, None)  # noqa: E731
    else:
        args = (q, k, v, segment_ids)
        specs = (q_spec, kv_spec, kv_spec, PartitionSpec(q_spec[0], None))
        body = fn
    mapped = jax.shard_map(body, mesh=mesh, in_specs=specs, out_specs=q_spec, check_vma=False)
    return mapped(*args)


def _splash_segments(q, k, v, segment_ids, mesh):
    from jaxrepair.model.splash import splash_attention

    return splash_attention(q, k, v, segment_ids, mesh)


def _reference(q, k, v, mask, is_causal):
    b, t, n, h = q.shape
    kh = k.shape[2]
    g = n // kh
    qg = q.reshape(b, t, kh, g, h)
    logits = jnp.einsum("btkgh,bskh->bkgts", qg, k, preferred_element_type=jnp.float32)
    logits = logits * (h**-0.5)
    if mask is None and is_causal:
        s = k.shape[1]
        mask = jnp.tril(jnp.ones((t, s), dtype=bool))[None, None]
    if mask is not None:
        logits = jnp.where(mask[:, :, None], logits, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    out = jnp.einsum("bkgts,bskh->btkgh", probs, v)
    return out.reshape(b, t, n, h)


def _blocked(q, k, v, mask, is_causal):
    """Causal self-attention in query blocks with its own backward
    (`jaxrepair.model.blocked_attention`); cache (decode) calls, where queries and keys differ
    in length, use the dense path."""
    if not is_causal or q.shape[1] != k.shape[1]:
        return _xla(q, k, v, mask, is_causal)
    return blocked_causal_attention(q, k, v, mask)


_IMPLS.update(xla=_xla, cudnn=_cudnn, reference=_reference, blocked=_blocked, splash=_xla)
_SEGMENT_IMPLS.update(cudnn=make_cudnn_attention(), splash=_splash_segments)


def resolve_impl(impl: str) -> str:
    """The kernel "auto" stands for on the backend this traces for: "blocked" on CPU (its own
    backward, measured 2-3x faster there than the dense kernel), "xla" on accelerators."""
    if impl != "auto":
        return impl
    return "blocked" if jax.default_backend() == "cpu" else "xla"


def takes_segment_ids(impl: str) -> bool:
    """True for flash kernels that compute packed-row attention from segment ids (no mask)."""
    return resolve_impl(impl) in _SEGMENT_IMPLS


def attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    mask: jax.Array | None,
    impl: str,
    is_causal: bool = True,
    *,
    segment_ids: jax.Array | None = None,
    mesh: Mesh | None = None,
) -> jax.Array:
    """GQA attention with softmax in float32; q [B,T,N,H], k/v [B,S,K,H].

    Either an explicit mask [B,1,T,S], or (causal self-attention over whole rows) the rows'
    segment_ids [B,T]: flash kernels use them directly; mask kernels get
    `segment_causal_mask(segment_ids)`. mesh lets flash kernels run per shard.
    """
    impl = resolve_impl(impl)
    try:
        fn = _IMPLS[impl]
    except KeyError:
        raise ValueError(f"unknown attention_impl {impl!r}; registered: {sorted(_IMPLS)}") from None
    if mask is not None and segment_ids is not None:
        raise ValueError("pass either mask or segment_ids to attention, not both")
    full_rows = mask is None and is_causal and q.shape[1] == k.shape[1]
    if full_rows and impl in _SEGMENT_IMPLS:
        return _SEGMENT_IMPLS[impl](q, k, v, segment_ids, mesh)
    if segment_ids is not None:
        mask = segment_causal_mask(segment_ids)
    return fn(q, k, v, mask, is_causal)
