"""Multi-host start-up: one process per host (TPU pods, SLURM nodes), joined into one JAX runtime.

`jax.distributed.initialize()` must run before any other JAX call. Whether to call it follows
JAX's own cluster detection (the `ClusterEnv` subclasses in `jax._src.clusters`, checked in
JAX's order: Open MPI, SLURM, GKE TPU, GCE TPU (metadata server, so a plain ssh shell on a TPU
VM is detected), Kubernetes), plus an explicit form for any other launcher:
JAX_COORDINATOR_ADDRESS=host:port, JAX_NUM_PROCESSES=N, JAX_PROCESS_ID=i.

We initialise only when that detection finds more than one process, so single-host runs and
tests never wait for a coordinator.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

EXPLICIT = "explicit"


@dataclass(frozen=True)
class Launch:
    """A multi-process launch: who started us and how many processes take part."""

    kind: str  # "explicit", or JAX's cluster name: ompi, slurm, gketpu, gcetpu, k8s
    num_processes: int
    process_id: int | None = None  # known here only for the explicit form


@contextlib.contextmanager
def _environ_view(env: Mapping[str, str] | None) -> Iterator[None]:
    """Let JAX's detectors (which read `os.environ`) see `env` instead of the process env.

    Rebinds the Python-level mapping only (no putenv), and only when a different mapping is
    given; meant for start-up and tests, not for concurrent use.
    """
    if env is None or env is os.environ:
        yield
        return
    saved = os.environ
    os.environ = dict(env)  # type: ignore[assignment]  # noqa: B003 - Python-level view only
    try:
        yield
    finally:
        os.environ = saved  # noqa: B003


def _int_var(env: Mapping[str, str], name: str) -> int:
    value = env.get(name)
    try:
        return int(str(value))
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {value!r}") from None


def _explicit(env: Mapping[str, str]) -> Launch | None:
    if "JAX_NUM_PROCESSES" not in env:
        return None
    n = _int_var(env, "JAX_NUM_PROCESSES")
    if n <= 1:
        return None
    if not env.get("JAX_COORDINATOR_ADDRESS"):
        raise ValueError(f"JAX_NUM_PROCESSES={n} needs JAX_COORDINATOR_ADDRESS=host:port")
    if "JAX_PROCESS_ID" not in env:
        raise ValueError(
            "JAX_PROCESS_ID must be set with JAX_COORDINATOR_ADDRESS and JAX_NUM_PROCESSES"
        )
    pid = _int_var(env, "JAX_PROCESS_ID")
    if not 0 <= pid < n:
        raise ValueError(f"JAX_PROCESS_ID={pid} is outside 0..{n - 1} (JAX_NUM_PROCESSES={n})")
    return Launch(EXPLICIT, n, pid)


def jax_cluster(env: Mapping[str, str] | None = None) -> type | None:
    """The cluster class JAX's `jax.distributed.initialize()` would auto-detect, or None.

    Same rule as `ClusterEnv.auto_detect_unset_distributed_params` with no detection method:
    the first non-opt-in class, in declaration order, whose `is_env_present()` is true.
    """
    try:
        from jax._src import clusters

        types = list(clusters.ClusterEnv._cluster_types)
    except (ImportError, AttributeError) as e:  # a JAX without the cluster registry
        raise RuntimeError(
            f"cannot read JAX's cluster detection ({e}); launch with JAX_COORDINATOR_ADDRESS, "
            "JAX_NUM_PROCESSES and JAX_PROCESS_ID instead"
        ) from e
    with _environ_view(env):
        return next((c for c in types if not c.opt_in_only_method and c.is_env_present()), None)


def cluster_name(cls: type) -> str:
    """JAX's name for a cluster class (K8sCluster has none: "k8s")."""
    return getattr(cls, "name", "") or cls.__name__.removesuffix("Cluster").lower()


def detect_launch(env: Mapping[str, str] | None = None) -> Launch | None:
    """The multi-process launch we are part of, or None for a single process."""
    env = os.environ if env is None else env
    explicit = _explicit(env)
    if explicit is not None:
        return explicit
    cls = jax_cluster(env)
    if cls is None:
        return None
    name = cluster_name(cls)
    with _environ_view(env):
        try:
            n = int(cls.get_process_count())
        except Exception as e:  # any failure: name the cluster in the message
            raise RuntimeError(
                f"JAX detected a {name} cluster but not its process count: {e}"
            ) from e
    return Launch(name, n) if n > 1 else None


def launch_kind(env: Mapping[str, str] | None = None) -> str | None:
    """Which multi-process launcher started us ("explicit" or JAX's cluster name), or None."""
    launch = detect_launch(env)
    return None if launch is None else launch.kind


def maybe_initialize(env: Mapping[str, str] | None = None) -> bool:
    """Initialise jax.distributed when launched as one of several processes; True if it did."""
    env = os.environ if env is None else env
    launch = detect_launch(env)
    if launch is None:
        return False
    import jax

    if jax.distributed.is_initialized():
        return False
    if launch.kind == EXPLICIT:
        jax.distributed.initialize(
            coordinator_address=env["JAX_COORDINATOR_ADDRESS"],
            num_processes=launch.num_processes,
            process_id=launch.process_id,
        )
    else:
        # JAX repeats the detection above and fills in coordinator, count, id and local devices.
        with _environ_view(env):
            jax.distributed.initialize()
    return True
