"""LoRA adapters for Qwen3: a separate parameter tree merged into the frozen base weights.

Why merged: the forward (scan over stacked layers, remat) stays the one in `qwen3`; `merge`
returns ordinary params W + (alpha / r) A @ B, differentiable w.r.t. the adapters only (the
base sits under stop_gradient), so the only gradients and optimizer moments are the adapters'.

Adapter layout, derived from the parameter table (`param_table.PARAMS`): for a target matrix
stored [L, (E,) *in, *out] (projections keep their head axes), A is [L, (E,) *in, r] with the
base's logical axes on *in, and B is [L, (E,) r, *out] with the base's axes on *out. A @ B then
has the base matrix's sharding on the (data, fsdp, tensor) mesh, so merging moves no data.

    adapters = {"layers": {"q_proj": {"a": [L, D, r], "b": [L, r, N, H]}, ...}}
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import lru_cache, partial
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding

from jaxrepair.config import LORA_TARGETS, LoraConfig
from jaxrepair.model.config import Qwen3Config
from jaxrepair.model.param_table import ParamSpec, dim_sizes, params_of
from jaxrepair.model.sharding import logical_to_spec

__all__ = [
    "LORA_TARGETS",
    "LoraConfig",
    "adapter_axes",
    "adapter_shapes",
    "adapter_shardings",
    "init_adapters",
    "merge",
    "num_adapter_params",
    "target_specs",
]

Adapters = dict[str, Any]
Params = dict[str, Any]
RANK_AXIS = "lora_rank"  # no sharding rule: the rank is small and replicated

# target name -> the parameter it adapts (dense MLP, or every expert of a MoE layer)
_TARGET_PARAMS: dict[str, tuple[str, ...]] = {
    "q": ("q_proj",),
    "k": ("k_proj",),
    "v": ("v_proj",),
    "o": ("o_proj",),
    "gate": ("gate_proj", "experts_gate"),
    "up": ("up_proj", "experts_up"),
    "down": ("down_proj", "experts_down"),
}


def target_specs(cfg: Qwen3Config, lora: LoraConfig) -> list[ParamSpec]:
    """The parameter-table entries this model has that `lora.targets` adapts."""
    wanted = {name for t in lora.targets for name in _TARGET_PARAMS[t]}
    return [p for p in params_of(cfg) if p.layer and p.ours in wanted]


def split_dims(p: ParamSpec) -> tuple[int, int]:
    """(number of leading stacked dims (L, and E for experts), number of input dims)."""
    lead = 2 if p.expert else 1
    rest = len(p.dims) - lead
    return lead, 1 if p.kind == "t_out" else rest - 1


def _factors(p: ParamSpec) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """(lead, in, out) dims of a table entry."""
    lead, n_in = split_dims(p)
    return p.dims[:lead], p.dims[lead : lead + n_in], p.dims[lead + n_in :]


def adapter_axes(cfg: Qwen3Config, lora: LoraConfig) -> Adapters:
    """Logical axes of the adapter tree: A takes the base's input axes, B its output axes."""
    out: dict[str, Any] = {}
    for p in target_specs(cfg, lora):
        lead, n_in = split_dims(p)
        ax = p.axes
        out[p.ours] = {
            "a": ax[: lead + n_in] + (RANK_AXIS,),
            "b": ax[:lead] + (RANK_AXIS,) + ax[lead + n_in :],
        }
    return {"layers": out}


def adapter_shapes(cfg: Qwen3Config, lora: LoraConfig, dtype=jnp.float32) -> Adapters:
    """ShapeDtypeStruct tree of the adapters (fp32 by default: they are the trained weights)."""
    sizes = dim_sizes(cfg)
    out: dict[str, Any] = {}
    for p in target_specs(cfg, lora):
        lead, din, dout = _factors(p)
        lead_s = tuple(sizes[d] for d in lead)
        in_s = tuple(sizes[d] for d in din)
        out_s = tuple(sizes[d] for d in dout)
        out[p.ours] = {
            "a": jax.ShapeDtypeStruct(lead_s + in_s + (lora.rank,), dtype),
            "b": jax.ShapeDtypeStruct(lead_s + (lora.rank,) + out_s, dtype),
        }
    return {"layers": out}


def num_adapter_params(cfg: Qwen3Config, lora: LoraConfig) -> int:
    """Trainable parameters of a LoRA run."""
    return sum(math.prod(x.shape) for x in jax.tree.leaves(adapter_shapes(cfg, lora)))


