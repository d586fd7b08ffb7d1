"""Sharded forward on 8 simulated CPU devices equals the unsharded one, with params really split."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrepair.model import Qwen3Config, ShardingError, forward, init_params, load_hf, make_mesh
from jaxrepair.model.sharding import param_shardings
from tests.model.hf_oracle import make_hf_model

# heads 8 / kv heads 2 / hidden 64 / mlp 128 / vocab 128 divide every mesh below
CFG = Qwen3Config(
    vocab_size=128,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=8,
    num_key_value_heads=2,
    head_dim=16,
    rope_theta=10000.0,
    tie_word_embeddings=False,
)

MESHES = [
    {"fsdp": 8},
    {"fsdp": 4, "tensor": 2},
    {"data": 2, "fsdp": 2, "tensor": 2},
]


def _shard_shape(x: jax.Array) -> tuple[int, ...]:
    shapes = {s.data.shape for s in x.addressable_shards}
    assert len(shapes) == 1
    return shapes.pop()


# the three-axis mesh runs in the default suite; the one- and two-axis meshes (each of its
# axes alone or in pairs) in the slow tier
@pytest.mark.parametrize(
    "shape",
    [pytest.param(m, marks=pytest.mark.slow) for m in MESHES[:2]] + MESHES[2:],
    ids=lambda s: "-".join(f"{k}{v}" for k, v in s.items()),
)
def test_sharded_forward_equals_unsharded(shape):
    assert jax.device_count() == 8, "tests/conftest.py must set 8 host devices"
    key = jax.random.key(0)
    params_ref = init_params(CFG, key)
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, CFG.vocab_size, size=(8, 24)))
    ref = np.asarray(jax.jit(forward, static_argnums=1)(params_ref, CFG, tokens))

    mesh = make_mesh(shape)
    params = init_params(CFG, key, mesh=mesh)
    # created directly sharded, and identical values to the unsharded init
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(params_ref), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    fsdp, tp = mesh.shape["fsdp"], mesh.shape["tensor"]
    L, D, N, K, H, F, V = 2, 64, 8, 2, 16, 128, 128
    assert _shard_shape(params["layers"]["q_proj"]) == (L, D // fsdp, N // tp, H)
    assert _shard_shape(params["layers"]["k_proj"]) == (L, D // fsdp, K // tp, H)
    assert _shard_shape(params["layers"]["o_proj"]) == (L, N // tp, H, D // fsdp)
    assert _shard_shape(params["layers"]["gate_proj"]) == (L, D // fsdp, F // tp)
    assert _shard_shape(params["layers"]["down_proj"]) == (L, F // tp, D // fsdp)
    assert _shard_shape(params["embed"]) == (V // tp, D // fsdp)
    assert _shard_shape(params["lm_head"]) == (D // fsdp, V // tp)

    shardings = param_shardings(params, mesh)
    batch_sharding = jax.sharding.NamedSharding(
        mesh, jax.sharding.PartitionSpec(("data", "fsdp"), None)
    )
    out_sharding = jax.sharding.NamedSharding(
        mesh, jax.sharding.PartitionSpec(("data", "fsdp"), None, "tensor")
    )
    fwd = jax.jit(
        lambda p, t: forward(p, CFG, t, mesh=mesh),
        in_shardings=(shardings, batch_sharding),
        out_shardings=out_sharding,
    )
    out = fwd(params, jax.device_put(tokens, batch_sharding))
    assert out.sharding.is_equivalent_to(out_sharding, 3)
    np.testing.assert_allclose(np.asarray(out), ref, atol=1e-5, rtol=1e-5)


def test_load_hf_places_shards_directly(tmp_path):
    make_hf_model(tmp_path, num_attention_heads=4, num_key_value_heads=2, hidden_size=64)
    mesh = make_mesh({"fsdp": 4, "tensor": 2})
    cfg, params = load_hf(tmp_path, mesh=mesh, dtype=jnp.float32)
    _, ref_params = load_hf(tmp_path, dtype=jnp.float32)
    assert _shard_shape(params["layers"]["q_proj"]) == (2, 16, 2, 16)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(ref_params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_mesh_that_does_not_divide_heads_is_refused():
    cfg = CFG.replace(num_attention_heads=6, num_key_value_heads=3)
    mesh = make_mesh({"fsdp": 2, "tensor": 4})
    with pytest.raises(ShardingError, match="num_attention_heads=6"):
        init_params(cfg, jax.random.key(0), mesh=mesh)


def test_mesh_sizes_are_checked():
    with pytest.raises(ShardingError, match="needs 12 devices"):
        make_mesh({"fsdp": 4, "tensor": 3})
    with pytest.raises(ShardingError, match="only one mesh axis may be -1"):
        make_mesh({"fsdp": -1, "tensor": -1})
    with pytest.raises(ShardingError, match="unknown mesh axes"):
        make_mesh({"model": 8})
    assert dict(make_mesh({"data": 2, "tensor": 2, "fsdp": -1}).shape) == {
        "data": 2,
        "fsdp": 2,
        "tensor": 2,
    }
