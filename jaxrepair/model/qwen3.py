"""Pure-JAX Qwen3 over a params pytree.

Params layout: `jaxrepair.model.param_table` (stacked layers, leading axis = layer;
projections stored [in, out] with the head axes explicit so tensor parallelism splits whole
heads).

The decoder layers run under `jax.lax.scan` on accelerators, so compile time does not grow with
depth, with an optional rematerialisation policy (`Qwen3Config.remat`); XLA:CPU runs them
unrolled when nothing is rematerialised (`scans_layers`). A decode step (`decode_step`) runs
them unrolled over per-layer weights (see `unstack_layers`).
"""

from __future__ import annotations

from functools import lru_cache, partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from jaxrepair.model.attention import (
    apply_rope,
    attention,
    cache_mask,
    rms_norm,
    rope_cos_sin,
    segment_causal_mask,
    takes_segment_ids,
)
from jaxrepair.model.config import ConfigError, Qwen3Config
from jaxrepair.model.linear import product
from jaxrepair.model.moe import moe
from jaxrepair.model.param_table import dim_sizes, params_of
from jaxrepair.model.sharding import check_mesh_fits, constrain, param_shardings, runs_on_cpu

Params = dict[str, Any]
KVCache = list[dict[str, jax.Array]]  # per layer {"k": [B, K, H, S], "v": [B, K, S, H]}

INIT_STD = 0.02  # transformers' initializer_range for Qwen3

_ACT_BTD = ("batch", "length", "embed_act")
_ACT_BTNH = ("batch", "length", "heads", "head_dim")


def param_shapes(cfg: Qwen3Config, dtype=jnp.float32) -> Params:
    """ShapeDtypeStruct pytree of the parameters (no memory allocated), from the parameter
    table (`param_table`): Qwen3-MoE layers hold a router [D, E] and the experts stacked on
    one axis ([E, D, M] gate/up, [E, M, D] down) in place of the dense MLP."""
    sizes = dim_sizes(cfg)
    params: Params = {"layers": {}}
    for p in params_of(cfg):
        sds = jax.ShapeDtypeStruct(p.shape(sizes), dtype)
        if p.layer:
            params["layers"][p.ours] = sds
        else:
            params[p.ours] = sds
    return params


def _init(cfg: Qwen3Config, dtype, key: jax.Array) -> Params:
    shapes = param_shapes(cfg, dtype)
    leaves, treedef = jax.tree.flatten_with_path(shapes)
    out = []
    for i, (path, sds) in enumerate(leaves):
        name = jax.tree_util.keystr(path)
        if "norm" in name:
            out.append(jnp.ones(sds.shape, dtype))
        else:
            k = jax.random.fold_in(key, i)
            out.append((INIT_STD * jax.random.normal(k, sds.shape, jnp.float32)).astype(dtype))
    return jax.tree.unflatten(treedef, out)


def init_params(
    cfg: Qwen3Config, key: jax.Array, mesh: Mesh | None = None, dtype=jnp.float32
) -> Params:
    """Random parameters (normal, std 0.02; norms 1), created directly in their sharding."""
    if mesh is not None:
        check_mesh_fits(cfg, mesh)
    return _init_program(cfg, jnp.dtype(dtype), mesh)(key)


@lru_cache(maxsize=32)
def _init_program(cfg: Qwen3Config, dtype: np.dtype, mesh: Mesh | None):
    """One jitted init per (config, dtype, mesh). A fresh `jax.jit` per call compiled again
    every time: seconds on XLA:CPU, where each tensor's threefry draw is its own kernel."""
    fn = partial(_init, cfg, dtype)
    if mesh is None:
        return jax.jit(fn)
    return jax.jit(fn, out_shardings=param_shardings(param_shapes(cfg, dtype), mesh))


