"""Learner parameters -> an engine's weights, device to device.

Each JAX process runs its own engine on the first `tensor` of its local devices, while the
learner's parameters are one global array sharded over every process's devices. Fetching them
to the host (`process_allgather`) would move the full fp32 weights through every host's memory
at every update (128 GB for a 32B model) and then build the full array on one device. Instead
one jitted identity-with-cast lays the weights out over a (replica, tensor) grid of the
learner's devices, each row of `tensor` devices holding one tensor-parallel copy in the
engine's dtype: XLA moves the shards over the accelerator interconnect. Every process then
keeps the shards on its engine's devices (the first row of its grid) as process-local arrays;
the other rows are transient and freed on return.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding

from jaxrepair.model.qwen3 import Params

__all__ = ["engine_grid", "reshard_to_engine"]


def engine_grid(devices: set, tensor: int) -> np.ndarray:
    """[rows, tensor] devices: each process's devices among `devices`, in `jax.local_devices`
    order, cut into consecutive groups of `tensor` (a process's first group is its engine)."""
    rows = []
    for p in range(jax.process_count()):
        mine = [d for d in jax.local_devices(process_index=p) if d in devices]
        if not mine or len(mine) % tensor:
            raise ValueError(
                f"process {p} holds {len(mine)} of the learner's devices, not a multiple of "
                f"engine.tensor={tensor}"
            )
        rows += [mine[i : i + tensor] for i in range(0, len(mine), tensor)]
    return np.array(rows, dtype=object)


def reshard_to_engine(params: Params, shardings: Params, dtype: jax.typing.DTypeLike) -> Params:
    """`params` (the learner's, possibly spanning processes) cast to `dtype` and placed as
    `shardings` (NamedShardings over this process's engine mesh, axis "tensor") say. Never
    aliases the learner's buffers, which its updates donate."""
    leaves = jax.tree.leaves(params)
    if all(x.is_fully_addressable for x in leaves):
        cast = jax.tree.map(lambda x: x.astype(dtype), params)
        return jax.device_put(cast, shardings, may_alias=False)
    engine_devices = jax.tree.leaves(shardings)[0].mesh.devices.reshape(-1).tolist()
    tensor = len(engine_devices)
    learner = set().union(*(x.sharding.device_set for x in leaves))
    grid = engine_grid(learner, tensor)
    mine = [d for row in grid for d in row if d.process_index == jax.process_index()]
    if mine[:tensor] != engine_devices:
        raise ValueError(
            "the engine's devices must be the first engine.tensor of this process's devices "
            "that hold the learner's parameters"
        )
    wide = Mesh(grid, ("replica", "tensor"))
    out = jax.tree.map(lambda s: NamedSharding(wide, s.spec), shardings)
    laid = jax.jit(lambda t: jax.tree.map(lambda x: x.astype(dtype), t), out_shardings=out)(params)

    def local(x: jax.Array, sharding: NamedSharding) -> jax.Array:
        by_device = {s.device: s.data for s in x.addressable_shards}
        index = sharding.addressable_devices_indices_map(x.shape)
        return jax.make_array_from_single_device_arrays(
            x.shape, sharding, [by_device[d] for d in index]
        )

    return jax.tree.map(local, laid, shardings)