def adapter_shardings(cfg: Qwen3Config, lora: LoraConfig, mesh: Mesh) -> Adapters:
    """NamedShardings of the adapter tree (consistent with the base matrices')."""
    return jax.tree.map(
        lambda ax, x: NamedSharding(mesh, logical_to_spec(ax, mesh, x.shape)),
        adapter_axes(cfg, lora),
        adapter_shapes(cfg, lora),
        is_leaf=lambda x: isinstance(x, tuple),
    )


def _init(cfg: Qwen3Config, lora: LoraConfig, key: jax.Array) -> Adapters:
    shapes = adapter_shapes(cfg, lora)
    out: dict[str, Any] = {}
    for i, p in enumerate(target_specs(cfg, lora)):
        a, b = shapes["layers"][p.ours]["a"], shapes["layers"][p.ours]["b"]
        lead, n_in = split_dims(p)
        fan_in = math.prod(a.shape[lead : lead + n_in])
        bound = 1.0 / math.sqrt(fan_in)  # PEFT's kaiming_uniform(a=sqrt(5)) on A
        a_val = jax.random.uniform(jax.random.fold_in(key, i), a.shape, a.dtype, -bound, bound)
        out[p.ours] = {"a": a_val, "b": jnp.zeros(b.shape, b.dtype)}
    return {"layers": out}


def init_adapters(
    cfg: Qwen3Config, lora: LoraConfig, key: jax.Array, mesh: Mesh | None = None
) -> Adapters:
    """A uniform(+-1/sqrt(fan_in)), B zero (so the model starts as the base), fp32; created
    directly in their sharding when `mesh` is given."""
    return _init_program(cfg, lora, mesh)(key)


@lru_cache(maxsize=32)
def _init_program(cfg: Qwen3Config, lora: LoraConfig, mesh: Mesh | None):
    """One jitted init per (config, LoRA config, mesh): a fresh `jax.jit` per call compiled
    again every time."""
    fn = partial(_init, cfg, lora)
    if mesh is None:
        return jax.jit(fn)
    return jax.jit(fn, out_shardings=adapter_shardings(cfg, lora, mesh))


def delta(p: ParamSpec, a: jax.Array, b: jax.Array, scale: float, dtype) -> jax.Array:
    """scale * A @ B in the base matrix's shape, computed in `dtype`."""
    lead, n_in = split_dims(p)
    lead_shape = a.shape[:lead]
    r = a.shape[-1]
    a2 = a.astype(dtype).reshape(*lead_shape, -1, r)
    b2 = b.astype(dtype).reshape(*lead_shape, r, -1)
    d = jnp.matmul(a2, b2) * jnp.asarray(scale, dtype)
    return d.reshape(*lead_shape, *a.shape[lead:-1], *b.shape[lead + 1 :])


def merge(
    base: Params,
    adapters: Adapters,
    cfg: Qwen3Config,
    lora: LoraConfig,
    dtype=None,
    rng: jax.Array | None = None,
) -> Params:
    """Params W + (alpha / r) A @ B for the targeted matrices, the base elsewhere, in `dtype`
    (default: the base's). Gradients reach only `adapters` (the base is under stop_gradient).

    With `rng` and lora.dropout > 0, input features of each A are dropped (one mask per layer
    and step, rescaled): the per-token dropout of PEFT cannot be merged into a weight.
    """

    def cast(x):
        x = jax.lax.stop_gradient(x)
        return x if dtype is None else x.astype(dtype)

    out: Params = {k: cast(v) for k, v in base.items() if k != "layers"}
    layers = {k: cast(v) for k, v in base["layers"].items()}
    for i, p in enumerate(target_specs(cfg, lora)):
        ab = adapters["layers"][p.ours]
        a = ab["a"]
        if rng is not None and lora.dropout > 0:
            keep = 1.0 - lora.dropout
            mask_shape = a.shape[:-1] + (1,)
            mask = jax.random.bernoulli(jax.random.fold_in(rng, i), keep, mask_shape)
            a = jnp.where(mask, a / keep, 0.0).astype(a.dtype)
        w = layers[p.ours]
        layers[p.ours] = w + delta(p, a, ab["b"], lora.scale, w.dtype)
    out["layers"] = layers
    return out


def check_adapters(adapters: Mapping[str, Any], cfg: Qwen3Config, lora: LoraConfig) -> None:
    """Raise naming the first adapter whose shape does not fit this model and LoRA config."""
    want = adapter_shapes(cfg, lora)["layers"]
    got = adapters.get("layers", {})
    if set(got) != set(want):
        raise ValueError(f"adapters for {sorted(got)} but the LoRA config targets {sorted(want)}")
    for name, ab in want.items():
        for part in ("a", "b"):
            if tuple(got[name][part].shape) != ab[part].shape:
                raise ValueError(
                    f"adapter {name}.{part} has shape {tuple(got[name][part].shape)}, "
                    f"expected {ab[part].shape}"
                )
