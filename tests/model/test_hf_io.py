"""save_hf output loads in transformers; load -> save -> load is exact; bad checkpoints are named."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file
from transformers import AutoModelForCausalLM

from jaxrepair.model import (
    CheckpointMismatch,
    ConfigError,
    Qwen3Config,
    forward,
    init_params,
    load_hf,
    save_hf,
)
from tests.model.hf_oracle import hf_logits, make_hf_model


@pytest.mark.parametrize("tied", [False, True])
def test_save_hf_loads_in_transformers_with_identical_logits(tmp_path, tied):
    cfg = Qwen3Config.preset("tiny", tie_word_embeddings=tied, num_hidden_layers=3, head_dim=24)
    params = init_params(cfg, jax.random.key(1))
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "tokenizer.json").write_text('{"stand-in": true}')
    # tiny shards force the sharded layout with an index
    out = save_hf(
        tmp_path / "out",
        cfg,
        params,
        dtype="float32",
        max_shard_bytes=200_000,
        tokenizer_from=tmp_path / "src",
    )
    files = sorted(p.name for p in out.glob("model-*.safetensors"))
    assert len(files) > 1 and files[0].endswith(f"-of-{len(files):05d}.safetensors")
    assert (out / "generation_config.json").is_file() and (out / "tokenizer.json").is_file()
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == set(files)

    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    tokens = np.random.default_rng(0).integers(0, cfg.vocab_size, size=(2, 19))
    ours = np.asarray(forward(params, cfg, jnp.asarray(tokens)))
    assert np.abs(hf_logits(model, tokens) - ours).max() <= 1e-4


def test_load_save_load_is_exact(tmp_path):
    make_hf_model(tmp_path / "a", num_hidden_layers=2)
    cfg, params = load_hf(tmp_path / "a", dtype=jnp.float32)
    save_hf(tmp_path / "b", cfg, params, dtype="float32")
    cfg2, params2 = load_hf(tmp_path / "b", dtype=jnp.float32)
    assert cfg2 == cfg
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(params2), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # and the tensors on disk are bit-identical to transformers' own save
    orig = load_file(tmp_path / "a" / "model.safetensors")
    again = {}
    for f in (tmp_path / "b").glob("model-*.safetensors"):
        again.update(load_file(f))
    assert orig.keys() == again.keys()
    for k in orig:
        np.testing.assert_array_equal(orig[k], again[k])


def test_bf16_export_round_trips(tmp_path, tiny):
    cfg, params = tiny
    params = jax.tree.map(lambda p: p.astype(jnp.bfloat16), params)
    save_hf(tmp_path, cfg, params)  # bfloat16 on disk by default
    cfg2, params2 = load_hf(tmp_path, dtype=jnp.bfloat16)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(params2), strict=True):
        np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))


def _single_file(tmp_path):
    make_hf_model(tmp_path, num_hidden_layers=1)
    return tmp_path / "model.safetensors"


def test_wrong_shaped_tensor_is_named(tmp_path):
    path = _single_file(tmp_path)
    tensors = load_file(path)
    tensors["model.layers.0.mlp.up_proj.weight"] = np.zeros((5, 64), np.float32)
    save_file(tensors, path, metadata={"format": "pt"})
    with pytest.raises(
        CheckpointMismatch, match=r"model\.layers\.0\.mlp\.up_proj\.weight.*\[5, 64\]"
    ):
        load_hf(tmp_path, dtype=jnp.float32)


def test_missing_and_unknown_tensors_are_named(tmp_path):
    path = _single_file(tmp_path)
    tensors = load_file(path)
    del tensors["model.layers.0.self_attn.k_norm.weight"]
    save_file(tensors, path, metadata={"format": "pt"})
    with pytest.raises(CheckpointMismatch, match="lacks tensor 'model.layers.0.self_attn.k_norm"):
        load_hf(tmp_path, dtype=jnp.float32)
    tensors["model.layers.0.self_attn.k_norm.weight"] = np.ones(16, np.float32)
    tensors["model.layers.0.self_attn.q_proj.bias"] = np.ones(64, np.float32)
    save_file(tensors, path, metadata={"format": "pt"})
    with pytest.raises(
        CheckpointMismatch, match="unknown tensor 'model.layers.0.self_attn.q_proj.bias'"
    ):
        load_hf(tmp_path, dtype=jnp.float32)


def test_bad_configs_are_named(tmp_path):
    with pytest.raises(ConfigError, match="unknown preset 'qwen3-7b'.*qwen3-8b"):
        Qwen3Config.preset("qwen3-7b")
    with pytest.raises(ConfigError, match="num_key_value_heads=3"):
        Qwen3Config.preset("tiny", num_key_value_heads=3)
    with pytest.raises(ConfigError, match="model_type='llama'"):
        Qwen3Config.from_hf_dict({"model_type": "llama"})
    with pytest.raises(ConfigError, match="rope_type='longrope'"):
        Qwen3Config.preset("tiny", rope_scaling=(("rope_type", "longrope"), ("factor", 2.0)))
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_hf(tmp_path)


def test_presets_have_published_sizes():
    sizes = {
        "qwen3-0.6b": 0.6e9,
        "qwen3-1.7b": 1.7e9,
        "qwen3-4b": 4.0e9,
        "qwen3-8b": 8.2e9,
        "qwen3-14b": 14.8e9,
        "qwen3-32b": 32.8e9,
    }
    for name, n in sizes.items():
        got = Qwen3Config.preset(name).num_params()
        assert abs(got - n) / n < 0.05, (name, got)


def _files(d):
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


@pytest.fixture(scope="module")
def tiny():
    cfg = Qwen3Config.preset("tiny")
    return cfg, init_params(cfg, jax.random.key(0))


def test_failed_export_leaves_the_target_as_it_was(tmp_path, monkeypatch, tiny):
    """A write failing half way (disk full, ...) after some shards were written: the old model
    directory is byte-for-byte unchanged, a new target is never created, nothing is staged."""
    from jaxrepair.model import hf

    make_hf_model(tmp_path / "old", num_hidden_layers=1)
    before = _files(tmp_path / "old")
    cfg, params = tiny
    calls = {"n": 0}
    real_write = hf._SafetensorsWriter.write

    def failing_write(self, name, arr):
        calls["n"] += 1
        if calls["n"] == 9:
            raise OSError(28, "No space left on device")
        real_write(self, name, arr)

    monkeypatch.setattr(hf._SafetensorsWriter, "write", failing_write)
    for target, replace in ((tmp_path / "old", True), (tmp_path / "new", False)):
        calls["n"] = 0
        with pytest.raises(OSError, match="No space left"):
            save_hf(target, cfg, params, max_shard_bytes=20_000, replace=replace)
    assert _files(tmp_path / "old") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old"]


def test_generation_config_uses_real_stop_tokens_inside_the_vocabulary(tmp_path, tiny):
    """tiny preset (512 ids) still carries Qwen3's eos id 151645 in its config: without a
    tokenizer no id outside the vocabulary is written; with one, its <|im_end|> and
    <|endoftext|> ids (the tokenizer is the oracle), in config.json too."""
    from transformers import GenerationConfig

    from tests.train.trajectories import make_tokenizer

    cfg, params = tiny
    assert cfg.eos_token_id >= cfg.vocab_size
    save_hf(tmp_path / "bare", cfg, params)
    gen = json.loads((tmp_path / "bare" / "generation_config.json").read_text())
    assert "eos_token_id" not in gen and "bos_token_id" not in gen
    assert json.loads((tmp_path / "bare" / "config.json").read_text())["eos_token_id"] is None

    tok = make_tokenizer(vocab_size=cfg.vocab_size)
    tok.save(tmp_path / "tok")
    save_hf(tmp_path / "with_tok", cfg, params, tokenizer_from=tmp_path / "tok")
    gen = GenerationConfig.from_pretrained(tmp_path / "with_tok")
    assert gen.eos_token_id == [tok.im_end_id, tok.endoftext_id]
    assert gen.pad_token_id == tok.endoftext_id and max(gen.eos_token_id) < cfg.vocab_size
    config = json.loads((tmp_path / "with_tok" / "config.json").read_text())
    assert config["eos_token_id"] == tok.im_end_id


def test_import_checks_before_creating_and_cleans_up_after_failing(tmp_path, monkeypatch):
    from jaxrepair.train import checkpoint

    make_hf_model(tmp_path / "hf", num_hidden_layers=1)
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "notes.txt").write_text("mine\n")
    with pytest.raises(FileExistsError, match="is not empty"):
        checkpoint.import_hf(tmp_path / "hf", tmp_path / "used")
    assert _files(tmp_path / "used") == {"notes.txt": b"mine\n"}
    config = tmp_path / "hf" / "config.json"
    config.write_text(config.read_text().replace('"hidden_size": 64', '"hidden_size": 32'))
    with pytest.raises(CheckpointMismatch):  # a broken source: refused before anything exists
        checkpoint.import_hf(tmp_path / "hf", tmp_path / "ck")
    assert not (tmp_path / "ck").exists()

    make_hf_model(tmp_path / "hf2", num_hidden_layers=1)

    def broken_save(self, *a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint.Checkpointer, "save", broken_save)
    with pytest.raises(OSError, match="No space left"):
        checkpoint.import_hf(tmp_path / "hf2", tmp_path / "ck")
    assert not (tmp_path / "ck").exists()


def test_only_orbaxs_read_only_notices_are_silenced(caplog):
    import logging
    import threading

    from jaxrepair.train.checkpoint import quiet_read_only_notice

    quiet_read_only_notice()
    absl = logging.getLogger("absl")
    with caplog.at_level(logging.WARNING):
        absl.warning("Given directory is read only=%s", "/ck")
        absl.warning("CheckpointManagerOptions.read_only=True, setting create=False.")
        absl.warning("a real problem")
    # Only this thread's records: an orbax background thread left by an earlier test may log too.
    ours = [r for r in caplog.records if r.thread == threading.get_ident()]
    assert [r.getMessage() for r in ours] == ["a real problem"]


def test_generation_config_is_found_for_runs_started_from_hf_or_orbax(tmp_path):
    """What sft/grpo carry into their own tokenizer/ (so export writes it back)."""
    from jaxrepair.train.checkpoint import import_hf, saved_generation_config

    make_hf_model(tmp_path / "hf", num_hidden_layers=1)
    gen = {"eos_token_id": [5, 6], "do_sample": True, "temperature": 0.6}
    (tmp_path / "hf" / "generation_config.json").write_text(json.dumps(gen))
    assert saved_generation_config(tmp_path / "hf") == gen
    import_hf(tmp_path / "hf", tmp_path / "ck")
    assert saved_generation_config(tmp_path / "ck") == gen
    assert saved_generation_config(tmp_path / "nothing-here") is None
