"""Every shipped launch config runs as documented: its [mesh] states the launch (devices,
hbm_gib), the mesh splits that device count, the trainer's batch rule holds and the memory
planner says the step fits."""

from __future__ import annotations

import types
from pathlib import Path

import pytest

from jaxrepair.config import load_config
from jaxrepair.model.config import Qwen3Config
from jaxrepair.model.sharding import check_mesh_fits
from jaxrepair.planner import FLASH_IMPLS, check_divisibility, infer_kind, plan_for_config
from jaxrepair.train.trainer import batch_parallelism

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "launch" / "configs").glob("*.toml"))
LONG_CONTEXT = 16384  # from here on a dense [T, T] attention buffer does not fit a device


def test_configs_are_shipped():
    assert len(CONFIGS) >= 16


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_config_fits_at_its_documented_device_count(path):
    rc = load_config(path)
    kind = infer_kind(rc)
    assert path.stem.endswith(f"_{kind}"), f"{path.name} reads as a {kind} config"
    assert rc.mesh.devices is not None and rc.mesh.hbm_gib is not None, (
        f"{path.name}: [mesh] must state devices and hbm_gib"
    )
    sizes = rc.mesh.resolve(rc.mesh.devices)
    mesh = types.SimpleNamespace(shape=sizes)
    # the trainer's own rule: rows of one update over data x fsdp devices x grad_accum
    dp = batch_parallelism(mesh)
    rows = rc.data.batch_size if kind == "sft" else rc.grpo.minibatch_size
    rows = rows or rc.grpo.tasks_per_step * rc.grpo.group_size
    assert rows % (dp * rc.optim.grad_accum) == 0, (path.name, rows, dp, rc.optim.grad_accum)
    if kind == "grpo":
        assert (rc.grpo.tasks_per_step * rc.grpo.group_size) % rows == 0
    check_divisibility(rc, kind, sizes)  # the planner agrees with the rule above
    check_mesh_fits(Qwen3Config.preset(rc.model.preset), mesh)
    if rc.data.seq_len >= LONG_CONTEXT:
        assert rc.model.attention_impl in FLASH_IMPLS, (path.name, rc.model.attention_impl)
    plan = plan_for_config(rc)
    print(f"\n{path.name}: {plan.total / 2**30:.1f} GiB of {rc.mesh.hbm_gib} GiB per device")
    assert plan.fits, f"{path.name} does not fit:\n{plan.rows}"