def positions_from_segments(segment_ids: jax.Array) -> jax.Array:
    """Position of each token within its own segment (restarts at 0 for each packed document)."""
    idx = jnp.broadcast_to(jnp.arange(segment_ids.shape[-1]), segment_ids.shape)
    prev = jnp.concatenate([segment_ids[:, :1] - 1, segment_ids[:, :-1]], axis=1)
    starts = jnp.where(segment_ids != prev, idx, 0)
    return idx - jax.lax.cummax(starts, axis=1)


def _remat(fn, policy: str, scanned: bool):
    """`fn` under the remat policy. Outside a scan the recomputation must keep JAX's CSE
    barrier (prevent_cse), or XLA merges it with the forward and keeps every activation."""
    if policy == "none":
        return fn
    if policy == "full":
        return jax.checkpoint(fn, prevent_cse=not scanned)
    if policy == "save_dots":
        return jax.checkpoint(
            fn,
            prevent_cse=not scanned,
            policy=jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
        )
    raise ConfigError(f"unknown remat policy {policy!r}")


def plain_forms(cfg: Qwen3Config, mesh: Mesh | None) -> bool:
    """Whether the linear layers run `linear.product` in XLA:CPU's fast forms (a float32
    result, its own backward): on CPU, unless the remat policy saves dots, which it must see
    (the product's outputs are opaque to it)."""
    return runs_on_cpu(mesh) and cfg.remat != "save_dots"


def _dense(x: jax.Array, w: jax.Array, plain: bool, in_dims: int = 1) -> jax.Array:
    """x [B, T, *in] @ w [*in, *out] -> [B, T, *out] as one 2-D GEMM (`plain`: see
    `plain_forms`).

    XLA:CPU runs the weight-gradient of a rank-3/4 einsum (contracting over batch and time)
    as transposes plus a GEMM; flattening to [B*T, in] @ [in, out] made the backward pass
    1.6x faster on the benchmark config. Reshapes of contiguous dims are free.
    """
    b, t = x.shape[:2]
    k = int(np.prod(w.shape[:in_dims]))
    out_shape = w.shape[in_dims:]
    y = product(x.reshape(b * t, k), w.reshape(k, -1), x.dtype, plain_forms=plain)
    return y.reshape(b, t, *out_shape)


def _attn_block(cfg: Qwen3Config, lp: Params, x, cos, sin, mesh):
    h = rms_norm(x, lp["attn_norm"], cfg.rms_norm_eps)
    plain = plain_forms(cfg, mesh)
    q = _dense(h, lp["q_proj"], plain)
    k = _dense(h, lp["k_proj"], plain)
    v = _dense(h, lp["v_proj"], plain)
    q = apply_rope(rms_norm(q, lp["q_norm"], cfg.rms_norm_eps), cos, sin)
    k = apply_rope(rms_norm(k, lp["k_norm"], cfg.rms_norm_eps), cos, sin)
    q = constrain(q, _ACT_BTNH, mesh)
    return q, k, v


def _mlp_block(cfg: Qwen3Config, lp: Params, x, mesh):
    h = rms_norm(x, lp["mlp_norm"], cfg.rms_norm_eps)
    if cfg.is_moe:
        return moe(cfg, lp, h)
    plain = plain_forms(cfg, mesh)
    g = _dense(h, lp["gate_proj"], plain)
    u = _dense(h, lp["up_proj"], plain)
    y = constrain(jax.nn.silu(g) * u, ("batch", "length", "mlp"), mesh)
    return _dense(y, lp["down_proj"], plain)


def _decoder_layer(cfg: Qwen3Config, lp: Params, x, cos, sin, mesh, attend):
    """One decoder layer around `attend(q, k, v) -> (attention output, aux)`, the one part the
    full-sequence forward, the prefill and the decode step do differently; (x, aux)."""
    q, k, v = _attn_block(cfg, lp, x, cos, sin, mesh)
    a, aux = attend(q, k, v)
    x = x + _dense(a, lp["o_proj"], plain_forms(cfg, mesh), in_dims=2)
    x = x + _mlp_block(cfg, lp, x, mesh)
    return constrain(x, _ACT_BTD, mesh), aux


