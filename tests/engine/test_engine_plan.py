"""The memory planner's rollout-engine rows against the engine's real buffers.

Oracle: the bytes of the weights and KV pool that a `JaxEngine` built from an `[engine]`
section actually holds on one of its devices (2-way tensor parallel on CPU devices).
"""

from __future__ import annotations

import jax
import pytest

from jaxrepair.config import EngineSection
from jaxrepair.engine.jax_engine import engine_from_config
from jaxrepair.model import Qwen3Config, init_params
from jaxrepair.planner import engine_rows


def _bytes_on(tree, device) -> int:
    return sum(
        s.data.nbytes
        for x in jax.tree.leaves(tree)
        for s in x.addressable_shards
        if s.device == device
    )


@pytest.mark.parametrize("tensor", [1, 2])
def test_engine_rows_equal_the_engines_buffers_per_device(tensor):
    cfg = Qwen3Config.preset("tiny")
    section = EngineSection(
        enabled=True, tensor=tensor, num_blocks=64, block_size=16, slots=4, dtype="bfloat16"
    )
    engine = engine_from_config(section, init_params(cfg, jax.random.key(0)), cfg, 512)
    dev = jax.local_devices()[0]
    rows = engine_rows(cfg, section, 512)
    weights = next(v for k, v in rows.items() if k.startswith("engine weights"))
    pool = next(v for k, v in rows.items() if k.startswith("engine KV pool"))
    assert weights == _bytes_on(engine.params, dev)
    assert pool == _bytes_on(engine.pool, dev)
    # the transient is positive and grows with the context the engine serves
    step = next(v for k, v in rows.items() if k.startswith("engine step"))
    assert (
        0
        < step
        < next(v for k, v in engine_rows(cfg, section, 4096).items() if k.startswith("engine step"))
    )
