"""Compile time must not grow with depth: the layers are one scanned body, not unrolled."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp

from jaxrepair.model import Qwen3Config, forward, param_shapes


def _lowered(cfg: Qwen3Config):
    tokens = jax.ShapeDtypeStruct((2, 64), jnp.int32)
    return jax.jit(forward, static_argnums=1).lower(param_shapes(cfg), cfg, tokens)


def test_program_size_and_compile_time_independent_of_depth(capsys):
    base = Qwen3Config.preset("tiny", hidden_size=128, intermediate_size=256, num_attention_heads=8)
    results = {}
    for layers in (2, 16):
        cfg = base.replace(num_hidden_layers=layers)
        t0 = time.perf_counter()
        lowered = _lowered(cfg)
        lowered.compile()
        results[layers] = (time.perf_counter() - t0, len(lowered.as_text()))
    # Deterministic proxy for "compile time does not grow with depth": the program text is the
    # same size up to the digits of the layer count in the shapes.
    (t2, n2), (t16, n16) = results[2], results[16]
    assert abs(n16 - n2) < 0.01 * n2, (n2, n16)
    # an unrolled variant must be visibly larger, or the proxy proves nothing
    unrolled = len(_lowered(base.replace(num_hidden_layers=16, scan_layers=False)).as_text())
    assert unrolled > 4 * n16
    with capsys.disabled():
        print(
            f"\n[compile] forward, 2 layers: {t2:.2f}s, 16 layers: {t16:.2f}s "
            f"(ratio {t16 / t2:.2f}x; program text {n2} vs {n16} chars, unrolled {unrolled})"
        )