def _layer(cfg: Qwen3Config, mesh, cos, sin, mask, segment_ids, x, lp):
    def attend(q, k, v):
        impl = cfg.attention_impl
        a = attention(q, k, v, mask, impl, is_causal=True, segment_ids=segment_ids, mesh=mesh)
        return a, None

    return _decoder_layer(cfg, lp, x, cos, sin, mesh, attend)[0]


def scans_layers(cfg: Qwen3Config, mesh: Mesh | None) -> bool:
    """Whether `forward` and `prefill_cache` run the layers under `jax.lax.scan`.

    `cfg.scan_layers` when set. Unset, scanned on accelerators (compile time independent of
    depth) and unrolled on XLA:CPU without remat, where the scan's backward stacks each
    layer's residuals and weight gradients through zero-filled buffers and
    dynamic-update-slice copies, and slices them back out: unrolled, the 58M reference
    fwd+bwd ran 5-11% faster there (docs/decisions.md, model). With a remat policy the scan
    stays: its loop boundary is what keeps XLA from holding every layer's activations.
    """
    if cfg.scan_layers is not None:
        return cfg.scan_layers
    return not (runs_on_cpu(mesh) and cfg.remat == "none")


def _run_layers(cfg: Qwen3Config, scan: bool, layers: Params, x, step_fn, xs_extra=None):
    """Apply step_fn(x, layer_params, extra) -> (x, out) over the stacked layers."""
    if scan:
        return jax.lax.scan(lambda c, p: step_fn(c, *p), x, (layers, xs_extra))
    outs = []
    per_layer = unstack_layers(layers)
    for i in range(cfg.num_hidden_layers):
        extra = None if xs_extra is None else jax.tree.map(lambda a, i=i: a[i], xs_extra)
        x, out = step_fn(x, per_layer[i], extra)
        outs.append(out)
    stacked = None if outs[0] is None else jax.tree.map(lambda *a: jnp.stack(a), *outs)
    return x, stacked


def lm_head_weight(params: Params, cfg: Qwen3Config) -> jax.Array:
    """[D, V] output projection (the transposed embedding when tied)."""
    return params["embed"].T if cfg.tie_word_embeddings else params["lm_head"]


def logits_from_hidden(params: Params, cfg: Qwen3Config, hidden: jax.Array) -> jax.Array:
    """float32 logits from final hidden states (matmul in the params dtype, f32 accumulate)."""
    w = lm_head_weight(params, cfg)
    b, t, d = hidden.shape
    h = hidden.astype(w.dtype).reshape(b * t, d)
    logits = product(h, w, jnp.float32, plain_forms=plain_forms(cfg, None))
    return logits.reshape(b, t, -1)


def forward(
    params: Params,
    cfg: Qwen3Config,
    tokens: jax.Array,
    positions: jax.Array | None = None,
    segment_ids: jax.Array | None = None,
    *,
    mesh: Mesh | None = None,
    return_hidden: bool = False,
) -> jax.Array:
    """Logits [B, T, V] (float32) for tokens [B, T].

    segment_ids [B, T] (int, 0 = padding) keep packed documents from attending to each other;
    positions default to the index within each segment.
    """
    tokens = jnp.asarray(tokens)
    if tokens.ndim != 2:
        raise ValueError(f"tokens must be [batch, length], got shape {tokens.shape}")
    if segment_ids is not None:
        segment_ids = jnp.asarray(segment_ids)
        if segment_ids.shape != tokens.shape:
            raise ValueError(
                f"segment_ids shape {segment_ids.shape} != tokens shape {tokens.shape}"
            )
    if positions is None:
        if segment_ids is None:
            positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
        else:
            positions = positions_from_segments(segment_ids)
    dtype = params["embed"].dtype
    x = jnp.take(params["embed"], tokens, axis=0)
    x = constrain(x, _ACT_BTD, mesh)
    cos, sin = rope_cos_sin(cfg, positions, dtype)
    # flash kernels ("splash", "cudnn") take the segment ids; the others get one [B,1,T,T] mask
    # built here, once for all layers
    flash = takes_segment_ids(cfg.attention_impl)
    mask = None if segment_ids is None or flash else segment_causal_mask(segment_ids)
    kernel_segments = segment_ids if flash else None

    scanned = scans_layers(cfg, mesh)
    layer = _remat(partial(_layer, cfg, mesh, cos, sin, mask, kernel_segments), cfg.remat, scanned)
    x, _ = _run_layers(cfg, scanned, params["layers"], x, lambda c, lp, _e: (layer(c, lp), None))
    x = rms_norm(x, params["final_norm"], cfg.rms_norm_eps)
    if return_hidden:
        return x
    return logits_from_hidden(params, cfg, x)


