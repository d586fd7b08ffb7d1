"""Multi-host start-up: one process per host (TPU pods) or per GPU (SLURM), joined into one JAX runtime.

`jax.distributed.initialize()` must run before any other JAX call. We call it only when the
environment says this is one of several processes, so single-host runs and tests never wait
for a coordinator.
"""

from __future__ import annotations

import os
from collections.abc import Mapping


def launch_kind(env: Mapping[str, str] | None = None) -> str | None:
    """Which multi-process launcher started us: "slurm", "tpu_pod", "explicit" or None."""
    env = os.environ if env is None else env
    if env.get("JAX_COORDINATOR_ADDRESS") and int(env.get("JAX_NUM_PROCESSES", "1")) > 1:
        return "explicit"
    if int(env.get("SLURM_NTASKS", "1")) > 1 and env.get("SLURM_JOB_ID"):
        return "slurm"
    hosts = env.get("TPU_WORKER_HOSTNAMES", "")
    if "," in hosts or int(env.get("MEGASCALE_NUM_SLICES", "1")) > 1:
        return "tpu_pod"
    return None


def maybe_initialize(env: Mapping[str, str] | None = None) -> bool:
    """Initialise jax.distributed when launched as one of several processes; True if it did."""
    env = os.environ if env is None else env
    kind = launch_kind(env)
    if kind is None:
        return False
    import jax

    if kind == "explicit":
        jax.distributed.initialize(
            coordinator_address=env["JAX_COORDINATOR_ADDRESS"],
            num_processes=int(env["JAX_NUM_PROCESSES"]),
            process_id=int(env["JAX_PROCESS_ID"]),
        )
    else:
        # SLURM and Cloud TPU are auto-detected by JAX's cluster plugins.
        jax.distributed.initialize()
    return True
