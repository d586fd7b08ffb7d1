"""Host-side agreement between the processes of one JAX job (one process per host).

Why: in a multi-controller program every process must issue the same device programs with the
same inputs in the same order. Whatever decides those inputs on the host (which episodes are
ready, what the environments answered, whether to stop) must therefore be exchanged first.
These helpers do it with JAX's own collectives (`jax.experimental.multihost_utils`), never with a
side channel; with one process they return at once without touching a device.
"""

from __future__ import annotations

import pickle
from typing import Any

import jax
import numpy as np


def is_primary() -> bool:
    """Process 0: the one that writes shared files (metrics, rollouts, summaries)."""
    return jax.process_index() == 0


def allgather_objects(obj: Any) -> list[Any]:
    """Every process's `obj` (any picklable value), in process order, on every process.

    A collective: all processes must call it the same number of times in the same order.
    """
    if jax.process_count() == 1:
        return [obj]
    from jax.experimental import multihost_utils

    blob = np.frombuffer(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL), np.uint8)
    sizes = np.asarray(multihost_utils.process_allgather(np.asarray([blob.size], np.int64)))
    sizes = sizes.reshape(-1)
    padded = np.zeros((int(sizes.max()),), np.uint8)
    padded[: blob.size] = blob
    every = np.asarray(multihost_utils.process_allgather(padded))
    return [pickle.loads(every[p, : int(n)].tobytes()) for p, n in enumerate(sizes)]


def broadcast_object(obj: Any) -> Any:
    """Process 0's `obj` on every process (a collective, like `allgather_objects`)."""
    if jax.process_count() == 1:
        return obj
    return allgather_objects(obj if is_primary() else None)[0]


def any_process(flag: bool) -> bool:
    """True on every process when `flag` is true on at least one (a collective)."""
    if jax.process_count() == 1:
        return bool(flag)
    return any(bool(f) for f in allgather_objects(bool(flag)))


def sync(name: str) -> None:
    """Wait until every process got here (a barrier; nothing with one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


__all__ = [
    "allgather_objects",
    "any_process",
    "broadcast_object",
    "is_primary",
    "sync",
]