# ----------------------------------------------------------------------------- KV cache path
def unstack_layers(layers: Params) -> list[Params]:
    """The stacked [L, ...] layer parameters as a list of per-layer trees.

    Everything that runs layers unrolled takes them from here. XLA:CPU copies a layer's
    weights out of the stack at every use, so a decode loop slices them once per call, before
    the loop (`generate`), or the caller holds them unstacked (the rollout engine). The slices
    come from `lax.split`, whose transpose concatenates the per-layer gradients of an unrolled
    `forward` into the stacked one in one pass; indexing (`a[i]`) transposes to a zero-padded
    full-size add per layer (on XLA:CPU a pad + add over every expert's weights for each
    layer of an MoE model).
    """
    leaves, treedef = jax.tree.flatten(layers)
    count = leaves[0].shape[0]
    parts = [jax.lax.split(a, (1,) * count) for a in leaves]
    return [treedef.unflatten([jnp.squeeze(p[i], 0) for p in parts]) for i in range(count)]


def _cache_layouts(k: jax.Array, v: jax.Array) -> tuple[jax.Array, jax.Array]:
    """New keys/values [B, T, K, H] in the cache's layouts: keys [B, K, H, T], values
    [B, K, T, H], in which both attention products are plain batched GEMMs (a cache in
    [B, S, K, H] was transposed for them at every decode step and layer)."""
    return k.transpose(0, 2, 3, 1), v.transpose(0, 2, 1, 3)


def init_cache(cfg: Qwen3Config, batch: int, length: int, dtype=jnp.float32) -> KVCache:
    """An empty cache: per layer, keys [B, K, H, S] and values [B, K, S, H]."""
    k, h = cfg.num_key_value_heads, cfg.head_dim
    return [
        {"k": jnp.zeros((batch, k, h, length), dtype), "v": jnp.zeros((batch, k, length, h), dtype)}
        for _ in range(cfg.num_hidden_layers)
    ]


