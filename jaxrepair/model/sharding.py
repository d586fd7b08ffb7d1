"""Device mesh and logical-axis sharding rules.

Every parameter and activation dimension has a *logical* name ("embed", "heads", "mlp", ...).
RULES maps logical names to mesh axes; `logical_to_spec` turns a tuple of logical names into a
PartitionSpec for the mesh at hand. Changing the parallelism layout means changing RULES, not the
model code. Mesh axes: `data` (pure data parallel), `fsdp` (data parallel with parameters
sharded, ZeRO-3 style), `tensor` (Megatron-style head/MLP split).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxrepair.model.config import Qwen3Config
from jaxrepair.model.param_table import PARAMS

MESH_AXES = ("data", "fsdp", "tensor")

# logical axis -> mesh axes (tuple), in priority order. None = replicated.
RULES: dict[str, tuple[str, ...] | None] = {
    "batch": ("data", "fsdp"),
    "vocab": ("tensor",),
    "embed": ("fsdp",),
    "heads": ("tensor",),
    "kv_heads": ("tensor",),
    "head_dim": None,
    "mlp": ("tensor",),
    "layers": None,
    "norm": None,
    "embed_act": None,
    "length": None,
    "cache_length": None,
    "experts": None,
}

# Logical axes of each parameter (stacked layer params carry the leading "layers" axis), from
# the one parameter table.
PARAM_AXES: dict[str, tuple[str, ...]] = {p.path: p.axes for p in PARAMS}


class ShardingError(ValueError):
    """A mesh that cannot hold the model (e.g. tensor parallelism that does not divide the heads)."""


def resolve_mesh_shape(shape: Mapping[str, int] | None, num_devices: int) -> dict[str, int]:
    """Concrete (data, fsdp, tensor) sizes for `num_devices`; one size may be -1 (the rest).

    The one place mesh sizes are checked: make_mesh, the memory planner and run configs use it.
    """
    shape = dict(shape or {"fsdp": -1})
    unknown = set(shape) - set(MESH_AXES)
    if unknown:
        raise ShardingError(f"unknown mesh axes {sorted(unknown)}; axes are {MESH_AXES}")
    sizes = {a: int(shape.get(a, 1)) for a in MESH_AXES}
    free = [a for a, s in sizes.items() if s == -1]
    if len(free) > 1:
        raise ShardingError(f"only one mesh axis may be -1, got {free}")
    if any(s == 0 or s < -1 for s in sizes.values()):
        raise ShardingError(f"mesh sizes must be positive or -1, got {sizes}")
    known = math.prod(s for s in sizes.values() if s != -1)
    if free:
        if num_devices % known:
            raise ShardingError(f"mesh {sizes} cannot split {num_devices} devices")
        sizes[free[0]] = num_devices // known
    total = math.prod(sizes.values())
    if total != num_devices:
        raise ShardingError(f"mesh {sizes} needs {total} devices, {num_devices} available")
    return sizes


def make_mesh(
    shape: Mapping[str, int] | None = None,
    devices: Sequence[jax.Device] | None = None,
) -> Mesh:
    """Mesh with axes (data, fsdp, tensor); one size may be -1 (= the remaining devices).

    Uses the classic `jax.sharding.Mesh` (automatic axes): GSPMD propagates shardings from the
    jit in/out shardings and the constraints we place on activations.
    """
    devices = list(jax.devices() if devices is None else devices)
    sizes = resolve_mesh_shape(shape, len(devices))
    grid = np.asarray(devices).reshape([sizes[a] for a in MESH_AXES])
    return Mesh(grid, MESH_AXES)


def _mesh_size(mesh: Mesh, axes: tuple[str, ...]) -> int:
    return math.prod(mesh.shape[a] for a in axes)


def logical_to_spec(
    logical: Sequence[str | None], mesh: Mesh, shape: Sequence[int] | None = None
) -> PartitionSpec:
    """PartitionSpec for a tensor with the given logical axes.

    A mesh axis is used at most once per tensor. Where `shape` is given, a dimension that the
    mesh axis does not divide is left replicated (small norms, tiny vocabularies) instead of
    failing; heads are checked separately by `check_mesh_fits` because splitting them unevenly
    is a configuration error, not a layout detail.
    """
    used: set[str] = set()
    spec: list[Any] = []
    for i, name in enumerate(logical):
        axes = RULES.get(name) if name is not None else None
        if axes:
            axes = tuple(a for a in axes if a in mesh.shape and mesh.shape[a] > 1 and a not in used)
        if axes and shape is not None and shape[i] % _mesh_size(mesh, axes):
            # try the largest prefix of the axes that divides
            while axes and shape[i] % _mesh_size(mesh, axes):
                axes = axes[:-1]
        if not axes:
            spec.append(None)
            continue
        used.update(axes)
        spec.append(axes[0] if len(axes) == 1 else axes)
    return PartitionSpec(*spec)


def check_mesh_fits(cfg: Qwen3Config, mesh: Mesh) -> None:
    """Fail early, naming the numbers, when tensor parallelism cannot split heads or MLP evenly."""
    tp = mesh.shape.get("tensor", 1)
    mlp = "moe_intermediate_size" if cfg.is_moe else "intermediate_size"
    for what, n in (
        ("num_attention_heads", cfg.num_attention_heads),
        ("num_key_value_heads", cfg.num_key_value_heads),
        (mlp, getattr(cfg, mlp)),
    ):
        if n % tp:
            raise ShardingError(
                f"mesh tensor axis of size {tp} does not divide {what}={n}; choose a tensor "
                f"size that divides it"
            )


def param_logical_axes(params: Mapping[str, Any]) -> dict[str, Any]:
    """Logical axes pytree matching `params` (same nesting)."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, Mapping):
            out[key] = {k: PARAM_AXES[f"{key}/{k}"] for k in value}
        else:
            out[key] = PARAM_AXES[key]
    return out


