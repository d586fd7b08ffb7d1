"""Compile time must not grow with depth when the layers are one scanned body (the default on
accelerators; CPU unrolls them unless `scan_layers` is set, see `qwen3.scans_layers`)."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp

from jaxrepair.model import Qwen3Config, forward, param_shapes


def _lowered(cfg: Qwen3Config):
    tokens = jax.ShapeDtypeStruct((2, 64), jnp.int32)
    return jax.jit(forward, static_argnums=1).lower(param_shapes(cfg), cfg, tokens)


def test_program_size_and_compile_time_independent_of_depth(capsys):
    base = Qwen3Config.preset(
        "tiny", hidden_size=128, intermediate_size=256, num_attention_heads=8, scan_layers=True
    )
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
    # unset, this CPU backend unrolls them
    cpu_default = len(_lowered(base.replace(num_hidden_layers=16, scan_layers=None)).as_text())
    assert cpu_default == unrolled
    with capsys.disabled():
        print(
            f"\n[compile] forward, 2 layers: {t2:.2f}s, 16 layers: {t16:.2f}s "
            f"(ratio {t16 / t2:.2f}x; program text {n2} vs {n16} chars, unrolled {unrolled})"
        )


def test_cpu_default_unrolls_only_without_remat():
    """Unset `scan_layers` unrolls on CPU only with remat "none": XLA:CPU drops the remat of
    unrolled layers (the step keeps nearly every activation), so a remat policy keeps the
    scan. XLA's own buffer assignment of the fwd+bwd program is the oracle."""
    base = Qwen3Config.preset(
        "tiny", hidden_size=128, intermediate_size=512, num_attention_heads=4, num_hidden_layers=6
    )
    tokens = jax.ShapeDtypeStruct((4, 256), jnp.int32)

    def temp_bytes(cfg: Qwen3Config) -> int:
        grad = jax.jit(jax.grad(lambda p, t: forward(p, cfg, t).mean()))
        return grad.lower(param_shapes(cfg), tokens).compile().memory_analysis().temp_size_in_bytes

    none = temp_bytes(base.replace(remat="none"))
    full = temp_bytes(base.replace(remat="full"))
    assert full < 0.5 * none, (full, none)
    assert full == temp_bytes(base.replace(remat="full", scan_layers=True))