def cached_attention(
    q: jax.Array, k_cache: jax.Array, v_cache: jax.Array, mask: jax.Array
) -> jax.Array:
    """q [B, T, N, H] against the cache (keys [B, K, H, S], values [B, K, S, H]) under mask
    [B, 1, T, S]; GQA without repeating keys, softmax in float32. Returns [B, T, N, H]."""
    b, t, n, h = q.shape
    kv = k_cache.shape[1]
    g = n // kv
    qg = q.reshape(b, t, kv, g, h).transpose(0, 2, 3, 1, 4).reshape(b, kv, g * t, h)
    scores = jnp.matmul(qg, k_cache.astype(q.dtype), preferred_element_type=jnp.float32)
    scores = scores.reshape(b, kv, g, t, -1) * (h**-0.5)
    scores = jnp.where(mask[:, :, None], scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(q.dtype).reshape(b, kv, g * t, -1)
    out = jnp.matmul(probs, v_cache.astype(q.dtype), preferred_element_type=jnp.float32)
    out = out.astype(q.dtype).reshape(b, kv, g, t, h)
    return out.transpose(0, 3, 1, 2, 4).reshape(b, t, n, h)


def prefill_cache(
    params: Params,
    cfg: Qwen3Config,
    tokens: jax.Array,
    positions: jax.Array,
    key_valid: jax.Array,
    length: int,
    *,
    mesh: Mesh | None = None,
) -> KVCache:
    """The cache of `length` slots holding tokens [B, T] at slots 0..T-1 (no logits: never a
    [B, T, vocab] array). key_valid [B, T] is False at padding; each token attends causally
    to the valid ones before it with the configured kernel (e.g. "blocked").

    The layers run as in `forward` (`scans_layers`). Scanned, one layer's activations are
    live at a time and compile time does not grow with depth; the per-layer caches come out
    of the scan once and are padded to `length`.
    """
    b, t = tokens.shape
    x = constrain(jnp.take(params["embed"], tokens, axis=0), _ACT_BTD, mesh)
    cos, sin = rope_cos_sin(cfg, positions, x.dtype)
    mask = cache_mask(jnp.broadcast_to(jnp.arange(t), (b, t)), key_valid)

    def attend(q, k, v):  # keys = the new tokens themselves (slots 0..T-1)
        return attention(q, k, v, mask, cfg.attention_impl), _cache_layouts(k, v)

    def step(x, lp):
        return _decoder_layer(cfg, lp, x, cos, sin, mesh, attend)

    _, (ks, vs) = _run_layers(
        cfg, scans_layers(cfg, mesh), params["layers"], x, lambda c, lp, _e: step(c, lp)
    )
    grow = length - t
    return [
        {
            "k": jnp.pad(ks[i], ((0, 0), (0, 0), (0, 0), (0, grow))),
            "v": jnp.pad(vs[i], ((0, 0), (0, 0), (0, grow), (0, 0))),
        }
        for i in range(cfg.num_hidden_layers)
    ]


def decode_step(
    layers: list[Params],
    params: Params,
    cfg: Qwen3Config,
    tokens: jax.Array,
    positions: jax.Array,
    cache: KVCache,
    slot: jax.Array,
    key_valid: jax.Array,
    *,
    mesh: Mesh | None = None,
) -> tuple[jax.Array, KVCache]:
    """Feed tokens [B, 1] written at cache slot `slot` (the same for every row); float32
    logits [B, 1, V] and the updated cache.

    layers: each layer's parameters (`unstack_layers`), params: the rest (embedding, final
    norm, head); the layers run unrolled, each writing its slot of its own cache in place.
    key_valid [B, S] marks the slots holding real tokens after this write.
    """
    b = tokens.shape[0]
    x = constrain(jnp.take(params["embed"], tokens, axis=0), _ACT_BTD, mesh)
    cos, sin = rope_cos_sin(cfg, positions, params["embed"].dtype)
    mask = cache_mask(jnp.broadcast_to(slot, (b, 1)), key_valid)
    z = jnp.int32(0)

    def attend_with(layer_cache):
        def attend(q, k, v):  # write this token's slot, then attend over the whole cache
            kc, vc = layer_cache["k"], layer_cache["v"]
            k, v = _cache_layouts(k.astype(kc.dtype), v.astype(vc.dtype))
            kc = jax.lax.dynamic_update_slice(kc, k, (z, z, z, slot))
            vc = jax.lax.dynamic_update_slice(vc, v, (z, z, slot, z))
            return cached_attention(q, kc, vc, mask), {"k": kc, "v": vc}

        return attend

    new_cache = []
    for lp, layer_cache in zip(layers, cache, strict=True):
        x, layer_cache = _decoder_layer(cfg, lp, x, cos, sin, mesh, attend_with(layer_cache))
        new_cache.append(layer_cache)
    x = rms_norm(x, params["final_norm"], cfg.rms_norm_eps)
    return logits_from_hidden(params, cfg, x), new_cache
