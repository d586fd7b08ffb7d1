"""Flash-attention kernels against the reference attention.

"splash" (Pallas TPU splash attention) runs on CPU in Pallas TPU interpret mode: values and
gradients (dq, dk, dv) against `attention(..., "reference")` for causal rows, packed rows with
padding, GQA and a length that needs padding to the 128 tile; then the whole Qwen3 forward
(logits and parameter gradients), alone and sharded per device with shard_map.

"cudnn" cannot run without an NVIDIA GPU: on CPU its packed-row tables are checked against a
numpy oracle, and the packed path is run end to end with the cuDNN call replaced by a numpy
kernel that reads those tables as cuDNN documents them. A GPU-only test runs the real kernel.

The sharded interpret-mode test uses 4 of the 8 CPU devices: with all 8, the interpreter's
per-device callbacks exhaust XLA:CPU's thread pool on a 2-core host and deadlock.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental.pallas import tpu as pltpu
from jax.sharding import NamedSharding, PartitionSpec

from jaxrepair.model import Qwen3Config, forward, init_params
from jaxrepair.model import attention as attn_mod
from jaxrepair.model import splash as splash_mod
from jaxrepair.model.attention import attention, cudnn_segment_layout, make_cudnn_attention
from jaxrepair.model.sharding import make_mesh, param_shardings, shard_params
from jaxrepair.model.splash import block_size, padded_length, splash_available

pytestmark = pytest.mark.skipif(not splash_available(), reason="jax lacks Pallas TPU kernels")


def _qkv(b: int, t: int, n: int, k: int, h: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    q, kk, v, w = (
        jnp.asarray(rng.standard_normal(s), jnp.float32)
        for s in ((b, t, n, h), (b, t, k, h), (b, t, k, h), (b, t, n, h))
    )
    return q, kk, v, w


def _packed_segments(b: int, t: int) -> jnp.ndarray:
    """Rows of several documents (ids 1, 2, 3, ...) with a padding tail (id 0), boundaries
    inside and across 128-token tiles."""
    seg = np.zeros((b, t), np.int32)
    for r in range(b):
        cuts = sorted({37 + 50 * r, 130, 200 + 10 * r, t - 40 - 20 * r})
        bounds = [0, *cuts]
        for i in range(len(bounds) - 1):
            seg[r, bounds[i] : bounds[i + 1]] = i + 1
        # tail after the last cut stays 0 (padding)
    return jnp.asarray(seg)


def _value_and_grads(impl, q, k, v, w, seg, mesh=None):
    def loss(q_, k_, v_):
        out = attention(q_, k_, v_, None, impl, segment_ids=seg, mesh=mesh)
        return jnp.sum(out * w), out

    (_, out), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(q, k, v)
    return out, grads


@pytest.mark.parametrize(
    "b,t,packed", [(1, 384, False), (2, 300, True)], ids=["causal", "packed-pad-to-tile"]
)
def test_splash_matches_reference_values_and_grads(b, t, packed):
    n, k, h = 4, 2, 64  # GQA: 2 query heads per kv head; 300 tokens run as 3 x 3 tiles of 128
    q, kk, v, w = _qkv(b, t, n, k, h)
    seg = _packed_segments(b, t) if packed else None
    ref_out, ref_grads = _value_and_grads("reference", q, kk, v, w, seg)
    with pltpu.force_tpu_interpret_mode():
        out, grads = _value_and_grads("splash", q, kk, v, w, seg)
    errs = [float(jnp.max(jnp.abs(out - ref_out)))]
    errs += [float(jnp.max(jnp.abs(a - r))) for a, r in zip(grads, ref_grads, strict=True)]
    print(f"splash t={t} packed={packed}: max |err| out, dq, dk, dv = {errs}")
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref_out), atol=1e-5, rtol=1e-5)
    for a, r in zip(grads, ref_grads, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(r), atol=5e-5, rtol=1e-4)


def test_splash_tiles():
    assert padded_length(300) == 384 and block_size(384) == 128
    assert block_size(padded_length(32768)) == 512 and block_size(768) == 256
    with pytest.raises(ValueError, match="divisible by 128"):
        block_size(200)


def _tiny_cfg(impl: str) -> Qwen3Config:
    return Qwen3Config.preset("tiny", head_dim=64, attention_impl=impl)


def _model_value_and_grads(cfg, params, tokens, seg, mesh=None):
    def loss(p):
        logits = forward(p, cfg, tokens, segment_ids=seg, mesh=mesh)
        return jnp.sum(jnp.sin(logits)) / (logits.shape[0] * logits.shape[1]), logits

    (_, logits), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
    return logits, grads


@pytest.mark.parametrize(
    "sharded",
    # the unsharded kernel path is covered above; the whole model unsharded is the slow tier
    [pytest.param(False, marks=pytest.mark.slow), True],
    ids=["one-device", "mesh-fsdp2-tensor2"],
)
def test_qwen3_forward_splash_equals_reference(sharded):
    cfg = _tiny_cfg("splash")
    b, t = (4, 256) if sharded else (2, 256)  # 2 rows per device when sharded
    rng = np.random.default_rng(1)
    tokens = jnp.asarray(rng.integers(0, cfg.vocab_size, size=(b, t)), jnp.int32)
    seg = _packed_segments(b, t)
    mesh = make_mesh({"fsdp": 2, "tensor": 2}, jax.devices()[:4]) if sharded else None
    params = init_params(cfg, jax.random.key(0))
    ref_logits, ref_grads = _model_value_and_grads(
        cfg.replace(attention_impl="reference"), params, tokens, seg
    )
    run_params = shard_params(params, mesh) if sharded else params
    with pltpu.force_tpu_interpret_mode():
        logits, grads = _model_value_and_grads(cfg, run_params, tokens, seg, mesh)
    leaves = jax.tree.leaves(grads)
    ref_leaves = jax.tree.leaves(ref_grads)
    grad_err = max(float(jnp.max(jnp.abs(a - r))) for a, r in zip(leaves, ref_leaves, strict=True))
    logit_err = float(jnp.max(jnp.abs(logits - ref_logits)))
    print(f"qwen3 splash sharded={sharded}: max |err| logits {logit_err:.2e}, grads {grad_err:.2e}")
    np.testing.assert_allclose(np.asarray(logits), np.asarray(ref_logits), atol=1e-5, rtol=1e-5)
    for a, r in zip(leaves, ref_leaves, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(r), atol=1e-5, rtol=1e-4)


def _tt_tensors(impl: str, monkeypatch) -> tuple[int, list[str]]:
    """Export a sharded bf16 training step for TPU; count Mosaic kernels and list [T, T] types."""
    monkeypatch.setattr(splash_mod, "_check_platform", lambda mesh: None)  # exporting for TPU
    cfg = Qwen3Config.preset("tiny", head_dim=128, attention_impl=impl, remat="full")
    mesh = make_mesh({"fsdp": 4, "tensor": 2})
    shapes = jax.eval_shape(lambda: init_params(cfg, jax.random.key(0)))
    shapes = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, jnp.bfloat16), shapes)
    rows = NamedSharding(mesh, PartitionSpec(("data", "fsdp"), None))
    tokens = jax.ShapeDtypeStruct((8, 1024), jnp.int32)

    def loss(p, tok, seg):
        return forward(p, cfg, tok, segment_ids=seg, mesh=mesh).astype(jnp.float32).mean()

    step = jax.jit(jax.grad(loss), in_shardings=(param_shardings(shapes, mesh), rows, rows))
    text = jax.export.export(step, platforms=["tpu"])(shapes, tokens, tokens).mlir_module()
    return text.count("tpu_custom_call"), sorted(set(re.findall(r"tensor<[0-9x]*1024x1024x", text)))


def test_splash_lowers_for_tpu_without_a_t_by_t_buffer(monkeypatch):
    """The sharded, rematerialised training step lowers through Mosaic for TPU (forward, dq
    and dkv kernels) and, unlike the XLA kernel, holds no [T, T] tensor anywhere."""
    kernels, tt = _tt_tensors("splash", monkeypatch)
    assert kernels >= 3 and tt == [], (kernels, tt)
    kernels, tt = _tt_tensors("xla", monkeypatch)
    assert kernels == 0 and tt, "the oracle: dense attention does build [T, T] tensors"


def test_splash_errors_are_clear():
    q, k, v, _ = _qkv(1, 128, 4, 2, 64)
    with pytest.raises(ValueError, match="runs on TPU only"):
        attention(q, k, v, None, "splash")
    # kv heads that the tensor axis cannot split while query heads are split
    q1, k1, v1, _ = _qkv(2, 128, 4, 1, 64)
    mesh = make_mesh({"fsdp": 2, "tensor": 2}, jax.devices()[:4])
    with pltpu.force_tpu_interpret_mode(), pytest.raises(ValueError, match="split alike"):
        attention(q1, k1, v1, None, "splash", mesh=mesh)
    with pytest.raises(ValueError, match="not both"):
        attention(
            q, k, v, jnp.ones((1, 1, 128, 128), bool), "splash", segment_ids=jnp.ones((1, 128))
        )


def test_cache_calls_keep_the_mask_path():
    """prefill_cache passes an explicit mask: "splash" answers it with the XLA kernel (no
    Pallas call, so it runs on CPU without interpret mode)."""
    q, k, v, _ = _qkv(2, 4, 4, 2, 64)
    mask = jnp.tril(jnp.ones((4, 4), bool))[None, None].repeat(2, 0)
    out = attention(q, k, v, mask, "splash")
    ref = attention(q, k, v, mask, "reference")
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=1e-6)


# ----------------------------------------------------------------------------- cuDNN
def _runs_oracle(seg_row: np.ndarray) -> list[tuple[int, int]]:
    runs, start = [], 0
    for i in range(1, len(seg_row) + 1):
        if i == len(seg_row) or seg_row[i] != seg_row[start]:
            runs.append((start, i - start))
            start = i
    return runs


def test_cudnn_segment_layout_matches_numpy():
    seg = np.array(_packed_segments(3, 300))
    seg[2, 10:20] = 7  # a short document early in the row
    offsets, lengths, count = map(np.asarray, cudnn_segment_layout(jnp.asarray(seg), 8))
    for r in range(seg.shape[0]):
        runs = _runs_oracle(seg[r])
        assert count[r] == len(runs)
        m = len(runs)
        np.testing.assert_array_equal(offsets[r, :m], [s for s, _ in runs])
        np.testing.assert_array_equal(lengths[r, :m], [n for _, n in runs])
        assert (offsets[r, m:] == -1).all() and (lengths[r, m:] == -1).all()
        assert lengths[r, :m].sum() == seg.shape[1]  # every token (padding too) is covered


def _numpy_cudnn_packed(q, k, v, lengths, offsets):
    """What cuDNN's packed layout computes: each (offset, length) segment attends causally to
    itself only (scale 1/sqrt(H), GQA groups of N/K query heads per kv head)."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    lengths, offsets = np.asarray(lengths), np.asarray(offsets)
    b, t, n, h = q.shape
    g = n // k.shape[2]
    out = np.zeros_like(q)
    for r in range(b):
        for s, ln in zip(offsets[r], lengths[r], strict=False):
            if s < 0 or ln < 0:
                continue
            for head in range(n):
                qs, ks, vs = (
                    q[r, s : s + ln, head],
                    k[r, s : s + ln, head // g],
                    v[r, s : s + ln, head // g],
                )
                logits = qs @ ks.T / np.sqrt(h)
                logits = np.where(np.tril(np.ones((ln, ln), bool)), logits, -np.inf)
                p = np.exp(logits - logits.max(-1, keepdims=True))
                out[r, s : s + ln, head] = (p / p.sum(-1, keepdims=True)) @ vs
    return jnp.asarray(out, jnp.float32)


def test_cudnn_packed_rows_match_reference_with_numpy_kernel(monkeypatch):
    monkeypatch.setattr(attn_mod, "_cudnn_packed_call", _numpy_cudnn_packed)
    q, k, v, _ = _qkv(3, 256, 4, 2, 16)
    seg_np = np.array(_packed_segments(3, 256))
    seg_np[0] = 1
    seg_np[0, 200:] = 0  # one document and its padding: 2 runs
    seg = jnp.asarray(seg_np)
    out = make_cudnn_attention(8)(q, k, v, seg, None)
    ref = attention(q, k, v, None, "reference", segment_ids=seg)
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=1e-5, rtol=1e-5)
    # a row with more runs than the static tables hold is NaN, never silently mixed
    too_many = make_cudnn_attention(3)(q, k, v, seg, None)
    counts = np.asarray(cudnn_segment_layout(seg, 3)[2])
    assert list(counts) == [2, 5, 5]
    np.testing.assert_allclose(np.asarray(too_many[0]), np.asarray(ref[0]), atol=1e-5, rtol=1e-5)
    assert np.isnan(np.asarray(too_many[1:])).all()
    with pytest.raises(ValueError, match="at least 2"):
        make_cudnn_attention(1)


@pytest.mark.skipif(jax.default_backend() != "gpu", reason="cuDNN flash attention needs a GPU")
def test_cudnn_on_gpu_matches_reference():  # pragma: no cover - GPU only
    q, k, v, w = (x.astype(jnp.bfloat16) for x in _qkv(2, 512, 8, 2, 128))
    for seg in (None, _packed_segments(2, 512)):
        out, grads = _value_and_grads("cudnn", q, k, v, w, seg)
        ref, ref_grads = _value_and_grads("reference", q, k, v, w, seg)
        np.testing.assert_allclose(
            np.asarray(out, np.float32), np.asarray(ref, np.float32), atol=2e-2, rtol=2e-2
        )
        for a, r in zip(grads, ref_grads, strict=True):
            np.testing.assert_allclose(
                np.asarray(a, np.float32), np.asarray(r, np.float32), atol=1e-1, rtol=5e-2
            )