def param_shardings(params_shapes: Mapping[str, Any], mesh: Mesh) -> dict[str, Any]:
    """NamedSharding pytree for a params (or ShapeDtypeStruct) pytree."""
    axes = param_logical_axes(params_shapes)
    return jax.tree.map(
        lambda ax, x: NamedSharding(mesh, logical_to_spec(ax, mesh, x.shape)),
        axes,
        dict(params_shapes),
        is_leaf=lambda x: isinstance(x, tuple),
    )


def activation_sharding(mesh: Mesh, logical: Sequence[str | None], shape=None) -> NamedSharding:
    return NamedSharding(mesh, logical_to_spec(logical, mesh, shape))


def constrain(x: jax.Array, logical: Sequence[str | None], mesh: Mesh | None) -> jax.Array:
    """with_sharding_constraint by logical axes; a no-op without a mesh."""
    if mesh is None:
        return x
    return jax.lax.with_sharding_constraint(x, activation_sharding(mesh, logical, x.shape))


def shard_params(params: Mapping[str, Any], mesh: Mesh) -> dict[str, Any]:
    """Place an existing (e.g. host) params pytree onto the mesh."""
    return jax.device_put(dict(params), param_shardings(params, mesh))


def runs_on_cpu(mesh: Mesh | None) -> bool:
    """Whether programs over `mesh` (the first local device without one) run on XLA:CPU,
    where slices and gathers are copies rather than fused into their consumers."""
    devices = mesh.devices.flat if mesh is not None else jax.local_devices()[:1]
    return all(d.platform == "cpu" for d in devices)


def gather_to_host(x: jax.Array) -> np.ndarray:
    """Full numpy copy of a (possibly multi-host sharded) array."""
    if getattr(x, "is_fully_addressable", True):
        return np.asarray(jax.device_get(x))
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
