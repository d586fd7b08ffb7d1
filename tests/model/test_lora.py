"""LoRA adapters: zero B is the base, the merged forward matches numpy-merged weights, gradients
reach only the adapters, the adapter layout follows the parameter table, sharded == unsharded."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrepair.config import ConfigError, LoraConfig
from jaxrepair.model import Qwen3Config, forward, init_params, make_mesh
from jaxrepair.model.lora import (
    adapter_shapes,
    adapter_shardings,
    init_adapters,
    merge,
    num_adapter_params,
)
from jaxrepair.model.sharding import param_shardings

LORA = LoraConfig(enabled=True, rank=4, alpha=8.0)
# jitted: op-by-op dispatch of the whole model compiles every op on its own
_forward = jax.jit(forward, static_argnums=1)
_merge = jax.jit(merge, static_argnums=(2, 3))


def _setup(preset: str, lora: LoraConfig = LORA, seed: int = 0):
    cfg = Qwen3Config.preset(preset)
    base = init_params(cfg, jax.random.key(seed))
    ad = init_adapters(cfg, lora, jax.random.key(seed + 1))
    # B starts at zero; give it values so the adapters change the model
    ad = jax.tree_util.tree_map_with_path(
        lambda path, x: (
            0.05
            * jax.random.normal(jax.random.key(hash(jax.tree_util.keystr(path)) % 997), x.shape)
            if jax.tree_util.keystr(path).endswith("['b']")
            else x
        ),
        ad,
    )
    tokens = jnp.asarray(np.random.default_rng(seed).integers(0, cfg.vocab_size, (2, 12)))
    return cfg, base, ad, tokens


def _numpy_merge(base, adapters, scale):
    """W + scale * A @ B per layer (and expert), in numpy float32: the independent reference."""
    out = jax.tree.map(lambda x: np.array(x, np.float32), base)
    for name, ab in adapters["layers"].items():
        a, b = np.asarray(ab["a"]), np.asarray(ab["b"])
        w = out["layers"][name]
        lead = 2 if name.startswith("experts_") else 1
        r = a.shape[-1]
        for idx in np.ndindex(*w.shape[:lead]):
            prod = a[idx].reshape(-1, r) @ b[idx].reshape(r, -1)
            w[idx] = w[idx] + scale * prod.reshape(w[idx].shape)
    return out


def test_zero_b_is_the_base_exactly():
    cfg = Qwen3Config.preset("tiny")
    base = init_params(cfg, jax.random.key(0))
    ad = init_adapters(cfg, LORA, jax.random.key(1))
    assert all(not np.any(np.asarray(ab["b"])) for ab in ad["layers"].values())
    assert all(np.any(np.asarray(ab["a"])) for ab in ad["layers"].values())
    merged = _merge(base, ad, cfg, LORA)
    for x, y in zip(jax.tree.leaves(merged), jax.tree.leaves(base), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    tokens = jnp.arange(10)[None] % cfg.vocab_size
    np.testing.assert_array_equal(_forward(merged, cfg, tokens), _forward(base, cfg, tokens))


@pytest.mark.parametrize("preset", ["tiny", pytest.param("tiny-moe", marks=pytest.mark.slow)])
def test_lora_forward_equals_numpy_merged_dense_forward(preset):
    cfg, base, ad, tokens = _setup(preset)
    ours = jax.jit(lambda b, a: forward(merge(b, a, cfg, LORA), cfg, tokens))(base, ad)
    ref_params = jax.tree.map(jnp.asarray, _numpy_merge(base, ad, LORA.alpha / LORA.rank))
    ref = _forward(ref_params, cfg, tokens)
    np.testing.assert_allclose(np.asarray(ours), np.asarray(ref), atol=1e-5, rtol=1e-5)
    # and the adapters did change the model
    assert np.abs(np.asarray(ref) - np.asarray(_forward(base, cfg, tokens))).max() > 1e-3


def test_adapter_layout_follows_the_parameter_table():
    cfg = Qwen3Config.preset("tiny-moe")
    shapes = adapter_shapes(cfg, LORA)["layers"]
    L, D, N, K, H, E, M = 2, 64, 4, 2, 16, 4, 64
    assert shapes["q_proj"]["a"].shape == (L, D, 4) and shapes["q_proj"]["b"].shape == (L, 4, N, H)
    assert shapes["k_proj"]["b"].shape == (L, 4, K, H)
    assert shapes["o_proj"]["a"].shape == (L, N, H, 4) and shapes["o_proj"]["b"].shape == (L, 4, D)
    assert shapes["experts_gate"]["a"].shape == (L, E, D, 4)
    assert shapes["experts_down"]["a"].shape == (L, E, M, 4)
    assert shapes["experts_down"]["b"].shape == (L, E, 4, D)
    assert "router" not in shapes and "gate_proj" not in shapes
    n = num_adapter_params(cfg, LORA)
    assert n == sum(int(np.prod(x.shape)) for x in jax.tree.leaves(adapter_shapes(cfg, LORA)))
    only_qv = LoraConfig(enabled=True, rank=2, targets=("q", "v"))
    assert set(adapter_shapes(cfg, only_qv)["layers"]) == {"q_proj", "v_proj"}
    with pytest.raises(ConfigError, match="lora.targets"):
        LoraConfig(targets=("q", "router"))


def test_gradients_reach_only_the_adapters():
    cfg, base, ad, tokens = _setup("tiny")

    def loss(b, a):
        logits = forward(merge(b, a, cfg, LORA), cfg, tokens)
        return jnp.mean(jax.nn.log_softmax(logits)[..., 5])

    g_base, g_ad = jax.jit(jax.grad(loss, argnums=(0, 1)))(base, ad)
    assert all(not np.any(np.asarray(g)) for g in jax.tree.leaves(g_base))
    assert all(np.any(np.asarray(g)) for g in jax.tree.leaves(g_ad))
    # the adapter gradient is the chain rule through the merged weight: dL/dA = s dL/dW B^T
    g_w = jax.jit(
        jax.grad(lambda p: jnp.mean(jax.nn.log_softmax(forward(p, cfg, tokens))[..., 5]))
    )(_merge(base, ad, cfg, LORA))
    s = LORA.alpha / LORA.rank
    gw_q = np.asarray(g_w["layers"]["q_proj"]).reshape(2, 64, -1)
    b_q = np.asarray(ad["layers"]["q_proj"]["b"]).reshape(2, 4, -1)
    want = s * gw_q @ b_q.transpose(0, 2, 1)
    np.testing.assert_allclose(np.asarray(g_ad["layers"]["q_proj"]["a"]), want, atol=1e-6)


def test_dropout_drops_input_features_of_a_and_only_with_an_rng():
    lora = LoraConfig(enabled=True, rank=4, alpha=8.0, dropout=0.5)
    cfg, base, ad, _ = _setup("tiny", lora)
    no_rng = _merge(base, ad, cfg, lora)
    ref = _numpy_merge(base, ad, lora.alpha / lora.rank)
    np.testing.assert_allclose(
        np.asarray(no_rng["layers"]["q_proj"]), ref["layers"]["q_proj"], atol=1e-6
    )
    a1 = jax.jit(lambda b, a, r: merge(b, a, cfg, lora, rng=r))(base, ad, jax.random.key(3))
    d = np.asarray(a1["layers"]["q_proj"]) - np.asarray(base["layers"]["q_proj"])
    rows_zero = np.all(d.reshape(2, 64, -1) == 0, axis=-1)
    assert 0.2 < rows_zero.mean() < 0.8  # about half of the input features dropped


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["tiny", "tiny-moe"])
def test_sharded_equals_unsharded(preset):
    if len(jax.devices()) < 8:
        pytest.skip("needs 8 devices (XLA_FLAGS=--xla_force_host_platform_device_count=8)")
    cfg, base, ad, tokens = _setup(preset)
    mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    sh_base = jax.device_put(base, param_shardings(base, mesh))
    sh_ad = jax.device_put(ad, adapter_shardings(cfg, LORA, mesh))
    # A shares the base's input-dim sharding, B its output-dim sharding
    q_spec = sh_base["layers"]["q_proj"].sharding.spec
    assert sh_ad["layers"]["q_proj"]["a"].sharding.spec[1] == q_spec[1] == "fsdp"
    assert sh_ad["layers"]["q_proj"]["b"].sharding.spec[2] == q_spec[2] == "tensor"
    o_spec = sh_base["layers"]["o_proj"].sharding.spec
    assert sh_ad["layers"]["o_proj"]["a"].sharding.spec[1] == o_spec[1] == "tensor"
    assert sh_ad["layers"]["o_proj"]["b"].sharding.spec[2] == o_spec[3] == "fsdp"

    def loss(b, a, m):
        logits = forward(merge(b, a, cfg, LORA), cfg, tokens, mesh=m)
        return jnp.mean(jax.nn.log_softmax(logits)[..., 7]), logits

    (l_ref, out_ref), g_ref = jax.value_and_grad(loss, argnums=1, has_aux=True)(base, ad, None)
    step = jax.jit(jax.value_and_grad(lambda b, a: loss(b, a, mesh), argnums=1, has_aux=True))
    (l_sh, out_sh), g_sh = step(sh_base, sh_ad)
    np.testing.assert_allclose(np.asarray(out_sh), np.asarray(out_ref), atol=1e-5)
    np.testing.assert_allclose(float(l_sh), float(l_ref), atol=1e-6)
    for a, b in zip(jax.tree.leaves(g_sh), jax.tree.leaves(g_ref), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-6)
    merged = jax.jit(lambda b, a: merge(b, a, cfg, LORA))(sh_base, sh_ad)
    assert merged["layers"]["q_proj"].sharding.is_equivalent_to(
        sh_base["layers"]["q_proj"].sharding, 4
    )
