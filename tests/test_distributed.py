"""Multi-process detection agrees with JAX's own `jax.distributed` start-up.

The oracle is JAX itself: `jax._src.distributed.State.initialize()` run with no arguments under
a fake environment, stopped just before it would open a connection, reports the coordinator,
process count, process id and visible devices JAX would use. We initialise exactly when that
is a cluster of more than one process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from jaxrepair import distributed

REPO = Path(__file__).resolve().parents[1]
_PREFIXES = ("SLURM_", "OMPI_", "TPU_", "MEGASCALE_", "JAX_", "KUBERNETES_", "GCE_")


class _Stop(Exception):
    pass


def _set_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for k in list(os.environ):
        if k.startswith(_PREFIXES):
            monkeypatch.delenv(k)
    for k, v in env.items():
        monkeypatch.setenv(k, v)


def _fake_tpu_vm(monkeypatch: pytest.MonkeyPatch, metadata: dict[str, str]) -> None:
    """Make JAX believe it runs on a Cloud TPU VM whose metadata server holds `metadata`."""
    from jax._src.clusters import cloud_tpu_cluster, cluster

    monkeypatch.setattr(cloud_tpu_cluster, "running_in_cloud_tpu_vm", True)
    monkeypatch.setattr(cluster, "running_in_cloud_tpu_vm", True)
    monkeypatch.setattr(
        cloud_tpu_cluster,
        "get_metadata",
        lambda key: (metadata[key], 200) if key in metadata else ("", 404),
    )


def jax_initialize_args(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> dict | None:
    """What `jax.distributed.initialize()` would use under `env`, or None if it finds no cluster."""
    import jax
    from jax._src import distributed as jd
    from jax._src import xla_bridge

    _set_env(monkeypatch, env)
    seen: dict = {}

    class FakeRuntime:
        def get_distributed_runtime_service(self, address, num_processes, **kw):
            return object()

        def get_distributed_runtime_client(self, address, process_id, **kw):
            seen.update(coordinator=address, process_id=process_id)
            raise _Stop

    monkeypatch.setattr(jd, "_jax", FakeRuntime())
    before = xla_bridge.CUDA_VISIBLE_DEVICES.value
    before_rocm = xla_bridge._ROCM_VISIBLE_DEVICES.value
    state = jd.State()
    try:
        state.initialize()
    except _Stop:
        pass
    except ValueError as e:
        assert "coordinator_address should be defined" in str(e)
        return None
    finally:
        after = xla_bridge.CUDA_VISIBLE_DEVICES.value
        jax.config.update("jax_cuda_visible_devices", before)
        jax.config.update("jax_rocm_visible_devices", before_rocm)
    return dict(seen, num_processes=state.num_processes, visible_devices=after)


ENDPOINTS4 = "w-0:0:10.0.0.1,w-1:1:10.0.0.2,w-2:2:10.0.0.3,w-3:3:10.0.0.4"
OMPI_URI = "1531576320.0;tcp://10.96.0.1,10.148.0.1:34911"
CASES = [
    # (id, env, fake TPU VM metadata or None, expected kind, expected process count)
    ("nothing", {}, None, None, None),
    ("slurm-batch-step", {"SLURM_JOB_ID": "7", "SLURM_NTASKS": "16"}, None, None, None),
    (
        "slurm-srun-2",
        {
            "SLURM_JOB_ID": "7",
            "SLURM_STEP_NODELIST": "gpu[001-002]",
            "SLURM_NTASKS": "2",
            "SLURM_PROCID": "1",
            "SLURM_LOCALID": "0",
        },
        None,
        "slurm",
        2,
    ),
    (
        "slurm-srun-1",
        {
            "SLURM_JOB_ID": "7",
            "SLURM_STEP_NODELIST": "gpu001",
            "SLURM_NTASKS": "1",
            "SLURM_PROCID": "0",
            "SLURM_LOCALID": "0",
        },
        None,
        None,
        None,
    ),
    (
        "openmpi-4",
        {
            "OMPI_MCA_orte_hnp_uri": OMPI_URI,
            "OMPI_COMM_WORLD_SIZE": "4",
            "OMPI_COMM_WORLD_RANK": "3",
            "OMPI_COMM_WORLD_LOCAL_RANK": "1",
        },
        None,
        "ompi",
        4,
    ),
    ("hostnames-off-tpu", {"TPU_WORKER_HOSTNAMES": "a,b,c,d"}, None, None, None),
    (
        "gke-tpu-2",
        {"TPU_WORKER_HOSTNAMES": "10.1.0.1,10.1.0.2", "TPU_WORKER_ID": "1"},
        {"tpu-env": ""},
        "gketpu",
        2,
    ),
    (  # a plain ssh shell on a pod host: nothing in the environment, all in the metadata
        "gce-tpu-pod-ssh",
        {},
        {"agent-worker-number": "2", "worker-network-endpoints": ENDPOINTS4, "tpu-env": ""},
        "gcetpu",
        4,
    ),
    (
        "gce-tpu-single-host",
        {},
        {"agent-worker-number": "0", "worker-network-endpoints": "w-0:0:10.0.0.1", "tpu-env": ""},
        None,
        None,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_detection_matches_jax_initialize(monkeypatch, case):
    _, env, metadata, kind, count = case
    if metadata is not None:
        _fake_tpu_vm(monkeypatch, metadata)
    jax_args = jax_initialize_args(monkeypatch, env)  # leaves `env` as the process environment
    ours = distributed.detect_launch()
    if jax_args is None or jax_args["num_processes"] == 1:
        assert ours is None
    else:
        assert ours is not None and ours.num_processes == jax_args["num_processes"]
    assert (ours and ours.kind, ours and ours.num_processes) == (kind, count)
    assert distributed.launch_kind() == kind
    # The same answer when the environment is passed as a mapping instead.
    _set_env(monkeypatch, {})
    assert distributed.detect_launch(env) == ours


def test_gce_pod_ssh_shell_gets_coordinator_from_metadata(monkeypatch):
    _fake_tpu_vm(
        monkeypatch,
        {"agent-worker-number": "2", "worker-network-endpoints": ENDPOINTS4, "tpu-env": ""},
    )
    got = jax_initialize_args(monkeypatch, {})
    assert got["coordinator"] == "10.0.0.1:8482" and got["process_id"] == 2
    assert got["visible_devices"] == "all"  # on TPU JAX never restricts local devices


@pytest.fixture
def recorded_initialize(monkeypatch):
    import jax

    calls: list[dict] = []

    def initialize(*args, **kwargs):
        assert not args
        calls.append(dict(kwargs, seen_procid=os.environ.get("SLURM_PROCID")))

    monkeypatch.setattr(jax.distributed, "initialize", initialize)
    monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)
    return calls


def test_maybe_initialize_single_process_does_nothing(monkeypatch, recorded_initialize):
    _set_env(monkeypatch, {"SLURM_JOB_ID": "7", "SLURM_NTASKS": "16"})
    assert distributed.maybe_initialize() is False
    assert distributed.maybe_initialize({}) is False
    assert recorded_initialize == []


def test_maybe_initialize_cluster_lets_jax_detect_the_same_env(monkeypatch, recorded_initialize):
    _set_env(monkeypatch, {})
    env = dict(CASES[2][1])
    assert distributed.maybe_initialize(env) is True
    # JAX is called with no arguments and sees the environment we detected from.
    assert recorded_initialize == [{"seen_procid": "1"}]
    assert "SLURM_PROCID" not in os.environ


def test_maybe_initialize_explicit(monkeypatch, recorded_initialize):
    _set_env(monkeypatch, {})
    env = {"JAX_COORDINATOR_ADDRESS": "h:1234", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1"}
    assert distributed.maybe_initialize(env) is True
    assert recorded_initialize == [
        {"coordinator_address": "h:1234", "num_processes": 2, "process_id": 1, "seen_procid": None}
    ]
    assert distributed.launch_kind({**env, "JAX_NUM_PROCESSES": "1"}) is None


@pytest.mark.parametrize(
    "env, message",
    [
        ({"JAX_NUM_PROCESSES": "2"}, "JAX_PROCESS_ID must be set"),
        (
            {"JAX_NUM_PROCESSES": "two", "JAX_PROCESS_ID": "0"},
            "JAX_NUM_PROCESSES must be an integer",
        ),
        ({"JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "2"}, "JAX_PROCESS_ID=2 is outside 0..1"),
    ],
)
def test_explicit_env_errors_are_clear(env, message):
    with pytest.raises(ValueError, match=message):
        distributed.launch_kind({"JAX_COORDINATOR_ADDRESS": "h:1", **env})
    with pytest.raises(ValueError, match="JAX_NUM_PROCESSES=2 needs JAX_COORDINATOR_ADDRESS"):
        distributed.launch_kind({"JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "0"})


def test_single_host_cli_process_never_waits_for_a_coordinator():
    """A real process in a SLURM batch step (16 tasks allocated, not yet srun) starts alone."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_PREFIXES)}
    env.update(SLURM_JOB_ID="7", SLURM_NTASKS="16", SLURM_PROCID="0", SLURM_LOCALID="0")
    code = "from jaxrepair.distributed import maybe_initialize; print(maybe_initialize())"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr
